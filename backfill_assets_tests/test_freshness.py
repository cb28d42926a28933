"""The after-close schedule and the gap sensor, on real instances, real runs and real DuckDB files."""

import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from backfill_assets.calendar import TradingCalendar
from backfill_assets.definitions import defs
from backfill_assets.defs.bars import bars
from backfill_assets.defs.freshness import (
    RANGE_END,
    RANGE_START,
    bars_after_close_schedule,
    bars_gap_sensor,
    evaluate_gaps,
)
from backfill_assets.defs.partitions import bars_partitions
from backfill_assets.defs.providers import SyntheticProviderResource
from backfill_assets.defs.resources import BarStoreResource
from backfill_assets.freshness import (
    GapPolicy,
    after_close_cron,
    cover,
    due_sessions,
    freshness_enabled,
    load_attempts,
)
from backfill_assets.settings import SettingsError

D = dt.date
NY = ZoneInfo("America/New_York")
NOW = dt.datetime(2024, 7, 10, 12, tzinfo=dt.UTC)  # window: 07-02, 07-03 (half day), 07-05, 07-08, 07-09
TICKERS = ["AAPL", "MSFT", "NVDA"]


def resources(db_path: Path) -> dict[str, dg.ConfigurableResource]:
    return {
        "bar_provider": SyntheticProviderResource(),
        "bar_store": BarStoreResource(duckdb_path=str(db_path)),
    }


def run(instance: dg.DagsterInstance, db_path: Path, **kwargs: Any) -> bool:
    result = dg.materialize(
        [bars], instance=instance, resources=resources(db_path), raise_on_error=False, **kwargs
    )
    return result.success


def create_run(instance: dg.DagsterInstance, db_path: Path, tags: dict[str, str]) -> dg.DagsterRun:
    """A run as the daemon creates it (queued, partitions planned), not executed."""
    job = dg.Definitions(assets=[bars], resources=resources(db_path)).resolve_implicit_global_asset_job_def()
    return instance.create_run_for_job(
        job_def=job, asset_selection=frozenset([dg.AssetKey("bars")]), tags=tags
    )


def statuses(instance: dg.DagsterInstance, days: list[str]) -> dict[str, str | None]:
    keys = [f"{day}|{t}" for day in days for t in instance.get_dynamic_partitions("tickers")]
    found = instance.get_status_by_partition(dg.AssetKey("bars"), keys, bars_partitions) or {}
    return {k: s.value if s else None for k, s in found.items()}


def ranges(result: dg.SensorResult) -> list[tuple[str, str]]:
    return [(r.tags[RANGE_START], r.tags[RANGE_END]) for r in result.run_requests or []]


def tick(instance: dg.DagsterInstance, now: dt.datetime, cursor: str | None = None) -> dg.SensorResult:
    return evaluate_gaps(dg.build_sensor_context(instance=instance, cursor=cursor), now)


def test_schedule_fires_half_an_hour_after_the_close_by_default(calendar: TradingCalendar) -> None:
    assert after_close_cron(calendar) == "30 16 * * 1-5"
    assert bars_after_close_schedule.cron_schedule == "30 16 * * 1-5"
    assert bars_after_close_schedule.execution_timezone == "America/New_York"
    assert bars_after_close_schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert bars_gap_sensor.default_status == dg.DefaultSensorStatus.RUNNING
    location = defs()  # autoloaded from defs/; labels follow on their own
    for name in (bars_after_close_schedule.job_name, bars_gap_sensor.job_name):
        assert name is not None
        nodes = set(location.resolve_job_def(name).graph.node_dict)  # bars and its checks
        assert "bars" in nodes and not any(n.startswith("labels") for n in nodes)


