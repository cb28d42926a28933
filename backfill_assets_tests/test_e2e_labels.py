"""End to end through the daemon: labels follow bars by the label sensor alone. A bars backfill is
launched from the CLI; the sensor then labels every session; a corrected session makes it recompute
exactly the label partitions that session feeds, and the table ends equal to a from-scratch
computation, bit for bit."""

import datetime as dt
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from backfill_assets.calendar import TradingCalendar
from backfill_assets.labels.config import LabelSet
from backfill_assets.labels.materialize import halo_sessions, warmup_sessions
from backfill_assets.storage.duckdb_labels import DuckDBLabelStore
from backfill_assets.storage.duckdb_store import DuckDBBarStore
from backfill_assets.timeframes import TIMEFRAMES
from backfill_assets_tests.conftest import BIN, run
from backfill_assets_tests.test_e2e_daemon import running_dagster
from backfill_assets_tests.test_label_staleness import MINUTE_SET, corrected, from_scratch, window

pytestmark = pytest.mark.slow
LABELS = dg.AssetKey(["labels", MINUTE_SET.name])
UNFINISHED = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
              dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]  # fmt: skip
SENSOR_INTERVAL_S = 30  # Dagster's default for an AutomationConditionSensorDefinition


def label_sets_file(path: Path, label_set: LabelSet) -> Path:
    path.write_text(
        f"label_sets:\n  - name: {label_set.name}\n    kind: {label_set.kind}\n"
        f"    horizon: {label_set.horizon}\n    span: {label_set.span}\n    min_trgt: {label_set.min_trgt}\n"
    )
    return path


def label_events(instance: dg.DagsterInstance) -> Counter[str]:
    records = instance.fetch_materializations(LABELS, limit=10_000).records
    return Counter(str(r.partition_key) for r in records)


def wait_until(done: Callable[[], bool], what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout_s:.0f} s")
        time.sleep(2)


def settled(instance: dg.DagsterInstance, wanted: set[str], before: Counter[str]) -> Callable[[], bool]:
    """Every partition of `wanted` labelled again since `before`, and no run left to finish."""

    def check() -> bool:
        again = label_events(instance) - before
        return wanted <= set(again) and not instance.get_runs(dg.RunsFilter(statuses=UNFINISHED))

    return check


@pytest.mark.timeout(900)
def test_the_label_sensor_labels_a_backfill_and_recomputes_what_a_correction_feeds(
    project_env: dict[str, str], tmp_path: Path, db_path: Path, calendar: TradingCalendar
) -> None:
    sessions = calendar.sessions_in(dt.date(2024, 1, 2), dt.date(2024, 1, 11))  # 8 sessions
    keys = {f"{d}|AAPL" for d in sessions}
    env = project_env | {"BACKFILL_LABEL_SETS": str(label_sets_file(tmp_path / "sets.yaml", MINUTE_SET))}
    with running_dagster(env) as processes:
        env["DAGSTER_WEBSERVER_URL"] = processes.url
        command = [str(BIN / "backfill-assets"), "backfill", "--assets", "bars", "--tickers", "AAPL"]
        launched = run([*command, "--start", str(sessions[0]), "--end", str(sessions[-1]), "--wait"], env)
        assert launched.returncode == 0, launched.stdout + launched.stderr
        with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
            # Nothing but the sensor launches label runs here.
            wait_until(settled(instance, keys, Counter()), "every session labelled by the sensor", 420)
            bars, labels = DuckDBBarStore(db_path), DuckDBLabelStore(DuckDBBarStore(db_path))
            tf = TIMEFRAMES["1Min"]
            expected = from_scratch(labels, MINUTE_SET, tf, sessions[0], sessions[-1], calendar)
            pd.testing.assert_frame_equal(labels.read_labels(MINUTE_SET.table), expected, check_exact=True)
            # Give the sensor a tick past the last label run: the labels are current, nothing more runs.
            time.sleep(SENSOR_INTERVAL_S + 5)
            before = label_events(instance)
            assert set(before) == keys and not instance.get_runs(dg.RunsFilter(statuses=UNFINISHED))

            day = sessions[4]
            bars.replace_bars(corrected(bars, "AAPL", day), [("AAPL", day)])  # a vendor correction, stored
            instance.report_runless_asset_event(dg.AssetMaterialization("bars", partition=f"{day}|AAPL"))
            wanted = window(
                sessions, day, halo_sessions(MINUTE_SET, tf), warmup_sessions(MINUTE_SET, tf), "AAPL"
            )
            wait_until(settled(instance, wanted, before), f"{sorted(wanted)} recomputed by the sensor", 300)
            time.sleep(SENSOR_INTERVAL_S + 5)  # and nothing else requested on the next tick
            again = label_events(instance) - before
            assert set(again) == wanted and set(again.values()) == {1}, again
            assert not instance.get_runs(dg.RunsFilter(statuses=UNFINISHED))
            expected = from_scratch(labels, MINUTE_SET, tf, sessions[0], sessions[-1], calendar)
            pd.testing.assert_frame_equal(labels.read_labels(MINUTE_SET.table), expected, check_exact=True)
