"""Postgres store: the same `bars` and label tables as DuckDB, for many writers on many machines.

A write takes transaction-scoped advisory locks on its tickers (sorted, so two writers can never
deadlock), deletes its (ticker, session) slices and COPYs its rows in (binary, typed, straight into
the table), in one transaction. Writers of different tickers run in parallel; writers of the same
ticker take turns and the last to commit wins. A writer killed at any point leaves nothing: the
server rolls its transaction back when the connection drops.
"""

import datetime as dt
import hashlib
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pandas as pd
import psycopg
from psycopg.conninfo import conninfo_to_dict

from backfill_assets.schemas import BARS_COLUMNS, BARS_SQL_TYPES
from backfill_assets.storage.base import Slice, StoreError, check_slices
from backfill_assets.storage.outside_hours import ALL_BARS, OUTSIDE, VIEW_SQL, split_hours
from backfill_assets.storage.postgres_binary import binary_rows
from backfill_assets.storage.postgres_copy import copy_out, pg_type, select_list
from backfill_assets.storage.postgres_reader import PostgresReader

SCHEMA_VERSION = 1  # bump with an explicit migration when a table's layout changes
LOCK_CLASS = 0x42414B31  # advisory-lock namespace of store writes (two-key form: apart from the budget's)
LOCK_BUCKETS = 256  # tickers hash into this many locks: a transaction never holds more
BARS_TYPES = {c: BARS_SQL_TYPES[c] for c in BARS_COLUMNS}
NOT_NULL = ("ticker", "ts", "session_date")
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def lock_key(table: str, ticker: str) -> int:
    digest = hashlib.blake2b(f"{table}\x00{ticker}".encode(), digest_size=4).digest()
    return 1 + int.from_bytes(digest, "big") % LOCK_BUCKETS  # key 0 guards schema changes


def table_columns(conn: psycopg.Connection[Any], table: str) -> dict[str, str]:
    """Column name -> Postgres data type of `table` in the connection's schema, in table order."""
    found = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
        (table,),
    ).fetchall()
    return {str(column): str(kind) for column, kind in found}


def _exists(cur: psycopg.Cursor[Any], table: str) -> bool:
    row = cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])


