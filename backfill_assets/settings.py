"""Project settings read from the environment, validated once, with clear errors naming bad values."""

import datetime as dt
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from backfill_assets.providers.file_source import FileSource, FileSourceError, parse_columns
from backfill_assets.symbols import parse_tickers
from backfill_assets.timeframes import Timeframe, parse_timeframe

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_START_DATE = dt.date(2024, 1, 2)
EARLIEST_START = dt.date(1970, 1, 2)  # the first session a start date may name
MIN_MEMORY_MB = 128  # a run needs this much to hold one chunk; the resource refuses less too
DEFAULT_UNIVERSE_FILE = PROJECT_ROOT / "universe.txt"
DEFAULT_DUCKDB_PATH = PROJECT_ROOT / "data" / "market.duckdb"
PROVIDERS = ("synthetic", "alpaca", "yfinance", "files")
FILES_SETTINGS = {
    "path": "BACKFILL_FILES_PATH",
    "format": "BACKFILL_FILES_FORMAT",
    "columns": "BACKFILL_FILES_COLUMNS",
    "timezone": "BACKFILL_FILES_TZ",
    "adjustment": "BACKFILL_FILES_ADJUSTMENT",
}
STORES = ("duckdb", "postgres")
TRADING_HOURS = ("regular", "extended")
TICKER_PARTITIONS = "tickers"


class SettingsError(ValueError):
    """An environment variable with a value the project cannot use."""


@dataclass(frozen=True)
class Settings:
    """Everything configurable by environment variable; see the README's table."""

    provider: str
    timeframe: Timeframe
    start_date: dt.date
    calendar: str
    universe: tuple[str, ...]
    duckdb_path: Path
    store: str = "duckdb"
    postgres_schema: str = "public"
    requests_per_minute: int | None = None
    max_concurrent_requests: int | None = None
    budget_window_s: int | None = None  # the provider's rate window, s (the budget is per window)
    memory_budget_mb: int = 1024
    partitions_per_run: int | None = None  # None: single_run (one run per ticker or per date)
    files: FileSource | None = None  # BACKFILL_PROVIDER=files: where the bars are read
    trading_hours: str = "regular"  # or "extended": also pre-market and after-hours bars

    @property
    def pool(self) -> str:
        """Concurrency pool of the bars asset: one per provider, `<provider>_api`."""
        return f"{self.provider}_api"


def _start_date(raw: str, today: dt.date) -> dt.date:
    try:
        start = dt.date.fromisoformat(raw)
    except ValueError:
        raise SettingsError(f"BACKFILL_START_DATE={raw!r} is not an ISO date (YYYY-MM-DD)") from None
    if start > today:
        raise SettingsError(f"BACKFILL_START_DATE={raw!r} is in the future (today is {today.isoformat()})")
    if start < EARLIEST_START:
        # Every definitions load enumerates the sessions from here: a century of them costs seconds.
        raise SettingsError(
            f"BACKFILL_START_DATE={raw!r} is before {EARLIEST_START.isoformat()}: no provider serves "
            "bars that old, and every load of the definitions would enumerate their sessions"
        )
    return start


def _calendar(env: dict[str, str]) -> str:
    import exchange_calendars

    name = env.get("BACKFILL_CALENDAR", "").strip() or "XNYS"
    names = exchange_calendars.get_calendar_names(include_aliases=True)
    if name not in names:
        raise SettingsError(
            f"BACKFILL_CALENDAR={name!r} is not an exchange_calendars name (e.g. XNYS, XNAS, XLON, XHKG)"
        )
    return name


def _positive_int(env: dict[str, str], name: str, least: int = 1) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    # isdigit alone accepts "²" and other digits int() refuses
    if not (raw.isascii() and raw.isdigit()) or int(raw) < least:
        raise SettingsError(f"{name}={raw!r} must be a whole number of at least {least}")
    return int(raw)