def test_schedule_requests_one_run_for_the_session_across_tickers(
    instance: dg.DagsterInstance, db_path: Path
) -> None:
    context = dg.build_schedule_context(
        instance, scheduled_execution_time=dt.datetime(2024, 7, 3, 16, 30, tzinfo=NY)
    )
    request = bars_after_close_schedule(context)
    assert isinstance(request, dg.RunRequest)
    assert request.run_key == "bars-2024-07-03" and request.asset_selection == [dg.AssetKey("bars")]
    assert request.tags == {
        RANGE_START: "2024-07-03|AAPL",
        RANGE_END: "2024-07-03|NVDA",
        "provider": "synthetic",
    }
    assert run(instance, db_path, tags=request.tags)  # what the daemon launches: one run, three partitions
    assert set(statuses(instance, ["2024-07-03"]).values()) == {"MATERIALIZED"}
    assert set(statuses(instance, ["2024-07-02", "2024-07-05"]).values()) == {None}


@pytest.mark.parametrize(
    ("when", "reason"),
    [
        (dt.datetime(2024, 7, 4, 16, 30, tzinfo=NY), "2024-07-04 (Thursday) is not a XNYS session: July 4th"),
        (
            dt.datetime(2024, 7, 6, 16, 30, tzinfo=NY),
            "2024-07-06 (Saturday) is not a XNYS session: a weekend",
        ),
        (
            dt.datetime(2025, 1, 9, 16, 30, tzinfo=NY),
            "2025-01-09 (Thursday) is not a XNYS session: an exchange",
        ),
        (dt.datetime(2024, 7, 2, 15, 59, tzinfo=NY), "the 2024-07-02 session closes at 16:00 EDT"),
    ],
    ids=["holiday", "weekend", "closure", "before-close"],
)
def test_schedule_skips_days_without_a_closed_session(
    instance: dg.DagsterInstance, when: dt.datetime, reason: str
) -> None:
    result = bars_after_close_schedule(dg.build_schedule_context(instance, scheduled_execution_time=when))
    assert isinstance(result, dg.SkipReason) and reason in (result.skip_message or "")


def test_sensor_requests_exactly_the_missing_and_failed_partitions(
    instance: dg.DagsterInstance, db_path: Path
) -> None:
    assert run(instance, db_path, tags={RANGE_START: "2024-07-08|AAPL", RANGE_END: "2024-07-08|NVDA"})
    assert run(instance, db_path, partition_key="2024-07-09|AAPL")
    # 07-09 MSFT: a run whose worker died, as run monitoring records it (its partitions fail)
    instance.report_run_failed(create_run(instance, db_path, {"dagster/partition": "2024-07-09|MSFT"}))
    assert statuses(instance, ["2024-07-09"])["2024-07-09|MSFT"] == "FAILED"

    result = tick(instance, NOW)
    # the three older sessions are missing for every ticker: one rectangle; then 07-09 MSFT..NVDA
    assert ranges(result) == [("2024-07-02|AAPL", "2024-07-05|NVDA"), ("2024-07-09|MSFT", "2024-07-09|NVDA")]
    assert all(
        r.tags["provider"] == "synthetic" and r.tags["gap_attempt"] == "1" for r in result.run_requests or []
    )
    assert len(load_attempts(result.cursor)) == 11 and "2024-07-08|AAPL" not in load_attempts(result.cursor)

    for request in result.run_requests or []:
        assert run(instance, db_path, tags=request.tags)
    days = ["2024-07-02", "2024-07-03", "2024-07-05", "2024-07-08", "2024-07-09"]
    assert set(statuses(instance, days).values()) == {"MATERIALIZED"}
    later = tick(instance, NOW + dt.timedelta(hours=2), result.cursor)
    assert not later.run_requests and later.skip_reason is not None
    assert later.skip_reason.skip_message == (
        "nothing to re-drive in 15 partitions (2024-07-02..2024-07-09 x 3 tickers): "
        "15 materialized; 0 in progress"
    )