class PostgresStore:
    """`bars` (and, through PostgresLabelStore, `labels_<name>`) in one schema of a Postgres database."""

    def __init__(self, url: str, schema: str = "public", lock_timeout_s: float = 600.0) -> None:
        if not IDENTIFIER.match(schema):  # spliced into SQL and connection options
            raise StoreError(f"invalid Postgres schema name {schema!r}: letters, digits and _ only")
        self.url, self.schema, self.lock_timeout_s = url, schema, lock_timeout_s
        self._ready: set[str] = set()

    def describe(self) -> str:
        """The URL without its password."""
        try:
            info = conninfo_to_dict(self.url)
        except psycopg.ProgrammingError:
            return f"postgresql://(unparsable URL) schema {self.schema}"
        where = (
            f"{info.get('user', '')}@{info.get('host', '')}:{info.get('port', 5432)}/{info.get('dbname', '')}"
        )
        return f"postgresql://{where} schema {self.schema}"

    @contextmanager
    def connect(self, *, autocommit: bool = False) -> Iterator[psycopg.Connection[Any]]:
        """A connection on the store's schema in UTC; one transaction, committed when the block ends."""
        options = f"-c search_path={self.schema} -c TimeZone=UTC"
        try:
            conn = psycopg.connect(self.url, options=options, autocommit=autocommit, connect_timeout=30)
        except psycopg.OperationalError as exc:
            raise StoreError(f"cannot connect to Postgres at {self.describe()}: {exc}") from None
        with conn:
            yield conn

    @contextmanager
    def reader(self) -> Iterator[PostgresReader]:
        with self.connect(autocommit=True) as conn:
            yield PostgresReader(conn)

    def ensure_table(self, table: str, types: Mapping[str, str]) -> None:
        """Create `table` (keyed on ticker, ts) on first use; refuse a table of another layout."""
        if table in self._ready:
            return
        columns = {c: pg_type(t) for c, t in types.items()}
        with self.connect() as conn:
            # Concurrent CREATE ... IF NOT EXISTS can still collide in the catalog: one at a time.
            conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_CLASS,))
            if not conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)).fetchone():
                conn.execute(f'CREATE SCHEMA "{self.schema}"')
            conn.execute(
                "CREATE TABLE IF NOT EXISTS backfill_schema "
                "(table_name text PRIMARY KEY, version integer NOT NULL)"
            )
            found = table_columns(conn, table)
            if not found:
                ddl = ", ".join(
                    f'"{c}" {t}{" NOT NULL" if c in NOT_NULL else ""}' for c, t in columns.items()
                )
                conn.execute(f'CREATE TABLE "{table}" ({ddl}, PRIMARY KEY (ticker, ts))')
                conn.execute("INSERT INTO backfill_schema VALUES (%s, %s)", (table, SCHEMA_VERSION))
            else:
                self._check_layout(conn, table, found, columns)
        self._ready.add(table)

    def _check_layout(
        self, conn: psycopg.Connection[Any], table: str, found: dict[str, str], wanted: dict[str, str]
    ) -> None:
        row = conn.execute("SELECT version FROM backfill_schema WHERE table_name = %s", (table,)).fetchone()
        version = row[0] if row else None
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"table {self.schema}.{table} has schema version {version}, this code writes version "
                f"{SCHEMA_VERSION}: migrate it explicitly (README, Postgres) before writing"
            )
        normal = {c: t.replace("timestamp with time zone", "timestamptz") for c, t in found.items()}
        if normal != wanted:
            raise StoreError(
                f"table {self.schema}.{table} has columns {normal}, expected {wanted}: "
                "drop or rename it (a label set's columns changed?)"
            )

    def replace_slices(
        self, table: str, types: Mapping[str, str], rows: pd.DataFrame, slices: Collection[Slice]
    ) -> int:
        """Delete `slices` of `table` and COPY `rows` into it, in one transaction."""
        return self.replace_many([(table, types, rows)], slices)

    def replace_many(
        self,
        writes: Sequence[tuple[str, Mapping[str, str], pd.DataFrame]],
        slices: Collection[Slice],
        optional: str | None = None,
    ) -> int:
        """`replace_slices` of several tables in one transaction; the `optional` one only if it
        exists (replace_bars creates it, and the bars_all view, once it has rows)."""
        for table, types, _ in writes:
            if table != optional:
                self.ensure_table(table, types)
        keys = sorted(set(slices))
        locks = sorted({lock_key(table, ticker) for table, _, _ in writes for ticker, _ in keys})
        try:
            with self.connect() as conn, conn.cursor() as cur:
                cur.execute(f"SET LOCAL lock_timeout = '{int(self.lock_timeout_s * 1000)}ms'")
                cur.execute(
                    "SELECT pg_advisory_xact_lock(%s, k) FROM unnest(%s::int[]) AS k", (LOCK_CLASS, locks)
                )
                for table, types, rows in writes:
                    if table == optional and not _exists(cur, table):
                        continue
                    # The ts bounds (a day either side of the session, in any time zone) let the
                    # primary key's index find a slice instead of scanning the ticker's whole history.
                    cur.execute(
                        f'DELETE FROM "{table}" t '
                        "USING unnest(%s::text[], %s::date[]) AS s(ticker, session_date) "
                        "WHERE t.ticker = s.ticker AND t.session_date = s.session_date "
                        "AND t.ts >= s.session_date - 1 AND t.ts < s.session_date + 2",
                        ([t for t, _ in keys], [d for _, d in keys]),
                    )
                    if len(rows):
                        names = ", ".join(f'"{c}"' for c in types)
                        with cur.copy(f'COPY "{table}" ({names}) FROM STDIN (FORMAT BINARY)') as copy:
                            for block in binary_rows(rows, types):
                                copy.write(block)
        except psycopg.errors.LockNotAvailable:
            tables = ", ".join(table for table, _, _ in writes)
            raise StoreError(
                f"waited {self.lock_timeout_s:.0f} s for other writers of these tickers in {tables}; "
                "nothing written"
            ) from None
        return sum(len(rows) for _, _, rows in writes)

    def replace_bars(self, frame: pd.DataFrame, slices: Collection[Slice]) -> int:
        """Rows flagged outside regular hours go to `bars_outside` (outside_hours.py)."""
        check_slices(frame, slices)
        regular, outside = split_hours(frame)
        if len(outside) and OUTSIDE not in self._ready:
            self.ensure_table("bars", BARS_TYPES)  # the view reads both
            self.ensure_table(OUTSIDE, BARS_TYPES)
            with self.connect() as conn:
                conn.execute(VIEW_SQL)
        writes = [("bars", BARS_TYPES, regular), (OUTSIDE, BARS_TYPES, outside)]
        return self.replace_many(writes, slices, optional=OUTSIDE)

    def read_bars(
        self,
        tickers: Collection[str] | None = None,
        start: dt.date | None = None,
        end: dt.date | None = None,
        extended: bool = False,
    ) -> pd.DataFrame:
        """Stored regular-hours bars (`extended`: with outside-hours ones and a regular_hours column)."""
        with self.reader() as reader:
            if not reader.table_exists("bars"):
                return pd.DataFrame(columns=list(BARS_COLUMNS))
            types = dict(BARS_TYPES) | ({"regular_hours": "BOOLEAN"} if extended else {})
            relation = "bars"
            if extended:
                relation = (
                    ALL_BARS
                    if reader.table_exists(OUTSIDE)
                    else "(SELECT *, TRUE AS regular_hours FROM bars) b"
                )
            query = (
                f"SELECT {select_list(types)} FROM {relation} WHERE "
                "(%(tickers)s::text[] IS NULL OR ticker = ANY(%(tickers)s::text[])) "
                "AND (%(start)s::date IS NULL OR session_date >= %(start)s::date) "
                "AND (%(end)s::date IS NULL OR session_date <= %(end)s::date) ORDER BY ticker, ts"
            )
            params = {"tickers": sorted(tickers) if tickers is not None else None, "start": start, "end": end}
            bars = copy_out(reader.conn, query, params, types)
        bars["session_date"] = bars["session_date"].dt.date
        return bars
