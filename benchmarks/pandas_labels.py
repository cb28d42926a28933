"""The three default label sets as a pandas script computes them: the baseline of the label benchmark.

Written the way research code does it (mlfinlab's `apply_pt_sl_on_t1` pattern): EWM volatility per
ticker with `Series.ewm`, then one pandas slice of the forward path per event for the triple
barrier, `shift` for the forward return, and reversed rolling windows for MFE/MAE. Same horizon,
span and barrier widths as our sets; the tie and session rules of the spec are left out (they only
make the loop longer), so it is, if anything, flattered.
"""

import numpy as np
import pandas as pd

from backfill_assets.labels.config import LabelSet


def sigma(close: pd.Series, span: int) -> pd.Series:
    return np.log(close).diff().ewm(span=span, min_periods=span).std()


def triple_barrier(close: pd.Series, trgt: pd.Series, horizon: int, pt: float, sl: float) -> pd.Series:
    labels = pd.Series(np.nan, index=close.index)
    for i, width in enumerate(trgt.to_numpy()):
        if np.isnan(width):
            continue
        path = close.iloc[i + 1 : i + 1 + horizon] / close.iloc[i] - 1
        if path.empty:
            continue
        up = path[path >= pt * width].index.min()
        down = path[path <= -sl * width].index.min()
        touched = [t for t in (up, down) if not pd.isna(t)]
        if not touched:
            labels.iloc[i] = float(np.sign(path.iloc[-1]))  # the vertical barrier
        else:
            labels.iloc[i] = 1.0 if min(touched) == up else -1.0
    return labels


def compute(label_sets: tuple[LabelSet, ...], bars: pd.DataFrame) -> None:
    for _, group in bars.groupby("ticker", sort=False):
        close, high, low = (group[c].reset_index(drop=True) for c in ("close", "high", "low"))
        for s in label_sets:
            trgt = sigma(close, s.span) * np.sqrt(s.horizon)
            if s.kind == "triple_barrier":
                triple_barrier(close, trgt, s.horizon, s.pt, s.sl)
            elif s.kind == "vol_scaled_return":
                _ = (close.shift(-s.horizon) / close - 1) / trgt
            else:
                ahead_high = high[::-1].rolling(s.horizon, min_periods=1).max()[::-1].shift(-1)
                ahead_low = low[::-1].rolling(s.horizon, min_periods=1).min()[::-1].shift(-1)
                _ = (ahead_high / close - 1, ahead_low / close - 1)
