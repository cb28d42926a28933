"""`bars` materialized through Dagster into real DuckDB files: shapes, counts, values, idempotency."""

import datetime as dt
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from backfill_assets.calendar import TradingCalendar
from backfill_assets.defs.bars import bars
from backfill_assets.defs.run_facts import run_facts
from backfill_assets.providers.base import BarRequest
from backfill_assets.providers.synthetic import SyntheticProvider
from backfill_assets.storage.duckdb_store import DuckDBBarStore
from backfill_assets.timeframes import TIMEFRAMES

D = dt.date
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
VALUES = ["ticker", "ts", "open", "high", "low", "close", "volume", "trade_count", "vwap"]


def materialize(instance: dg.DagsterInstance, resources: dict, **kwargs: object) -> dg.ExecuteInProcessResult:
    return dg.materialize([bars], instance=instance, resources=resources, raise_on_error=False, **kwargs)


def expected(
    synthetic: SyntheticProvider, tickers: tuple[str, ...], days: tuple[dt.date, ...]
) -> pd.DataFrame:
    frame = synthetic.fetch(BarRequest(tickers, days, TIMEFRAMES["1Min"])).bars
    return frame.sort_values(["ticker", "ts"], ignore_index=True)


def test_single_partition(
    instance: dg.DagsterInstance, resources: dict, db_path: Path, synthetic: SyntheticProvider
) -> None:
    result = materialize(instance, resources, partition_key="2024-07-03|AAPL")
    assert result.success
    stored = DuckDBBarStore(db_path).read_bars()
    assert len(stored) == 210  # early close at 13:00
    pd.testing.assert_frame_equal(stored[VALUES], expected(synthetic, ("AAPL",), (D(2024, 7, 3),))[VALUES])
    assert set(stored["provider"]) == {"synthetic"} and set(stored["timeframe"]) == {"1Min"}
    (mat,) = result.asset_materializations_for_node("bars")
    assert mat.partition == "2024-07-03|AAPL"
    assert mat.metadata["dagster/row_count"].value == 210
    assert mat.metadata["first_ts"].value == "2024-07-03T13:30:00+00:00"
    assert mat.metadata["last_ts"].value == "2024-07-03T16:59:00+00:00"
    facts = run_facts(instance, result.run_id, dg.AssetKey("bars"))
    assert facts["provider"] == "synthetic" and facts["duration_s"] >= 0 and facts["rows_total"] == 210


def test_one_ticker_over_dates(
    instance: dg.DagsterInstance,
    resources: dict,
    db_path: Path,
    synthetic: SyntheticProvider,
    calendar: TradingCalendar,
) -> None:
    tags = {RANGE_START: "2024-07-01|MSFT", RANGE_END: "2024-07-09|MSFT"}
    result = materialize(instance, resources, tags=tags)
    assert result.success
    days = tuple(calendar.sessions_in(D(2024, 7, 1), D(2024, 7, 9)))
    stored = DuckDBBarStore(db_path).read_bars()
    per_session = stored.groupby("session_date").size().to_dict()
    assert per_session == {d: 210 if d == D(2024, 7, 3) else 390 for d in days}  # 07-04 absent, 07-03 half
    pd.testing.assert_frame_equal(stored[VALUES], expected(synthetic, ("MSFT",), days)[VALUES])
    mats = result.asset_materializations_for_node("bars")
    assert sorted(m.partition for m in mats) == [f"{d.isoformat()}|MSFT" for d in days]
    rows = {m.partition: m.metadata["dagster/row_count"].value for m in mats}
    assert rows == {f"{d.isoformat()}|MSFT": 210 if d == D(2024, 7, 3) else 390 for d in days}
    assert run_facts(instance, result.run_id, dg.AssetKey("bars"))["provider_requests"] == 1


def test_one_date_over_tickers(
    instance: dg.DagsterInstance, resources: dict, db_path: Path, synthetic: SyntheticProvider
) -> None:
    result = materialize(
        instance, resources, tags={RANGE_START: "2024-03-04|AAPL", RANGE_END: "2024-03-04|NVDA"}
    )
    assert result.success
    stored = DuckDBBarStore(db_path).read_bars()
    assert stored.groupby("ticker").size().to_dict() == {"AAPL": 390, "MSFT": 390, "NVDA": 390}
    pd.testing.assert_frame_equal(
        stored[VALUES], expected(synthetic, ("AAPL", "MSFT", "NVDA"), (D(2024, 3, 4),))[VALUES]
    )


