"""The memory budget: chunk sizes follow it, RSS is reported, and a run over budget fails clearly."""

import datetime as dt
import hashlib
from collections.abc import Sequence
from pathlib import Path

import dagster as dg
import pytest

from backfill_assets.defs.bars import bars
from backfill_assets.defs.labels import label_asset
from backfill_assets.defs.providers import SyntheticProviderResource
from backfill_assets.defs.resources import BarStoreResource
from backfill_assets.defs.run_facts import run_facts
from backfill_assets.labels.config import LabelSet
from backfill_assets.labels.materialize import LABEL_BYTES_PER_BAR, label_chunks
from backfill_assets.memory import MemoryBudget, MemoryBudgetError, chunk_by_size, rss_mb
from backfill_assets.storage.duckdb_labels import DuckDBLabelStore
from backfill_assets.storage.duckdb_store import DuckDBBarStore

D = dt.date
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def materialize(
    instance: dg.DagsterInstance,
    db_path: Path,
    budget_mb: int,
    last: str = "2024-12-31",
    last_ticker: str = "AAPL",
    assets: Sequence[dg.AssetsDefinition] = (bars,),
) -> dg.ExecuteInProcessResult:
    store = BarStoreResource(duckdb_path=str(db_path), memory_budget_mb=budget_mb)
    return dg.materialize(
        assets,
        instance=instance,
        resources={"bar_provider": SyntheticProviderResource(), "bar_store": store},
        tags={RANGE_START: "2024-01-02|AAPL", RANGE_END: f"{last}|{last_ticker}"},
        raise_on_error=False,
    )


def test_chunks_follow_the_budget_and_rows_are_the_same(
    instance: dg.DagsterInstance, db_path: Path, tmp_path: Path
) -> None:
    assert materialize(instance, tmp_path / "warm.duckdb", 4096, last="2024-01-03").success  # load libraries
    baseline = rss_mb()
    tight = materialize(
        instance, db_path, int(baseline) + 60
    )  # ~45 MB: about 78k of the year's 98k bars per chunk
    roomy = materialize(instance, tmp_path / "roomy.duckdb", int(baseline) + 2000)
    assert tight.success and roomy.success
    tight_facts = run_facts(instance, tight.run_id, dg.AssetKey("bars"))
    roomy_facts = run_facts(instance, roomy.run_id, dg.AssetKey("bars"))
    assert tight_facts["chunks"] > 1 and roomy_facts["chunks"] == 1
    assert tight_facts["peak_rss_mb"] > 0
    assert tight_facts["memory_budget_mb"] == int(baseline) + 60
    a = DuckDBBarStore(db_path).read_bars().drop(columns="fetched_at")
    b = DuckDBBarStore(tmp_path / "roomy.duckdb").read_bars().drop(columns="fetched_at")
    assert len(a) == 252 * 390 - 3 * 180 and a.equals(b)  # 2024: 252 sessions, three half days


def test_a_run_of_many_chunks_reports_each_partition_as_its_chunk_lands(
    instance: dg.DagsterInstance, db_path: Path, tmp_path: Path
) -> None:
    assert materialize(instance, tmp_path / "warm.duckdb", 4096, last="2024-01-03").success
    warm = instance.get_latest_materialization_event(dg.AssetKey("bars"))  # from the warm-up's Output
    assert warm is not None and warm.asset_materialization is not None
    # 293k bars: one chunk would need ~235 MB above the baseline, the budget leaves 120
    tight = materialize(instance, db_path, int(rss_mb()) + 120, last_ticker="NVDA")
    assert tight.success and run_facts(instance, tight.run_id, dg.AssetKey("bars"))["chunks"] > 1
    events = [r.event_log_entry for r in instance.get_records_for_run(tight.run_id, limit=10_000).records]
    materialized = [e for e in events if e.dagster_event_type == dg.DagsterEventType.ASSET_MATERIALIZATION]
    keys = [e.asset_materialization.partition for e in materialized if e.asset_materialization]
    assert len(keys) == len(set(keys)) == 3 * 252
    first = materialized[0].asset_materialization
    assert first is not None and first.metadata["dagster/row_count"].value in (180, 390)
    assert first.tags is not None and first.tags.keys() == warm.asset_materialization.tags.keys()
    assert first.tags["dagster/data_version"] == hashlib.sha256(tight.run_id.encode()).hexdigest()
    # The first chunk's partitions are stored before the run's summary line, which follows the
    # last chunk's write: they did not wait for the whole run.
    summary = next(i for i, e in enumerate(events) if e.user_message.startswith("wrote "))
    assert events.index(materialized[0]) < summary
    checks = [
        e.dagster_event for e in events if e.dagster_event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ]
    assert len(checks) == 4 and all(c and c.asset_check_evaluation_data.passed for c in checks)


