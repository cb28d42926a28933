"""yfinance through real Dagster runs into DuckDB, against the local Yahoo server on loopback."""

import datetime as dt
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pandas as pd
import pytest

from backfill_assets.calendar import TradingCalendar
from backfill_assets.defs.bars import bars
from backfill_assets.defs.providers import YFinanceProviderResource
from backfill_assets.defs.resources import BarStoreResource
from backfill_assets.defs.run_facts import run_facts
from backfill_assets.providers.base import BarRequest
from backfill_assets.providers.synthetic import SyntheticProvider
from backfill_assets.storage.duckdb_store import DuckDBBarStore
from backfill_assets.timeframes import TIMEFRAMES
from backfill_assets_tests.servers.yahoo import (
    RequestRecord,
    YahooServer,
    reset_yfinance_state,
    running_yahoo,
)

D = dt.date
NEW_YORK = ZoneInfo("America/New_York")
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
VALUES = ["ticker", "ts", "open", "high", "low", "close", "volume"]


@pytest.fixture
def yahoo() -> Iterator[YahooServer]:
    reset_yfinance_state()  # yfinance memoizes answers and cookies process-wide
    with running_yahoo() as server:
        yield server


def recent_sessions(calendar: TradingCalendar, n: int) -> tuple[dt.date, ...]:
    """The last `n` sessions before today in New York: complete, and inside Yahoo's 30-day 1m window
    (the provider and the server both take "now" from the clock)."""
    today = dt.datetime.now(NEW_YORK).date()
    return tuple(day for day in calendar.sessions if day < today)[-n:]


def run_bars(
    instance: dg.DagsterInstance, server: YahooServer, db_path: Path, first: str, last: str, **config: Any
) -> dg.ExecuteInProcessResult:
    provider = YFinanceProviderResource(
        **{"base_url": server.url, "requests_per_minute": 6000, "max_backoff_s": 1.0, **config}
    )
    return dg.materialize(
        [bars],
        instance=instance,
        resources={"bar_provider": provider, "bar_store": BarStoreResource(duckdb_path=str(db_path))},
        tags={RANGE_START: first, RANGE_END: last},
        raise_on_error=False,
    )


def expected(
    calendar: TradingCalendar, tickers: tuple[str, ...], days: tuple[dt.date, ...], tf: str
) -> pd.DataFrame:
    frame = SyntheticProvider(calendar).fetch(BarRequest(tickers, days, TIMEFRAMES[tf])).bars
    return frame.sort_values(["ticker", "ts"], ignore_index=True)[VALUES]


def midnight(day: dt.date) -> int:
    return int(dt.datetime.combine(day, dt.time(), NEW_YORK).timestamp())


def data_requests(server: YahooServer) -> list[RequestRecord]:
    return [r for r in server.chart_requests() if "period1" in r.params]


def failure(result: dg.ExecuteInProcessResult) -> str:
    (event,) = result.get_step_failure_events()  # exactly one attempt: no step retry
    error = event.step_failure_data.error
    return error.to_string() if error else ""


def test_minute_bars_match_the_server_in_8_day_chunks(
    instance: dg.DagsterInstance, yahoo: YahooServer, db_path: Path, calendar: TradingCalendar
) -> None:
    days = recent_sessions(calendar, 7)  # 7 sessions always span 9 to 16 calendar days: 2 requests
    result = run_bars(instance, yahoo, db_path, f"{days[0]}|AAPL", f"{days[-1]}|MSFT")
    assert result.success
    stored = DuckDBBarStore(db_path).read_bars()
    pd.testing.assert_frame_equal(stored[VALUES], expected(calendar, ("AAPL", "MSFT"), days, "1Min"))
    assert sorted(set(stored["session_date"])) == list(days)
    requests = data_requests(yahoo)
    assert len(requests) == 4 and {r.params["interval"] for r in requests} == {"1m"}
    windows = sorted(
        (r.path.rsplit("/", 1)[1], int(r.params["period1"]), int(r.params["period2"])) for r in requests
    )
    assert all(p2 - p1 <= 8 * 86400 for _, p1, p2 in windows)
    assert [w[:2] for w in windows[::2]] == [("AAPL", midnight(days[0])), ("MSFT", midnight(days[0]))]
    assert [w[2] for w in windows[1::2]] == 2 * [midnight(days[-1] + dt.timedelta(days=1))]
    assert set(stored["provider"]) == {"yfinance"} and set(stored["adjustment"]) == {"split"}


