"""The label spec as plain Python loops: the oracle the numba kernels must equal bit for bit.

Definitions follow research/labels.md §3. Inputs are the arrays of all tickers concatenated,
ticker-major and time-ordered. Per bar t, `seg_end[t]` is the exclusive end of the bars its forward
path may use (the ticker's end when horizons cross sessions, the session's end otherwise) and
`seg_final[t]` says whether reaching it is a final vertical barrier (session-bounded) or just the end
of the data read so far (a horizon running past it is pending).

States: 0 labelled, 1 pending (recompute when later bars arrive), 2 no label (no event, or no forward
bar in a final segment). Every operation happens in the kernels' order on IEEE doubles; there is no
fused multiply-add and no reassociation on either side, so the results are identical.
"""

import math

import numpy as np
import numpy.typing as npt

LABELLED, PENDING, NO_LABEL = 0, 1, 2  # same codes as kernels.py (a test checks)
TIE_OPEN, TIE_STOP_LOSS, TIE_TAKE_PROFIT = 0, 1, 2

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Int8Array = npt.NDArray[np.int8]


def ewm_sigma(close: FloatArray, starts: IntArray, span: int) -> FloatArray:
    """Ex-ante volatility sigma_t: EWM std of r_t = log(c_t / c_{t-1}), per ticker, using r up to t.

    pandas `Series.ewm(span=S, min_periods=S, adjust=True).std()` (bias=False) with pandas' online
    `ewmcov` update: alpha = 2/(S+1) (pandas' 1/(1+com) with com=(S-1)/2 rounds to the same double),
    new observations weigh 1, old weights decay by 1-alpha. A ticker's first bar has no return; sigma
    is NaN until S returns are seen, and where the bias correction's denominator is not positive.
    """
    c = close.tolist()
    bounds = starts.tolist()
    out = [math.nan] * len(c)
    decay = 1.0 - 2.0 / (span + 1.0)
    for s, e in zip(bounds[:-1], bounds[1:], strict=True):
        mean = cov = sum_wt = sum_wt2 = old_wt = 0.0
        for i in range(s + 1, e):
            r = math.log(c[i] / c[i - 1])
            nobs = i - s
            if nobs == 1:
                mean, cov, sum_wt, sum_wt2, old_wt = r, 0.0, 1.0, 1.0, 1.0
            else:
                sum_wt *= decay
                sum_wt2 *= decay * decay
                old_wt *= decay
                old_mean = mean
                if mean != r:  # pandas' guard against drift on constant series
                    mean = (old_wt * old_mean + r) / (old_wt + 1.0)
                cov = (old_wt * (cov + (old_mean - mean) * (old_mean - mean)) + (r - mean) * (r - mean)) / (
                    old_wt + 1.0
                )
                sum_wt += 1.0
                sum_wt2 += 1.0
                old_wt += 1.0
            if nobs >= span:
                numerator = sum_wt * sum_wt
                denominator = numerator - sum_wt2
                if denominator > 0.0:
                    out[i] = math.sqrt((numerator / denominator) * cov)
    return np.array(out, dtype=np.float64)


def barrier_unit(sigma: FloatArray, horizon: int) -> FloatArray:
    """trgt_t = sigma_t * sqrt(H): the volatility over the horizon, the unit of every barrier."""
    root = math.sqrt(horizon)
    return np.array([s * root for s in sigma.tolist()], dtype=np.float64)


def _path_end(t: int, horizon: int, seg_end: list[int], seg_final: list[bool]) -> tuple[int, int]:
    """(last path bar, state): t+H if available, else the segment's last bar if final (state 0 or 2)."""
    last = seg_end[t] - 1
    if t + horizon <= last:
        return t + horizon, LABELLED
    if not seg_final[t]:
        return last, PENDING
    return last, LABELLED if last > t else NO_LABEL


