"""Label tables `labels_<name>` in the bars' DuckDB file, under the same single-writer lock.

Each table is keyed (ticker, ts) and written like `bars`: a run deletes exactly its (ticker, session)
slices and inserts the new rows in one transaction.
"""

import datetime as dt
from collections.abc import Collection, Mapping
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from backfill_assets.storage import label_versions as versions
from backfill_assets.storage.base import Slice, valid_table
from backfill_assets.storage.duckdb_store import DuckDBBarStore
from backfill_assets.storage.outside_hours import OUTSIDE, bars_source
from backfill_assets.storage.sql import table_exists

OHLC = "ticker, ts, session_date, open, high, low, close"


class DuckDBLabelStore:
    """Reads the bars labels are computed from; replaces slices of label tables."""

    parallel_writes = 1  # one writer per file: a second would only wait for the lock

    def __init__(self, bars: DuckDBBarStore, hours: str = "regular") -> None:
        self.bars, self.hours = bars, hours  # extended: labels over bars_all (outside_hours.py)
        self._claimed: set[tuple[str, str]] = set()

    def claim_version(self, table: str, version: str, parameters: dict[str, Any]) -> None:
        """Record `version` as the table's, or refuse if its rows were made with another one."""
        if (table, version) in self._claimed:
            return
        name = valid_table(table)
        self.bars.path.parent.mkdir(parents=True, exist_ok=True)
        with self.bars.connect(read_only=False) as con:  # the writer's lock: one claim at a time
            con.execute(versions.VERSIONS_DDL)
            stamp = con.execute(versions.SELECT_STAMP, [table]).fetchone()
            exists = table_exists(con, table)
            has_rows = exists and bool(con.execute(f"SELECT 1 FROM {name} LIMIT 1").fetchall())
            if versions.check_stamp(table, stamp, has_rows, version, parameters):
                con.execute(versions.INSERT_STAMP, [table, version, versions.encode(parameters)])
        self._claimed.add((table, version))

    def drop_labels(self, table: str) -> int:
        """Drop `table` and its version stamp; the number of rows it held."""
        name = valid_table(table)
        if not self.bars.path.exists():
            return 0
        with self.bars.connect(read_only=False) as con:
            rows = 0
            if table_exists(con, table):
                rows = int(con.execute(f"SELECT count(*) FROM {name}").fetchall()[0][0])
            con.execute("BEGIN TRANSACTION")
            con.execute(f"DROP TABLE IF EXISTS {name}")
            if table_exists(con, "label_versions"):
                con.execute(versions.DELETE_STAMP, [table])
            con.execute("COMMIT")
        self._claimed = {c for c in self._claimed if c[0] != table}
        return rows

    def read_history(
        self, tickers: Collection[str], since: dt.date, last: dt.date, halo_bars: int
    ) -> pd.DataFrame:
        """Every stored bar of `tickers` in sessions `since`..`last`, plus each ticker's first
        `halo_bars` bars after it, ordered by (ticker, ts): the volatility warm-up, the run's bars and
        the forward halo.

        No primary key on label tables: DuckDB's index makes replacing slices several times slower,
        and rows are unique on (ticker, ts) by construction (each write replaces whole slices)."""
        empty = pd.DataFrame(columns=OHLC.split(", "))
        if not self.bars.path.exists():
            return empty
        names = sorted(tickers)
        # Ticker positions instead of strings: a million Python str objects would cost more than the query.
        columns = (
            "list_position($tickers, ticker)::INTEGER - 1 AS code, ts, session_date, open, high, low, close"
        )
        with self.bars.connect(read_only=True) as con:
            if not table_exists(con, "bars"):
                return empty
            source = self._source(con)
            sql = (
                f"SELECT {columns} FROM {source} WHERE list_contains($tickers, ticker) "
                "AND session_date BETWEEN $since AND $last "
                f"UNION ALL SELECT {columns} FROM (SELECT *, "
                f"row_number() OVER (PARTITION BY ticker ORDER BY ts) AS rn FROM {source} "
                "WHERE list_contains($tickers, ticker) AND session_date > $last) "
                "WHERE rn <= $halo ORDER BY code, ts"
            )
            params = {"tickers": names, "since": since, "last": last, "halo": halo_bars}
            # Numpy arrays, not .df(): pandas' block consolidation would copy every column once more.
            arrays = con.execute(sql, params).fetchnumpy()
        codes = np.asarray(arrays.pop("code"))
        frame: dict[str, Any] = {
            "ticker": pd.Categorical.from_codes(codes, categories=pd.Index(names)),
            "ts": pd.DatetimeIndex(arrays.pop("ts")).tz_localize("UTC").array,  # instants read in UTC
        }
        # session_date stays datetime64: millions of date objects would cost seconds
        return pd.DataFrame(frame | dict(arrays), copy=False)

    def _source(self, con: duckdb.DuckDBPyConnection) -> str:
        """`bars`, or with extended hours (once any are stored) `bars_all`."""
        return bars_source(self.hours == "extended", table_exists(con, OUTSIDE))

    def history_sizes(self, tickers: Collection[str], since: dt.date, last: dt.date) -> dict[str, int]:
        """Stored bars per ticker in sessions `since`..`last`: what a label run must hold in memory."""
        if not self.bars.path.exists():
            return {}
        with self.bars.connect(read_only=True) as con:
            if not table_exists(con, "bars"):
                return {}
            sql = (
                f"SELECT ticker, count(*) FROM {self._source(con)} WHERE list_contains($tickers, ticker) "
                "AND session_date BETWEEN $since AND $last GROUP BY ticker"
            )
            rows = con.execute(sql, {"tickers": sorted(tickers), "since": since, "last": last}).fetchall()
        return {str(ticker): int(n) for ticker, n in rows}

    def replace_labels(
        self, table: str, types: Mapping[str, str], frame: pd.DataFrame, slices: Collection[Slice]
    ) -> int:
        """Delete `slices` of `table` and insert `frame` in one transaction; a failure leaves the old rows."""
        name = valid_table(table)
        columns = {
            "ticker": "VARCHAR NOT NULL",
            "ts": "TIMESTAMPTZ NOT NULL",
            "session_date": "DATE NOT NULL",
        }
        columns |= dict(types)
        ddl = ", ".join(f"{c} {t}" for c, t in columns.items())
        select = ", ".join(f"CAST({c} AS {t.replace(' NOT NULL', '')})" for c, t in columns.items())
        ddl_sql = f"CREATE TABLE IF NOT EXISTS {name} ({ddl})"
        return self.bars.replace_slices(name, ddl_sql, select, frame[list(columns)], slices, ordered=False)

    def read_labels(self, table: str) -> pd.DataFrame:
        """The whole label table ordered by (ticker, ts); empty if it does not exist yet."""
        name = valid_table(table)
        if not self.bars.path.exists():
            return pd.DataFrame()
        with self.bars.connect(read_only=True) as con:
            if not table_exists(con, table):
                return pd.DataFrame()
            frame = con.execute(f"SELECT * FROM {name} ORDER BY ticker, ts").df()
        frame["session_date"] = frame["session_date"].dt.date
        return frame
