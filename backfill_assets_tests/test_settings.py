"""Settings and symbol validation: bad values are named in the error."""

import datetime as dt
import re
from pathlib import Path

import pytest

from backfill_assets.settings import DEFAULT_DUCKDB_PATH, SettingsError, load_settings
from backfill_assets.symbols import InvalidTickerError, parse_tickers, validate_ticker

TODAY = dt.date(2026, 11, 23)


@pytest.mark.parametrize("symbol", ["AAPL", "BRK.B", "BF-B", "A", "X1234567890ABCD"])
def test_validate_ticker_accepts_real_symbols(symbol: str) -> None:
    assert validate_ticker(symbol) == symbol


@pytest.mark.parametrize(
    "symbol",
    [
        "aapl",
        "AAPL'; DROP TABLE bars;--",
        "ÄPPL",
        "",
        "-ABC",
        "A B",
        "X" * 22,
        "AAPL|MSFT",
        "^",
        "EURUSD=XYZ",
    ],
)
def test_validate_ticker_rejects_and_names_bad_symbol(symbol: str) -> None:
    with pytest.raises(InvalidTickerError, match="invalid ticker"):
        validate_ticker(symbol)
    with pytest.raises(InvalidTickerError) as info:
        validate_ticker(symbol)
    assert repr(symbol) in str(info.value)


def test_parse_tickers_reads_universe_text() -> None:
    text = "# comment\nAAPL, MSFT\nNVDA # trailing\n\nAAPL\n"
    assert parse_tickers(text) == ["AAPL", "MSFT", "NVDA"]


def test_load_settings_defaults(tmp_path: Path) -> None:
    settings = load_settings({}, today=TODAY)
    assert settings.provider == "synthetic"
    assert settings.timeframe.name == "1Min"
    assert settings.start_date == dt.date(2024, 1, 2)
    assert settings.universe == ("AAPL", "AMZN", "GOOGL", "MSFT", "NVDA")
    assert settings.duckdb_path == DEFAULT_DUCKDB_PATH
    assert settings.pool == "synthetic_api"


def test_load_settings_universe_from_env_and_file(tmp_path: Path) -> None:
    assert load_settings({"BACKFILL_TICKERS": "TSLA,META"}, today=TODAY).universe == ("TSLA", "META")
    universe = tmp_path / "u.txt"
    universe.write_text("IBM\nORCL\n")
    assert load_settings({"BACKFILL_UNIVERSE_FILE": str(universe)}, today=TODAY).universe == ("IBM", "ORCL")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BACKFILL_TICKERS": "AAPL,bad;sym"}, "BACKFILL_TICKERS: invalid ticker 'bad;sym'"),
        ({"BACKFILL_TIMEFRAME": "2Min"}, "unknown timeframe '2Min'"),
        ({"BACKFILL_START_DATE": "2027-01-04"}, "BACKFILL_START_DATE='2027-01-04' is in the future"),
        ({"BACKFILL_START_DATE": "01/02/2024"}, "BACKFILL_START_DATE='01/02/2024' is not an ISO date"),
        ({"BACKFILL_PROVIDER": "bloomberg"}, "BACKFILL_PROVIDER='bloomberg'"),
        ({"BACKFILL_UNIVERSE_FILE": "/nonexistent/u.txt"}, "cannot be read"),
        ({"BACKFILL_REQUESTS_PER_MINUTE": "-5"}, "BACKFILL_REQUESTS_PER_MINUTE='-5' must be a whole number"),
        ({"BACKFILL_MAX_CONCURRENT_REQUESTS": "0"}, "BACKFILL_MAX_CONCURRENT_REQUESTS='0' must be"),
        ({"BACKFILL_CALENDAR": "FOO"}, "BACKFILL_CALENDAR='FOO' is not an exchange_calendars name"),
        ({"BACKFILL_MEMORY_BUDGET_MB": "²"}, "BACKFILL_MEMORY_BUDGET_MB='²' must be a whole number"),
        (
            {"BACKFILL_MEMORY_BUDGET_MB": "100"},
            "BACKFILL_MEMORY_BUDGET_MB='100' must be a whole number of at least 128",
        ),
        ({"BACKFILL_START_DATE": "1900-01-01"}, "BACKFILL_START_DATE='1900-01-01' is before 1970-01-02"),
    ],
)
def test_load_settings_rejects_bad_values(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(env, today=TODAY)
    assert message in str(info.value)


def test_budget_overrides_and_provider_pool() -> None:
    env = {"BACKFILL_PROVIDER": "alpaca", "BACKFILL_REQUESTS_PER_MINUTE": "120"}
    settings = load_settings(env, today=TODAY)
    assert settings.requests_per_minute == 120 and settings.max_concurrent_requests is None
    assert settings.pool == "alpaca_api"


@pytest.mark.parametrize(
    "provider, typed, stored",
    [
        ("yfinance", "aapl, ^gspc 0700.hk eurusd=x brk-b", ["AAPL", "^GSPC", "0700.HK", "EURUSD=X", "BRK-B"]),
        ("alpaca", " brk.b,aapl ", ["BRK.B", "AAPL"]),
        ("synthetic", "^GSPC, BRK.B", ["^GSPC", "BRK.B"]),
    ],
)
def test_input_is_upper_cased_into_the_providers_grammar(
    provider: str, typed: str, stored: list[str]
) -> None:
    assert parse_tickers(typed, provider) == stored
    settings = load_settings({"BACKFILL_PROVIDER": provider, "BACKFILL_TICKERS": typed}, today=TODAY)
    assert list(settings.universe) == stored


@pytest.mark.parametrize("symbol", ["^GSPC", "0700.HK", "EURUSD=X"])
def test_a_yahoo_symbol_is_refused_for_alpaca_by_name(symbol: str) -> None:
    with pytest.raises(
        SettingsError, match=rf"BACKFILL_TICKERS: invalid ticker '{re.escape(symbol)}' for alpaca"
    ):
        load_settings({"BACKFILL_PROVIDER": "alpaca", "BACKFILL_TICKERS": f"AAPL,{symbol}"}, today=TODAY)
    assert validate_ticker(symbol) == symbol  # a stored symbol of another deployment stays readable
    with pytest.raises(InvalidTickerError, match=rf"invalid ticker '{re.escape(symbol.lower())}':"):
        validate_ticker(symbol.lower())  # partition keys are canonical: never case-folded
