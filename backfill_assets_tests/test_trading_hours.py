"""Regular hours and session-anchored bars: what Alpaca serves (the whole exchange day, hourly bars at
hh:00 that hold pre-market trades) against what is stored (regular hours, buckets from the open).
alpaca-py against the local server, whose bars include sparse pre-market and after-hours minutes."""

import datetime as dt
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from backfill_assets import quality
from backfill_assets.anchored import aggregate
from backfill_assets.calendar import TradingCalendar, get_calendar
from backfill_assets.defs.bars import bars
from backfill_assets.defs.labels import label_asset
from backfill_assets.defs.providers import SyntheticProviderResource
from backfill_assets.defs.resources import BarStoreResource
from backfill_assets.defs.run_facts import run_facts
from backfill_assets.labels.config import LabelSet
from backfill_assets.providers.base import BarRequest, in_regular_hours, regular_hours
from backfill_assets.providers.synthetic import SyntheticProvider
from backfill_assets.storage.duckdb_store import DuckDBBarStore
from backfill_assets.storage.open import label_store
from backfill_assets.storage.postgres_store import PostgresStore
from backfill_assets.timeframes import TIMEFRAMES
from backfill_assets_tests import test_yahoo
from backfill_assets_tests.servers.alpaca import AlpacaServer, AlpacaServerConfig, running_alpaca
from backfill_assets_tests.test_alpaca import KEY, RANGE_END, RANGE_START, SECRET, run_bars
from backfill_assets_tests.test_alpaca import expected as regular  # regular hours, anchored
from backfill_assets_tests.test_label_staleness import from_scratch
from backfill_assets_tests.test_labels import SETS

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


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def both(
    request: pytest.FixtureRequest, db_path: Path
) -> tuple[BarStoreResource, DuckDBBarStore | PostgresStore]:
    """The store resource and the store, on DuckDB and on the real Postgres."""
    if request.param == "duckdb":
        return BarStoreResource(duckdb_path=str(db_path)), DuckDBBarStore(db_path)
    pg_store: PostgresStore = request.getfixturevalue("pg_store")
    resource = BarStoreResource(
        backend="postgres", postgres_url=pg_store.url, postgres_schema=pg_store.schema
    )
    return resource, pg_store


def test_extended_hours_keep_every_bar_flagged_and_labels_read_regular_hours(
    instance: dg.DagsterInstance,
    calendar: TradingCalendar,
    both: tuple[BarStoreResource, DuckDBBarStore | PostgresStore],
) -> None:
    resource, store = both
    tags = {RANGE_START: "2024-07-02|AAPL", RANGE_END: "2024-07-03|AAPL"}

    def materialize(hours: str, selection: list[Any]) -> dg.ExecuteInProcessResult:
        provider = SyntheticProviderResource(timeframe="5Min", trading_hours=hours)
        resources = {"bar_provider": provider, "bar_store": resource}
        return dg.materialize(selection, instance=instance, resources=resources, tags=tags)

    days = (D(2024, 7, 2), D(2024, 7, 3))
    label = label_asset(SETS[0])
    regular_run = materialize("regular", [bars, label])
    regular_labels = label_store(store).read_labels(SETS[0].table)
    result = materialize("extended", [bars, label])
    everything = (
        SyntheticProvider(calendar, hours="extended")
        .fetch(BarRequest(("AAPL",), days, TIMEFRAMES["5Min"]))
        .bars
    )
    flag = in_regular_hours(everything, calendar, TIMEFRAMES["5Min"])
    stored = store.read_bars(extended=True)
    pd.testing.assert_frame_equal(stored[OHLCV], everything[OHLCV].sort_values("ts", ignore_index=True))
    assert stored["regular_hours"].tolist() == flag.tolist() and 0 < (~flag).sum() < len(flag)
    pd.testing.assert_frame_equal(store.read_bars()[OHLCV], regular(calendar, ("AAPL",), days, "5Min")[OHLCV])
    hours = stored["ts"].dt.tz_convert(NEW_YORK).dt.strftime("%H:%M")
    full_day = (stored["session_date"] == D(2024, 7, 2)).to_numpy()  # 3 Jul's after-hours start at 13:00
    assert not hours[~stored["regular_hours"] & full_day].between("09:30", "15:59").any()
    facts = run_facts(instance, result.run_id, dg.AssetKey("bars"))
    assert facts["trading_hours"] == "extended" and facts["bars_outside_regular_hours"] == int((~flag).sum())
    # Labels read regular hours whatever is stored: the same values as before.
    pd.testing.assert_frame_equal(label_store(store).read_labels(SETS[0].table), regular_labels)
    assert regular_run.success and result.success
    # Back to regular hours: the partitions are replaced whole, outside-hours bars included.
    assert materialize("regular", [bars]).success
    assert store.read_bars(extended=True)["regular_hours"].all()


