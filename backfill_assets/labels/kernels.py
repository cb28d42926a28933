"""Numba kernels for the labels of research/labels.md §3, bit-identical to `reference.py` (the spec).

Inputs are contiguous arrays of all tickers concatenated, ticker-major and time-ordered; see
`reference.py` for `starts`, `seg_end`, `seg_final` and the state codes. The typed wrappers check
shapes and domains once, so the kernels compile for one signature each and never see NaN prices.
No fastmath: reassociation or fused multiply-adds would break equality with the reference. nogil: a
label run writes one set's rows in a thread while the next set computes.
"""

import math

import numba
import numpy as np
import numpy.typing as npt

LABELLED, PENDING, NO_LABEL = 0, 1, 2
TIE_OPEN, TIE_STOP_LOSS, TIE_TAKE_PROFIT = 0, 1, 2
MAX_HORIZON = 32767  # bars_to_exit is int16

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Int8Array = npt.NDArray[np.int8]


@numba.njit(cache=True, nogil=True)
def _ewm_sigma(close: FloatArray, blocks: IntArray, span: int) -> FloatArray:
    """Each block (anchor, first, end) runs the EWM from bar `anchor` and writes bars [first, end)."""
    out = np.full(close.shape[0], np.nan)
    decay = 1.0 - 2.0 / (span + 1.0)
    for k in range(blocks.shape[0]):
        s, w, e = blocks[k, 0], blocks[k, 1], blocks[k, 2]
        mean = cov = sum_wt = sum_wt2 = old_wt = 0.0
        for i in range(s + 1, e):
            r = math.log(close[i] / close[i - 1])
            nobs = i - s
            if nobs == 1:
                mean, cov, sum_wt, sum_wt2, old_wt = r, 0.0, 1.0, 1.0, 1.0
            else:
                sum_wt *= decay
                sum_wt2 *= decay * decay
                old_wt *= decay
                old_mean = mean
                if mean != r:
                    mean = (old_wt * old_mean + r) / (old_wt + 1.0)
                cov = (old_wt * (cov + (old_mean - mean) * (old_mean - mean)) + (r - mean) * (r - mean)) / (
                    old_wt + 1.0
                )
                sum_wt += 1.0
                sum_wt2 += 1.0
                old_wt += 1.0
            if nobs >= span and i >= w:
                numerator = sum_wt * sum_wt
                denominator = numerator - sum_wt2
                if denominator > 0.0:
                    out[i] = math.sqrt((numerator / denominator) * cov)
    return out


@numba.njit(cache=True, nogil=True)
def _barrier_unit(sigma: FloatArray, horizon: int) -> FloatArray:
    root = math.sqrt(horizon)
    out = np.empty_like(sigma)
    for t in range(sigma.shape[0]):
        out[t] = sigma[t] * root
    return out


@numba.njit(cache=True, nogil=True, inline="always")
def _path_end(t: int, horizon: int, seg_end: IntArray, seg_final: BoolArray) -> tuple[int, int]:
    last = seg_end[t] - 1
    if t + horizon <= last:
        return t + horizon, LABELLED
    if not seg_final[t]:
        return last, PENDING
    return last, LABELLED if last > t else NO_LABEL


@numba.njit(cache=True, nogil=True)
def _triple_barrier(
    open_: FloatArray, high: FloatArray, low: FloatArray, close: FloatArray, trgt: FloatArray,
    seg_end: IntArray, seg_final: BoolArray, horizon: int, pt: float, sl: float, min_trgt: float,
    tie_rule: int,
) -> tuple[Int8Array, npt.NDArray[np.int16], FloatArray, BoolArray, Int8Array]:  # fmt: skip
    n = close.shape[0]
    label = np.zeros(n, np.int8)
    bars = np.zeros(n, np.int16)
    ret = np.full(n, np.nan)
    amb = np.zeros(n, np.bool_)
    state = np.full(n, NO_LABEL, np.int8)
    for t in range(n):
        tr = trgt[t]
        if not tr > min_trgt:
            continue
        c0 = close[t]
        upper = c0 * (1.0 + pt * tr) if pt > 0.0 else np.inf
        lower = c0 * (1.0 - sl * tr) if sl > 0.0 else -np.inf
        stop, st = _path_end(t, horizon, seg_end, seg_final)
        state[t] = st
        exit_bar = -1
        for j in range(t + 1, stop + 1):
            up = high[j] >= upper
            down = low[j] <= lower
            if up and down:
                if tie_rule == TIE_OPEN and open_[j] >= upper:
                    label[t] = 1
                elif tie_rule == TIE_OPEN and open_[j] <= lower:
                    label[t] = -1
                else:
                    label[t] = 1 if tie_rule == TIE_TAKE_PROFIT else -1
                    amb[t] = True
            elif up:
                label[t] = 1
            elif down:
                label[t] = -1
            else:
                continue
            exit_bar = j
            break
        if exit_bar >= 0:
            state[t] = LABELLED
        elif st == LABELLED:
            exit_bar = stop
        else:
            continue
        bars[t] = exit_bar - t
        ret[t] = close[exit_bar] / c0 - 1.0
    return label, bars, ret, amb, state


