"""Regular hours and session-anchored bars: what Alpaca serves (the whole exchange day, hourly bars at
hh:00 that hold pre-market trades) against what is stored (regular hours, buckets from the open).
alpaca-py against the local server, whose bars include sparse pre-market and after-hours minutes."""

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from backfill_assets import quality
from backfill_assets.anchored import aggregate
from backfill_assets.calendar import TradingCalendar, get_calendar
from backfill_assets.defs.run_facts import run_facts
from backfill_assets.providers.base import BarRequest, regular_hours
from backfill_assets.providers.synthetic import SyntheticProvider
from backfill_assets.storage.duckdb_store import DuckDBBarStore
from backfill_assets.timeframes import TIMEFRAMES
from backfill_assets_tests.servers.alpaca import AlpacaServer, AlpacaServerConfig, running_alpaca
from backfill_assets_tests.test_alpaca import KEY, RANGE_END, RANGE_START, SECRET, run_bars

D = dt.date
OHLCV = ["ticker", "ts", "open", "high", "low", "close", "volume", "trade_count"]
NEW_YORK = "America/New_York"


@pytest.fixture
def alpaca() -> Iterator[AlpacaServer]:
    with running_alpaca(AlpacaServerConfig(api_key=KEY, secret_key=SECRET)) as server:
        yield server


def served(calendar: TradingCalendar, tickers: tuple[str, ...], days: tuple[D, ...], tf: str) -> pd.DataFrame:
    """The server's bars: the whole exchange day, clock-aligned."""
    provider = SyntheticProvider(calendar, hours="extended", anchor="clock")
    return provider.fetch(BarRequest(tickers, days, TIMEFRAMES[tf])).bars


def regular(
    calendar: TradingCalendar, tickers: tuple[str, ...], days: tuple[D, ...], tf: str
) -> pd.DataFrame:
    frame = SyntheticProvider(calendar).fetch(BarRequest(tickers, days, TIMEFRAMES[tf])).bars
    return frame.sort_values(["ticker", "ts"], ignore_index=True)


def test_hourly_bars_are_built_from_regular_half_hours_anchored_at_the_open(
    instance: dg.DagsterInstance, alpaca: AlpacaServer, db_path: Path, calendar: TradingCalendar
) -> None:
    tags = {RANGE_START: "2024-07-02|AAPL", RANGE_END: "2024-07-03|MSFT"}  # 3 Jul closes at 13:00
    assert run_bars(instance, alpaca, db_path, tags, timeframe="1Hour").success
    assert {r.params["timeframe"] for r in alpaca.records()} == {"30Min"}
    stored = DuckDBBarStore(db_path).read_bars()
    days = (D(2024, 7, 2), D(2024, 7, 3))
    pd.testing.assert_frame_equal(stored[OHLCV], regular(calendar, ("AAPL", "MSFT"), days, "1Hour")[OHLCV])
    hours = stored["ts"].dt.tz_convert(NEW_YORK).dt.strftime("%H:%M")
    assert hours[stored["ticker"] == "AAPL"].tolist() == [
        "09:30", "10:30", "11:30", "12:30", "13:30", "14:30", "15:30", "09:30", "10:30", "11:30", "12:30",
    ]  # fmt: skip
    # Alpaca's own 09:00 bar holds pre-market trades: its open and volume are not the session's.
    alpacas = served(calendar, ("AAPL",), days[:1], "1Hour").set_index("ts")
    nine = alpacas.loc[pd.Timestamp("2024-07-02 09:00", tz=NEW_YORK)]
    first = stored.iloc[0]
    assert nine["open"] != first["open"] and nine["volume"] != first["volume"]
    minutes = regular(calendar, ("AAPL",), days[:1], "1Min")
    assert first["open"] == minutes["open"].iloc[0] and first["volume"] == minutes["volume"].iloc[:60].sum()


def test_a_run_across_tickers_asks_each_session_for_regular_hours_only(
    instance: dg.DagsterInstance, alpaca: AlpacaServer, db_path: Path, calendar: TradingCalendar
) -> None:
    tags = {RANGE_START: "2024-03-05|AAPL", RANGE_END: "2024-03-05|NVDA"}
    result = run_bars(instance, alpaca, db_path, tags)
    assert result.success
    (request,) = alpaca.records()
    window = [pd.Timestamp(request.params[k]).tz_convert(NEW_YORK) for k in ("start", "end")]
    assert [t.strftime("%H:%M:%S") for t in window] == ["09:30:00", "15:59:59"]  # Alpaca's end is inclusive
    assert "bars_dropped" not in run_facts(instance, result.run_id, dg.AssetKey("bars"))
    assert len(DuckDBBarStore(db_path).read_bars()) == 3 * 390


def test_a_long_range_of_one_ticker_fetches_whole_days_and_counts_what_it_drops(
    instance: dg.DagsterInstance, alpaca: AlpacaServer, db_path: Path, calendar: TradingCalendar
) -> None:
    tags = {RANGE_START: "2024-03-04|MSFT", RANGE_END: "2024-03-08|MSFT"}
    result = run_bars(instance, alpaca, db_path, tags)
    assert result.success
    days = tuple(calendar.sessions_in(D(2024, 3, 4), D(2024, 3, 8)))
    everything = served(calendar, ("MSFT",), days, "1Min")
    outside = len(everything) - len(regular_hours(everything, calendar, TIMEFRAMES["1Min"]))
    assert outside > 5 * 150  # sparse, but hundreds a day
    assert run_facts(instance, result.run_id, dg.AssetKey("bars"))["bars_dropped"] == outside
    warnings = [e.message for e in instance.all_logs(result.run_id) if e.level >= 30]
    assert any(f"{outside} bar(s) the provider sent lie outside regular hours" in w for w in warnings)
    assert len(DuckDBBarStore(db_path).read_bars()) == 5 * 390


@pytest.mark.parametrize(
    ("code", "day"),
    [("XNYS", D(2024, 3, 5)), ("XNYS", D(2024, 7, 3)), ("XHKG", D(2024, 3, 5))],
    ids=["full-day", "half-day", "lunch-break"],
)
@pytest.mark.parametrize("tf", ["5Min", "15Min", "30Min", "1Hour"])
def test_coarse_bars_are_anchored_at_each_span_start_and_counted_so(code: str, day: D, tf: str) -> None:
    calendar = get_calendar(code, D(2024, 1, 2))
    timeframe = TIMEFRAMES[tf]
    bars = SyntheticProvider(calendar).fetch(BarRequest(("AAPL",), (day,), timeframe)).bars
    minutes = SyntheticProvider(calendar).fetch(BarRequest(("AAPL",), (day,), TIMEFRAMES["1Min"])).bars
    built = aggregate(minutes, calendar, timeframe)
    pd.testing.assert_frame_equal(bars[OHLCV], built[OHLCV])
    assert np.allclose(bars["vwap"], built["vwap"], atol=1e-4)
    assert len(bars) == quality.bars_per_session(calendar, day, timeframe)
    starts = [start for start, _ in calendar.trading_spans(day)]
    width = pd.Timedelta(minutes=timeframe.minutes)
    for ts in bars["ts"]:
        span = max(s for s in starts if s <= ts)
        assert (ts - span) % width == pd.Timedelta(0), ts
