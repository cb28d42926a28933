"""SqlReader on a Postgres connection (autocommit: checks never hold a transaction open)."""

from collections.abc import Mapping
from typing import Any

import pandas as pd
import psycopg

from backfill_assets.storage.postgres_binary import binary_rows
from backfill_assets.storage.postgres_copy import pg_type
from backfill_assets.storage.sql import pg_params


class PostgresReader:
    dialect = "postgres"

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def frame(self, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        cur = self.conn.execute(pg_params(sql), dict(params or {}))
        columns = [d.name for d in cur.description or []]
        return pd.DataFrame(cur.fetchall(), columns=columns)

    def row(self, sql: str, params: Mapping[str, Any] | None = None) -> tuple[Any, ...]:
        found = self.conn.execute(pg_params(sql), dict(params or {})).fetchone()
        return tuple(found or ())

    def execute(self, sql: str) -> None:
        self.conn.execute(pg_params(sql))

    def table_exists(self, table: str) -> bool:
        query = (
            "SELECT 1 FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_name = %s"
        )
        return self.conn.execute(query, (table,)).fetchone() is not None

    def enforces_unique_key(self, table: str) -> bool:
        query = """
            SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
            WHERE c.relnamespace = current_schema()::regnamespace AND c.relname = %s AND i.indisunique
              AND i.indnkeyatts = 2
              AND (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a
                   WHERE a.attrelid = c.oid AND a.attnum = ANY(i.indkey)) = ARRAY['ticker', 'ts']
        """
        return self.conn.execute(query, (table,)).fetchone() is not None

    def load(self, name: str, frame: pd.DataFrame, types: Mapping[str, str]) -> None:
        columns = ", ".join(f'"{c}" {pg_type(t)}' for c, t in types.items())
        with self.conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS pg_temp.{name}")
            cur.execute(f"CREATE TEMP TABLE {name} ({columns})")
            names = ", ".join(f'"{c}"' for c in types)
            with cur.copy(f"COPY {name} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
                for block in binary_rows(frame, types):
                    copy.write(block)