def test_a_label_asset_in_the_same_run_still_runs_after_many_chunks(
    instance: dg.DagsterInstance, db_path: Path, tmp_path: Path
) -> None:
    assert materialize(instance, tmp_path / "warm.duckdb", 4096, last="2024-01-03").success
    label_set = LabelSet("tb", "triple_barrier", horizon=30, span=20)
    labels = label_asset(label_set)
    # 293k bars: one chunk would need ~235 MB above the baseline, the budget leaves 120
    result = materialize(instance, db_path, int(rss_mb()) + 120, last_ticker="NVDA", assets=(bars, labels))
    assert result.success and run_facts(instance, result.run_id, dg.AssetKey("bars"))["chunks"] > 1
    assert len(result.asset_materializations_for_node("labels_tb")) == 3 * 252  # not skipped
    store = DuckDBBarStore(db_path)
    assert len(DuckDBLabelStore(store).read_labels(label_set.table)) == len(store.read_bars())


def test_a_budget_below_the_baseline_fails_clearly_and_writes_nothing(
    instance: dg.DagsterInstance, db_path: Path
) -> None:
    result = materialize(instance, db_path, 128)  # a Dagster run process alone holds more
    assert not result.success
    error = result.get_step_failure_events()[0].step_failure_data.error
    assert error is not None and "memory budget 128 MB is below this run's baseline RSS" in error.to_string()
    assert not db_path.exists()


def test_guard_pauses_then_fails_above_the_budget() -> None:
    readings = iter([900.0, 900.0, 900.0, 900.0])
    budget = MemoryBudget(512, pauses=3, pause_s=0.01, measure=lambda: next(readings))
    with pytest.raises(MemoryBudgetError, match="RSS 900 MB stays above the run's memory budget 512 MB"):
        budget.guard()
    recovering = iter([900.0, 400.0])
    MemoryBudget(512, pause_s=0.01, measure=lambda: next(recovering)).guard()  # memory came back: go on


def test_chunk_by_size_keeps_order_and_limits() -> None:
    items = [(i, 3) for i in range(7)]
    assert chunk_by_size(items, 9) == [[0, 1, 2], [3, 4, 5], [6]]
    assert chunk_by_size([("big", 50), ("x", 1)], 10) == [["big"], ["x"]]


def test_label_runs_chunk_by_ticker_history(instance: dg.DagsterInstance, db_path: Path) -> None:
    store = BarStoreResource(duckdb_path=str(db_path))
    for ticker in ("AAPL", "MSFT", "NVDA"):
        tags = {RANGE_START: f"2024-01-02|{ticker}", RANGE_END: f"2024-01-12|{ticker}"}
        resources = {"bar_provider": SyntheticProviderResource(), "bar_store": store}
        assert dg.materialize([bars], instance=instance, resources=resources, tags=tags).success
    labels = DuckDBLabelStore(store.build())
    slices = [(t, d) for t in ("AAPL", "MSFT", "NVDA") for d in (D(2024, 1, 5), D(2024, 1, 8))]
    # 1 MB free of a fixed 100 MB reading: 2,621 bars per chunk, one ticker's 1,950 bars (to 8 Jan) each
    tight = MemoryBudget(100, bytes_per_bar=LABEL_BYTES_PER_BAR, measure=lambda: 99.0)
    assert label_chunks(slices, labels, tight, D(2024, 1, 2)) == [slices[:2], slices[2:4], slices[4:]]
    roomy = MemoryBudget(4096, bytes_per_bar=LABEL_BYTES_PER_BAR, measure=lambda: 99.0)
    assert label_chunks(slices, labels, roomy, D(2024, 1, 2)) == [slices]
