"""Compute and store the labels of a set of (ticker, session) slices, identical however they are batched.

A label at bar t depends on bars t+1..t+H (the forward halo) and on sigma_t. sigma's EWM for the
bars of session D runs over the ticker's bars from session D - W (the warm-up, `warmup_sessions`),
chosen so the EWM weight it leaves out is below double precision (< 2^-53): a label is a function
of a bounded, fixed window of bars. Each run reads its tickers' bars from W sessions before its
first session to H bars after its last, computes, and keeps its own slices: one session at a time,
a range, or everything at once give the same values bit for bit, and a run reads O(run + W + H).
"""

import datetime as dt
import math
import time
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import pandas as pd

from backfill_assets.calendar import TradingCalendar
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


def warmup_sessions(label_set: LabelSet, timeframe: Timeframe) -> int:
    """Sessions of bars before a session that sigma's EWM starts from: enough bars that the weight of
    everything older, (1 - 2 / (S + 1)) ** n, is below 2^-53 (the EWM over the whole history and over
    the window agree to double precision), plus one session for a half day among them."""
    bars = math.ceil(53 * math.log(2) / -math.log1p(-2.0 / (label_set.span + 1.0)))
    return math.ceil(bars / timeframe.bars_per_session) + (0 if timeframe.is_daily else 1)


def window_anchors(history: pd.DataFrame, calendar: TradingCalendar, warmup: int) -> np.ndarray:
    """Per bar of `history` (ordered by ticker, ts): the index of its ticker's first bar in or after
    the session `warmup` sessions before the bar's own, where its sigma's EWM starts."""
    if history.empty:
        return np.zeros(0, dtype=np.int64)
    days = history["session_date"].to_numpy().astype("datetime64[D]")
    unique, inverse = np.unique(days, return_inverse=True)
    positions = np.array([calendar.position(d.astype(dt.date)) for d in unique], dtype=np.int64)[inverse]
    codes = pd.Categorical(history["ticker"]).codes.astype(np.int64)
    keys = codes << 32 | positions
    return np.searchsorted(keys, codes << 32 | np.maximum(positions - warmup, 0), side="left").astype(
        np.int64
    )


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


def materialize_labels(
    label_set: LabelSet,
    slices: Collection[Slice],
    store: LabelStore,
    calendar: TradingCalendar,
    timeframe: Timeframe,
) -> LabelReport:
    """Replace the rows of `slices` in `labels_<name>` with freshly computed labels."""
    started = time.monotonic()
    wanted = set(slices)
    warmup = warmup_sessions(label_set, timeframe)
    since = calendar.offset(min(day for _, day in wanted), -warmup)
    last: dt.date = max(day for _, day in wanted)
    history = store.read_history({t for t, _ in wanted}, since, last, halo_bars(label_set))
    labels = compute_labels(label_set, history, window_anchors(history, calendar, warmup))
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


def label_chunks(
    slices: Collection[Slice], store: LabelStore, budget: MemoryBudget, since: dt.date
) -> list[list[Slice]]:
    """The run's slices grouped by ticker so each group's bars (from `since`) fit the memory budget.

    Each row's value depends only on its own window of bars, so chunking never changes a value.
    """
    by_ticker: dict[str, list[Slice]] = {}
    for ticker, day in sorted(set(slices)):
        by_ticker.setdefault(ticker, []).append((ticker, day))
    last = max(day for _, day in slices)
    sizes = store.history_sizes(by_ticker, since, last)
    groups = chunk_by_size([(t, sizes.get(t, 0)) for t in by_ticker], budget.bars_per_chunk())
    return [[s for t in group for s in by_ticker[str(t)]] for group in groups]


def merge_reports(reports: list[LabelReport]) -> LabelReport:
    return LabelReport(
        rows={k: v for r in reports for k, v in r.rows.items()},
        pending=sum(r.pending for r in reports),
        read_bars=sum(r.read_bars for r in reports),
        duration_s=sum(r.duration_s for r in reports),
    )
