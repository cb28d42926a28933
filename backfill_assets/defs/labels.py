"""One asset per configured label set: `labels/<name>`, partitioned like `bars`, in group `labels`.

All sets are one multi-asset that can be subset: a run of any of them reads its bars once and
computes every selected set from that read; each set stays its own asset, table and partitions.

A label partition (session D, ticker T) is a function of T's bars from W sessions before D (sigma's
warm-up) through the sessions its horizon can reach (the forward halo): that window is its partition
mapping on the date dimension. So new, changed or re-fetched bars of session D make the automation
condition below (Dagster's automation sensor evaluates it) request exactly the label partitions
whose values D feeds: the halo's sessions before D and the W sessions after it.

The set's parameters are its asset's code_version: editing them marks every partition stale in
Dagster, and the label table, stamped with the version that wrote it, refuses rows of another.
"""

import os
import time
from collections.abc import Iterator, Sequence
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
from backfill_assets.defs.run_facts import (
    EXAMPLES,
    add_partition_facts,
    hold_instance_connection,
    partition_key,
    partition_materializations,
    record_run_facts,
)
from backfill_assets.freshness import label_automation_enabled
from backfill_assets.labels.config import LabelSet, load_label_sets
from backfill_assets.labels.materialize import (
    LABEL_BYTES_PER_BAR,
    LabelReport,
    halo_sessions,
    label_chunks,
    materialize_label_sets,
    merge_reports,
    read_window,
    warmup_sessions,
)
from backfill_assets.memory import MemoryBudget, MemoryBudgetError, peak_rss_mb
from backfill_assets.settings import get_settings
from backfill_assets.storage.label_versions import LabelVersionError
from backfill_assets.symbols import InvalidTickerError
from backfill_assets.timeframes import Timeframe

# Recompute a label partition when any bars partition it reads was updated (new later bars turn
# pending rows into labels), once nothing it depends on is still running. The update is remembered
# until handled: a bars run's materializations are seen while the run is still in progress, and a
# bare any_deps_updated() would be false again on the next tick (the labels never requested).
RECOMPUTE = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("bars updated")


SUFFIX = {"regular": "", "extended": "_extended"}  # one multi-asset per bars relation read


def bars_mapping(label_set: LabelSet, timeframe: Timeframe) -> dg.PartitionMapping:
    """Label (D, T) reads bars (D - W .. D + halo, T)."""
    dates = dg.TimeWindowPartitionMapping(
        start_offset=-warmup_sessions(label_set, timeframe),
        end_offset=halo_sessions(label_set, timeframe),
        allow_nonexistent_upstream_partitions=True,
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
        "bars_read": report.read_bars,  # one read shared by the run's sets
        "duration_s": round(report.duration_s, 3),
        "table": label_set.table,
    }


def _spec(label_set: LabelSet, timeframe: Timeframe) -> dg.AssetSpec:
    version = label_set.version(timeframe.name)
    return dg.AssetSpec(
        dg.AssetKey(["labels", label_set.name]),
        deps=[dg.AssetDep("bars", partition_mapping=bars_mapping(label_set, timeframe))],
        group_name="labels",
        kinds={get_settings().store, "numba"},
        automation_condition=RECOMPUTE,
        code_version=version,
        description=f"{label_set.kind} labels (H={label_set.horizon} bars, span {label_set.span}); "
        f"table {label_set.table}, version {version}. {label_set.description}",
        metadata={"label_set": dg.MetadataValue.json(label_set.parameters(timeframe.name))},
        # A run whose partitions include some without bars materializes the others one by one,
        # then fails (see below); with that, the set yields no MaterializeResult.
        skippable=True,
    )


