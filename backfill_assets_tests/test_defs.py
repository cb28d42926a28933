"""The code location loads with the expected assets, partitions, pools, sensors and executor."""

import dagster as dg
import pytest

from backfill_assets.definitions import defs
from backfill_assets.defs.partitions import backfill_policy
from backfill_assets.settings import load_settings


@pytest.fixture(scope="module")
def repo() -> dg.Definitions:
    return defs()


def test_assets_and_groups(repo: dg.Definitions) -> None:
    graph = repo.resolve_asset_graph()
    labels = {"labels/enhanced_triple_barrier", "labels/vol_scaled_return", "labels/mfe_mae"}
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == {"bars"} | labels
    spec = graph.get(dg.AssetKey("bars"))
    assert spec.group_name == "raw_bars"
    assert spec.backfill_policy == dg.BackfillPolicy.single_run()
    for key in labels:
        label = graph.get(dg.AssetKey.from_user_string(key))
        assert label.group_name == "labels" and label.partitions_def == spec.partitions_def
        assert dg.AssetKey("bars") in label.parent_keys


def test_labels_follow_bars_by_default(repo: dg.Definitions) -> None:
    sensor = repo.resolve_sensor_def("label_recompute_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_bars_partitions_are_sessions_by_ticker(repo: dg.Definitions) -> None:
    partitions = repo.resolve_asset_graph().get(dg.AssetKey("bars")).partitions_def
    assert isinstance(partitions, dg.MultiPartitionsDefinition)
    dims = {d.name: d.partitions_def for d in partitions.partitions_defs}
    assert set(dims) == {"date", "ticker"}
    assert isinstance(dims["ticker"], dg.DynamicPartitionsDefinition) and dims["ticker"].name == "tickers"
    sessions = dims["date"].get_partition_keys()
    assert len([k for k in sessions if k.startswith("2024")]) == 252
    assert sessions[0] == "2024-01-02" and "2024-07-04" not in sessions


def test_bars_runs_in_its_provider_pool(repo: dg.Definitions) -> None:
    job = repo.resolve_implicit_global_asset_job_def()
    assert job.executor_def.name == "in_process"
    node = next(n for n in job.graph.node_dict.values() if n.name == "bars")
    assert node.definition.pool == "synthetic_api"


def test_universe_sensor_runs_by_default(repo: dg.Definitions) -> None:
    sensor = repo.resolve_sensor_def("ticker_universe_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_runs_batch_by_config() -> None:
    assert backfill_policy(None) == dg.BackfillPolicy.single_run()
    assert backfill_policy(25) == dg.BackfillPolicy.multi_run(max_partitions_per_run=25)
    assert load_settings({"BACKFILL_PARTITIONS_PER_RUN": "25"}).partitions_per_run == 25


def test_label_sets_are_one_subsettable_node_each_with_its_version(repo: dg.Definitions) -> None:
    job = repo.resolve_implicit_global_asset_job_def()
    assert {n.name for n in job.graph.node_dict.values()} == {"bars", "label_sets"}
    graph = repo.resolve_asset_graph()
    keys = [k for k in graph.get_all_asset_keys() if k.path[0] == "labels"]
    assert len({graph.get(k).code_version for k in keys}) == len(keys) == 3
    assert graph.get(keys[0]).assets_def.can_subset
