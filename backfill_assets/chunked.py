"""Ingest a run's slices in chunks sized by its memory budget, so RSS does not grow with the run.

Chunks are ticker-major runs of consecutive sessions, so each is still one provider request per
ticker group; each chunk is written in its own transaction. The next chunk is fetched while the
current one is validated and written, so the rate budget is not left idle during writes; two
chunks are then alive at once, so each gets half of what the budget leaves. If a chunk fails, the
slices already written are reported with the error so the run can mark them materialized first.
"""

import time
from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from backfill_assets.calendar import TradingCalendar
from backfill_assets.ingest import Fetched, IngestReport, fetch, write
from backfill_assets.memory import MemoryBudget, chunk_by_size
from backfill_assets.providers.base import BarProvider
from backfill_assets.storage.base import BarStore, Slice
from backfill_assets.timeframes import Timeframe


class PartialIngestError(RuntimeError):
    """A chunk failed after others landed; `landed` holds what was written."""

    def __init__(self, cause: BaseException, landed: IngestReport | None) -> None:
        super().__init__(str(cause))
        self.cause, self.landed = cause, landed


def merge(reports: list[IngestReport], started: float) -> IngestReport:
    """One report for a run's chunks; its duration is the wall time since `started` (chunks overlap)."""
    first = [r.first_ts for r in reports if r.first_ts is not None]
    last = [r.last_ts for r in reports if r.last_ts is not None]
    return IngestReport(
        rows={k: v for r in reports for k, v in r.rows.items()},
        spans={k: v for r in reports for k, v in r.spans.items()},
        failed={k: v for r in reports for k, v in r.failed.items()},
        unlisted=frozenset().union(*(r.unlisted for r in reports)),
        first_ts=min(first) if first else None,
        last_ts=max(last) if last else None,
        provider=reports[0].provider,
        timeframe=reports[0].timeframe,
        adjustment=reports[0].adjustment,
        requests=sum(r.requests for r in reports),
        duration_s=time.monotonic() - started,
        dropped=sum(r.dropped for r in reports),
        outside=sum(r.outside for r in reports),
        sources={k: v for r in reports for k, v in r.sources.items()},
    )


def plan_chunks(slices: Collection[Slice], timeframe: Timeframe, budget: MemoryBudget) -> list[list[Slice]]:
    """The run's slices in ticker-major chunks of at most the budget's bars (half, if more than one)."""
    size = timeframe.bars_per_session
    items = [(s, size) for s in sorted(set(slices))]
    limit = budget.bars_per_chunk()
    if len(items) * size > limit:
        limit = max(1, limit // 2)  # one chunk written while the next is fetched
    return chunk_by_size(items, limit)  # type: ignore[return-value]


def ingest_chunks(
    chunks: Sequence[Sequence[Slice]],
    provider: BarProvider,
    store: BarStore,
    calendar: TradingCalendar,
    timeframe: Timeframe,
    budget: MemoryBudget,
) -> Iterator[IngestReport]:
    """Each chunk's report once it is written; the next chunk is fetched meanwhile, also while the
    caller handles a report (so a run's bookkeeping per chunk overlaps the provider's wait)."""
    prefetch = ThreadPoolExecutor(1, thread_name_prefix="prefetch")

    def submit(chunk: Sequence[Slice]) -> "Future[Fetched]":
        return prefetch.submit(fetch, chunk, provider, calendar, timeframe)

    try:
        pending = submit(chunks[0]) if chunks else None
        for i in range(len(chunks)):
            assert pending is not None
            fetched = pending.result()
            pending = submit(chunks[i + 1]) if i + 1 < len(chunks) else None
            report = write(fetched, provider, store, calendar, timeframe)
            budget.guard()
            yield report
    finally:
        # On failure a fetch in flight cannot be interrupted; do not wait for it to fail the run.
        prefetch.shutdown(wait=False, cancel_futures=True)


def ingest_in_chunks(
    slices: Collection[Slice],
    provider: BarProvider,
    store: BarStore,
    calendar: TradingCalendar,
    timeframe: Timeframe,
    budget: MemoryBudget,
) -> tuple[IngestReport, int]:
    """Ingest every slice, at most the budget's bars per chunk; returns the report and chunk count."""
    started = time.monotonic()
    chunks = plan_chunks(slices, timeframe, budget)
    reports: list[IngestReport] = []
    try:
        for report in ingest_chunks(chunks, provider, store, calendar, timeframe, budget):
            reports.append(report)
    except Exception as exc:
        raise PartialIngestError(exc, merge(reports, started) if reports else None) from exc
    return merge(reports, started), len(chunks)
