"""DuckDB bar store: one writer process at a time, without ever failing on DuckDB's file lock.

DuckDB lets one process open a file read-write, and no reader may open it meanwhile. Every access
therefore goes through a sidecar flock (exclusive to write, shared to read) held only for the short
transaction, never while a provider is fetching. A foreign process holding DuckDB's own lock (a
user's DuckDB shell) is waited out with backoff until the same timeout.
"""

import datetime as dt
import re
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pandas as pd

from backfill_assets.schemas import BARS_COLUMNS, BARS_SQL_TYPES
from backfill_assets.storage.base import Slice, StoreError, check_slices
from backfill_assets.storage.locks import file_lock
from backfill_assets.storage.outside_hours import ALL_BARS, OUTSIDE, VIEW_SQL, split_hours
from backfill_assets.storage.sql import DuckDBReader, table_exists

BARS_DDL = (
    "CREATE TABLE IF NOT EXISTS bars ("
    + ", ".join(
        f"{c} {BARS_SQL_TYPES[c]} NOT NULL"
        if c in ("ticker", "ts", "session_date")
        else f"{c} {BARS_SQL_TYPES[c]}"
        for c in BARS_COLUMNS
    )
    + ", PRIMARY KEY (ticker, ts))"
)
OUTSIDE_DDL = BARS_DDL.replace("EXISTS bars (", f"EXISTS {OUTSIDE} (", 1)
INSERT_SELECT = ", ".join(f"CAST({c} AS {BARS_SQL_TYPES[c]})" for c in BARS_COLUMNS)


LOG_EVERY_S = 10.0


def _holder(message: str) -> str:
    """Who holds the file, from DuckDB's lock error ("Conflicting lock is held in /usr/bin/python3
    (PID 4242) by user ana"), or "another process" when it does not say."""
    match = re.search(r"held in (\S+) \(PID (\d+)\)( by user \S+)?", message)
    if match is None:
        return "another process"
    return f"PID {match.group(2)} ({Path(match.group(1)).name}{(match.group(3) or '').rstrip('.')})"


