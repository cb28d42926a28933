"""The whole-table sweep: every check over every stored row, on its own weekly schedule.

Runs check only the slices they wrote; this job judges the tables as they are (rows written by
hand, by an older version, or outside Dagster) and reports under the same check names, so the UI's
latest result for a check is either a run's slices or the sweep's whole table (metadata `scope`).
It holds the DuckDB file's shared lock while it scans, hence a weekend hour.
"""

import dagster as dg

from backfill_assets.defs.checks import BARS, as_evaluation, bar_checks, label_checks
from backfill_assets.defs.freshness import ON
from backfill_assets.defs.partitions import calendar
from backfill_assets.defs.resources import BarStoreResource
from backfill_assets.labels.config import load_label_sets


def _report(context: dg.OpExecutionContext, key: dg.AssetKey, results: list[dg.AssetCheckResult]) -> None:
    for result in results:
        # log_event handles AssetCheckEvaluation (a check reported from outside its asset's step);
        # its annotation in 1.13.27 lists only the older event types.
        context.log_event(as_evaluation(key, result))  # type: ignore[arg-type]


@dg.op(description="Every bars and label check over the whole tables.")
def sweep_tables(context: dg.OpExecutionContext, bar_store: BarStoreResource) -> None:
    _report(context, BARS, bar_checks(bar_store, None))
    for label_set in load_label_sets():
        _report(context, dg.AssetKey(["labels", label_set.name]), label_checks(label_set, bar_store, None))


@dg.job(description="Whole-table checks of bars and every label table (runs check their own slices).")
def table_sweep_job() -> None:
    sweep_tables()


table_sweep_schedule = dg.ScheduleDefinition(
    job=table_sweep_job,
    cron_schedule="0 6 * * 6",  # Saturday 06:00 at the exchange: no session, no daily update
    execution_timezone=calendar.tz,
    default_status=dg.DefaultScheduleStatus.RUNNING if ON else dg.DefaultScheduleStatus.STOPPED,
)