def test_daily_bars_are_stamped_midnight_new_york_and_keep_the_last_session(
    instance: dg.DagsterInstance, yahoo: YahooServer, db_path: Path, calendar: TradingCalendar
) -> None:
    assert run_bars(instance, yahoo, db_path, "2024-01-02|MSFT", "2024-01-05|MSFT", timeframe="1Day").success
    stored = DuckDBBarStore(db_path).read_bars()
    days = tuple(calendar.sessions_in(D(2024, 1, 2), D(2024, 1, 5)))
    assert list(stored["session_date"]) == list(days)
    pd.testing.assert_frame_equal(stored[VALUES], expected(calendar, ("MSFT",), days, "1Day"))
    assert stored["ts"].iloc[-1] == pd.Timestamp("2024-01-05 00:00", tz=NEW_YORK)
    assert len(data_requests(yahoo)) == 1


@pytest.mark.parametrize("auto_adjust, adjustment", [(False, "split"), (True, "all")])
def test_split_adjustment_is_applied_and_recorded(
    instance: dg.DagsterInstance,
    yahoo: YahooServer,
    db_path: Path,
    calendar: TradingCalendar,
    auto_adjust: bool,
    adjustment: str,
) -> None:
    yahoo.configure(splits={"NVDA": (D(2024, 6, 10), 10.0)})
    tags = ("2024-06-06|NVDA", "2024-06-11|NVDA")
    assert run_bars(instance, yahoo, db_path, *tags, timeframe="1Day", auto_adjust=auto_adjust).success
    stored = DuckDBBarStore(db_path).read_bars()
    raw = expected(calendar, ("NVDA",), tuple(calendar.sessions_in(D(2024, 6, 6), D(2024, 6, 11))), "1Day")
    before = (stored["session_date"] < D(2024, 6, 10)).to_numpy()
    assert before.sum() == 2 and (~before).sum() == 2
    assert (stored["close"].to_numpy()[before] == raw["close"].to_numpy()[before] / 10).all()
    assert (stored["volume"].to_numpy()[before] == raw["volume"].to_numpy()[before] * 10).all()
    assert (stored["close"].to_numpy()[~before] == raw["close"].to_numpy()[~before]).all()
    assert set(stored["adjustment"]) == {adjustment}


@pytest.mark.faults
def test_unknown_symbol_fails_alone(instance: dg.DagsterInstance, yahoo: YahooServer, db_path: Path) -> None:
    yahoo.configure(unknown_symbols=frozenset({"ZZZZ"}))
    instance.add_dynamic_partitions("tickers", ["ZZZZ", "TSLA"])
    result = run_bars(instance, yahoo, db_path, "2024-03-05|NVDA", "2024-03-05|TSLA", timeframe="1Day")
    assert not result.success
    assert "yfinance has no data for ZZZZ (Yahoo: No data found, symbol may be delisted)" in failure(result)
    materialized = instance.get_materialized_partitions(dg.AssetKey("bars"))
    assert materialized == {"2024-03-05|NVDA", "2024-03-05|TSLA"}
    assert DuckDBBarStore(db_path).read_bars().groupby("ticker").size().to_dict() == {"NVDA": 1, "TSLA": 1}


def test_minute_bars_older_than_30_days_fail_before_any_request(
    instance: dg.DagsterInstance, yahoo: YahooServer, db_path: Path, calendar: TradingCalendar
) -> None:
    today = dt.datetime.now(NEW_YORK).date()
    day = calendar.sessions_in(today - dt.timedelta(days=50), today - dt.timedelta(days=40))[0]
    result = run_bars(instance, yahoo, db_path, f"{day}|AAPL", f"{day}|AAPL")
    assert not result.success
    assert "only for the last 30 days" in failure(result) and f"AAPL {day}..{day}" in failure(result)
    assert yahoo.records() == []
    assert not db_path.exists()