class DuckDBBarStore:
    """The `bars` table in one DuckDB file (created with its schema on first write)."""

    def __init__(
        self, path: Path, lock_timeout_s: float = 600.0, log: Callable[[str], None] | None = None
    ) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.lock_timeout_s = lock_timeout_s
        self.log = log or (lambda _: None)  # where a wait on another process's DuckDB lock is said
        self.log_every_s = LOG_EVERY_S

    def describe(self) -> str:
        return str(self.path)

    @contextmanager
    def connect(self, *, read_only: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection under the sidecar flock. While a process outside the project (a notebook's
        DuckDB connection) holds DuckDB's own lock, the flock is let go between tries, so the
        project's readers go on meanwhile, and the holder is logged every LOG_EVERY_S."""
        started, said, delay = time.monotonic(), 0.0, 0.05
        deadline = started + self.lock_timeout_s
        while True:
            with file_lock(self.lock_path, shared=read_only, timeout_s=max(0.0, deadline - time.monotonic())):
                try:
                    con = duckdb.connect(str(self.path), read_only=read_only)
                except duckdb.IOException as exc:
                    if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                        raise StoreError(f"cannot open DuckDB file {self.path}: {exc}") from exc
                    holder = _holder(str(exc))
                else:
                    try:
                        con.execute("SET TimeZone = 'UTC'")
                        yield con
                    finally:
                        con.close()
                    return
            if (waited := time.monotonic() - started) - said >= self.log_every_s:
                said = waited
                self.log(
                    f"waiting {waited:.0f} s for DuckDB file {self.path}: {holder} keeps it open; a "
                    "connection left open in a notebook or the duckdb shell blocks every write (read with "
                    "backfill_assets.read.query, which opens the file per query)"
                )
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    @contextmanager
    def reader(self) -> Iterator[DuckDBReader]:
        """A read-only connection under the shared lock (before the file exists: an empty database)."""
        if not self.path.exists():
            yield DuckDBReader(duckdb.connect())
            return
        with self.connect(read_only=True) as con:
            yield DuckDBReader(con)

    def replace_bars(self, frame: pd.DataFrame, slices: Collection[Slice]) -> int:
        """Delete `slices` and insert `frame` in one transaction; a failure leaves the old rows.
        Rows flagged outside regular hours go to `bars_outside` (outside_hours.py)."""
        check_slices(frame, slices)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        regular, outside = split_hours(frame)
        writes = [("bars", BARS_DDL, regular), (OUTSIDE, OUTSIDE_DDL, outside)]
        return self.replace_many(writes, INSERT_SELECT, slices, optional=OUTSIDE)

    def replace_slices(
        self,
        table: str,
        ddl: str,
        select: str,
        rows: pd.DataFrame,
        slices: Collection[Slice],
        ordered: bool = True,
    ) -> int:
        """In one transaction: create `table` if needed (`ddl`), delete its (ticker, session_date)
        `slices`, insert `rows` as `SELECT {select} FROM rows`. A failure leaves the old rows.
        `ordered=False` lets DuckDB's threads append in any order (a third faster), for tables that
        are only ever read through an ORDER BY or by key."""
        return self.replace_many([(table, ddl, rows)], select, slices, ordered=ordered)

    def replace_many(
        self,
        writes: Sequence[tuple[str, str, pd.DataFrame]],
        select: str,
        slices: Collection[Slice],
        ordered: bool = True,
        optional: str | None = None,
    ) -> int:
        """`replace_slices` of several (table, ddl, rows) in one transaction; the `optional` table is
        created only once it has rows (then with the bars_all view)."""
        keys = pd.DataFrame(sorted(slices), columns=["ticker", "session_date"])
        with self.connect(read_only=False) as con:
            if not ordered:
                con.execute("SET preserve_insertion_order = false")
            con.register("_slices", keys)
            con.execute("BEGIN TRANSACTION")
            try:
                for i, (table, ddl, rows) in enumerate(writes):
                    if table == optional and rows.empty and not table_exists(con, table):
                        continue
                    con.execute(ddl)
                    if table == optional:
                        con.execute(VIEW_SQL)
                    con.execute(
                        f"DELETE FROM {table} USING _slices s WHERE {table}.ticker = s.ticker "
                        f"AND {table}.session_date = CAST(s.session_date AS DATE)"
                    )
                    con.register(f"_rows{i}", rows)
                    con.execute(f"INSERT INTO {table} SELECT {select} FROM _rows{i}")
                con.execute("COMMIT")
            except BaseException as exc:
                try:
                    con.execute("ROLLBACK")
                except duckdb.Error as rollback:
                    # A fatal error (a full disk) has already ended the transaction and invalidated
                    # the database: the ROLLBACK's own error would hide the cause, which is `exc`.
                    exc.add_note(f"ROLLBACK failed too: {rollback}")
                raise
        return sum(len(rows) for _, _, rows in writes)

    def read_bars(
        self,
        tickers: Collection[str] | None = None,
        start: dt.date | None = None,
        end: dt.date | None = None,
        extended: bool = False,
    ) -> pd.DataFrame:
        """Stored regular-hours bars (`extended`: with outside-hours ones and a regular_hours column)."""
        if not self.path.exists():
            return pd.DataFrame(columns=list(BARS_COLUMNS))
        where: list[str] = ["TRUE"]
        params: list[object] = []
        if tickers is not None:
            where.append("list_contains(?, ticker)")
            params.append(sorted(tickers))
        if start is not None:
            where.append("session_date >= ?")
            params.append(start)
        if end is not None:
            where.append("session_date <= ?")
            params.append(end)
        with self.connect(read_only=True) as con:
            if not table_exists(con, "bars"):
                return pd.DataFrame(columns=list(BARS_COLUMNS))
            relation = "bars"
            if extended:
                relation = (
                    ALL_BARS if table_exists(con, OUTSIDE) else "(SELECT *, TRUE AS regular_hours FROM bars)"
                )
            sql = f"SELECT * FROM {relation} WHERE {' AND '.join(where)} ORDER BY ticker, ts"
            bars = con.execute(sql, params).df()
        bars["session_date"] = bars["session_date"].dt.date
        return bars
