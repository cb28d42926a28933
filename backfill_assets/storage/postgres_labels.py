"""Label tables `labels_<name>` next to `bars` in the Postgres store, written like `bars`.

Unlike DuckDB, Postgres keeps the (ticker, ts) primary key on label tables: its B-tree costs little
on insert and lets a slice delete find its rows through the index.
"""

import datetime as dt
from collections.abc import Collection, Mapping
from typing import Any

import pandas as pd

from backfill_assets.storage import label_versions as versions
from backfill_assets.storage.base import Slice, valid_table
from backfill_assets.storage.outside_hours import OUTSIDE, bars_source
from backfill_assets.storage.postgres_copy import copy_out, copy_out_not_null, select_list
from backfill_assets.storage.postgres_reader import PostgresReader
from backfill_assets.storage.postgres_store import LOCK_CLASS, PostgresStore, table_columns

KEY_TYPES = {"ticker": "VARCHAR", "ts": "TIMESTAMPTZ", "session_date": "DATE"}
HISTORY_TYPES = {"code": "INTEGER", "ts": "TIMESTAMPTZ", "session_date": "DATE"} | {
    c: "DOUBLE" for c in ("open", "high", "low", "close")
}
FROM_PG = {
    "text": "VARCHAR", "character varying": "VARCHAR", "timestamp with time zone": "TIMESTAMPTZ",
    "date": "DATE", "double precision": "DOUBLE", "bigint": "BIGINT", "integer": "INTEGER",
    "smallint": "SMALLINT", "boolean": "BOOLEAN",
}  # fmt: skip


def _pg(sql: str) -> str:
    return sql.replace("?", "%s")


class PostgresLabelStore:
    # Each label table written on its own connection: the server inserts the sets side by side while
    # the next set is computed (a set's write is mostly server time).
    parallel_writes = 3

    def __init__(self, bars: PostgresStore, hours: str = "regular") -> None:
        self.bars, self.hours = bars, hours  # extended: labels over bars_all (outside_hours.py)
        self._claimed: set[tuple[str, str]] = set()

    def claim_version(self, table: str, version: str, parameters: dict[str, Any]) -> None:
        """Record `version` as the table's, or refuse if its rows were made with another one."""
        if (table, version) in self._claimed:
            return
        name = valid_table(table)
        with self.bars.connect() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_CLASS,))  # with schema changes
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.bars.schema}"')
            conn.execute(versions.VERSIONS_DDL)
            stamp = conn.execute(_pg(versions.SELECT_STAMP), (table,)).fetchone()
            has_rows = bool(table_columns(conn, table)) and bool(
                conn.execute(f"SELECT 1 FROM {name} LIMIT 1").fetchone()
            )
            if versions.check_stamp(table, stamp, has_rows, version, parameters):
                conn.execute(_pg(versions.INSERT_STAMP), (table, version, versions.encode(parameters)))
        self._claimed.add((table, version))

    def drop_labels(self, table: str) -> int:
        """Drop `table`, its version stamp and its schema record; the number of rows it held."""
        name = valid_table(table)
        with self.bars.connect() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_CLASS,))
            if not table_columns(conn, table):
                return 0
            rows = conn.execute(f"SELECT count(*) FROM {name}").fetchone()
            conn.execute(f"DROP TABLE {name}")
            for registry in ("label_versions", "backfill_schema"):
                if table_columns(conn, registry):
                    conn.execute(f"DELETE FROM {registry} WHERE table_name = %s", (table,))
        self.bars._ready.discard(table)
        self._claimed = {c for c in self._claimed if c[0] != table}
        return int(rows[0]) if rows else 0

    def read_history(
        self, tickers: Collection[str], since: dt.date, last: dt.date, halo_bars: int
    ) -> pd.DataFrame:
        names = sorted(tickers)
        empty = pd.DataFrame(columns=["ticker", *list(HISTORY_TYPES)[1:]])
        # The ts bounds (a day around `last`, any time zone) keep both halves on the primary key's index.
        columns = "w.ord::int - 1 AS code, b.ts, b.session_date, b.open, b.high, b.low, b.close"
        query = """
            WITH w AS (SELECT t, ord FROM unnest(%(tickers)s::text[]) WITH ORDINALITY AS u(t, ord)),
            hist AS (
                SELECT {columns} FROM w JOIN {source} b ON b.ticker = w.t
                WHERE b.session_date BETWEEN %(since)s::date AND %(last)s::date
                  AND b.ts >= %(since)s::date - 1 AND b.ts < %(last)s::date + 2
                UNION ALL
                SELECT {columns} FROM w CROSS JOIN LATERAL (
                    SELECT * FROM {source} x WHERE x.ticker = w.t AND x.ts >= %(last)s::date
                    AND x.session_date > %(last)s::date ORDER BY x.ts LIMIT %(halo)s) b
            )
            SELECT {names} FROM hist ORDER BY code, ts
        """
        with self.bars.reader() as reader:
            if not reader.table_exists("bars"):
                return empty
            query = query.format(columns=columns, source=self._source(reader), names=", ".join(HISTORY_TYPES))
            params = {"tickers": names, "since": since, "last": last, "halo": int(halo_bars)}
            # The sort of a run's bars in memory, not in temporary files (4 MB by default): ~60 B a bar.
            reader.conn.execute("SET work_mem = '512MB'")
            frame = copy_out_not_null(reader.conn, query, params, HISTORY_TYPES)  # bars are NOT NULL
        ticker = pd.Categorical.from_codes(frame.pop("code").to_numpy(), categories=pd.Index(names))
        frame.insert(0, "ticker", pd.Series(ticker))
        return frame

    def _source(self, reader: PostgresReader) -> str:
        """`bars`, or with extended hours (once any are stored) `bars_all`."""
        return bars_source(self.hours == "extended", reader.table_exists(OUTSIDE))

    def history_sizes(self, tickers: Collection[str], since: dt.date, last: dt.date) -> dict[str, int]:
        with self.bars.reader() as reader:
            if not reader.table_exists("bars"):
                return {}
            query = (
                f"SELECT ticker, count(*) FROM {self._source(reader)} WHERE ticker = ANY(%s::text[]) AND "
                "session_date BETWEEN %s AND %s AND ts >= %s::date - 1 AND ts < %s::date + 2 GROUP BY ticker"
            )
            rows = reader.conn.execute(query, (sorted(tickers), since, last, since, last)).fetchall()
        return {str(ticker): int(n) for ticker, n in rows}

    def replace_labels(
        self, table: str, types: Mapping[str, str], frame: pd.DataFrame, slices: Collection[Slice]
    ) -> int:
        valid_table(table)
        columns = KEY_TYPES | dict(types)
        return self.bars.replace_slices(table, columns, frame[list(columns)], slices)

    def read_labels(self, table: str) -> pd.DataFrame:
        name = valid_table(table)
        with self.bars.reader() as reader:
            if not reader.table_exists(table):
                return pd.DataFrame()
            types = {c: FROM_PG[t] for c, t in table_columns(reader.conn, table).items()}
            query = f"SELECT {select_list(types)} FROM {name} ORDER BY ticker, ts"
            frame = copy_out(reader.conn, query, {}, types)
        frame["session_date"] = frame["session_date"].dt.date
        return frame