def test_sensor_backs_off_then_gives_up(
    instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKFILL_GAP_WINDOW_SESSIONS", "1")
    first = tick(instance, NOW)
    assert ranges(first) == [("2024-07-09|AAPL", "2024-07-09|NVDA")]
    again = tick(instance, NOW, first.cursor)  # the run is not even launched yet: no duplicate
    assert not again.run_requests and again.skip_reason is not None
    assert "3 backing off (next: 2024-07-09|AAPL at 2024-07-10 12:30 UTC)" in (
        again.skip_reason.skip_message or ""
    )
    assert not tick(instance, NOW + dt.timedelta(minutes=29), first.cursor).run_requests
    second = tick(instance, NOW + dt.timedelta(minutes=30), first.cursor)
    assert [r.tags["gap_attempt"] for r in second.run_requests or []] == ["2"]
    at = NOW + dt.timedelta(minutes=30 + 59)  # the backoff doubles: 60 minutes after the second attempt
    assert not tick(instance, at, second.cursor).run_requests
    third = tick(instance, at + dt.timedelta(minutes=1), second.cursor)
    assert [r.tags["gap_attempt"] for r in third.run_requests or []] == ["3"]
    done = tick(instance, at + dt.timedelta(hours=5), third.cursor)  # long after the last backoff
    assert not done.run_requests and done.skip_reason is not None
    assert "3 given up after 3 attempts (2024-07-09|AAPL, 2024-07-09|MSFT, 2024-07-09|NVDA)" in (
        done.skip_reason.skip_message or ""
    )


@pytest.mark.parametrize("planned_per_run", [False, True])
def test_sensor_leaves_partitions_in_progress_alone(
    instance: dg.DagsterInstance, db_path: Path, monkeypatch: pytest.MonkeyPatch, planned_per_run: bool
) -> None:
    """Also with one planned event per run, where Dagster shows the run's partitions as missing."""
    monkeypatch.setenv("BACKFILL_GAP_WINDOW_SESSIONS", "1")
    monkeypatch.setenv("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "true" if planned_per_run else "")
    create_run(instance, db_path, {RANGE_START: "2024-07-09|AAPL", RANGE_END: "2024-07-09|MSFT"})
    in_progress = [s for s in statuses(instance, ["2024-07-09"]).values() if s == "IN_PROGRESS"]
    assert len(in_progress) == (0 if planned_per_run else 2)
    assert ranges(tick(instance, NOW)) == [("2024-07-09|NVDA", "2024-07-09|NVDA")]


def test_sensor_re_drives_a_failed_run(
    instance: dg.DagsterInstance, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKFILL_GAP_WINDOW_SESSIONS", "1")
    assert run(instance, db_path, tags={RANGE_START: "2024-07-09|AAPL", RANGE_END: "2024-07-09|NVDA"})
    instance.add_dynamic_partitions("tickers", ["x"])  # not a valid symbol: its run fails, no step retry
    assert not run(instance, db_path, partition_key="2024-07-09|x")
    assert statuses(instance, ["2024-07-09"])["2024-07-09|x"] == "FAILED"
    assert ranges(tick(instance, NOW)) == [("2024-07-09|x", "2024-07-09|x")]


def test_sensor_covers_tickers_added_later(
    instance: dg.DagsterInstance, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKFILL_GAP_WINDOW_SESSIONS", "3")
    assert run(instance, db_path, tags={RANGE_START: "2024-07-05|AAPL", RANGE_END: "2024-07-09|NVDA"})
    assert not tick(instance, NOW).run_requests
    instance.add_dynamic_partitions("tickers", ["TSLA"])
    result = tick(instance, NOW)
    assert ranges(result) == [("2024-07-05|TSLA", "2024-07-09|TSLA")]  # one run along dates, not three
    assert run(instance, db_path, tags=(result.run_requests or [])[0].tags)


@pytest.mark.parametrize(
    ("now", "last"),
    [
        (dt.datetime(2024, 7, 9, 16, 59, tzinfo=NY), "2024-07-08"),  # 07-09 closed less than an hour ago
        (dt.datetime(2024, 7, 10, 0, 30, tzinfo=NY), "2024-07-09"),
    ],
)
def test_sensor_waits_an_hour_after_the_close(
    instance: dg.DagsterInstance, now: dt.datetime, last: str
) -> None:
    assert ranges(tick(instance, now))[-1][1] == f"{last}|NVDA"


def test_sensor_runs_on_the_wall_clock(instance: dg.DagsterInstance) -> None:
    result = bars_gap_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.SensorResult) and len(ranges(result)) == 1  # 5 sessions x 3 tickers


def test_due_sessions_wait_after_each_close_and_stop_at_the_latest_partition(
    calendar: TradingCalendar,
) -> None:
    policy = GapPolicy(window_sessions=3)
    assert due_sessions(calendar, NOW, policy, D(2024, 7, 9)) == [D(2024, 7, 5), D(2024, 7, 8), D(2024, 7, 9)]
    assert due_sessions(calendar, NOW, policy, D(2024, 7, 8)) == [D(2024, 7, 3), D(2024, 7, 5), D(2024, 7, 8)]
    close = dt.datetime(2024, 7, 9, 16, tzinfo=NY)
    early, late = close + dt.timedelta(minutes=59), close + dt.timedelta(hours=1)
    assert due_sessions(calendar, early, policy, D(2024, 7, 9))[-1] == D(2024, 7, 8)
    assert due_sessions(calendar, late, policy, D(2024, 7, 9))[-1] == D(2024, 7, 9)
    half_day = dt.datetime(2024, 7, 3, 14, tzinfo=NY)  # closed at 13:00
    assert due_sessions(calendar, half_day, policy, D(2024, 7, 3)) == [
        D(2024, 7, 1),
        D(2024, 7, 2),
        D(2024, 7, 3),
    ]


S = [D(2024, 7, 2), D(2024, 7, 3), D(2024, 7, 5)]


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({(t, d) for t in TICKERS for d in S}, [(("AAPL", S[0]), ("NVDA", S[2]))]),
        ({("AAPL", d) for d in S}, [(("AAPL", S[0]), ("AAPL", S[2]))]),
        (
            {("AAPL", S[0]), ("NVDA", S[0]), ("AAPL", S[1]), ("NVDA", S[1])},  # MSFT sits between
            [(("AAPL", S[0]), ("AAPL", S[1])), (("NVDA", S[0]), ("NVDA", S[1]))],
        ),
        (
            {("AAPL", S[0]), ("MSFT", S[0]), ("AAPL", S[2])},
            [(("AAPL", S[0]), ("MSFT", S[0])), (("AAPL", S[2]), ("AAPL", S[2]))],
        ),
    ],
    ids=["rectangle", "one-ticker", "split-tickers", "ragged"],
)
def test_cover_uses_few_rectangles_and_nothing_else(keys: set[tuple[str, D]], expected: list) -> None:
    assert cover(keys, S, TICKERS) == expected


def test_gap_policy_from_env() -> None:
    assert GapPolicy.from_env({}) == GapPolicy()
    policy = GapPolicy.from_env({"BACKFILL_GAP_MIN_AGE_HOURS": "0.5", "BACKFILL_GAP_MAX_ATTEMPTS": "5"})
    assert policy.min_age == dt.timedelta(minutes=30) and policy.max_attempts == 5
    with pytest.raises(SettingsError, match="BACKFILL_GAP_WINDOW_SESSIONS='2.5' must be a whole number"):
        GapPolicy.from_env({"BACKFILL_GAP_WINDOW_SESSIONS": "2.5"})
    with pytest.raises(SettingsError, match="BACKFILL_GAP_MIN_AGE_HOURS='soon' is not a number"):
        GapPolicy.from_env({"BACKFILL_GAP_MIN_AGE_HOURS": "soon"})


def test_freshness_switch() -> None:
    assert freshness_enabled({}) and freshness_enabled({"BACKFILL_FRESHNESS": "ON"})
    assert not freshness_enabled({"BACKFILL_FRESHNESS": "off"})
    with pytest.raises(SettingsError, match="BACKFILL_FRESHNESS='maybe': expected on or off"):
        freshness_enabled({"BACKFILL_FRESHNESS": "maybe"})
