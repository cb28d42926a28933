"""Provider resources: one per provider, each with its API budget and HTTP policy as typed config.

The budget (`requests_per_minute`, `max_concurrent_requests`) is shared by every run and process of
the Dagster instance: in the instance's Postgres database when its storage is Postgres (or at
`budget_postgres_url`), else in files under `<DAGSTER_HOME>/rate_budgets/` (or `budget_dir`).
"""

import tempfile
from pathlib import Path
from typing import Literal

import curl_cffi.requests
import dagster as dg
import requests
from pydantic import Field, PrivateAttr

from backfill_assets.calendar import TradingCalendar
from backfill_assets.providers.alpaca import DEFAULT_URL, AlpacaProvider
from backfill_assets.providers.base import BarProvider
from backfill_assets.providers.budget import RateBudget, shared_budget
from backfill_assets.providers.file_source import FileSource, FileSourceError
from backfill_assets.providers.files import FilesProvider
from backfill_assets.providers.sessions import BudgetedCurlSession, BudgetedSession
from backfill_assets.providers.synthetic import SyntheticProvider
from backfill_assets.providers.transport import CircuitBreaker, RequestStats, RetryPolicy, Transport
from backfill_assets.providers.yahoo import YFinanceProvider
from backfill_assets.settings import get_settings
from backfill_assets.timeframes import Timeframe, parse_timeframe


class BarProviderResource(dg.ConfigurableResource):
    """Common to every provider: the bar timeframe."""

    timeframe: str = Field(default="1Min", description="1Min, 5Min, 15Min, 30Min, 1Hour or 1Day.")
    trading_hours: Literal["regular", "extended"] = Field(
        default="regular", description="extended: also pre-market and after-hours bars (table bars_outside)."
    )

    @property
    def provider_name(self) -> str:
        raise NotImplementedError

    def parsed_timeframe(self) -> Timeframe:
        return parse_timeframe(self.timeframe)

    def build(self, calendar: TradingCalendar) -> BarProvider:
        raise NotImplementedError


class SyntheticProviderResource(BarProviderResource):
    """Deterministic offline bars (no network, no budget)."""

    @property
    def provider_name(self) -> str:
        return "synthetic"

    def build(self, calendar: TradingCalendar) -> BarProvider:
        return SyntheticProvider(calendar, hours=self.trading_hours)


class FilesProviderResource(BarProviderResource):
    """Bars from CSV or Parquet files (no network, no budget); see providers/file_source.py."""

    path: str = Field(description="A file or glob, a path with {ticker}, or a hive-partitioned directory.")
    format: Literal["auto", "csv", "parquet"] = Field(default="auto", description="auto: from the path.")
    columns: dict[str, str] = Field(default={}, description="Our column -> the file's, e.g. ts: Date.")
    timezone: str | None = Field(
        default=None, description="Of timestamps without one; default the exchange's."
    )
    adjustment: Literal["raw", "split", "dividend", "all"] = Field(
        default="raw", description="What the files hold."
    )

    @property
    def provider_name(self) -> str:
        return "files"

    def build(self, calendar: TradingCalendar) -> BarProvider:
        try:
            form = None if self.format == "auto" else self.format
            source = FileSource(self.path, form, self.columns, self.timezone, self.adjustment)
        except FileSourceError as exc:  # bad launchpad config stays bad: no retry
            raise dg.Failure(description=f"bar_provider: {exc}", allow_retries=False) from None
        return FilesProvider(calendar, source, hours=self.trading_hours)


