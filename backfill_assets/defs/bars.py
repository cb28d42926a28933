"""The `bars` asset: OHLCV per (session, ticker) partition, fetched in bulk, replaced atomically."""

from typing import Any

import dagster as dg

from backfill_assets.chunked import PartialIngestError, ingest_in_chunks
from backfill_assets.defs.partitions import backfill_policy, bars_partitions, calendar, slices_from_context
from backfill_assets.defs.providers import (
    AlpacaProviderResource,
    BarProviderResource,
    HttpProviderResource,
)
from backfill_assets.defs.resources import BarStoreResource
from backfill_assets.ingest import IngestReport
from backfill_assets.memory import MemoryBudgetError, peak_rss_mb
from backfill_assets.settings import get_settings
from backfill_assets.storage.base import Slice
from backfill_assets.symbols import InvalidTickerError


def partition_key(key: Slice) -> str:
    ticker, day = key
    return f"{day.isoformat()}|{ticker}"


def _metadata(report: IngestReport, where: str, provider: BarProviderResource) -> dict[str, Any]:
    rows = {partition_key(key): n for key, n in report.rows.items()}
    metadata: dict[str, Any] = {
        "rows_per_partition": dg.MetadataValue.json(rows),
        "rows_total": report.total_rows,
        "partitions": len(rows),
        "first_ts": report.first_ts.isoformat() if report.first_ts is not None else "none",
        "last_ts": report.last_ts.isoformat() if report.last_ts is not None else "none",
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
        }
        metadata["http_wait_s"] = round(stats.waited_s, 2)
    if report.unlisted:
        metadata["unlisted_partitions"] = dg.MetadataValue.json(sorted(map(partition_key, report.unlisted)))
    if len(rows) == 1:
        metadata["dagster/row_count"] = report.total_rows
    return metadata


def _log_landed(context: dg.AssetExecutionContext, report: IngestReport, metadata: dict[str, Any]) -> None:
    """Partitions that landed in a run that then fails are materialized; the backfill sees that."""
    for key in report.rows:
        context.log_event(
            dg.AssetMaterialization(context.asset_key, partition=partition_key(key), metadata=metadata)
        )


@dg.asset(
    partitions_def=bars_partitions,
    # One run per value of the selection's smaller dimension (Dagster's rule for multi-partitions);
    # single_run also lets `dagster asset materialize --partition-range` run ranges in one go.
    backfill_policy=backfill_policy(get_settings().partitions_per_run),
    pool=get_settings().pool,
    group_name="raw_bars",
    kinds={get_settings().store},
    tags={"provider": get_settings().provider},
    # Transient provider trouble (after the HTTP layer's own retries) gets a few more chances;
    # permanent errors raise dg.Failure(allow_retries=False).
    retry_policy=dg.RetryPolicy(
        max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
    ),
)
def bars(
    context: dg.AssetExecutionContext, bar_provider: BarProviderResource, bar_store: BarStoreResource
) -> dg.MaterializeResult:
    """OHLCV bars of one ticker over one trading session, at the configured timeframe.

    Table `bars`, unique on (ticker, ts); ts is the bar start in UTC. A run replaces exactly its
    (ticker, session) slices in one transaction, so re-materializing gives the same rows. Tickers the
    provider does not know fail alone: the other partitions of the run land and show materialized.
    """
    try:
        slices = slices_from_context(context)
    except InvalidTickerError as exc:  # a bad key stays bad: no step retry
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    store = bar_store.build()
    provider = bar_provider.build(calendar)
    budget = bar_store.memory_budget()
    try:
        report, chunks = ingest_in_chunks(
            slices, provider, store, calendar, bar_provider.parsed_timeframe(), budget
        )
    except (PartialIngestError, MemoryBudgetError) as exc:
        cause = exc.cause if isinstance(exc, PartialIngestError) else exc
        if isinstance(exc, PartialIngestError) and exc.landed:
            _log_landed(context, exc.landed, _metadata(exc.landed, store.describe(), bar_provider))
        if isinstance(cause, MemoryBudgetError) or getattr(cause, "permanent", False):
            raise dg.Failure(description=str(cause), allow_retries=False) from None
        raise cause from None
    context.log.info(
        f"wrote {report.total_rows} bars for {len(report.rows)} partition(s) in {report.requests} "
        f"provider request(s), {chunks} chunk(s), {report.duration_s:.2f} s"
    )
    if report.unlisted:
        context.log.warning(
            f"{len(report.unlisted)} partition(s) precede their ticker's first bar (not listed yet): "
            "stored empty, see `unlisted_partitions`"
        )
    metadata = _metadata(report, store.describe(), bar_provider) | {
        "chunks": chunks,
        "memory_budget_mb": bar_store.memory_budget_mb,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    if not report.failed:
        return dg.MaterializeResult(metadata=metadata)
    _log_landed(context, report, metadata)
    reasons = sorted(set(report.failed.values()))
    raise dg.Failure(
        description=f"{len(report.failed)} partition(s) failed: {'; '.join(reasons)}",
        metadata={
            "failed_partitions": dg.MetadataValue.json(
                {partition_key(k): r for k, r in report.failed.items()}
            )
        },
        allow_retries=False,
    )
