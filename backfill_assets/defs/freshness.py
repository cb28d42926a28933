"""Keep `bars` fresh: one run for the latest session after its close, and a sensor that re-drives
missing or failed partitions of recent sessions with capped, backed-off attempts.

Both request ranged runs (the backfill daemon's range tags), so a session across every ticker is
one run and one provider request where the provider allows it.
"""

import datetime as dt
import os
from collections import Counter
from collections.abc import Mapping

import dagster as dg

from backfill_assets.defs.partitions import bars_partitions, calendar, session_partitions
from backfill_assets.freshness import (
    GapPlan,
    GapPolicy,
    NoSessionError,
    Range,
    after_close_cron,
    closed_session,
    due_sessions,
    dump_attempts,
    freshness_enabled,
    key_str,
    load_attempts,
    plan_gaps,
)
from backfill_assets.settings import TICKER_PARTITIONS, get_settings

BARS = dg.AssetKey("bars")
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
GAP_STATUSES = (None, dg.AssetPartitionStatus.FAILED)  # never materialized, or the last attempt failed
IN_FLIGHT = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
# On by default: a fresh deployment keeps bars current without a click (the synthetic default
# provider costs nothing; a real one spends about one request per session and batch of tickers).
ON = freshness_enabled(os.environ)


def run_tags(rectangle: Range) -> dict[str, str]:
    """Range tags of a run over sessions x tickers, plus the `provider` tag dagster.yaml limits."""
    first, last = rectangle
    return {RANGE_START: key_str(first), RANGE_END: key_str(last), "provider": get_settings().provider}


@dg.schedule(
    cron_schedule=after_close_cron(calendar),
    execution_timezone=calendar.tz,
    target=dg.AssetSelection.assets(BARS),
    default_status=dg.DefaultScheduleStatus.RUNNING if ON else dg.DefaultScheduleStatus.STOPPED,
    description="After each session's close: one run fetching that session for every known ticker.",
)
def bars_after_close_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    """Request the session that just closed for all tickers; weekends and holidays skip, naming the day."""
    now = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
    try:
        day = closed_session(calendar, now)
    except NoSessionError as exc:
        return dg.SkipReason(str(exc))
    tickers = context.instance.get_dynamic_partitions(TICKER_PARTITIONS)
    if not tickers:
        return dg.SkipReason(
            f"{day}: no tickers in `{TICKER_PARTITIONS}` yet (ticker_universe_sensor adds them)"
        )
    return dg.RunRequest(
        run_key=f"bars-{day.isoformat()}",  # one run per session, however often the tick is retried
        asset_selection=[BARS],
        tags=run_tags(((tickers[0], day), (tickers[-1], day))),
    )


def in_flight(instance: dg.DagsterInstance, order: Mapping[str, int]) -> list[tuple[str, str, int, int]]:
    """Boxes (first and last session, first and last ticker `order`) of `bars` runs not finished.
    With one planned event per run (DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS) their
    partitions have no in-progress status; without it this only repeats what the status says."""
    boxes = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT)):
        if run.asset_selection is not None and BARS not in run.asset_selection:
            continue
        first = run.tags.get(RANGE_START) or run.tags.get("dagster/partition")
        last = run.tags.get(RANGE_END) or first
        if not first or not last or "|" not in first or "|" not in last:
            continue
        (day0, ticker0), (day1, ticker1) = first.split("|", 1), last.split("|", 1)
        if ticker0 in order and ticker1 in order:
            boxes.append((day0, day1, order[ticker0], order[ticker1]))
    return boxes


def _skip_reason(
    plan: GapPlan, statuses: dict[str, dg.AssetPartitionStatus | None], window: str, policy: GapPolicy
) -> str:
    count = Counter(statuses.values())
    parts = [
        f"{count[dg.AssetPartitionStatus.MATERIALIZED]} materialized",
        f"{count[dg.AssetPartitionStatus.IN_PROGRESS]} in progress",
    ]
    if plan.waiting:
        key, until = min(plan.waiting.items(), key=lambda item: item[1])
        parts.append(f"{len(plan.waiting)} backing off (next: {key} at {until:%Y-%m-%d %H:%M %Z})")
    if plan.gave_up:
        shown = ", ".join(plan.gave_up[:5]) + (", ..." if len(plan.gave_up) > 5 else "")
        parts.append(f"{len(plan.gave_up)} given up after {policy.max_attempts} attempts ({shown})")
    return f"nothing to re-drive in {window}: " + "; ".join(parts)


def evaluate_gaps(context: dg.SensorEvaluationContext, now: dt.datetime) -> dg.SensorResult:
    """The gap sensor's tick at `now` (a parameter so tests can freeze time)."""
    policy = GapPolicy.from_env(os.environ)
    # Only sessions Dagster has a partition for at `now`: partition status (and the UI) ignore later
    # ones. With daily windows ending at midnight, a session's partition appears after that day ends.
    with dg.partition_loading_context(effective_dt=now):
        latest = dt.date.fromisoformat(session_partitions.get_last_partition_key() or "0001-01-01")
    sessions = due_sessions(calendar, now, policy, latest)
    tickers = context.instance.get_dynamic_partitions(TICKER_PARTITIONS)
    if not sessions or not tickers:
        what = f"no tickers in `{TICKER_PARTITIONS}`" if sessions else "no session closed long enough ago"
        return dg.SensorResult(skip_reason=f"{what}: nothing to check", cursor=context.cursor)
    keys = [(ticker, day) for day in sessions for ticker in tickers]
    names = [key_str(k) for k in keys]
    statuses = dict(context.instance.get_status_by_partition(BARS, names, bars_partitions) or {})
    position = {ticker: i for i, ticker in enumerate(tickers)}
    boxes = in_flight(context.instance, position)

    def running(ticker: str, day: dt.date) -> bool:
        return any(a <= str(day) <= b and i <= position[ticker] <= j for a, b, i, j in boxes)

    gaps = [
        k
        for k, name in zip(keys, names, strict=True)
        if statuses.get(name) in GAP_STATUSES and not running(*k)
    ]
    attempts = load_attempts(context.cursor)
    plan = plan_gaps(gaps, names, attempts, now, policy, (calendar.sessions, tickers))
    window = f"{len(names)} partitions ({sessions[0]}..{sessions[-1]} x {len(tickers)} tickers)"
    if not plan.requests:
        return dg.SensorResult(
            skip_reason=_skip_reason(plan, statuses, window, policy), cursor=dump_attempts(plan.attempts)
        )
    context.log.info(f"re-driving {len(gaps) - len(plan.waiting) - len(plan.gave_up)} gap(s) of {window}")
    requests = [
        dg.RunRequest(
            # Unique per tick: Dagster never reruns a sensor run_key, and attempt counts restart when
            # the cursor is reset. A re-evaluated tick finds its runs' partitions in progress instead.
            run_key=f"{key_str(first)}...{key_str(last)}@{now:%Y-%m-%dT%H:%M:%S}",
            asset_selection=[BARS],
            tags={**run_tags((first, last)), "gap_attempt": str(attempt)},
        )
        for (first, last), attempt in plan.requests
    ]
    return dg.SensorResult(run_requests=requests, cursor=dump_attempts(plan.attempts))


@dg.sensor(
    target=dg.AssetSelection.assets(BARS),
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING if ON else dg.DefaultSensorStatus.STOPPED,
    description="Re-drives missing or failed bars partitions of recent sessions (BACKFILL_GAP_* settings).",
)
def bars_gap_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    """Request missing or failed `bars` partitions of the last sessions, a few times with backoff."""
    return evaluate_gaps(context, dt.datetime.now(dt.UTC))
