"""The store contract: replace whole (ticker, session) slices atomically; read them back."""

import datetime as dt
from collections.abc import Collection, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

Slice = tuple[str, dt.date]


if TYPE_CHECKING:
    from backfill_assets.storage.sql import SqlReader


class StoreError(RuntimeError):
    """A store operation that could not complete; stored data is unchanged."""


def check_slices(frame: pd.DataFrame, slices: Collection[Slice]) -> None:
    """Refuse rows whose (ticker, session) is not among the slices being replaced."""
    pairs = frame[["ticker", "session_date"]].drop_duplicates()
    days = pd.to_datetime(pairs["session_date"]).dt.date
    stray = set(zip(pairs["ticker"], days, strict=True)) - set(slices)
    if stray:
        raise StoreError(f"rows outside the slices being replaced, e.g. {sorted(stray)[0]}")


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

    def reader(self) -> AbstractContextManager["SqlReader"]:
        """A read-only SQL connection for the data-quality checks."""
        ...


class LabelStore(Protocol):
    """The bars a label run reads and the `labels_<name>` tables it writes, in the bars' store."""

    parallel_writes: int  # label tables one run may write at once (one per connection)

    def read_history(
        self, tickers: Collection[str], since: dt.date, last: dt.date, halo_bars: int
    ) -> pd.DataFrame:
        """Every stored bar of `tickers` in sessions `since`..`last` plus each ticker's first
        `halo_bars` bars after it, ordered by (ticker, ts); ticker Categorical, session_date datetime64."""
        ...

    def history_sizes(self, tickers: Collection[str], since: dt.date, last: dt.date) -> dict[str, int]:
        """Stored bars per ticker in sessions `since`..`last`: what a label run must hold in memory."""
        ...

    def replace_labels(
        self, table: str, types: Mapping[str, str], frame: pd.DataFrame, slices: Collection[Slice]
    ) -> int:
        """Delete `slices` of `table` and insert `frame` in one transaction; a failure leaves the old rows."""
        ...

    def read_labels(self, table: str) -> pd.DataFrame:
        """The whole label table ordered by (ticker, ts); empty if it does not exist yet."""
        ...

    def claim_version(self, table: str, version: str, parameters: dict[str, Any]) -> None:
        """Record `version` as the table's on its first write; refuse (label_versions.LabelVersionError)
        if its rows were made with another version. Nothing is written on a refusal."""
        ...

    def drop_labels(self, table: str) -> int:
        """Drop `table` and its version stamp; the number of rows it held."""
        ...


def valid_table(table: str) -> str:
    """`table` double-quoted, after checking it is a plain identifier (it is spliced into SQL)."""
    if not table.replace("_", "").isalnum():
        raise StoreError(f"invalid table name {table!r}")
    return f'"{table}"'
