"""Reading the stored data from Python without blocking a backfill for long.

A DuckDB connection left open (a notebook's, the duckdb shell's) holds the file, and no backfill can
write until it closes. `query` opens the file read-only for one query, under the store's shared
lock, and closes it: a write waits for one query at most, a query for one write's transaction.
On Postgres any client reads while runs write (MVCC); `query` reads there too.
"""

import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from backfill_assets.settings import load_settings
from backfill_assets.storage.base import StoreError
from backfill_assets.storage.duckdb_store import DuckDBBarStore
from backfill_assets.storage.open import open_store
from backfill_assets.storage.postgres_store import PostgresStore


def query(sql: str, params: Sequence[object] = (), path: Path | str | None = None) -> pd.DataFrame:
    """Run one SQL query on the store (tables bars, bars_all, labels_<name>) and return its rows.

    `path` names a DuckDB file; default: the configured store (BACKFILL_STORE, BACKFILL_DUCKDB_PATH).
    E.g. query("SELECT * FROM bars WHERE ticker = ? AND session_date >= ?", ["AAPL", "2024-03-01"]).
    """
    store = DuckDBBarStore(Path(path)) if path is not None else open_store(load_settings())
    if isinstance(store, PostgresStore):
        with store.connect() as conn:
            cursor = conn.execute(postgres_placeholders(sql), list(params))
            columns = [c.name for c in cursor.description or []]
            return pd.DataFrame(cursor.fetchall(), columns=columns)
    if not store.path.exists():
        raise StoreError(f"no data yet: {store.path} does not exist (run a backfill first)")
    with store.connect(read_only=True) as con:
        return con.execute(sql, list(params)).df()


_LITERAL = re.compile(r"('(?:[^']|'')*')")  # a quoted SQL string, '' being an escaped quote


def postgres_placeholders(sql: str) -> str:
    """`sql` with DuckDB's `?` placeholders as psycopg's `%s`: a `%` (LIKE 'A%') doubled everywhere,
    since psycopg reads the whole text, and a `?` inside a quoted string left alone."""
    parts = _LITERAL.split(sql.replace("%", "%%"))
    return "".join(part if i % 2 else part.replace("?", "%s") for i, part in enumerate(parts))
