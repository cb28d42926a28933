"""The provider contract: a request for consecutive sessions of some tickers, answered in bulk."""

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import pandas as pd

from backfill_assets.timeframes import Timeframe


@dataclass(frozen=True)
class BarRequest:
    """Bars of `tickers` over consecutive exchange `sessions` at `timeframe`, in one provider call."""

    tickers: tuple[str, ...]
    sessions: tuple[dt.date, ...]
    timeframe: Timeframe


@dataclass(frozen=True)
class FetchResult:
    """Bars in the provider columns (schemas.PROVIDER_COLUMNS) plus tickers that failed, with reasons."""

    bars: pd.DataFrame
    failed: Mapping[str, str] = field(default_factory=dict)


class ProviderError(RuntimeError):
    """A provider could not answer a request; the message names tickers, dates and the cause."""


class BarProvider(Protocol):
    """What every provider implements. `adjustment` is recorded on every stored row."""

    name: str
    adjustment: str

    def fetch(self, request: BarRequest) -> FetchResult:
        """Return the bars of every (ticker, session) in `request`."""
        ...
