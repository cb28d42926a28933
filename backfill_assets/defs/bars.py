"""The `bars` asset: OHLCV per (session, ticker) partition, fetched in bulk, replaced atomically."""

import time
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg

from backfill_assets.chunked import ingest_chunks, merge, plan_chunks
from backfill_assets.defs.checks import BAR_CHECKS, bar_checks
from backfill_assets.defs.partitions import backfill_policy, bars_partitions, calendar, slices_from_context
from backfill_assets.defs.providers import (
    AlpacaProviderResource,
    BarProviderResource,
    HttpProviderResource,
)
from backfill_assets.defs.resources import BarStoreResource
from backfill_assets.defs.run_facts import (
    EXAMPLES,
    add_partition_facts,
    hold_instance_connection,
    partition_facts,
    partition_key,
    partition_materializations,
    record_run_facts,
    streams_materializations,
)
from backfill_assets.ingest import IngestReport
from backfill_assets.memory import peak_rss_mb
from backfill_assets.permanence import why_permanent
from backfill_assets.settings import get_settings
from backfill_assets.storage.base import Slice
from backfill_assets.symbols import InvalidTickerError


def _partition_facts(report: IngestReport) -> dict[Slice, dict[str, Any]]:
    spans, sources = report.spans, report.sources
    return {key: partition_facts(n, spans.get(key), sources.get(key)) for key, n in report.rows.items()}


def _run_facts(report: IngestReport, where: str, provider: BarProviderResource) -> dict[str, Any]:
    """The run's figures, recorded once per run (never on each partition's event)."""
    metadata: dict[str, Any] = {
        "partitions": len(report.rows),
        "rows_total": report.total_rows,
        "provider": report.provider,
        "timeframe": report.timeframe,
        "adjustment": report.adjustment,
        "provider_requests": report.requests,
        "duration_s": round(report.duration_s, 3),
        "store": where,
    }
    if isinstance(provider, AlpacaProviderResource):
        metadata["feed"] = provider.feed  # rows record provider and adjustment; the feed is here
    if isinstance(provider, HttpProviderResource) and provider.stats is not None:
        stats = provider.stats
        metadata |= {
            "http_requests": stats.requests,
            "http_429": stats.throttled,
            "http_retries": stats.retried,
            "http_wait_s": round(stats.waited_s, 2),
        }
    if report.dropped:
        metadata["bars_dropped"] = report.dropped
    if provider.trading_hours == "extended":
        metadata |= {"trading_hours": "extended", "bars_outside_regular_hours": report.outside}
    if report.unlisted:
        unlisted = sorted(map(partition_key, report.unlisted))
        metadata["unlisted_partitions"] = len(unlisted)
        metadata["unlisted_examples"] = dg.MetadataValue.json(unlisted[:EXAMPLES])
    return metadata


@dg.asset(
    partitions_def=bars_partitions,
    # One run per value of the selection's smaller dimension (Dagster's rule for multi-partitions);
    # single_run also lets `dagster asset materialize --partition-range` run ranges in one go.
    backfill_policy=backfill_policy(get_settings().partitions_per_run),
    pool=get_settings().pool,
    group_name="raw_bars",
    kinds={get_settings().store},
    tags={"provider": get_settings().provider},
    check_specs=BAR_CHECKS,
    # A run of many chunks reports each chunk's partitions as they land instead of one Output at the
    # end (see run_facts.streams_materializations); with that, the asset yields no Output.
    output_required=False,
    # Transient provider trouble (after the HTTP layer's own retries) gets a few more chances;
    # permanent errors raise dg.Failure(allow_retries=False).
    retry_policy=dg.RetryPolicy(
        max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
    ),
)
def bars(
    context: dg.AssetExecutionContext, bar_provider: BarProviderResource, bar_store: BarStoreResource
) -> Iterator[dg.MaterializeResult | dg.AssetMaterialization | dg.AssetCheckResult]:
    """OHLCV bars of one ticker over one trading session, at the configured timeframe.

    Table `bars`, unique on (ticker, ts); ts is the bar start in UTC. A run replaces exactly its
    (ticker, session) slices in one transaction, so re-materializing gives the same rows. Tickers the
    provider does not know fail alone: the other partitions of the run land and show materialized.
    """
    hold_instance_connection(context)
    try:
        slices = slices_from_context(context)
    except InvalidTickerError as exc:  # a bad key stays bad: no step retry
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    store = bar_store.build()
    provider = bar_provider.build(calendar)
    budget = bar_store.memory_budget()
    timeframe = bar_provider.parsed_timeframe()
    started = time.monotonic()
    reports: list[IngestReport] = []
    stream = False
    try:
        chunks = plan_chunks(slices, timeframe, budget)
        stream = streams_materializations(context, len(chunks))
        for chunk in ingest_chunks(chunks, provider, store, calendar, timeframe, budget):
            reports.append(chunk)
            if stream:
                yield from partition_materializations(context, _partition_facts(chunk))
    except Exception as exc:
        landed = merge(reports, started) if reports else None
        if landed is not None:
            if not stream:
                yield from partition_materializations(context, _partition_facts(landed))
            record_run_facts(context, _run_facts(landed, store.describe(), bar_provider))
        if (why := why_permanent(exc)) is not None:  # a step retry would only repeat it
            context.log.error(f"not retried ({why}): {type(exc).__name__}: {exc}")
            raise dg.Failure(description=f"{type(exc).__name__}: {exc}", allow_retries=False) from exc
        raise
    report = merge(reports, started)
    context.log.info(
        f"wrote {report.total_rows} bars for {len(report.rows)} partition(s) in {report.requests} "
        f"provider request(s), {len(chunks)} chunk(s), {report.duration_s:.2f} s"
    )
    if report.dropped:
        context.log.warning(
            f"{report.dropped} bar(s) the provider sent lie outside regular hours or the requested "
            "sessions: not stored, see `bars_dropped`"
        )
    if report.unlisted:
        context.log.warning(
            f"{len(report.unlisted)} partition(s) precede their ticker's first bar (not listed yet): "
            "stored empty, see `unlisted_partitions`"
        )
    memory = {"memory_budget_mb": bar_store.memory_budget_mb, "peak_rss_mb": round(peak_rss_mb(), 1)}
    facts = _run_facts(report, store.describe(), bar_provider) | {"chunks": len(chunks)} | memory
    if not report.failed:
        checked = time.monotonic()
        checks = bar_checks(bar_store, report.rows.keys())
        record_run_facts(context, facts | {"checks_s": round(time.monotonic() - checked, 3)})
        if stream:
            yield from checks
            return
        add_partition_facts(context, _partition_facts(report))
        yield dg.MaterializeResult(check_results=checks)
        return
    record_run_facts(context, facts)
    if not stream:
        yield from partition_materializations(context, _partition_facts(report))
    raise failure(report.failed)


def failure(failed: Mapping[Slice, str]) -> dg.Failure:
    """The run's failed partitions, each with its reason, at most EXAMPLES of them named (a schedule
    run of 500 tickers may fail 500 partitions: the failure event stays small)."""
    reasons = sorted(set(failed.values()))
    shown = "; ".join(reasons[:EXAMPLES]) + (
        f"; and {len(reasons) - EXAMPLES} more" if len(reasons) > EXAMPLES else ""
    )
    examples = dict(sorted((partition_key(k), r) for k, r in failed.items())[:EXAMPLES])
    return dg.Failure(
        description=f"{len(failed)} partition(s) failed: {shown}",
        metadata={"failed_count": len(failed), "failed_partitions": dg.MetadataValue.json(examples)},
        allow_retries=False,
    )
