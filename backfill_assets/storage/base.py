"""The store contract: replace whole (ticker, session) slices atomically; read them back."""

import datetime as dt
from collections.abc import Collection
from typing import Protocol

import pandas as pd

Slice = tuple[str, dt.date]


class StoreError(RuntimeError):
    """A store operation that could not complete; stored data is unchanged."""


class BarStore(Protocol):
    """Persistence for the canonical `bars` table (schemas.BARS_COLUMNS), unique on (ticker, ts)."""

    def replace_bars(self, frame: pd.DataFrame, slices: Collection[Slice]) -> int:
        """In one transaction delete every slice in `slices` and insert `frame` (rows of those slices only).

        Returns the number of rows inserted. On any failure nothing changes.
        """
        ...

    def read_bars(
        self, tickers: Collection[str] | None = None, start: dt.date | None = None, end: dt.date | None = None
    ) -> pd.DataFrame:
        """Bars ordered by (ticker, ts), optionally limited to tickers and sessions in [start, end]."""
        ...

    def describe(self) -> str:
        """Where the data lies, for humans (a path or a redacted URL)."""
        ...
