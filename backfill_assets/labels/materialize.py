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
from collections.abc import Collection, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
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


def session_positions(history: pd.DataFrame, calendar: TradingCalendar) -> tuple[np.ndarray, np.ndarray]:
    """Per bar of `history`: its ticker's code and its session's position in the calendar."""
    days = history["session_date"].to_numpy().astype("datetime64[D]")
    inverse, unique = pd.factorize(days)  # hashing: a read holds few distinct sessions
    positions = np.array([calendar.position(pd.Timestamp(d).date()) for d in unique], dtype=np.int64)
    codes = pd.Categorical(history["ticker"]).codes.astype(np.int64)
    return codes, positions[inverse]


def window_anchors(
    history: pd.DataFrame,
    calendar: TradingCalendar,
    warmup: int,
    keys: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Per bar of `history` (ordered by ticker, ts): the index of its ticker's first bar in or after
    the session `warmup` sessions before the bar's own, where its sigma's EWM starts (`keys`: the
    `session_positions` of `history`, when several sets share one read)."""
    if history.empty:
        return np.zeros(0, dtype=np.int64)
    codes, positions = keys or session_positions(history, calendar)
    ordered = codes << 32 | positions
    start = codes << 32 | np.maximum(positions - warmup, 0)
    return np.searchsorted(ordered, start, side="left").astype(np.int64)


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
    return materialize_label_sets([label_set], slices, store, calendar, timeframe)[label_set.name]


def read_window(label_sets: Sequence[LabelSet], timeframe: Timeframe) -> tuple[int, int]:
    """(warm-up sessions, halo bars) one read must cover for every set of `label_sets`."""
    return max(warmup_sessions(s, timeframe) for s in label_sets), max(map(halo_bars, label_sets))


def materialize_label_sets(
    label_sets: Sequence[LabelSet],
    slices: Collection[Slice],
    store: LabelStore,
    calendar: TradingCalendar,
    timeframe: Timeframe,
) -> dict[str, LabelReport]:
    """Replace the rows of `slices` in every set's table from one read of the bars, by set name.

    The read covers the widest warm-up and halo of the sets; each set's EWM still starts at its own
    anchor and its rows see at least their own H bars, so every value equals its set's own read.
    """
    started = time.monotonic()
    tf = timeframe.name
    for label_set in label_sets:  # refused before any read or write if a table holds other parameters
        store.claim_version(label_set.table, label_set.version(tf), label_set.parameters(tf))
    wanted = set(slices)
    warmup, halo = read_window(label_sets, timeframe)
    since = calendar.offset(min(day for _, day in wanted), -warmup)
    last: dt.date = max(day for _, day in wanted)
    history = store.read_history({t for t, _ in wanted}, since, last, halo)
    # Every set labels every bar read, row for row: which rows are the run's, and how many per
    # slice, is the same for all of them.
    mine = _in_slices(history, wanted)
    keep = None if mine.all() else np.flatnonzero(mine)
    counts = history[mine].groupby(["ticker", "session_date"], observed=True).size()
    written = {
        (str(t), pd.Timestamp(d).date()): int(n) for (t, d), n in zip(counts.index, counts, strict=True)
    }
    keys = session_positions(history, calendar) if len(history) else None
    read_s = time.monotonic() - started
    reports: dict[str, LabelReport] = {}
    # Per warm-up: its anchors, and sigma by span (sets of one span and warm-up share both).
    windows: dict[int, tuple[np.ndarray, dict[int, np.ndarray]]] = {}
    # Sets are written (DuckDB and Postgres work without the GIL) while the next set is computed, up
    # to the store's parallel writes at once; every set whose rows are held is pending a write.
    pending: list[tuple[LabelSet, int, float, Future[int]]] = []

    def finish(keep_pending: int) -> None:  # a failed write raises here, before more are started
        while len(pending) > keep_pending:
            label_set, pending_rows, began, write = pending.pop(0)
            write.result()
            reports[label_set.name] = LabelReport(
                rows={key: written.get(key, 0) for key in sorted(wanted)},
                pending=pending_rows,
                read_bars=len(history),
                duration_s=read_s / len(label_sets) + time.monotonic() - began,
            )

    parallel = max(1, store.parallel_writes)
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="label-writer") as writer:
        for label_set in label_sets:
            began = time.monotonic()
            warm = warmup_sessions(label_set, timeframe)
            if warm not in windows:
                windows[warm] = (window_anchors(history, calendar, warm, keys), {})
            anchors, sigmas = windows[warm]
            rows = compute_labels(label_set, history, anchors, sigmas, keep)
            finish(keep_pending=parallel - 1)
            write = writer.submit(
                store.replace_labels, label_set.table, output_types(label_set), rows, wanted
            )
            pending.append((label_set, int(rows["pending"].sum()), began, write))
        finish(keep_pending=0)
    return reports


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
