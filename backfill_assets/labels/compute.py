"""From bars to the rows of a label table: contiguous arrays in, kernels, nullable columns out.

Rows that cannot be labelled yet (the horizon runs past the last stored bar) are `pending`: their
values are NULL and they are recomputed when later bars arrive. Rows that never get a label (no
volatility yet, trgt under the floor, last bar of a session-bounded horizon) are NULL, not pending.
"""

from collections.abc import Mapping

import numpy as np
import pandas as pd

from backfill_assets.labels import kernels
from backfill_assets.labels.config import LabelSet

KEY_COLUMNS = ("ticker", "ts", "session_date")
LABELLED, PENDING = 0, 1


def output_types(label_set: LabelSet) -> dict[str, str]:
    """SQL types of the label columns of `label_set`, after the key columns."""
    if label_set.kind == "triple_barrier":
        columns = {"label": "TINYINT", "bars_to_exit": "SMALLINT", "ret": "DOUBLE", "amb": "BOOLEAN"}
    elif label_set.kind == "vol_scaled_return":
        columns = {"vsr": "DOUBLE"}
    else:
        columns = {"mfe": "DOUBLE", "mae": "DOUBLE"}
        if label_set.scale_by_trgt:
            columns |= {"mfe_trgt": "DOUBLE", "mae_trgt": "DOUBLE"}
    return columns | {"trgt": "DOUBLE", "pending": "BOOLEAN"}


def segments(codes: np.ndarray, days: np.ndarray, cross_session: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per bar: the exclusive end of the bars its horizon may use, and whether that end is final.

    `codes` number the tickers (bars are ticker-major). Crossing sessions, a horizon may use the
    ticker's bars up to the last one read (not final: more may come). Session-bounded, it ends at
    the session's last bar, a final vertical barrier.
    """
    n = len(codes)
    change = codes[1:] != codes[:-1]
    if not cross_session:
        change |= days[1:] != days[:-1]
    bounds = np.concatenate(([0], np.flatnonzero(change) + 1, [n])).astype(np.int64)
    seg_end = np.repeat(bounds[1:], np.diff(bounds))
    return seg_end, np.full(n, not cross_session)


def ticker_starts(codes: np.ndarray) -> np.ndarray:
    change = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    return np.concatenate(([0], change, [len(codes)])).astype(np.int64)


def compute_labels(
    label_set: LabelSet,
    bars: pd.DataFrame,
    anchors: np.ndarray | None = None,
    sigmas: dict[int, np.ndarray] | None = None,
    keep: np.ndarray | None = None,
) -> pd.DataFrame:
    """Label every bar of `bars` (ordered by ticker, ts), sigma's EWM over all of a ticker's bars in
    `bars`, or with `anchors` from each bar's anchor bar (see materialize.window_anchors).
    `sigmas`: sigma by span, shared by the sets labelling these bars with these anchors.
    `keep`: the positions of the rows to return (all of them if None)."""
    if bars.empty:
        return pd.DataFrame(columns=[*KEY_COLUMNS, *output_types(label_set)])
    codes = pd.factorize(bars["ticker"], sort=False)[0]
    arrays = {
        c: np.ascontiguousarray(bars[c].to_numpy(dtype=np.float64)) for c in ("open", "high", "low", "close")
    }
    days = bars["session_date"].to_numpy()
    seg_end, seg_final = segments(codes, days, label_set.cross_session)
    h = label_set.horizon
    cache = sigmas if sigmas is not None else {}
    if label_set.span not in cache:
        cache[label_set.span] = kernels.ewm_sigma(
            arrays["close"], ticker_starts(codes), label_set.span, anchors
        )
    sigma = cache[label_set.span]
    trgt = kernels.barrier_unit(sigma, h)
    values: dict[str, np.ndarray]
    if label_set.kind == "triple_barrier":
        label, bars_to_exit, ret, amb, state = kernels.triple_barrier(
            arrays["open"], arrays["high"], arrays["low"], arrays["close"], trgt, seg_end, seg_final,
            h, label_set.pt, label_set.sl, label_set.min_trgt, label_set.tie_code,
        )  # fmt: skip
        values = {"label": label, "bars_to_exit": bars_to_exit, "ret": ret, "amb": amb}
    elif label_set.kind == "vol_scaled_return":
        vsr, state = kernels.vol_scaled_return(
            arrays["close"], trgt, seg_end, seg_final, h, label_set.min_trgt
        )
        values = {"vsr": vsr}
    else:
        mfe, mae, state = kernels.mfe_mae(
            arrays["high"], arrays["low"], arrays["close"], seg_end, seg_final, h
        )
        values = {"mfe": mfe, "mae": mae}
        if label_set.scale_by_trgt:
            valid = trgt > label_set.min_trgt
            values |= {
                "mfe_trgt": np.where(valid, mfe / trgt, np.nan),
                "mae_trgt": np.where(valid, mae / trgt, np.nan),
            }
    return _frame(bars, values, trgt, state, keep)


def _frame(
    bars: pd.DataFrame,
    values: Mapping[str, np.ndarray],
    trgt: np.ndarray,
    state: np.ndarray,
    keep: np.ndarray | None,
) -> pd.DataFrame:
    """The label table's rows, columns assembled without copies: a run's frame is millions of rows
    per set, and pandas' default construction copies each column twice."""

    def kept(array: np.ndarray) -> np.ndarray:
        return array if keep is None else array[keep]

    state = kept(state)
    unlabelled = state != LABELLED
    columns: dict[str, object] = {
        c: bars[c].array if keep is None else bars[c].array.take(keep) for c in KEY_COLUMNS
    }
    for name, array in values.items():
        if name in ("label", "bars_to_exit"):
            columns[name] = pd.arrays.IntegerArray(kept(array), unlabelled)
        elif name == "amb":
            columns[name] = pd.arrays.BooleanArray(kept(array), unlabelled)
        else:
            columns[name] = np.where(unlabelled, np.nan, kept(array))
    columns["trgt"] = kept(trgt)
    columns["pending"] = state == PENDING
    return pd.DataFrame(columns, copy=False)
