"""Compute and store the labels of a set of (ticker, session) slices, identical however they are batched.

A label at bar t depends on bars t+1..t+H (the forward halo) and on sigma_t, whose EWM state runs
over the ticker's whole stored history. Each run therefore reads every stored bar of its tickers up
to its last session plus H bars after it, computes over that, and keeps its own slices: one session
at a time, a range, or everything at once give the same values bit for bit.
"""

import datetime as dt
import math
import time
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import pandas as pd

from backfill_assets.labels.compute import compute_labels, output_types
from backfill_assets.labels.config import LabelSet
from backfill_assets.memory import MemoryBudget, chunk_by_size
from backfill_assets.storage.base import LabelStore, Slice
from backfill_assets.timeframes import Timeframe

HALF_DAY_MINUTES = 210  # the shortest regular session (XNYS early close)
LABEL_BYTES_PER_BAR = 300  # OHLC in, label columns out, per bar held by a label run


def halo_bars(label_set: LabelSet) -> int:
    """Bars after a run's last session that its last rows may look at."""
    return label_set.horizon if label_set.cross_session else 0


def halo_sessions(label_set: LabelSet, timeframe: Timeframe) -> int:
    """Sessions after a label partition whose bars it may read (for Dagster's partition mapping)."""
    if not label_set.cross_session:
        return 0
    per_session = 1 if timeframe.is_daily else max(1, HALF_DAY_MINUTES // timeframe.minutes)
    return math.ceil(label_set.horizon / per_session)


def _in_slices(labels: pd.DataFrame, wanted: set[Slice]) -> np.ndarray:
    """Rows of `labels` whose (ticker, session) is in `wanted`, as one vectorised integer lookup."""
    names = sorted({t for t, _ in wanted})
    codes = pd.Categorical(labels["ticker"], categories=names).codes.astype(np.int64)
    days = labels["session_date"].to_numpy().astype("datetime64[D]").astype(np.int64)
    wanted_keys = [names.index(t) << 32 | (day - dt.date(1970, 1, 1)).days for t, day in wanted]
    return np.isin(codes << 32 | days, np.array(wanted_keys, dtype=np.int64)) & (codes >= 0)


@dataclass(frozen=True)
class LabelReport:
    rows: dict[Slice, int]
    pending: int
    read_bars: int
    duration_s: float

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def materialize_labels(label_set: LabelSet, slices: Collection[Slice], store: LabelStore) -> LabelReport:
    """Replace the rows of `slices` in `labels_<name>` with freshly computed labels."""
    started = time.monotonic()
    wanted = set(slices)
    last: dt.date = max(day for _, day in wanted)
    history = store.read_history({t for t, _ in wanted}, last, halo_bars(label_set))
    labels = compute_labels(label_set, history)
    rows = labels[_in_slices(labels, wanted)].reset_index(drop=True)
    store.replace_labels(label_set.table, output_types(label_set), rows, wanted)
    counts = rows.groupby(["ticker", "session_date"], observed=True).size()
    written = {
        (str(t), pd.Timestamp(d).date()): int(n) for (t, d), n in zip(counts.index, counts, strict=True)
    }
    return LabelReport(
        rows={key: written.get(key, 0) for key in sorted(wanted)},
        pending=int(rows["pending"].sum()),
        read_bars=len(history),
        duration_s=time.monotonic() - started,
    )


def label_chunks(slices: Collection[Slice], store: LabelStore, budget: MemoryBudget) -> list[list[Slice]]:
    """The run's slices grouped by ticker so each group's bar history fits the memory budget.

    Each group is computed over its tickers' whole histories, so chunking never changes a value.
    """
    by_ticker: dict[str, list[Slice]] = {}
    for ticker, day in sorted(set(slices)):
        by_ticker.setdefault(ticker, []).append((ticker, day))
    last = max(day for _, day in slices)
    sizes = store.history_sizes(by_ticker, last)
    groups = chunk_by_size([(t, sizes.get(t, 0)) for t in by_ticker], budget.bars_per_chunk())
    return [[s for t in group for s in by_ticker[str(t)]] for group in groups]


def merge_reports(reports: list[LabelReport]) -> LabelReport:
    return LabelReport(
        rows={k: v for r in reports for k, v in r.rows.items()},
        pending=sum(r.pending for r in reports),
        read_bars=sum(r.read_bars for r in reports),
        duration_s=sum(r.duration_s for r in reports),
    )
