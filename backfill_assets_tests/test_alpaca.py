"""Alpaca through alpaca-py and real Dagster runs, against the local Alpaca server on loopback."""

import datetime as dt
import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import psycopg
import pytest
from psycopg import sql

from backfill_assets.calendar import TradingCalendar
from backfill_assets.defs.bars import bars
from backfill_assets.defs.providers import AlpacaProviderResource
from backfill_assets.defs.resources import BarStoreResource
from backfill_assets.defs.run_facts import run_facts
from backfill_assets.providers.base import BarRequest
from backfill_assets.providers.budget import close_shared_budgets
from backfill_assets.providers.synthetic import SyntheticProvider
from backfill_assets.storage.duckdb_store import DuckDBBarStore
from backfill_assets.timeframes import TIMEFRAMES
from backfill_assets_tests.servers.alpaca import (
    NEW_YORK,
    AlpacaServer,
    AlpacaServerConfig,
    Bar,
    BarSource,
    _bar_json,
    _render,
    running_alpaca,
    synthetic_bar_source,
)

D = dt.date
KEY, SECRET = "PKTESTKEY0123456789", "SECRETtest0123456789abcdef"
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
VALUES = ["ticker", "ts", "open", "high", "low", "close", "volume", "trade_count", "vwap"]


@pytest.fixture
def alpaca() -> Iterator[AlpacaServer]:
    with running_alpaca(AlpacaServerConfig(api_key=KEY, secret_key=SECRET)) as server:
        yield server


def run_bars(
    instance: dg.DagsterInstance, server: AlpacaServer, db_path: Path, tags: dict[str, str], **config: object
) -> dg.ExecuteInProcessResult:
    provider = AlpacaProviderResource(
        **{"api_key": KEY, "secret_key": SECRET, "base_url": server.url, "max_backoff_s": 2.0, **config}
    )
    return dg.materialize(
        [bars],
        instance=instance,
        resources={"bar_provider": provider, "bar_store": BarStoreResource(duckdb_path=str(db_path))},
        tags=tags,
        raise_on_error=False,
    )


def expected(
    calendar: TradingCalendar, tickers: tuple[str, ...], days: tuple[dt.date, ...], tf: str
) -> pd.DataFrame:
    frame = SyntheticProvider(calendar).fetch(BarRequest(tickers, days, TIMEFRAMES[tf])).bars
    return frame.sort_values(["ticker", "ts"], ignore_index=True)


def test_minute_bars_paginate_across_symbols_and_match_the_server(
    instance: dg.DagsterInstance, alpaca: AlpacaServer, db_path: Path, calendar: TradingCalendar
) -> None:
    alpaca.configure(max_page_size=500)  # 3 tickers x 390 bars -> pages that cut through symbols
    result = run_bars(
        instance, alpaca, db_path, {RANGE_START: "2024-03-05|AAPL", RANGE_END: "2024-03-05|NVDA"}
    )
    assert result.success
    stored = DuckDBBarStore(db_path).read_bars()
    pd.testing.assert_frame_equal(
        stored[VALUES], expected(calendar, ("AAPL", "MSFT", "NVDA"), (D(2024, 3, 5),), "1Min")[VALUES]
    )
    assert alpaca.count(status=200, path="/v2/stocks/bars") == 3  # ceil(1170 / 500) pages, one request
    assert set(stored["provider"]) == {"alpaca"} and set(stored["adjustment"]) == {"raw"}
    facts = run_facts(instance, result.run_id, dg.AssetKey("bars"))
    assert facts["http_requests"] == 3 and facts["http_429"] == 0
    assert facts["feed"] == "iex" and facts["adjustment"] == "raw"


def test_daily_bars_keep_the_last_session_of_the_range(
    instance: dg.DagsterInstance, alpaca: AlpacaServer, db_path: Path, calendar: TradingCalendar
) -> None:
    tags = {RANGE_START: "2024-01-02|MSFT", RANGE_END: "2024-01-05|MSFT"}
    assert run_bars(instance, alpaca, db_path, tags, timeframe="1Day").success
    stored = DuckDBBarStore(db_path).read_bars()
    assert list(stored["session_date"]) == [D(2024, 1, 2), D(2024, 1, 3), D(2024, 1, 4), D(2024, 1, 5)]
    days = tuple(calendar.sessions_in(D(2024, 1, 2), D(2024, 1, 5)))
    pd.testing.assert_frame_equal(stored[VALUES], expected(calendar, ("MSFT",), days, "1Day")[VALUES])