def test_materializing_twice_gives_identical_rows(
    instance: dg.DagsterInstance, resources: dict, db_path: Path
) -> None:
    tags = {RANGE_START: "2024-01-02|AAPL", RANGE_END: "2024-01-05|AAPL"}
    assert materialize(instance, resources, tags=tags).success
    first = DuckDBBarStore(db_path).read_bars()
    assert materialize(instance, resources, tags=tags).success
    second = DuckDBBarStore(db_path).read_bars()
    assert len(first) == 4 * 390
    pd.testing.assert_frame_equal(first.drop(columns="fetched_at"), second.drop(columns="fetched_at"))


@pytest.mark.parametrize("bad", ["aapl", "A'B", "DROP TABLE"])
def test_invalid_ticker_partition_fails_before_fetch_and_writes_nothing(
    instance: dg.DagsterInstance, resources: dict, db_path: Path, bad: str
) -> None:
    # The UI or API can add any string as a dynamic partition; the asset must refuse it.
    instance.add_dynamic_partitions("tickers", [bad])
    result = materialize(instance, resources, partition_key=f"2024-01-02|{bad}")
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert failure is not None and f"invalid ticker {bad!r}" in failure.to_string()
    assert not db_path.exists()


def run_event_bytes(instance: dg.DagsterInstance, run_id: str) -> int:
    records = instance.get_records_for_run(run_id, limit=100_000).records
    return sum(len(dg.serialize_value(r.event_log_entry)) for r in records)


def test_a_partitions_event_carries_its_own_facts_and_costs_the_same_at_any_run_size(
    instance: dg.DagsterInstance, resources: dict
) -> None:
    """Run-wide figures are recorded once per run: what a partition costs in the event log does not
    grow with the run (the whole run's JSON once rode on every partition's event)."""
    tickers = [f"T{i:03d}" for i in range(60)]
    instance.add_dynamic_partitions("tickers", tickers)
    per_partition = {}
    for n in (6, 60):
        tags = {RANGE_START: f"2024-03-04|{tickers[0]}", RANGE_END: f"2024-03-04|{tickers[n - 1]}"}
        result = materialize(instance, resources, tags=tags)
        assert result.success
        mats = result.asset_materializations_for_node("bars")
        assert len(mats) == n
        assert {tuple(sorted(m.metadata)) for m in mats} == {("dagster/row_count", "first_ts", "last_ts")}
        assert {m.metadata["dagster/row_count"].value for m in mats} == {390}
        facts = run_facts(instance, result.run_id, dg.AssetKey("bars"))
        assert facts["partitions"] == n and facts["rows_total"] == 390 * n
        per_partition[n] = run_event_bytes(instance, result.run_id) / n
    # the fixed part of a run (start, checks, run facts) spreads thinner over 60 partitions
    assert per_partition[60] <= per_partition[6]


@pytest.mark.parametrize("per_run", [False, True])
def test_planned_events_per_partition_by_default_and_per_run_with_dagsters_switch(
    instance: dg.DagsterInstance, resources: dict, monkeypatch: pytest.MonkeyPatch, per_run: bool
) -> None:
    """The opt-in that halves a partition's events (README, "What Dagster costs per partition"): with
    DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS a ranged run plans its partitions in one event;
    every partition still gets its own materialization."""
    monkeypatch.setenv("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "true" if per_run else "")
    tickers = [f"T{i:03d}" for i in range(6)]
    instance.add_dynamic_partitions("tickers", tickers)
    tags = {RANGE_START: f"2024-03-04|{tickers[0]}", RANGE_END: f"2024-03-05|{tickers[-1]}"}
    result = materialize(instance, resources, tags=tags)
    assert result.success
    planned = [
        r.event_log_entry.dagster_event
        for r in instance.get_records_for_run(result.run_id, limit=10_000).records
        if r.event_log_entry.dagster_event
        and r.event_log_entry.dagster_event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
    ]
    assert len(planned) == (1 if per_run else 12)
    if per_run:
        subset = planned[0].partitions_subset
        assert subset is not None and len(subset.get_partition_keys()) == 12
    assert len(result.asset_materializations_for_node("bars")) == 12