def label_assets(label_sets: Sequence[LabelSet], timeframe: Timeframe | None = None) -> dg.AssetsDefinition:
    """The assets of `label_sets` over bars of `timeframe` (default: the settings'), as one multi-asset."""
    tf = timeframe or get_settings().timeframe
    by_key = {dg.AssetKey(["labels", s.name]): s for s in label_sets}
    hours = label_sets[0].trading_hours  # one read of one bars relation feeds them all
    if any(s.trading_hours != hours for s in label_sets):
        raise ValueError("label_assets: label sets of one multi-asset must share trading_hours")

    @dg.multi_asset(
        name=f"labels_{label_sets[0].name}" if len(label_sets) == 1 else f"label_sets{SUFFIX[hours]}",
        specs=[_spec(s, tf) for s in label_sets],
        check_specs=[check for s in label_sets for check in label_check_specs(s)],
        partitions_def=bars_partitions,
        backfill_policy=backfill_policy(get_settings().partitions_per_run),
        can_subset=True,
    )
    def _labels(
        context: dg.AssetExecutionContext, bar_store: BarStoreResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetMaterialization | dg.AssetCheckResult]:
        hold_instance_connection(context)
        selected = [s for key, s in by_key.items() if key in context.selected_asset_keys]
        try:
            slices = slices_from_context(context)
        except InvalidTickerError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        store = bar_store.labels(hours)
        budget = MemoryBudget(float(bar_store.memory_budget_mb), bytes_per_bar=LABEL_BYTES_PER_BAR)
        chunks: list[dict[str, LabelReport]] = []
        try:
            since = calendar.offset(min(day for _, day in slices), -read_window(selected, tf)[0])
            for chunk in label_chunks(slices, store, budget, since):
                chunks.append(materialize_label_sets(selected, chunk, store, calendar, tf))
                budget.guard()
        except (MemoryBudgetError, LabelVersionError) as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        reports = {s.name: merge_reports([chunk[s.name] for chunk in chunks]) for s in selected}
        # One read feeds every set row for row: the partitions without bars are the same for all.
        rows = reports[selected[0].name].rows
        no_bars = sorted(partition_key(key) for key, n in rows.items() if not n)
        for label_set in selected:
            report = reports[label_set.name]
            yield from _finish(context, label_set, report, bar_store, tf, len(chunks), bool(no_bars))
        if no_bars:
            raise dg.Failure(
                description=f"{len(no_bars)} label partition(s) have no bars stored, e.g. "
                f"{', '.join(no_bars[:3])}: materialize bars for them first (a session before a "
                "ticker's first bar has no labels)",
                metadata={"partitions_without_bars": dg.MetadataValue.json(no_bars[:EXAMPLES])},
                allow_retries=False,
            )

    return _labels


def _finish(
    context: dg.AssetExecutionContext,
    label_set: LabelSet,
    report: LabelReport,
    bar_store: BarStoreResource,
    timeframe: Timeframe,
    chunks: int,
    partial: bool,
) -> Iterator[dg.MaterializeResult | dg.AssetMaterialization | dg.AssetCheckResult]:
    """One set's checks, run facts and materializations; `partial`: some partitions have no bars,
    so only those with rows are materialized, one event each."""
    key = dg.AssetKey(["labels", label_set.name])
    context.log.info(
        f"{label_set.name}: {report.total_rows} rows for {len(report.rows)} partition(s) from "
        f"{report.read_bars} bars in {chunks} chunk(s), {report.pending} pending, {report.duration_s:.2f} s"
    )
    landed = {slice_: n for slice_, n in report.rows.items() if n}
    started = time.monotonic()
    checks = label_checks(label_set, bar_store, landed.keys(), timeframe) if landed else []
    wanted = context.selected_asset_check_keys
    checks = [c for c in checks if dg.AssetCheckKey(key, c.check_name or "") in wanted]
    record_run_facts(
        context,
        _run_facts(report, label_set)
        | {"chunks": chunks, "memory_budget_mb": bar_store.memory_budget_mb,
           "peak_rss_mb": round(peak_rss_mb(), 1), "checks_s": round(time.monotonic() - started, 3),
           "partitions_without_bars": len(report.rows) - len(landed),
           "version": label_set.version(timeframe.name)},
        key,
    )  # fmt: skip
    facts = {slice_: {"dagster/row_count": n} for slice_, n in landed.items()}
    if not partial:
        add_partition_facts(context, facts, key)
        yield dg.MaterializeResult(asset_key=key, check_results=checks)
        return
    yield from partition_materializations(context, facts, key)
    yield from checks


def label_asset(label_set: LabelSet, timeframe: Timeframe | None = None) -> dg.AssetsDefinition:
    """One set alone (tests, benchmarks): the same multi-asset with one spec."""
    return label_assets([label_set], timeframe)


@dg.definitions
def label_definitions() -> dg.Definitions:
    recompute_sensor = dg.AutomationConditionSensorDefinition(
        "label_recompute_sensor",
        target=dg.AssetSelection.groups("labels"),
        default_status=dg.DefaultSensorStatus.RUNNING
        if label_automation_enabled(os.environ)
        else dg.DefaultSensorStatus.STOPPED,
        description="Evaluates the label assets' automation condition: labels follow new bars.",
    )
    sets = load_label_sets()
    groups = [[s for s in sets if s.trading_hours == hours] for hours in SUFFIX]
    return dg.Definitions(assets=[label_assets(g) for g in groups if g], sensors=[recompute_sensor])
