"""The store the settings name, for code outside Dagster runs (the demo's report, benchmarks)."""

import os

from backfill_assets.settings import Settings
from backfill_assets.storage.base import LabelStore
from backfill_assets.storage.duckdb_labels import DuckDBLabelStore
from backfill_assets.storage.duckdb_store import DuckDBBarStore
from backfill_assets.storage.postgres_labels import PostgresLabelStore
from backfill_assets.storage.postgres_store import PostgresStore


def open_store(settings: Settings) -> DuckDBBarStore | PostgresStore:
    if settings.store == "postgres":
        return PostgresStore(os.environ["BACKFILL_POSTGRES_URL"], settings.postgres_schema)
    return DuckDBBarStore(settings.duckdb_path)


def label_store(store: DuckDBBarStore | PostgresStore, hours: str = "regular") -> LabelStore:
    """The label tables beside `store`'s bars, in the same database; `hours` of the bars they read."""
    if isinstance(store, PostgresStore):
        return PostgresLabelStore(store, hours)
    return DuckDBLabelStore(store, hours)