@numba.njit(cache=True, nogil=True)
def _vol_scaled_return(
    close: FloatArray, trgt: FloatArray, seg_end: IntArray, seg_final: BoolArray, horizon: int,
    min_trgt: float,
) -> tuple[FloatArray, Int8Array]:  # fmt: skip
    n = close.shape[0]
    vsr = np.full(n, np.nan)
    state = np.full(n, NO_LABEL, np.int8)
    for t in range(n):
        tr = trgt[t]
        if not tr > min_trgt:
            continue
        stop, st = _path_end(t, horizon, seg_end, seg_final)
        state[t] = st
        if st == LABELLED:
            vsr[t] = (close[stop] / close[t] - 1.0) / tr
    return vsr, state


@numba.njit(cache=True, nogil=True)
def _mfe_mae(
    high: FloatArray, low: FloatArray, close: FloatArray, seg_end: IntArray, seg_final: BoolArray,
    horizon: int,
) -> tuple[FloatArray, FloatArray, Int8Array]:  # fmt: skip
    # Monotonic deques of bar indices (ring buffers, capacity a power of two > H): the front of `hi`
    # is the window's highest high, of `lo` its lowest low. Window ends never decrease in t (seg_end
    # does not), so every bar is pushed and popped at most once: O(N) whatever H.
    n = close.shape[0]
    mfe = np.full(n, np.nan)
    mae = np.full(n, np.nan)
    state = np.full(n, NO_LABEL, np.int8)
    cap = 1
    while cap <= horizon:
        cap *= 2
    mask = cap - 1
    hi = np.empty(cap, np.int64)
    lo = np.empty(cap, np.int64)
    hi_head = hi_tail = lo_head = lo_tail = 0  # monotone counters; slot = counter & mask
    pushed = 0  # next bar to enter the deques
    for t in range(n):
        stop, st = _path_end(t, horizon, seg_end, seg_final)
        state[t] = st
        if st != LABELLED:
            continue
        while hi_head < hi_tail and hi[hi_head & mask] <= t:
            hi_head += 1
        while lo_head < lo_tail and lo[lo_head & mask] <= t:
            lo_head += 1
        if pushed <= t:
            pushed = t + 1
        for j in range(pushed, stop + 1):
            while hi_head < hi_tail and high[hi[(hi_tail - 1) & mask]] <= high[j]:
                hi_tail -= 1
            hi[hi_tail & mask] = j
            hi_tail += 1
            while lo_head < lo_tail and low[lo[(lo_tail - 1) & mask]] >= low[j]:
                lo_tail -= 1
            lo[lo_tail & mask] = j
            lo_tail += 1
        pushed = stop + 1
        mfe[t] = high[hi[hi_head & mask]] / close[t] - 1.0
        mae[t] = low[lo[lo_head & mask]] / close[t] - 1.0
    return mfe, mae, state


def _prices(name: str, values: FloatArray, n: int | None = None) -> FloatArray:
    array = np.ascontiguousarray(values, dtype=np.float64)
    if array.ndim != 1 or (n is not None and array.shape[0] != n):
        raise ValueError(f"{name} must be 1-D with {n} values, got shape {array.shape}")
    if not np.all((array > 0.0) & (array < np.inf)):
        raise ValueError(f"{name} must be finite and positive (bars are validated at ingestion)")
    return array


def _horizon(horizon: int) -> int:
    if not 1 <= horizon <= MAX_HORIZON:
        raise ValueError(f"horizon must be in 1..{MAX_HORIZON} bars, got {horizon}")
    return int(horizon)


def _segments(seg_end: IntArray, seg_final: BoolArray, n: int) -> tuple[IntArray, BoolArray]:
    ends = np.ascontiguousarray(seg_end, dtype=np.int64)
    finals = np.ascontiguousarray(seg_final, dtype=np.bool_)
    if ends.shape != (n,) or finals.shape != (n,):
        raise ValueError(f"seg_end and seg_final need one value per bar ({n})")
    # t < seg_end[t] <= N and non-decreasing: what keeps paths in bounds and the deques O(N).
    if n and (np.any(ends <= np.arange(n)) or ends[-1] > n or np.any(np.diff(ends) < 0)):
        raise ValueError("seg_end must satisfy t < seg_end[t] <= N and never decrease")
    return ends, finals


