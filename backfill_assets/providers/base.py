"""The provider contract: a request for consecutive sessions of some tickers, answered in bulk."""

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import pandas as pd

from backfill_assets.calendar import TradingCalendar
from backfill_assets.schemas import session_of
from backfill_assets.symbols import refusal
from backfill_assets.timeframes import Timeframe


@dataclass(frozen=True)
class BarRequest:
    """Bars of `tickers` over consecutive exchange `sessions` at `timeframe`, in one provider call."""

    tickers: tuple[str, ...]
    sessions: tuple[dt.date, ...]
    timeframe: Timeframe


@dataclass(frozen=True)
class FetchResult:
    """Bars in the provider columns (schemas.PROVIDER_COLUMNS) plus tickers that failed, with reasons.

    `dropped` counts bars the provider received and left out on purpose (outside regular hours or
    the requested sessions), so a run can say so; `sources` names the file behind a (ticker,
    session), for providers that read files."""

    bars: pd.DataFrame
    failed: Mapping[str, str] = field(default_factory=dict)
    dropped: int = 0
    sources: Mapping[tuple[str, dt.date], str] = field(default_factory=dict)


class ProviderError(RuntimeError):
    """A provider could not answer a request; the message names tickers, dates and the cause.

    `permanent` errors (bad credentials, bad request) must not be retried; others may succeed later.
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class BarProvider(Protocol):
    """What every provider implements. `adjustment` is recorded on every stored row."""

    name: str
    adjustment: str

    def fetch(self, request: BarRequest) -> FetchResult:
        """Return the bars of every (ticker, session) in `request`."""
        ...


def own_symbols(request: BarRequest, provider: str) -> tuple[BarRequest, dict[str, str]]:
    """`request` without the tickers outside `provider`'s symbol grammar, and why each was left out:
    they fail by name without spending a request (0700.HK is a Yahoo symbol, not an Alpaca one)."""
    refused = {t: reason for t in request.tickers if (reason := refusal(t, provider)) is not None}
    kept = tuple(t for t in request.tickers if t not in refused)
    return dataclasses.replace(request, tickers=kept), refused


def regular_hours(frame: pd.DataFrame, calendar: TradingCalendar, timeframe: Timeframe) -> pd.DataFrame:
    """Keep bars whose bucket overlaps regular hours: [open floored to the bar size, close), less
    the buckets that lie wholly inside a session's trading break."""
    if timeframe.is_daily or frame.empty:
        return frame
    day = session_of(frame["ts"], calendar.tz)
    sessions = [d for d in day.unique() if d is not None and calendar.is_session(d)]
    bounds = {d: calendar.open_close(d) for d in sessions}
    pauses = {d: pause for d in sessions if (pause := calendar.break_of(d)) is not None}
    width = pd.Timedelta(minutes=timeframe.minutes)
    # Dict lookups per row, not Python calls per row: this ran on every fetched page.
    start = pd.to_datetime(day.map({d: o.floor(width) for d, (o, _) in bounds.items()}), utc=True)
    end = pd.to_datetime(day.map({d: c for d, (_, c) in bounds.items()}), utc=True)
    keep = (frame["ts"] >= start) & (frame["ts"] < end)
    if pauses:
        paused = pd.to_datetime(day.map({d: b for d, (b, _) in pauses.items()}), utc=True)
        resumed = pd.to_datetime(day.map({d: e for d, (_, e) in pauses.items()}), utc=True)
        keep &= ~((frame["ts"] >= paused) & (frame["ts"] + width <= resumed)).fillna(False)
    return frame[keep].reset_index(drop=True)
