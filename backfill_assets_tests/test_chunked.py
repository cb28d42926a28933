"""Chunked ingest: the next chunk is fetched while one is written; a failing chunk keeps what landed."""

import datetime as dt
import threading
import time
from collections.abc import Collection
from pathlib import Path

import pandas as pd
import pytest

from backfill_assets.calendar import TradingCalendar
from backfill_assets.chunked import PartialIngestError, ingest_in_chunks
from backfill_assets.memory import MemoryBudget
from backfill_assets.providers.base import BarRequest, FetchResult
from backfill_assets.providers.synthetic import SyntheticProvider
from backfill_assets.storage.base import Slice
from backfill_assets.storage.duckdb_store import DuckDBBarStore
from backfill_assets.timeframes import TIMEFRAMES

M1 = TIMEFRAMES["1Min"]
TICKERS = ["AAPL", "MSFT", "NVDA", "TSLA"]


class SlowProvider:
    """The synthetic provider behind a slow network; fails every ticker in `broken`."""

    name, adjustment = "synthetic", "raw"

    def __init__(self, calendar: TradingCalendar, broken: Collection[str] = ()) -> None:
        self.inner, self.broken = SyntheticProvider(calendar), set(broken)
        self.fetches: list[tuple[float, float]] = []
        self.lock = threading.Lock()

    def fetch(self, request: BarRequest) -> FetchResult:
        started = time.monotonic()
        if self.broken & set(request.tickers):
            raise ConnectionError(f"provider down while fetching {request.tickers}")
        time.sleep(0.5)
        result = self.inner.fetch(request)
        with self.lock:
            self.fetches.append((started, time.monotonic()))
        return result


class TimedStore(DuckDBBarStore):
    """A real DuckDB store that also notes when each write ran."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.writes: list[tuple[float, float]] = []

    def replace_bars(self, frame: pd.DataFrame, slices: Collection[Slice]) -> int:
        started = time.monotonic()
        time.sleep(0.5)
        rows = super().replace_bars(frame, slices)
        self.writes.append((started, time.monotonic()))
        return rows


def one_ticker_per_chunk() -> MemoryBudget:
    # A chunk may hold two tickers' 5 sessions before the pipeline halves it to one ticker.
    bars = 2 * 5 * M1.bars_per_session
    return MemoryBudget(1000.0, measure=lambda: 0.0, bytes_per_bar=int(1000 * 0.75 * 1024 * 1024 / bars))


def slices(calendar: TradingCalendar) -> list[Slice]:
    days = calendar.sessions_in(dt.date(2024, 1, 2), dt.date(2024, 1, 8))
    return [(t, d) for t in TICKERS for d in days]


def test_next_chunk_is_fetched_while_one_is_written(calendar: TradingCalendar, tmp_path: Path) -> None:
    provider, store = SlowProvider(calendar), TimedStore(tmp_path / "bars.duckdb")
    report, chunks = ingest_in_chunks(slices(calendar), provider, store, calendar, M1, one_ticker_per_chunk())
    assert chunks == 4 and report.total_rows == 4 * 5 * 390
    assert len(store.read_bars()) == 4 * 5 * 390
    # Each write overlaps the fetch of the chunk after it.
    fetches = sorted(provider.fetches)
    for (w_start, w_end), (f_start, f_end) in zip(store.writes, fetches[1:], strict=False):
        assert f_start < w_end and w_start < f_end
    assert report.duration_s < sum(e - s for s, e in fetches + store.writes)


def test_a_failing_fetch_keeps_the_chunks_before_it(calendar: TradingCalendar, tmp_path: Path) -> None:
    provider, store = SlowProvider(calendar, broken={"NVDA"}), TimedStore(tmp_path / "bars.duckdb")
    with pytest.raises(PartialIngestError, match="provider down") as caught:
        ingest_in_chunks(slices(calendar), provider, store, calendar, M1, one_ticker_per_chunk())
    landed = caught.value.landed
    assert landed is not None and {t for t, _ in landed.rows} == {"AAPL", "MSFT"}
    stored = store.read_bars()
    assert sorted(stored["ticker"].unique()) == ["AAPL", "MSFT"] and len(stored) == 2 * 5 * 390
