"""Resources bound once: the provider chosen by BACKFILL_PROVIDER and the bar store."""

import os
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from backfill_assets.defs.providers import (
    AlpacaProviderResource,
    BarProviderResource,
    FilesProviderResource,
    SyntheticProviderResource,
    YFinanceProviderResource,
)
from backfill_assets.memory import MemoryBudget
from backfill_assets.providers.alpaca import DEFAULT_URL
from backfill_assets.settings import MIN_MEMORY_MB, Settings, get_settings
from backfill_assets.storage.base import LabelStore
from backfill_assets.storage.duckdb_store import DuckDBBarStore
from backfill_assets.storage.open import label_store
from backfill_assets.storage.postgres_store import PostgresStore


class BarStoreResource(dg.ConfigurableResource):
    """Where `bars` and the label tables live (a DuckDB file or a Postgres schema), and the memory
    budget of the runs writing them.

    DuckDB writers queue on a file lock, Postgres writers of the same tickers on advisory locks, for
    at most `lock_timeout_s`. A run processes its partitions in chunks sized from `memory_budget_mb`,
    so its peak RSS does not grow with the partitions it holds.
    """

    backend: Literal["duckdb", "postgres"] = "duckdb"
    duckdb_path: str = ""
    postgres_url: str | None = Field(default=None, description="Bind with dg.EnvVar: it may hold a password.")
    postgres_schema: str = "public"
    lock_timeout_s: float = Field(default=600.0, gt=0)
    memory_budget_mb: int = Field(
        default=1024, ge=MIN_MEMORY_MB, description="Peak RSS budget of one run (MB)."
    )

    def build(self) -> DuckDBBarStore | PostgresStore:
        if self.backend == "postgres":
            if not self.postgres_url:
                raise dg.Failure("bar_store: backend postgres needs postgres_url (BACKFILL_POSTGRES_URL)")
            return PostgresStore(self.postgres_url, self.postgres_schema, self.lock_timeout_s)
        if not self.duckdb_path:
            raise dg.Failure("bar_store: backend duckdb needs duckdb_path (BACKFILL_DUCKDB_PATH)")
        log = dg.get_dagster_logger("backfill_assets").warning  # in the run's event log
        return DuckDBBarStore(Path(self.duckdb_path), self.lock_timeout_s, log)

    def labels(self, hours: str = "regular") -> LabelStore:
        return label_store(self.build(), hours)

    def memory_budget(self) -> MemoryBudget:
        return MemoryBudget(float(self.memory_budget_mb))


def provider_resource(settings: Settings) -> BarProviderResource:
    """The provider resource for BACKFILL_PROVIDER, with budget overrides from the environment."""
    common: dict[str, Any] = {"timeframe": settings.timeframe.name, "trading_hours": settings.trading_hours}
    if settings.provider == "synthetic":
        return SyntheticProviderResource(**common)
    if settings.files is not None:
        files = settings.files
        return FilesProviderResource(
            path=files.path,
            format=files.format or "auto",  # type: ignore[arg-type]  # validated by the settings
            columns=dict(files.columns),
            timezone=files.timezone,
            adjustment=files.adjustment,  # type: ignore[arg-type]
            **common,
        )
    if settings.requests_per_minute:
        common["requests_per_minute"] = settings.requests_per_minute
    if settings.max_concurrent_requests:
        common["max_concurrent_requests"] = settings.max_concurrent_requests
    if settings.budget_window_s:
        common["budget_window_s"] = settings.budget_window_s
    if settings.provider == "alpaca":
        return AlpacaProviderResource(
            api_key=dg.EnvVar("ALPACA_API_KEY"),
            secret_key=dg.EnvVar("ALPACA_SECRET_KEY"),
            base_url=os.environ.get("ALPACA_DATA_URL") or DEFAULT_URL,
            feed=os.environ.get("ALPACA_FEED") or "iex",  # type: ignore[arg-type]  # validated by pydantic
            adjustment=os.environ.get("ALPACA_ADJUSTMENT") or "raw",  # type: ignore[arg-type]
            **common,
        )
    return YFinanceProviderResource(
        auto_adjust=os.environ.get("YFINANCE_AUTO_ADJUST", "false").lower() in ("1", "true", "yes"),
        base_url=os.environ.get("YFINANCE_BASE_URL") or None,
        **common,
    )


def store_resource(settings: Settings) -> BarStoreResource:
    """The store chosen by BACKFILL_STORE; the Postgres URL stays an EnvVar, out of run config."""
    common: dict[str, Any] = {"memory_budget_mb": settings.memory_budget_mb}
    if settings.store == "postgres":
        return BarStoreResource(
            backend="postgres",
            postgres_url=dg.EnvVar("BACKFILL_POSTGRES_URL"),
            postgres_schema=settings.postgres_schema,
            **common,
        )
    return BarStoreResource(duckdb_path=str(settings.duckdb_path), **common)


@dg.definitions
def resources() -> dg.Definitions:
    settings = get_settings()
    return dg.Definitions(
        resources={
            "bar_provider": provider_resource(settings),
            "bar_store": store_resource(settings),
        }
    )
