"""One asset per configured label set: `labels/<name>`, partitioned like `bars`, in group `labels`.

Each label partition (session D, ticker T) depends on bars of T from D through the sessions its
horizon can reach (the forward halo, a partition mapping on the date dimension). When bars for a
later session land, the earlier label partitions whose rows were pending are requested again by the
automation condition below (Dagster's automation sensor evaluates it).
"""

import time
from typing import Any

import dagster as dg

from backfill_assets.defs.checks import label_check_specs, label_checks
from backfill_assets.defs.partitions import (
    DATE,
    TICKER,
    backfill_policy,
    bars_partitions,
    calendar,
    slices_from_context,
)
from backfill_assets.defs.resources import BarStoreResource
from backfill_assets.defs.run_facts import add_partition_facts, hold_instance_connection, record_run_facts
from backfill_assets.labels.config import LabelSet, load_label_sets
from backfill_assets.labels.materialize import (
    LABEL_BYTES_PER_BAR,
    LabelReport,
    halo_sessions,
    label_chunks,
    materialize_labels,
    merge_reports,
    warmup_sessions,
)
from backfill_assets.memory import MemoryBudget, MemoryBudgetError, peak_rss_mb
from backfill_assets.settings import get_settings
from backfill_assets.symbols import InvalidTickerError

# Recompute a label partition when any bars partition it reads was updated (new later bars turn
# pending rows into labels), once nothing it depends on is still running.
RECOMPUTE = (
    dg.AutomationCondition.any_deps_updated()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("bars updated")


def bars_mapping(label_set: LabelSet) -> dg.PartitionMapping:
    halo = halo_sessions(label_set, get_settings().timeframe)
    dates = dg.TimeWindowPartitionMapping(
        start_offset=0, end_offset=halo, allow_nonexistent_upstream_partitions=True
    )
    return dg.MultiPartitionMapping(
        {
            DATE: dg.DimensionPartitionMapping(DATE, dates),
            TICKER: dg.DimensionPartitionMapping(TICKER, dg.IdentityPartitionMapping()),
        }
    )


def _run_facts(report: LabelReport, label_set: LabelSet) -> dict[str, Any]:
    """The run's figures, recorded once per run (each partition's event carries its own row count)."""
    return {
        "partitions": len(report.rows),
        "rows_total": report.total_rows,
        "pending_rows": report.pending,
        "bars_read": report.read_bars,
        "duration_s": round(report.duration_s, 3),
        "table": label_set.table,
    }


def label_asset(label_set: LabelSet) -> dg.AssetsDefinition:
    @dg.asset(
        name=label_set.name,
        key_prefix="labels",
        partitions_def=bars_partitions,
        deps=[dg.AssetDep("bars", partition_mapping=bars_mapping(label_set))],
        backfill_policy=backfill_policy(get_settings().partitions_per_run),
        group_name="labels",
        kinds={get_settings().store, "numba"},
        automation_condition=RECOMPUTE,
        description=f"{label_set.kind} labels (H={label_set.horizon} bars, span {label_set.span}); "
        f"table {label_set.table}. {label_set.description}",
        metadata={"label_set": dg.MetadataValue.json(label_set.__dict__)},
        check_specs=label_check_specs(label_set),
    )
    def _labels(context: dg.AssetExecutionContext, bar_store: BarStoreResource) -> dg.MaterializeResult:
        hold_instance_connection(context)
        try:
            slices = slices_from_context(context)
        except InvalidTickerError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        store = bar_store.labels()
        budget = MemoryBudget(float(bar_store.memory_budget_mb), bytes_per_bar=LABEL_BYTES_PER_BAR)
        reports: list[LabelReport] = []
        try:
            timeframe = get_settings().timeframe
            since = calendar.offset(min(day for _, day in slices), -warmup_sessions(label_set, timeframe))
            for chunk in label_chunks(slices, store, budget, since):
                reports.append(materialize_labels(label_set, chunk, store, calendar, timeframe))
                budget.guard()
        except MemoryBudgetError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        report = merge_reports(reports)
        context.log.info(
            f"{label_set.name}: {report.total_rows} rows for {len(report.rows)} partition(s) from "
            f"{report.read_bars} bars in {len(reports)} chunk(s), {report.pending} pending, "
            f"{report.duration_s:.2f} s"
        )
        started = time.monotonic()
        checks = label_checks(label_set, bar_store, report.rows.keys())
        record_run_facts(
            context,
            _run_facts(report, label_set)
            | {"chunks": len(reports), "memory_budget_mb": bar_store.memory_budget_mb,
               "peak_rss_mb": round(peak_rss_mb(), 1), "checks_s": round(time.monotonic() - started, 3)},
        )  # fmt: skip
        add_partition_facts(context, {key: {"dagster/row_count": n} for key, n in report.rows.items()})
        return dg.MaterializeResult(check_results=checks)

    return _labels


@dg.definitions
def label_definitions() -> dg.Definitions:
    recompute_sensor = dg.AutomationConditionSensorDefinition(
        "label_recompute_sensor",
        target=dg.AssetSelection.groups("labels"),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Evaluates the label assets' automation condition: labels follow new bars.",
    )
    assets = [label_asset(label_set) for label_set in load_label_sets()]
    return dg.Definitions(assets=assets, sensors=[recompute_sensor])