def ewm_sigma(close: FloatArray, starts: IntArray, span: int, anchors: IntArray | None = None) -> FloatArray:
    """sigma_t, the EWM std (span S, min_periods S) of one-bar log returns per ticker; see reference.

    With `anchors` (per bar, the bar its EWM starts from, in the bar's own ticker), the EWM is rerun
    from each distinct anchor over the bars sharing it (a session's bars share their anchor).
    """
    c = _prices("close", close)
    bounds = np.ascontiguousarray(starts, dtype=np.int64)
    if bounds.ndim != 1 or bounds.shape[0] < 1 or bounds[0] != 0 or bounds[-1] != c.shape[0]:
        raise ValueError("starts must run from 0 to len(close)")
    if np.any(np.diff(bounds) < 0) or span < 1:
        raise ValueError("starts must never decrease and span must be >= 1")
    if anchors is None:
        blocks = np.stack([bounds[:-1], bounds[:-1], bounds[1:]], axis=1)
    else:
        a = np.ascontiguousarray(anchors, dtype=np.int64)
        ticker_of = np.repeat(np.arange(bounds.shape[0] - 1), np.diff(bounds))
        if a.shape != c.shape or np.any(a > np.arange(c.shape[0])) or np.any(a < bounds[:-1][ticker_of]):
            raise ValueError("each anchor must be a bar of the same ticker at or before its bar")
        if np.any(np.diff(a)[np.diff(ticker_of) == 0] < 0):
            raise ValueError("anchors must never decrease within a ticker")
        first = np.flatnonzero(np.concatenate(([True], (np.diff(a) != 0) | (np.diff(ticker_of) != 0))))
        ends = np.concatenate((first[1:], [c.shape[0]]))
        blocks = np.stack([a[first], first, ends], axis=1)
    return _ewm_sigma(c, np.ascontiguousarray(blocks, dtype=np.int64), int(span))


def barrier_unit(sigma: FloatArray, horizon: int) -> FloatArray:
    """trgt_t = sigma_t * sqrt(H), the barrier unit (NaN where sigma is)."""
    return _barrier_unit(np.ascontiguousarray(sigma, dtype=np.float64), _horizon(horizon))


def triple_barrier(
    open: FloatArray, high: FloatArray, low: FloatArray, close: FloatArray, trgt: FloatArray,
    seg_end: IntArray, seg_final: BoolArray, horizon: int, pt: float, sl: float, min_trgt: float,
    tie_rule: int,
) -> tuple[Int8Array, npt.NDArray[np.int16], FloatArray, BoolArray, Int8Array]:  # fmt: skip
    """(label int8, bars_to_exit int16, ret, amb, state int8) per bar, as `reference.triple_barrier`."""
    c = _prices("close", close)
    n = c.shape[0]
    o, h, lo = _prices("open", open, n), _prices("high", high, n), _prices("low", low, n)
    ends, finals = _segments(seg_end, seg_final, n)
    tr = np.ascontiguousarray(trgt, dtype=np.float64)
    if tr.shape != (n,):
        raise ValueError(f"trgt needs one value per bar ({n})")
    if not (math.isfinite(pt) and math.isfinite(sl) and pt >= 0.0 and sl >= 0.0):
        raise ValueError(f"pt and sl must be finite and >= 0 (0 disables a barrier), got {pt}, {sl}")
    if tie_rule not in (TIE_OPEN, TIE_STOP_LOSS, TIE_TAKE_PROFIT) or math.isnan(min_trgt):
        raise ValueError(f"tie_rule must be 0, 1 or 2 and min_trgt a number, got {tie_rule}, {min_trgt}")
    return _triple_barrier(
        o, h, lo, c, tr, ends, finals, _horizon(horizon), float(pt), float(sl), float(min_trgt), int(tie_rule)
    )


def vol_scaled_return(
    close: FloatArray, trgt: FloatArray, seg_end: IntArray, seg_final: BoolArray, horizon: int,
    min_trgt: float,
) -> tuple[FloatArray, Int8Array]:  # fmt: skip
    """(vsr, state) per bar, as `reference.vol_scaled_return`."""
    c = _prices("close", close)
    n = c.shape[0]
    ends, finals = _segments(seg_end, seg_final, n)
    tr = np.ascontiguousarray(trgt, dtype=np.float64)
    if tr.shape != (n,) or math.isnan(min_trgt):
        raise ValueError(f"trgt needs one value per bar ({n}) and min_trgt must be a number")
    return _vol_scaled_return(c, tr, ends, finals, _horizon(horizon), float(min_trgt))


def mfe_mae(
    high: FloatArray, low: FloatArray, close: FloatArray, seg_end: IntArray, seg_final: BoolArray,
    horizon: int,
) -> tuple[FloatArray, FloatArray, Int8Array]:  # fmt: skip
    """(mfe, mae, state) per bar in O(N) for any H, as `reference.mfe_mae`."""
    c = _prices("close", close)
    n = c.shape[0]
    h, lo = _prices("high", high, n), _prices("low", low, n)
    ends, finals = _segments(seg_end, seg_final, n)
    return _mfe_mae(h, lo, c, ends, finals, _horizon(horizon))