@pytest.mark.faults
@pytest.mark.parametrize("faults", [[429, 429], ["truncated"]], ids=["429-burst", "one-truncated-body"])
def test_transient_faults_are_absorbed(
    instance: dg.DagsterInstance, yahoo: YahooServer, db_path: Path, faults: list[object]
) -> None:
    yahoo.configure(faults=list(faults))
    result = run_bars(instance, yahoo, db_path, "2024-03-05|AAPL", "2024-03-07|AAPL", timeframe="1Day")
    assert result.success
    assert len(DuckDBBarStore(db_path).read_bars()) == 3
    assert run_facts(instance, result.run_id, dg.AssetKey("bars"))["http_429"] == faults.count(429)
    assert [r.fault for r in data_requests(yahoo)] == [*map(str, faults), None]


@pytest.mark.faults
@pytest.mark.parametrize("kind", ["malformed", "truncated"])
def test_persistent_unreadable_json_fails_clearly_and_writes_nothing(
    instance: dg.DagsterInstance, yahoo: YahooServer, db_path: Path, kind: str
) -> None:
    yahoo.configure(faults=[kind] * 10)
    result = run_bars(
        instance, yahoo, db_path, "2024-03-05|AAPL", "2024-03-05|AAPL", timeframe="1Day", max_retries=2
    )
    assert not result.success
    assert "3 unreadable chart answers in a row for AAPL 2024-03-05..2024-03-05 (1d)" in failure(result)
    assert len(data_requests(yahoo)) == 3
    assert not db_path.exists()


CHILD = """
import datetime as dt, sys
from backfill_assets.calendar import get_calendar
from backfill_assets.defs.providers import YFinanceProviderResource
from backfill_assets.providers.base import BarRequest
from backfill_assets.providers.yahoo import configure_yfinance
from backfill_assets.timeframes import TIMEFRAMES
cal = get_calendar("XNYS", dt.date(2024, 1, 2))
resource = YFinanceProviderResource(timeframe="1Day", base_url=sys.argv[1], budget_dir=sys.argv[2])
days = tuple(cal.sessions_in(dt.date(2024, 3, 4), dt.date(2024, 3, 8)))
result = resource.build(cal).fetch(BarRequest(("AAPL", "MSFT", "NVDA"), days, TIMEFRAMES["1Day"]))
print(len(result.bars), dict(result.failed), configure_yfinance())
"""


def test_parallel_processes_keep_separate_yfinance_caches(yahoo: YahooServer, tmp_path: Path) -> None:
    command = [sys.executable, "-c", CHILD, yahoo.url, str(tmp_path / "budgets")]
    pipe = subprocess.PIPE
    children = [subprocess.Popen(command, stdout=pipe, stderr=pipe, text=True) for _ in range(2)]
    outputs = [child.communicate(timeout=120) for child in children]
    assert [child.returncode for child in children] == [0, 0], outputs
    assert all("database is locked" not in err for _, err in outputs)
    rows, failed, caches = zip(*(out.split() for out, _ in outputs), strict=True)
    assert rows == ("15", "15") and failed == ("{}", "{}")
    assert len(set(caches)) == 2


def test_yahoo_symbols_of_indices_foreign_listings_and_currencies_land(
    instance: dg.DagsterInstance, yahoo: YahooServer, db_path: Path
) -> None:
    symbols = ["^GSPC", "0700.HK", "EURUSD=X", "BRK-B"]
    instance.add_dynamic_partitions("tickers", symbols)
    result = run_bars(instance, yahoo, db_path, "2024-03-05|^GSPC", "2024-03-05|BRK-B", timeframe="1Day")
    assert result.success, failure(result)
    assert DuckDBBarStore(db_path).read_bars().groupby("ticker").size().to_dict() == dict.fromkeys(symbols, 1)
    charted = {urllib.parse.unquote(r.path.rsplit("/", 1)[1]) for r in yahoo.chart_requests()}
    assert set(symbols) <= charted
