"""Ingest a run's slices in chunks sized by its memory budget, so RSS does not grow with the run.

Chunks are ticker-major runs of consecutive sessions, so each is still one provider request per
ticker group; each chunk is written in its own transaction. If a chunk fails, the slices already
written are reported with the error so the run can mark them materialized before it fails.
"""

from collections.abc import Collection

from backfill_assets.calendar import TradingCalendar
from backfill_assets.ingest import IngestReport, ingest
from backfill_assets.memory import MemoryBudget, chunk_by_size
from backfill_assets.providers.base import BarProvider
from backfill_assets.storage.base import BarStore, Slice
from backfill_assets.timeframes import Timeframe


class PartialIngestError(RuntimeError):
    """A chunk failed after others landed; `landed` holds what was written."""

    def __init__(self, cause: BaseException, landed: IngestReport | None) -> None:
        super().__init__(str(cause))
        self.cause, self.landed = cause, landed


def merge(reports: list[IngestReport]) -> IngestReport:
    first = [r.first_ts for r in reports if r.first_ts is not None]
    last = [r.last_ts for r in reports if r.last_ts is not None]
    return IngestReport(
        rows={k: v for r in reports for k, v in r.rows.items()},
        failed={k: v for r in reports for k, v in r.failed.items()},
        unlisted=frozenset().union(*(r.unlisted for r in reports)),
        first_ts=min(first) if first else None,
        last_ts=max(last) if last else None,
        provider=reports[0].provider,
        timeframe=reports[0].timeframe,
        adjustment=reports[0].adjustment,
        requests=sum(r.requests for r in reports),
        duration_s=sum(r.duration_s for r in reports),
    )


def ingest_in_chunks(
    slices: Collection[Slice],
    provider: BarProvider,
    store: BarStore,
    calendar: TradingCalendar,
    timeframe: Timeframe,
    budget: MemoryBudget,
) -> tuple[IngestReport, int]:
    """Ingest every slice, at most the budget's bars per chunk; returns the report and chunk count."""
    size = timeframe.bars_per_session
    chunks = chunk_by_size([(s, size) for s in sorted(set(slices))], budget.bars_per_chunk())
    reports: list[IngestReport] = []
    for chunk in chunks:
        try:
            reports.append(ingest(chunk, provider, store, calendar, timeframe))  # type: ignore[arg-type]
            budget.guard()
        except Exception as exc:
            raise PartialIngestError(exc, merge(reports) if reports else None) from exc
    return merge(reports), len(chunks)