def test_extended_hourly_bars_from_alpaca_are_anchored_at_four_the_open_and_the_close(
    instance: dg.DagsterInstance, alpaca: AlpacaServer, db_path: Path, calendar: TradingCalendar
) -> None:
    tags = {RANGE_START: "2024-07-02|AAPL", RANGE_END: "2024-07-02|AAPL"}
    assert run_bars(instance, alpaca, db_path, tags, timeframe="1Hour", trading_hours="extended").success
    stored = DuckDBBarStore(db_path).read_bars(extended=True)
    hours = stored["ts"].dt.tz_convert(NEW_YORK).dt.strftime("%H:%M").tolist()
    assert hours == [
        "04:00", "05:00", "06:00", "07:00", "08:00", "09:00", "09:30", "10:30", "11:30", "12:30", "13:30",
        "14:30", "15:30", "16:00", "17:00", "18:00", "19:00",
    ]  # fmt: skip
    assert stored["regular_hours"].tolist() == 6 * [False] + 7 * [True] + 4 * [False]
    day = (D(2024, 7, 2),)
    expected = (
        SyntheticProvider(calendar, hours="extended")
        .fetch(BarRequest(("AAPL",), day, TIMEFRAMES["1Hour"]))
        .bars
    )
    pd.testing.assert_frame_equal(stored[OHLCV], expected[OHLCV])
    # The 09:00 bar is the pre-market half hour alone; regular hours equal the regular-hours run.
    half = (
        served(calendar, ("AAPL",), day, "30Min")
        .set_index("ts")
        .loc[pd.Timestamp("2024-07-02 09:00", tz=NEW_YORK)]
    )
    assert stored.iloc[5]["open"] == half["open"] and stored.iloc[5]["volume"] == half["volume"]
    pd.testing.assert_frame_equal(
        DuckDBBarStore(db_path).read_bars()[OHLCV], regular(calendar, ("AAPL",), day, "1Hour")[OHLCV]
    )


def test_extended_hours_through_yfinance_ask_for_pre_and_post_market(
    instance: dg.DagsterInstance, db_path: Path, calendar: TradingCalendar
) -> None:
    days = test_yahoo.recent_sessions(calendar, 2)
    test_yahoo.reset_yfinance_state()
    with test_yahoo.running_yahoo() as server:
        first, last = f"{days[0]}|AAPL", f"{days[-1]}|AAPL"
        result = test_yahoo.run_bars(
            instance, server, db_path, first, last, timeframe="1Hour", trading_hours="extended"
        )
        asked = {r.params.get("includePrePost") for r in test_yahoo.data_requests(server)}
    assert result.success and asked == {"true"}
    stored = DuckDBBarStore(db_path).read_bars(extended=True)
    expected = (
        SyntheticProvider(calendar, hours="extended")
        .fetch(BarRequest(("AAPL",), days, TIMEFRAMES["1Hour"]))
        .bars
    )
    pd.testing.assert_frame_equal(stored[OHLCV[:-1]], expected[OHLCV[:-1]])  # Yahoo has no trade counts
    assert (
        stored["regular_hours"].tolist() == in_regular_hours(expected, calendar, TIMEFRAMES["1Hour"]).tolist()
    )


def test_a_label_set_on_extended_hours_labels_every_bar_of_the_day(
    instance: dg.DagsterInstance,
    calendar: TradingCalendar,
    both: tuple[BarStoreResource, DuckDBBarStore | PostgresStore],
) -> None:
    resource, store = both
    extended_set = LabelSet(
        name="xtb", kind="triple_barrier", horizon=12, span=20, min_trgt=0.0001, trading_hours="extended"
    )
    assert extended_set.version("5Min") != LabelSet(
        **{**asdict(extended_set), "trading_hours": "regular"}
    ).version("5Min")
    tags = {RANGE_START: "2024-07-01|AAPL", RANGE_END: "2024-07-03|AAPL"}
    provider = SyntheticProviderResource(timeframe="5Min", trading_hours="extended")
    tf = TIMEFRAMES["5Min"]
    result = dg.materialize(
        [bars, label_asset(extended_set, tf), label_asset(SETS[0], tf)],
        instance=instance,
        resources={"bar_provider": provider, "bar_store": resource},
        tags=tags,
    )
    assert result.success
    everything = store.read_bars(extended=True)
    labels = label_store(store).read_labels(extended_set.table)
    assert labels["ts"].tolist() == everything["ts"].tolist()  # pre-market and after-hours rows too
    assert len(label_store(store).read_labels(SETS[0].table)) == int(everything["regular_hours"].sum())
    scratch = from_scratch(
        label_store(store, "extended"), extended_set, tf, D(2024, 7, 1), D(2024, 7, 3), calendar
    )  # type: ignore[arg-type]
    pd.testing.assert_frame_equal(labels, scratch)