def test_split_adjustment_is_applied_and_recorded(
    instance: dg.DagsterInstance, alpaca: AlpacaServer, db_path: Path, calendar: TradingCalendar
) -> None:
    alpaca.configure(splits={"NVDA": (D(2024, 6, 10), 10.0)})
    tags = {RANGE_START: "2024-06-06|NVDA", RANGE_END: "2024-06-11|NVDA"}
    assert run_bars(instance, alpaca, db_path, tags, timeframe="1Day", adjustment="split").success
    stored = DuckDBBarStore(db_path).read_bars()
    raw = expected(calendar, ("NVDA",), tuple(calendar.sessions_in(D(2024, 6, 6), D(2024, 6, 11))), "1Day")
    before = stored["session_date"] < D(2024, 6, 10)
    assert (
        stored.loc[before, "close"].to_numpy()
        == (raw.loc[before.to_numpy(), "close"] / 10).round(4).to_numpy()
    ).all()
    assert (stored.loc[~before, "close"].to_numpy() == raw.loc[~before.to_numpy(), "close"].to_numpy()).all()
    assert set(stored["adjustment"]) == {"split"}


@pytest.mark.faults
def test_unknown_symbol_fails_alone(
    instance: dg.DagsterInstance, alpaca: AlpacaServer, db_path: Path
) -> None:
    alpaca.configure(unknown_symbols=frozenset({"ZZZZ"}))
    instance.add_dynamic_partitions("tickers", ["ZZZZ", "TSLA"])
    result = run_bars(
        instance, alpaca, db_path, {RANGE_START: "2024-03-05|NVDA", RANGE_END: "2024-03-05|TSLA"}
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert failure is not None and "alpaca returned no bars for ZZZZ" in failure.to_string()
    materialized = instance.get_materialized_partitions(dg.AssetKey("bars"))
    assert materialized == {"2024-03-05|NVDA", "2024-03-05|TSLA"}
    assert DuckDBBarStore(db_path).read_bars().groupby("ticker").size().to_dict() == {
        "NVDA": 390,
        "TSLA": 390,
    }


def bad_print(symbol: str, **fields: float) -> BarSource:
    """The local server's bars with `symbol`'s 10:00 minute of every session altered: a bad print."""
    inner = synthetic_bar_source()

    def source(sym: str, timeframe: str, start: dt.datetime, end: dt.datetime) -> list[Bar]:
        bars = inner(sym, timeframe, start, end)
        if sym != symbol:
            return bars
        ten = [bar["t"].astimezone(NEW_YORK).time() == dt.time(10, 0) for bar in bars]
        # Without its pre-rendered "json" the server renders the altered dict.
        return [
            {k: v for k, v in (bar | fields).items() if k != "json"} if t else bar
            for bar, t in zip(bars, ten, strict=True)
        ]

    return source


@pytest.mark.faults
@pytest.mark.parametrize(
    ("fields", "rule"),
    [({"v": -5.0}, "negative or missing volume"), ({"c": float("nan")}, "missing or non-finite price")],
    ids=["negative-volume", "nan-close"],
)
def test_a_bad_print_fails_its_partition_alone_and_is_not_retried(
    instance: dg.DagsterInstance, alpaca: AlpacaServer, db_path: Path, fields: dict[str, float], rule: str
) -> None:
    alpaca.configure(bars=bad_print("MSFT", **fields))
    tags = {RANGE_START: "2024-03-05|AAPL", RANGE_END: "2024-03-05|NVDA"}
    result = run_bars(instance, alpaca, db_path, tags)
    assert not result.success
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert alpaca.count() == 1  # one request for the three tickers, never sent again
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert (
        failure is not None
        and f"1 partition(s) failed: {rule}: ticker MSFT ts 2024-03-05T15:00" in failure.to_string()
    )
    materialized = instance.get_materialized_partitions(dg.AssetKey("bars"))
    assert materialized == {"2024-03-05|AAPL", "2024-03-05|NVDA"}
    stored = DuckDBBarStore(db_path).read_bars()
    assert stored.groupby("ticker").size().to_dict() == {"AAPL": 390, "NVDA": 390}


@pytest.mark.faults
def test_bad_credentials_fail_once_clearly_and_write_nothing(
    instance: dg.DagsterInstance, alpaca: AlpacaServer, db_path: Path
) -> None:
    tags = {RANGE_START: "2024-03-05|AAPL", RANGE_END: "2024-03-05|MSFT"}
    result = run_bars(instance, alpaca, db_path, tags, secret_key="wrong-secret")
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert (
        failure is not None
        and "HTTP 401" in failure.to_string()
        and "AAPL,MSFT 2024-03-05" in failure.to_string()
    )
    assert alpaca.count() == 1  # permanent: no retry, no step retry
    assert not db_path.exists()


@pytest.mark.faults
@pytest.mark.parametrize(
    "faults",
    [[429, 429, 429], [500, 502, 503, 504], ["malformed", "truncated"], ["reset", "reset"], ["slow", "slow"]],
    ids=["429-burst", "5xx-burst", "malformed-json", "connection-reset", "timeouts"],
)
def test_transient_faults_are_absorbed(
    instance: dg.DagsterInstance, alpaca: AlpacaServer, db_path: Path, faults: list[object]
) -> None:
    alpaca.configure(faults=list(faults), slow_s=3.0)
    tags = {RANGE_START: "2024-03-05|AAPL", RANGE_END: "2024-03-07|AAPL"}
    result = run_bars(instance, alpaca, db_path, tags, timeout_s=1.0, max_retries=6)
    assert result.success
    assert len(DuckDBBarStore(db_path).read_bars()) == 3 * 390
    assert run_facts(instance, result.run_id, dg.AssetKey("bars"))["http_retries"] == len(faults)


@pytest.mark.faults
def test_a_day_long_retry_after_fails_the_run_at_once_by_name(
    instance: dg.DagsterInstance, alpaca: AlpacaServer, db_path: Path
) -> None:
    alpaca.configure(faults=[429], fault_wait_s=86_400)
    started = time.monotonic()
    result = run_bars(
        instance, alpaca, db_path, {RANGE_START: "2024-03-05|AAPL", RANGE_END: "2024-03-05|AAPL"}
    )
    assert not result.success and time.monotonic() - started < 60
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert failure is not None and "HTTP 429 asking to wait 86400 s, over the 300 s" in failure.to_string()
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert alpaca.count() == 1 and not db_path.exists()


@pytest.mark.faults
def test_a_long_wait_is_logged_in_the_run(
    instance: dg.DagsterInstance, alpaca: AlpacaServer, db_path: Path
) -> None:
    alpaca.configure(faults=[429], fault_wait_s=6)
    result = run_bars(
        instance, alpaca, db_path, {RANGE_START: "2024-03-05|AAPL", RANGE_END: "2024-03-05|AAPL"}
    )
    assert result.success
    logs = [e.message for e in instance.all_logs(result.run_id) if e.dagster_event is None]
    assert any(
        "alpaca: HTTP 429, the server asked for 6 s; waiting 6 s before retrying" in m for m in logs
    ), logs


@pytest.mark.faults
def test_thirty_percent_429s_are_absorbed(
    instance: dg.DagsterInstance, alpaca: AlpacaServer, db_path: Path
) -> None:
    alpaca.configure(fault_rate=0.3, fault_kind=429, max_page_size=390)
    tags = {RANGE_START: "2024-03-04|MSFT", RANGE_END: "2024-03-15|MSFT"}  # 10 sessions
    result = run_bars(instance, alpaca, db_path, tags, max_retries=10)
    assert result.success
    # One ticker over 10 whole exchange days: the outside-hours bars come too, and are counted.
    served = 10 * 390 + run_facts(instance, result.run_id, dg.AssetKey("bars"))["bars_dropped"]
    assert alpaca.count(status=429) > 0 and alpaca.count(status=200) == math.ceil(served / 390) > 10
    assert len(DuckDBBarStore(db_path).read_bars()) == 10 * 390


@pytest.mark.faults
def test_persistent_failure_trips_the_breaker_and_writes_nothing(
    instance: dg.DagsterInstance, alpaca: AlpacaServer, db_path: Path
) -> None:
    alpaca.configure(fault_rate=1.0, fault_kind="malformed")
    tags = {RANGE_START: "2024-03-05|AAPL", RANGE_END: "2024-03-05|AAPL"}
    result = run_bars(instance, alpaca, db_path, tags, max_retries=2, breaker_threshold=3)
    assert not result.success
    errors = " ".join(
        e.step_failure_data.error.to_string()
        for e in result.get_step_failure_events()
        if e.step_failure_data.error
    )
    assert "circuit open after 3 consecutive failed requests" in errors and "not JSON" in errors
    assert alpaca.count() == 3  # the open circuit is permanent for the run: no step retry sends more
    assert not db_path.exists()


def test_budget_lives_in_postgres_when_asked(
    instance: dg.DagsterInstance, alpaca: AlpacaServer, db_path: Path, postgres_url: str
) -> None:
    table = "ratelimit___budget_alpaca"  # one per provider, whatever the limit
    tags = {RANGE_START: "2024-03-05|AAPL", RANGE_END: "2024-03-07|AAPL"}
    alpaca.configure(max_page_size=600)  # 3 whole exchange days, ~1,760 bars: 3 pages
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
    try:
        result = run_bars(instance, alpaca, db_path, tags, budget_postgres_url=postgres_url)
        assert result.success
        with psycopg.connect(postgres_url) as conn:
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
        assert row is not None and row[0] == alpaca.count() == 3  # one token per HTTP request
    finally:
        close_shared_budgets()  # its leak thread would query the table dropped below
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


def test_a_newly_listed_symbol_is_empty_before_its_listing(
    instance: dg.DagsterInstance, alpaca: AlpacaServer, db_path: Path
) -> None:
    alpaca.configure(listed_from={"NVDA": D(2024, 3, 6)})
    result = run_bars(
        instance, alpaca, db_path, {RANGE_START: "2024-03-04|NVDA", RANGE_END: "2024-03-07|NVDA"}
    )
    assert result.success
    counts = DuckDBBarStore(db_path).read_bars().groupby("session_date").size().to_dict()
    assert counts == {D(2024, 3, 6): 390, D(2024, 3, 7): 390}
    facts = run_facts(instance, result.run_id, dg.AssetKey("bars"))
    assert facts["unlisted_partitions"] == 2
    assert facts["unlisted_examples"] == ["2024-03-04|NVDA", "2024-03-05|NVDA"]
    empty = {
        m.partition: m.metadata["dagster/row_count"].value
        for m in result.asset_materializations_for_node("bars")
    }
    assert empty["2024-03-04|NVDA"] == 0 and empty["2024-03-06|NVDA"] == 390


def test_budget_follows_an_instance_on_postgres(
    alpaca: AlpacaServer, db_path: Path, postgres_url: str
) -> None:
    name = f"backfill_instance_{os.getpid()}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        with dg.instance_for_test(overrides={"storage": {"postgres": {"postgres_url": url}}}) as instance:
            instance.add_dynamic_partitions("tickers", ["AAPL"])
            tags = {RANGE_START: "2024-03-05|AAPL", RANGE_END: "2024-03-05|AAPL"}
            assert run_bars(instance, alpaca, db_path, tags, requests_per_minute=777).success
            close_shared_budgets()
            instance.get_run_records()  # the instance itself is on Postgres
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*) FROM ratelimit___budget_alpaca").fetchone()
        assert (
            row is not None and row[0] == alpaca.count() == 1
        )  # the budget lived in the instance's database
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_the_servers_prerendered_bars_are_alpacas_json() -> None:
    # The server writes each synthetic bar's JSON once, by hand (rendering per page was its CPU
    # limit); it must be the text json.dumps makes of the bar, in every timeframe.
    source = synthetic_bar_source()
    start, end = dt.datetime(2024, 1, 2, tzinfo=dt.UTC), dt.datetime(2024, 1, 31, 23, 59, tzinfo=dt.UTC)
    for timeframe in ("1Min", "5Min", "1Hour", "1Day"):
        for bar in source("AAPL", timeframe, start, end):
            expected = json.dumps(_render(bar, 1.0), separators=(",", ":"))
            assert bar["json"] == expected
            assert _bar_json({k: v for k, v in bar.items() if k != "json"}, 1.0) == expected


def test_a_symbol_outside_alpacas_grammar_fails_by_name_without_a_request(
    instance: dg.DagsterInstance, alpaca: AlpacaServer, db_path: Path
) -> None:
    instance.add_dynamic_partitions("tickers", ["0700.HK", "BRK.B"])
    tags = {RANGE_START: "2024-03-05|0700.HK", RANGE_END: "2024-03-05|BRK.B"}
    result = run_bars(instance, alpaca, db_path, tags)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert failure is not None and "invalid ticker '0700.HK' for alpaca" in failure.to_string()
    assert instance.get_materialized_partitions(dg.AssetKey("bars")) == {"2024-03-05|BRK.B"}
    asked = {s for r in alpaca.records() for s in r.params.get("symbols", "").split(",") if s}
    assert asked == {"BRK.B"}
