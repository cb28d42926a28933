"""Label kernels: hand-built paths, bitwise equality with the pure-Python reference, pandas, numba's cache."""

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from backfill_assets.labels import kernels, reference

Arrays = tuple[np.ndarray, ...]
NAN = float("nan")


def both(name: str, *args: Any) -> Arrays:
    """Run kernel and reference; every output must match in dtype and bit for bit."""
    got, want = getattr(kernels, name)(*args), getattr(reference, name)(*args)
    if isinstance(got, np.ndarray):
        got, want = (got,), (want,)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.tobytes() == w.tobytes(), name
    return tuple(got)


def path(rows: list[tuple[float, ...]]) -> Arrays:
    """open, high, low, close of one ticker from (o, h, l, c) rows."""
    return tuple(np.array(column, dtype=np.float64) for column in zip(*rows, strict=True))


def segments(starts: np.ndarray, session: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Crossing sessions: the ticker's end, not final. Else sessions of `session` bars, final."""
    n, sizes = int(starts[-1]), np.diff(starts)
    ends = np.repeat(starts[1:], sizes)
    if session is None:
        return ends, np.zeros(n, np.bool_)
    first = np.repeat(starts[:-1], sizes)
    return np.minimum(first + ((np.arange(n) - first) // session + 1) * session, ends), np.ones(n, np.bool_)


def event_at_0(n: int, trgt: float = 0.01) -> np.ndarray:
    return np.array([trgt] + [NAN] * (n - 1))


def tb(bars: Arrays, trgt: np.ndarray, horizon: int, session: int | None = None, **kw: Any) -> Arrays:
    o, h, lo, c = bars
    ends, final = segments(kw.pop("starts", np.array([0, len(c)])), session)
    args = {"pt": 1.0, "sl": 1.0, "min_trgt": 0.0, "tie_rule": kernels.TIE_OPEN} | kw
    return both("triple_barrier", o, h, lo, c, trgt, ends, final, horizon, *args.values())


def test_state_and_tie_codes_agree() -> None:
    codes = ("LABELLED", "PENDING", "NO_LABEL", "TIE_OPEN", "TIE_STOP_LOSS", "TIE_TAKE_PROFIT")
    assert [getattr(kernels, c) for c in codes] == [getattr(reference, c) for c in codes]
    assert [getattr(kernels, c) for c in codes] == [0, 1, 2, 0, 1, 2]


# U = 101, L = 99 for the event at t=0 (close 100, trgt 0.01); bar 2 touches both barriers.
@pytest.mark.parametrize(
    ("open_2", "tie_rule", "label", "amb"),
    [(101.5, 0, 1, False), (98.5, 0, -1, False), (100.0, 0, -1, True), (100.0, 1, -1, True),
     (101.5, 1, -1, True), (100.0, 2, 1, True), (98.5, 2, 1, True)],
    ids=["open-above-U", "open-below-L", "open-inside", "stop-loss", "stop-loss-gap-up", "take-profit",
         "take-profit-gap-down"],
)  # fmt: skip
def test_triple_barrier_same_bar_tie(open_2: float, tie_rule: int, label: int, amb: bool) -> None:
    bars = path([(100,) * 4, (100, 100.5, 99.5, 100), (open_2, 102, 98, 100.5), (100, 103, 99, 103)])
    got = tb(bars, event_at_0(4), 3, tie_rule=tie_rule)
    assert [a[0] for a in got] == [label, 2, pytest.approx(0.005), amb, kernels.LABELLED]


def test_triple_barrier_horizon_counts_rows_across_gaps() -> None:
    # Minutes 0, 1, 7, 30: missing minutes are missing rows, so H=3 exits at the 4th row (minute 30).
    bars = path([(100,) * 4, (100, 100.2, 99.9, 100), (100, 100.3, 99.8, 99.9), (99, 99.5, 99.1, 99.2)])
    label, bars_to_exit, ret, amb, state = tb(bars, event_at_0(4), 3)
    assert (label[0], bars_to_exit[0], ret[0], state[0]) == (0, 3, 99.2 / 100 - 1, 0)
    assert list(state[1:]) == [kernels.NO_LABEL] * 3  # trgt NaN: no event


@pytest.mark.parametrize(
    ("pt", "sl", "label", "bars_to_exit"), [(0.0, 1.0, -1, 2), (1.0, 0.0, 1, 1), (0.0, 0.0, 0, 3)]
)
def test_triple_barrier_disabled_barriers(pt: float, sl: float, label: int, bars_to_exit: int) -> None:
    bars = path([(100, 100, 100, 100), (100, 150, 100, 100), (100, 100, 50, 100), (100, 100, 100, 100)])
    got = tb(bars, event_at_0(4), 3, pt=pt, sl=sl)
    assert (got[0][0], got[1][0], got[4][0]) == (label, bars_to_exit, kernels.LABELLED)


def test_ticker_shorter_than_horizon_is_pending_unless_touched() -> None:
    bars = path([(100, 100, 100, 100), (100, 101.2, 99.5, 100.8), (100.8, 101, 100, 100.5)])
    label, bars_to_exit, ret, amb, state = tb(bars, np.full(3, 0.01), 5)
    assert list(state) == [kernels.LABELLED, kernels.PENDING, kernels.PENDING]
    assert (label[0], bars_to_exit[0]) == (1, 1) and list(label[1:]) == [0, 0] and np.isnan(ret[1:]).all()
    c = bars[3]
    seg_end, final = np.full(3, 3), np.zeros(3, np.bool_)
    assert list(both("vol_scaled_return", c, np.full(3, 0.01), seg_end, final, 5, 0.0)[1]) == [1, 1, 1]
    assert list(both("mfe_mae", bars[1], bars[2], c, seg_end, final, 5)[2]) == [1, 1, 1]


def test_session_bounded_vs_crossing() -> None:
    # Two sessions of 4 bars, H=3, no touches (pt=sl=0): bar 2 may look at 3..5 or only at 3.
    c = np.array([100.0, 101, 102, 103, 104, 105, 106, 107])
    bars, trgt = (c, c, c, c), np.full(8, 0.01)
    crossing, bounded = tb(bars, trgt, 3, pt=0.0, sl=0.0), tb(bars, trgt, 3, session=4, pt=0.0, sl=0.0)
    assert list(crossing[1]) == [3, 3, 3, 3, 3, 0, 0, 0] and list(crossing[4]) == [0] * 5 + [1] * 3
    assert list(bounded[1]) == [3, 2, 1, 0, 3, 2, 1, 0] and list(bounded[4]) == [0, 0, 0, 2] * 2
    assert bounded[2][2] == 103 / 102 - 1  # vertical barrier at the session's last bar
    ends, final = segments(np.array([0, 8]), 4)
    vsr, state = both("vol_scaled_return", c, trgt, ends, final, 3, 0.0)
    assert vsr[2] == (103 / 102 - 1) / 0.01 and list(state) == [0, 0, 0, 2] * 2 and np.isnan(vsr[3])
    mfe, mae, state = both("mfe_mae", c, c, c, ends, final, 3)
    assert (mfe[1], mae[1]) == (103 / 101 - 1, 102 / 101 - 1) and np.isnan(mfe[7]) and state[7] == 2


def test_zero_volatility_stretch_has_no_event() -> None:
    # Ticker 0 never moves: sigma is exactly 0. Ticker 1 moves, then goes flat: sigma decays but stays > 0,
    # so only a floor (research §4.5) removes its events.
    c, starts = np.array([100.0] * 30 + [100.0, 100.5, 100.2] + [100.0] * 27), np.array([0, 30, 60])
    ends, final = np.repeat(starts[1:], 30), np.zeros(60, np.bool_)
    (sigma,) = both("ewm_sigma", c, starts, 2)
    assert np.isnan(sigma[:2]).all() and (sigma[2:30] == 0.0).all() and 0.0 < sigma[50] < 1e-5
    (trgt,) = both("barrier_unit", sigma, 5)
    for floor, state_50 in ((0.0, kernels.LABELLED), (1e-4, kernels.NO_LABEL)):
        state = tb((c, c, c, c), trgt, 5, starts=starts, min_trgt=floor)[4]
        assert (state[2:30] == kernels.NO_LABEL).all() and state[50] == state_50
        assert both("vol_scaled_return", c, trgt, ends, final, 5, floor)[1][50] == state_50
    assert both("mfe_mae", c, c, c, ends, final, 5)[2][10] == kernels.LABELLED  # no trgt involved


def random_bars(seed: int, lengths: list[int]) -> tuple[Arrays, np.ndarray]:
    """Cent-rounded random walks (flat stretches, exact ties), ticker-major, with their starts."""
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    c = np.round(100 * np.exp(np.cumsum(rng.normal(0, 2e-3, n))), 2)
    o = np.round(c * np.exp(rng.normal(0, 1e-3, n)), 2)
    h = np.maximum(o, c) + np.round(np.abs(rng.normal(0, 0.1, n)), 2)
    lo = np.minimum(o, c) - np.round(np.abs(rng.normal(0, 0.1, n)), 2)
    return (o, h, lo, c), np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)


@pytest.mark.parametrize("session", [None, 7], ids=["crossing", "session-bounded"])
@pytest.mark.parametrize("span", [2, 20])
@pytest.mark.parametrize("horizon", [1, 5, 60])
def test_kernels_equal_reference_on_random_walks(horizon: int, span: int, session: int | None) -> None:
    (o, h, lo, c), starts = random_bars(horizon * span, [1, 3, 61, 400, 1, 150, 30])
    ends, final = segments(starts, session)
    (sigma,) = both("ewm_sigma", c, starts, span)
    (trgt,) = both("barrier_unit", sigma, horizon)
    states, labels, ambiguous = set(), set(), 0
    for i, (pt, sl) in enumerate([(1.0, 1.0), (0.0, 2.0), (2.0, 0.0), (0.5, 0.5), (0.3, 1.5), (0.05, 0.05)]):
        min_trgt = 3e-3 if i % 2 else 0.0
        label, _, _, amb, state = both(
            "triple_barrier", o, h, lo, c, trgt, ends, final, horizon, pt, sl, min_trgt, i % 3
        )
        states |= set(state.tolist())
        labels |= set(label[state == 0].tolist())
        ambiguous += int(amb.sum())
        both("vol_scaled_return", c, trgt, ends, final, horizon, min_trgt)
    both("mfe_mae", h, lo, c, ends, final, horizon)
    assert states == {0, 2} | (set() if session else {1}) and labels == {-1, 0, 1} and ambiguous > 0


@pytest.mark.parametrize("span", [2, 20, 100])
def test_ewm_sigma_matches_pandas(span: int) -> None:
    (_, _, _, c), starts = random_bars(span, [1, 250, 2, 1000, 90])
    ticker = np.repeat(np.arange(len(starts) - 1), np.diff(starts))
    previous = np.concatenate(([NAN], c[:-1]))
    previous[starts[:-1]] = NAN  # a ticker's first bar has no return
    r = pd.Series(np.log(c / previous))
    want = r.groupby(ticker).transform(lambda s: s.ewm(span=span, min_periods=span, adjust=True).std())
    np.testing.assert_allclose(kernels.ewm_sigma(c, starts, span), want.to_numpy(), rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    ("call", "message"),
    [(lambda c, e: kernels.mfe_mae(c, c, c, e, e > 0, 0), "horizon"),
     (lambda c, e: kernels.mfe_mae(c, c, c, e - 1, e > 0, 5), "seg_end"),
     (lambda c, e: kernels.ewm_sigma(np.where(e == 2, NAN, c), np.array([0, 3]), 2), "positive"),
     (lambda c, e: kernels.vol_scaled_return(c, c, e, e > 0, 5, NAN), "min_trgt")],
    ids=["horizon-0", "seg-end-at-bar", "nan-close", "nan-floor"],
)  # fmt: skip
def test_wrappers_reject_bad_input(call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(np.array([100.0, 101.0, 102.0]), np.array([1, 2, 3]))


CACHE_PROBE = """
import hashlib, numpy as np
from backfill_assets.labels import kernels as k
c = 100 * np.exp(np.cumsum(np.random.default_rng(7).normal(0, 1e-3, 500)))
starts, final = np.array([0, 200, 500]), np.zeros(500, bool)
ends = np.repeat(starts[1:], np.diff(starts))
trgt = k.barrier_unit(k.ewm_sigma(c, starts, 20), 5)
h, lo = c * 1.001, c * 0.999
out = [trgt, *k.triple_barrier(c, h, lo, c, trgt, ends, final, 5, 1.0, 1.0, 0.0, 0),
       *k.vol_scaled_return(c, trgt, ends, final, 5, 0.0), *k.mfe_mae(h, lo, c, ends, final, 5)]
print(hashlib.sha256(b"".join(a.tobytes() for a in out)).hexdigest())
"""


def test_numba_cache_shared_by_concurrent_first_calls(tmp_path: Path) -> None:
    env = os.environ | {"NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    run = [sys.executable, "-c", CACHE_PROBE]
    procs = [subprocess.Popen(run, env=env, stdout=subprocess.PIPE, text=True) for _ in range(3)]
    digests = {p.communicate(timeout=300)[0].strip() for p in procs}
    assert [p.returncode for p in procs] == [0, 0, 0] and len(digests) == 1
    assert len(list((tmp_path / "numba").rglob("*.nbi"))) == 5
    debug = env | {"NUMBA_DEBUG_CACHE": "1"}
    again = subprocess.run(run, env=debug, capture_output=True, text=True, check=True)
    assert "data loaded" in again.stdout and "data saved" not in again.stdout  # every kernel from the cache
    assert again.stdout.strip().splitlines()[-1] in digests
