"""Versioned label sets: parameters give the asset its code_version, a table never holds rows of two
parameter sets (refused by name on DuckDB and Postgres alike, rows untouched), `labels reset` drops one
to rebuild it, and a label partition without bars is never green."""

import dataclasses
import datetime as dt
import hashlib
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from backfill_assets.calendar import TradingCalendar
from backfill_assets.defs.bars import bars
from backfill_assets.defs.labels import label_asset
from backfill_assets.defs.providers import SyntheticProviderResource
from backfill_assets.defs.resources import BarStoreResource
from backfill_assets.labels.config import LabelSet, load_label_sets
from backfill_assets.labels.materialize import materialize_labels
from backfill_assets.storage.duckdb_labels import DuckDBLabelStore
from backfill_assets.storage.duckdb_store import DuckDBBarStore
from backfill_assets.storage.label_versions import LabelVersionError
from backfill_assets.storage.open import label_store
from backfill_assets.storage.postgres_store import PostgresStore
from backfill_assets.timeframes import TIMEFRAMES
from backfill_assets_tests.conftest import BIN, run
from backfill_assets_tests.store_writers import tagged_bars

D = dt.date
MINUTE = TIMEFRAMES["1Min"]
DAYS = [D(2024, 1, 2), D(2024, 1, 3), D(2024, 1, 4)]
EXCURSION = LabelSet("excursion", "mfe_mae", horizon=30, span=20, min_trgt=1e-4)


def digest(frame: pd.DataFrame) -> str:
    return hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()).hexdigest()


def test_parameters_are_the_code_version_and_the_name_is_not() -> None:
    versions = {label_asset(s, MINUTE).code_versions_by_key[dg.AssetKey(["labels", s.name])]: s
                for s in (EXCURSION, dataclasses.replace(EXCURSION, horizon=15),
                          dataclasses.replace(EXCURSION, scale_by_trgt=True))}  # fmt: skip
    assert len(versions) == 3
    assert EXCURSION.version("1Min") == dataclasses.replace(EXCURSION, description="edited").version("1Min")
    assert EXCURSION.version("1Min") != EXCURSION.version("5Min")


@pytest.mark.parametrize(
    ("change", "shown"),
    [({"horizon": 15}, "horizon: 30 -> 15"), ({"scale_by_trgt": True}, "scale_by_trgt: False -> True")],
)
def test_a_table_refuses_rows_of_other_parameters_on_both_stores(
    any_store: DuckDBBarStore | PostgresStore,
    calendar: TradingCalendar,
    change: dict[str, object],
    shown: str,
) -> None:
    slices = [("AAPL", d) for d in DAYS]
    any_store.replace_bars(tagged_bars(("AAPL",), tuple(DAYS), "synthetic"), slices)
    labels = label_store(any_store)
    materialize_labels(EXCURSION, slices, labels, calendar, MINUTE)
    before = digest(labels.read_labels(EXCURSION.table))
    edited = dataclasses.replace(EXCURSION, **change)  # scale_by_trgt adds two columns
    with pytest.raises(LabelVersionError) as refused:
        materialize_labels(edited, slices, label_store(any_store), calendar, MINUTE)
    message = str(refused.value)
    assert shown in message and "backfill-assets labels reset excursion --yes" in message
    assert digest(labels.read_labels(EXCURSION.table)) == before
    assert labels.drop_labels(EXCURSION.table) == 3 * 390
    report = materialize_labels(edited, slices, label_store(any_store), calendar, MINUTE)
    assert report.total_rows == 3 * 390  # rebuilt with the new parameters


def test_a_table_without_a_stamp_is_refused_not_adopted(
    store: DuckDBBarStore, calendar: TradingCalendar
) -> None:
    slices = [("AAPL", DAYS[0])]
    store.replace_bars(tagged_bars(("AAPL",), (DAYS[0],), "synthetic"), slices)
    labels = DuckDBLabelStore(store)
    materialize_labels(EXCURSION, slices, labels, calendar, MINUTE)
    with store.connect(read_only=False) as con:  # as a table written before label sets had versions
        con.execute("DELETE FROM label_versions")
    with pytest.raises(LabelVersionError, match="parameters are unknown"):
        materialize_labels(EXCURSION, slices, DuckDBLabelStore(store), calendar, MINUTE)


def test_the_label_run_fails_by_name_and_marks_its_version(
    instance: dg.DagsterInstance, db_path: Path
) -> None:
    resources = {"bar_store": BarStoreResource(duckdb_path=str(db_path)),
                 "bar_provider": SyntheticProviderResource()}  # fmt: skip
    key = f"{DAYS[0]}|AAPL"
    asset = label_asset(EXCURSION, MINUTE)
    assert dg.materialize([bars, asset], instance=instance, resources=resources, partition_key=key).success
    event = instance.get_latest_materialization_event(asset.key)
    assert event is not None and event.asset_materialization is not None
    assert event.asset_materialization.tags["dagster/code_version"] == EXCURSION.version("1Min")
    edited = label_asset(dataclasses.replace(EXCURSION, pt=2.0), MINUTE)
    result = dg.materialize([edited], instance=instance, resources=resources, partition_key=key,
                            raise_on_error=False)  # fmt: skip
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert "pt: 1.0 -> 2.0" in str(failure.step_failure_data.error)
    # no bars for NVDA that day: failed with the reason, not materialized (never green and empty)
    result = dg.materialize([asset], instance=instance, resources=resources,
                            partition_key=f"{DAYS[0]}|NVDA", raise_on_error=False)  # fmt: skip
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert "have no bars stored" in str(failure.step_failure_data.error)
    assert f"{DAYS[0]}|NVDA" not in instance.get_materialized_partitions(asset.key)


def test_labels_reset_drops_one_table_only_when_confirmed(project_env: dict[str, str], db_path: Path) -> None:
    name = load_label_sets()[-1].name
    assert run([str(BIN / "backfill-assets"), "tickers", "add", "AAPL"], project_env).returncode == 0
    materialize = [str(BIN / "dagster"), "asset", "materialize", "-m", "backfill_assets.definitions"]
    selection = ["--select", f"bars,labels/{name}", "--partition", f"{DAYS[0]}|AAPL"]
    done = run([*materialize, *selection], project_env)
    assert done.returncode == 0, done.stderr[-2000:]
    table = f"labels_{name}"
    store = DuckDBLabelStore(DuckDBBarStore(db_path))
    assert len(store.read_labels(table)) == 390
    refused = run([str(BIN / "backfill-assets"), "labels", "reset", name], project_env)
    assert refused.returncode == 2 and "add --yes" in refused.stderr
    unknown = run([str(BIN / "backfill-assets"), "labels", "reset", "nope", "--yes"], project_env)
    assert unknown.returncode == 2 and "unknown label set 'nope'" in unknown.stderr
    assert len(store.read_labels(table)) == 390
    reset = run([str(BIN / "backfill-assets"), "labels", "reset", name, "--yes"], project_env)
    assert reset.returncode == 0 and f"dropped {table} (390 rows)" in reset.stdout
    assert store.read_labels(table).empty
    assert len(DuckDBBarStore(db_path).read_bars()) == 390  # bars untouched