def _store(env: dict[str, str]) -> tuple[str, str]:
    """BACKFILL_STORE and the Postgres schema; the URL itself is read by the resource (an EnvVar)."""
    store = env.get("BACKFILL_STORE", "duckdb").strip() or "duckdb"
    if store not in STORES:
        raise SettingsError(f"BACKFILL_STORE={store!r}: expected one of {', '.join(STORES)}")
    if store == "postgres" and not env.get("BACKFILL_POSTGRES_URL", "").strip():
        raise SettingsError(
            "BACKFILL_STORE='postgres' needs BACKFILL_POSTGRES_URL (postgresql://user@host/db)"
        )
    schema = env.get("BACKFILL_POSTGRES_SCHEMA", "public").strip() or "public"
    if not schema.replace("_", "").isalnum() or schema[0].isdigit():
        raise SettingsError(f"BACKFILL_POSTGRES_SCHEMA={schema!r}: letters, digits and _ only")
    return store, schema


def _files(env: dict[str, str], provider: str) -> FileSource | None:
    """The files provider's source from BACKFILL_FILES_*; an error names the variable."""
    if provider != "files":
        return None
    raw = {field: env.get(name, "").strip() for field, name in FILES_SETTINGS.items()}
    try:
        return FileSource(
            path=raw["path"],
            format=raw["format"] or None,
            columns=parse_columns(raw["columns"]),
            timezone=raw["timezone"] or None,
            adjustment=raw["adjustment"] or "raw",
        )
    except FileSourceError as exc:
        name = FILES_SETTINGS[exc.setting]
        raise SettingsError(f"{name}={raw[exc.setting]!r}: {exc}") from None


def _trading_hours(env: dict[str, str]) -> str:
    hours = env.get("BACKFILL_TRADING_HOURS", "").strip() or "regular"
    if hours not in TRADING_HOURS:
        raise SettingsError(f"BACKFILL_TRADING_HOURS={hours!r}: expected one of {', '.join(TRADING_HOURS)}")
    return hours


def _universe(env: dict[str, str], provider: str) -> tuple[str, ...]:
    if env.get("BACKFILL_TICKERS", "").strip():
        source, text = "BACKFILL_TICKERS", env["BACKFILL_TICKERS"]
    else:
        path = Path(env.get("BACKFILL_UNIVERSE_FILE") or DEFAULT_UNIVERSE_FILE)
        try:
            source, text = str(path), path.read_text()
        except OSError as exc:
            raise SettingsError(f"BACKFILL_UNIVERSE_FILE={str(path)!r} cannot be read: {exc}") from None
    try:
        tickers = parse_tickers(text, provider)  # upper-cased, in the provider's symbol grammar
    except ValueError as exc:
        raise SettingsError(f"{source}: {exc}") from None
    if not tickers:
        raise SettingsError(f"{source} names no tickers")
    return tuple(tickers)


def load_settings(env: dict[str, str] | None = None, today: dt.date | None = None) -> Settings:
    """Read and validate settings from `env` (default: os.environ)."""
    env = dict(os.environ if env is None else env)
    provider = env.get("BACKFILL_PROVIDER", "synthetic")
    if provider not in PROVIDERS:
        raise SettingsError(f"BACKFILL_PROVIDER={provider!r}: expected one of {', '.join(PROVIDERS)}")
    try:
        timeframe = parse_timeframe(env.get("BACKFILL_TIMEFRAME", "1Min"))
    except ValueError as exc:
        raise SettingsError(f"BACKFILL_TIMEFRAME: {exc}") from None
    store, schema = _store(env)
    return Settings(
        provider=provider,
        timeframe=timeframe,
        start_date=_start_date(
            env.get("BACKFILL_START_DATE", DEFAULT_START_DATE.isoformat()), today or dt.date.today()
        ),
        calendar=_calendar(env),
        universe=_universe(env, provider),
        duckdb_path=Path(env.get("BACKFILL_DUCKDB_PATH") or DEFAULT_DUCKDB_PATH),
        store=store,
        postgres_schema=schema,
        requests_per_minute=_positive_int(env, "BACKFILL_REQUESTS_PER_MINUTE"),
        max_concurrent_requests=_positive_int(env, "BACKFILL_MAX_CONCURRENT_REQUESTS"),
        budget_window_s=_positive_int(env, "BACKFILL_BUDGET_WINDOW_S"),
        memory_budget_mb=_positive_int(env, "BACKFILL_MEMORY_BUDGET_MB", least=MIN_MEMORY_MB) or 1024,
        partitions_per_run=_positive_int(env, "BACKFILL_PARTITIONS_PER_RUN"),
        files=_files(env, provider),
        trading_hours=_trading_hours(env),
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process, read once when definitions load."""
    return load_settings()
