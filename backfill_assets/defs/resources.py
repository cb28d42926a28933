"""Resources: the bar provider and the bar store, configured from the environment at load."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from backfill_assets.calendar import TradingCalendar
from backfill_assets.providers.base import BarProvider
from backfill_assets.providers.synthetic import SyntheticProvider
from backfill_assets.settings import PROVIDERS, get_settings
from backfill_assets.storage.duckdb_store import DuckDBBarStore
from backfill_assets.timeframes import Timeframe, parse_timeframe


class BarProviderResource(dg.ConfigurableResource):
    """Which provider fetches bars, and at which timeframe."""

    provider: str = Field(default="synthetic", description=f"One of {', '.join(PROVIDERS)}.")
    timeframe: str = Field(default="1Min", description="1Min, 5Min, 15Min, 1Hour or 1Day.")

    def parsed_timeframe(self) -> Timeframe:
        return parse_timeframe(self.timeframe)

    def build(self, calendar: TradingCalendar) -> BarProvider:
        if self.provider == "synthetic":
            return SyntheticProvider(calendar)
        raise ValueError(f"unknown provider {self.provider!r}: expected one of {', '.join(PROVIDERS)}")


class BarStoreResource(dg.ConfigurableResource):
    """The DuckDB file holding `bars`; writers queue on a file lock for at most `lock_timeout_s`."""

    duckdb_path: str
    lock_timeout_s: float = Field(default=600.0, gt=0)

    def build(self) -> DuckDBBarStore:
        return DuckDBBarStore(Path(self.duckdb_path), self.lock_timeout_s)


@dg.definitions
def resources() -> dg.Definitions:
    settings = get_settings()
    return dg.Definitions(
        resources={
            "bar_provider": BarProviderResource(
                provider=settings.provider, timeframe=settings.timeframe.name
            ),
            "bar_store": BarStoreResource(duckdb_path=str(settings.duckdb_path)),
        }
    )
