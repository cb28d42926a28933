"""The `bars` asset: OHLCV per (session, ticker) partition, fetched in bulk, replaced atomically."""

from typing import Any

import dagster as dg

from backfill_assets.defs.partitions import bars_partitions, calendar, slices_from_context
from backfill_assets.defs.resources import BarProviderResource, BarStoreResource
from backfill_assets.ingest import IngestReport, ingest
from backfill_assets.settings import get_settings


def _metadata(report: IngestReport, where: str) -> dict[str, Any]:
    rows = {f"{day.isoformat()}|{ticker}": n for (ticker, day), n in report.rows.items()}
    metadata: dict[str, Any] = {
        "rows_per_partition": dg.MetadataValue.json(rows),
        "rows_total": report.total_rows,
        "partitions": len(rows),
        "first_ts": report.first_ts.isoformat() if report.first_ts is not None else "none",
        "last_ts": report.last_ts.isoformat() if report.last_ts is not None else "none",
        "provider": report.provider,
        "timeframe": report.timeframe,
        "provider_requests": report.requests,
        "duration_s": round(report.duration_s, 3),
        "store": where,
    }
    if len(rows) == 1:
        metadata["dagster/row_count"] = report.total_rows
    return metadata


@dg.asset(
    partitions_def=bars_partitions,
    # One run per value of the selection's smaller dimension (Dagster's rule for multi-partitions);
    # single_run also lets `dagster asset materialize --partition-range` run ranges in one go.
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=get_settings().pool,
    group_name="raw_bars",
    kinds={"duckdb"},
    tags={"provider": get_settings().provider},
)
def bars(
    context: dg.AssetExecutionContext, bar_provider: BarProviderResource, bar_store: BarStoreResource
) -> dg.MaterializeResult:
    """OHLCV bars of one ticker over one trading session, at the configured timeframe.

    Table `bars`, unique on (ticker, ts); ts is the bar start in UTC. A run replaces exactly its
    (ticker, session) slices in one transaction, so re-materializing gives the same rows.
    """
    slices = slices_from_context(context)
    store = bar_store.build()
    report = ingest(slices, bar_provider.build(calendar), store, calendar, bar_provider.parsed_timeframe())
    context.log.info(
        f"wrote {report.total_rows} bars for {len(slices)} partition(s) in {report.requests} "
        f"provider request(s), {report.duration_s:.2f} s"
    )
    return dg.MaterializeResult(metadata=_metadata(report, store.describe()))