class HttpProviderResource(BarProviderResource):
    """A provider reached over HTTP: shared rate budget, timeouts, bounded retries, circuit breaker."""

    requests_per_minute: int = Field(default=60, ge=1, description="Shared by all runs of the instance.")
    max_concurrent_requests: int = Field(default=2, ge=1, description="In flight at once, instance-wide.")
    timeout_s: float = Field(default=30.0, gt=0, description="Per HTTP request.")
    max_retries: int = Field(default=5, ge=0, description="For 429, 5xx, timeouts and cut connections.")
    max_backoff_s: float = Field(default=60.0, gt=0)
    max_retry_after_s: float = Field(
        default=300.0, gt=0, description="Longest Retry-After honoured; a longer one fails the request."
    )
    breaker_threshold: int = Field(
        default=10,
        ge=1,
        description="Consecutive failed attempts (5xx, timeouts, bad bodies) that stop a run.",
    )
    budget_window_s: float = Field(
        default=60.0, ge=1, le=3600, description="The provider's rate window; the limit scales with it."
    )
    budget_dir: str | None = Field(default=None, description="Default: <DAGSTER_HOME>/rate_budgets.")
    budget_postgres_url: str | None = Field(
        default=None, description="Share the budget in Postgres. Default: the instance's, if Postgres."
    )
    _root: Path | None = PrivateAttr(default=None)
    _instance_postgres_url: str | None = PrivateAttr(default=None)
    _transport: Transport | None = PrivateAttr(default=None)

    @property
    def stats(self) -> RequestStats | None:
        """What the HTTP layer did in this run (requests, 429s, retries, waits)."""
        return self._transport.stats if self._transport else None

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if context.instance is not None:
            self._root = Path(context.instance.root_directory)
            # dagster-postgres' run storage exposes its URL; other storages have none.
            url = getattr(context.instance.run_storage, "postgres_url", None)
            if isinstance(url, str):
                self._instance_postgres_url = url.replace("postgresql+psycopg2://", "postgresql://", 1)

    def instance_limit(self) -> int:
        """The run's requests/minute, never above the instance's (BACKFILL_REQUESTS_PER_MINUTE in
        the deployment's environment): a launchpad config may lower a run's share, never raise the
        budget every run of the provider shares."""
        cap = get_settings().requests_per_minute
        if cap is None or self.requests_per_minute <= cap:
            return self.requests_per_minute
        dg.get_dagster_logger("backfill_assets").warning(
            f"requests_per_minute={self.requests_per_minute} is over the instance's "
            f"BACKFILL_REQUESTS_PER_MINUTE={cap}: this run uses {cap}"
        )
        return cap

    def budget(self) -> RateBudget:
        root = self._root or Path(tempfile.gettempdir())  # no instance: one budget per machine
        directory = Path(self.budget_dir) if self.budget_dir else root / "rate_budgets"
        postgres_url = self.budget_postgres_url or self._instance_postgres_url
        return shared_budget(
            self.provider_name,
            directory,
            self.instance_limit(),
            self.max_concurrent_requests,
            postgres_url,
            self.budget_window_s,
        )

    def transport(self, transient: tuple[type[BaseException], ...], json_body: bool) -> Transport:
        self._transport = Transport(
            budget=self.budget(),
            retry=RetryPolicy(
                max_retries=self.max_retries,
                max_delay_s=self.max_backoff_s,
                max_server_wait_s=self.max_retry_after_s,
            ),
            breaker=CircuitBreaker(self.provider_name, threshold=self.breaker_threshold),
            timeout_s=self.timeout_s,
            transient_errors=transient,
            json_body=json_body,
            log=dg.get_dagster_logger("backfill_assets").warning,  # in the run's event log
        )
        return self._transport


class AlpacaProviderResource(HttpProviderResource):
    """Alpaca market data via alpaca-py. Keys only from ALPACA_API_KEY / ALPACA_SECRET_KEY (EnvVar)."""

    api_key: str = Field(description="Bind with dg.EnvVar('ALPACA_API_KEY').")
    secret_key: str = Field(description="Bind with dg.EnvVar('ALPACA_SECRET_KEY').")
    base_url: str = Field(
        default=DEFAULT_URL, description="ALPACA_DATA_URL: a proxy, sandbox or test server."
    )
    feed: Literal["iex", "sip", "delayed_sip", "otc", "boats", "overnight"] = "iex"
    adjustment: Literal["raw", "split", "dividend", "all"] = "raw"
    requests_per_minute: int = Field(default=200, ge=1, description="Alpaca's free plan allows 200/min.")
    max_concurrent_requests: int = Field(default=4, ge=1)

    @property
    def provider_name(self) -> str:
        return "alpaca"

    def build(self, calendar: TradingCalendar) -> BarProvider:
        transient = (requests.Timeout, requests.ConnectionError)
        session = BudgetedSession(self.transport(transient, json_body=True))
        return AlpacaProvider(
            calendar, session, self.api_key, self.secret_key, self.base_url, self.feed, self.adjustment,
            parallel_requests=self.max_concurrent_requests, hours=self.trading_hours,
        )  # fmt: skip


class YFinanceProviderResource(HttpProviderResource):
    """Yahoo Finance via yfinance. Yahoo publishes no limit and bans bursts: keep the budget modest."""

    auto_adjust: bool = Field(default=False, description="False: split-adjusted OHLC; True: also dividends.")
    base_url: str | None = Field(default=None, description="YFINANCE_BASE_URL: route Yahoo hosts to a proxy.")
    requests_per_minute: int = Field(default=60, ge=1)
    max_concurrent_requests: int = Field(default=2, ge=1)

    @property
    def provider_name(self) -> str:
        return "yfinance"

    def build(self, calendar: TradingCalendar) -> BarProvider:
        transient = (curl_cffi.requests.exceptions.Timeout, curl_cffi.requests.exceptions.ConnectionError)
        session = BudgetedCurlSession(self.transport(transient, json_body=False), rewrite_to=self.base_url)
        return YFinanceProvider(calendar, session, self.auto_adjust, self.timeout_s, hours=self.trading_hours)