def triple_barrier(
    open: FloatArray, high: FloatArray, low: FloatArray, close: FloatArray, trgt: FloatArray,
    seg_end: IntArray, seg_final: BoolArray, horizon: int, pt: float, sl: float, min_trgt: float,
    tie_rule: int,
) -> tuple[Int8Array, npt.NDArray[np.int16], FloatArray, BoolArray, Int8Array]:  # fmt: skip
    """Triple-barrier labels on high/low touches (research §3): (label, bars_to_exit, ret, amb, state).

    An event exists where trgt_t > min_trgt (NaN: none, state 2). U = c_t(1 + pt*trgt),
    L = c_t(1 - sl*trgt); a multiple of 0 disables its barrier. The path is t+1..min(t+H, seg_end-1);
    the first bar with high >= U or low <= L exits with ret = c_j/c_t - 1. A bar touching both is
    resolved by `tie_rule`: 0 "open" (open >= U: +1, open <= L: -1, else -1 and amb), 1 "stop_loss"
    (-1, amb), 2 "take_profit" (+1, amb). Without a touch: label 0 at t+H if that bar exists, else at
    the segment's last bar when the segment is final (state 2 if there is no bar after t), else the
    row is pending. Rows not labelled hold label 0, bars_to_exit 0, ret NaN, amb False.
    """
    o, h, lo, c, tr = open.tolist(), high.tolist(), low.tolist(), close.tolist(), trgt.tolist()
    ends, finals = seg_end.tolist(), seg_final.tolist()
    n = len(c)
    label, bars, ret, amb, state = [0] * n, [0] * n, [math.nan] * n, [False] * n, [NO_LABEL] * n
    for t in range(n):
        if not tr[t] > min_trgt:
            continue
        upper = c[t] * (1.0 + pt * tr[t]) if pt > 0.0 else math.inf
        lower = c[t] * (1.0 - sl * tr[t]) if sl > 0.0 else -math.inf
        stop, state[t] = _path_end(t, horizon, ends, finals)
        for j in range(t + 1, stop + 1):
            up, down = h[j] >= upper, lo[j] <= lower
            if not (up or down):
                continue
            if up and down:
                if tie_rule == TIE_OPEN and o[j] >= upper:
                    label[t] = 1
                elif tie_rule == TIE_OPEN and o[j] <= lower:
                    label[t] = -1
                else:
                    label[t], amb[t] = (1 if tie_rule == TIE_TAKE_PROFIT else -1), True
            else:
                label[t] = 1 if up else -1
            bars[t], ret[t], state[t] = j - t, c[j] / c[t] - 1.0, LABELLED
            break
        else:
            if state[t] == LABELLED:
                bars[t], ret[t] = stop - t, c[stop] / c[t] - 1.0
    return (
        np.array(label, dtype=np.int8),
        np.array(bars, dtype=np.int16),
        np.array(ret, dtype=np.float64),
        np.array(amb, dtype=np.bool_),
        np.array(state, dtype=np.int8),
    )


def vol_scaled_return(
    close: FloatArray, trgt: FloatArray, seg_end: IntArray, seg_final: BoolArray, horizon: int,
    min_trgt: float,
) -> tuple[FloatArray, Int8Array]:  # fmt: skip
    """(c_{t+H}/c_t - 1) / trgt_t (research §3), with the triple barrier's event and end rules.

    No event (trgt not > min_trgt): NaN, state 2. Past the segment: its last bar if final (NaN and
    state 2 if there is none after t), else NaN and pending.
    """
    c, tr, ends, finals = close.tolist(), trgt.tolist(), seg_end.tolist(), seg_final.tolist()
    vsr, state = [math.nan] * len(c), [NO_LABEL] * len(c)
    for t in range(len(c)):
        if not tr[t] > min_trgt:
            continue
        stop, state[t] = _path_end(t, horizon, ends, finals)
        if state[t] == LABELLED:
            vsr[t] = (c[stop] / c[t] - 1.0) / tr[t]
    return np.array(vsr, dtype=np.float64), np.array(state, dtype=np.int8)


def mfe_mae(
    high: FloatArray, low: FloatArray, close: FloatArray, seg_end: IntArray, seg_final: BoolArray,
    horizon: int,
) -> tuple[FloatArray, FloatArray, Int8Array]:  # fmt: skip
    """Excursions max(high[t+1..t+H])/c_t - 1 and min(low[t+1..t+H])/c_t - 1 (research §3).

    The window ends like the triple barrier's path: truncated at a final segment's last bar, pending
    (NaN, state 1) past the data, NaN and state 2 when a final segment has no bar after t.
    """
    h, lo, c, ends, finals = high.tolist(), low.tolist(), close.tolist(), seg_end.tolist(), seg_final.tolist()
    n = len(c)
    mfe, mae, state = [math.nan] * n, [math.nan] * n, [NO_LABEL] * n
    for t in range(n):
        stop, state[t] = _path_end(t, horizon, ends, finals)
        if state[t] != LABELLED:
            continue
        best, worst = h[t + 1], lo[t + 1]
        for j in range(t + 2, stop + 1):
            best, worst = max(best, h[j]), min(worst, lo[j])
        mfe[t], mae[t] = best / c[t] - 1.0, worst / c[t] - 1.0
    return np.array(mfe, dtype=np.float64), np.array(mae, dtype=np.float64), np.array(state, dtype=np.int8)
