"""Label throughput: numba kernels (compute only), DuckDB read + compute + write, against pandas.

Bars are synthetic 1-minute random walks, 390 per session, 100k per ticker (1M bars = 10 tickers,
10M = 100 tickers), the three default label sets (H=60, span 100). Every figure is candles/minute,
measured in this run, and a ratio to the pandas script (pandas_labels.py, the baseline) on a 20k-bar
sample; the test oracle (a per-bar Python loop) is shown too.
Usage: python benchmarks/bench_labels.py [--sizes 1000000 10000000]
"""

import argparse
import datetime as dt
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandas_labels  # run as a script: benchmarks/ is on sys.path
from report import publish

from backfill_assets.calendar import get_calendar
from backfill_assets.labels import kernels, reference
from backfill_assets.labels.compute import segments, ticker_starts
from backfill_assets.labels.config import LabelSet, load_label_sets
from backfill_assets.labels.materialize import materialize_label_sets, materialize_labels
from backfill_assets.schemas import BARS_COLUMNS
from backfill_assets.storage.duckdb_labels import DuckDBLabelStore
from backfill_assets.storage.duckdb_store import DuckDBBarStore
from backfill_assets.timeframes import TIMEFRAMES

PER_TICKER, PER_SESSION = 100_000, 390

CALENDAR = get_calendar("XNYS", dt.date(2024, 1, 2))


def synthetic_bars(n: int, seed: int = 0) -> pd.DataFrame:
    """`n` valid 1-minute bars, ticker-major: log random walks with intraday noise."""
    rng = np.random.default_rng(seed)
    tickers = np.repeat([f"T{i:03d}" for i in range(n // PER_TICKER)], PER_TICKER)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)).reshape(-1, PER_TICKER) / 3).ravel()
    open_ = close * np.exp(rng.normal(0, 3e-4, n))
    spread = np.abs(rng.normal(0, 5e-4, n))
    minute = np.tile(np.arange(PER_TICKER), n // PER_TICKER)
    sessions = pd.DatetimeIndex(CALENDAR.sessions)  # real sessions: label runs look sessions up
    days = sessions[minute // PER_SESSION]
    ts = (days + pd.to_timedelta(minute % PER_SESSION + 870, unit="min")).tz_localize("UTC")
    return pd.DataFrame(
        {
            "ticker": tickers, "ts": ts.astype("datetime64[us, UTC]"), "session_date": days.date,
            "open": open_, "high": np.maximum(open_, close) * (1 + spread),
            "low": np.minimum(open_, close) * (1 - spread), "close": close,
        }
    )  # fmt: skip


def as_stored(bars: pd.DataFrame) -> pd.DataFrame:
    """`synthetic_bars` with the rest of the `bars` table's columns, ready for `replace_bars`."""
    frame = bars.assign(volume=1.0, trade_count=1, vwap=bars["close"], provider="bench", timeframe="1Min")
    return frame.assign(adjustment="raw", fetched_at=pd.Timestamp.now(tz="UTC"))[list(BARS_COLUMNS)]


def kernels_only(label_sets: tuple[LabelSet, ...], bars: pd.DataFrame, impl: Any) -> Callable[[], None]:
    arrays = {c: np.ascontiguousarray(bars[c].to_numpy(np.float64)) for c in ("open", "high", "low", "close")}
    codes = pd.factorize(bars["ticker"])[0]
    seg_end, seg_final = segments(codes, bars["session_date"].to_numpy(), True)
    starts = ticker_starts(codes)

    def run() -> None:
        for s in label_sets:
            trgt = impl.barrier_unit(impl.ewm_sigma(arrays["close"], starts, s.span), s.horizon)
            o, h, lo, c = arrays["open"], arrays["high"], arrays["low"], arrays["close"]
            if s.kind == "triple_barrier":
                impl.triple_barrier(
                    o, h, lo, c, trgt, seg_end, seg_final, s.horizon, s.pt, s.sl, s.min_trgt, 0
                )
            elif s.kind == "vol_scaled_return":
                impl.vol_scaled_return(c, trgt, seg_end, seg_final, s.horizon, s.min_trgt)
            else:
                impl.mfe_mae(h, lo, c, seg_end, seg_final, s.horizon)

    return run


def end_to_end(
    label_sets: tuple[LabelSet, ...], bars: pd.DataFrame, path: Path, one_read: bool = False
) -> Callable[[], None]:
    """Store the bars once, then time: read from DuckDB (once per set, or once for all with
    `one_read`, as the label multi-asset does), compute every set, write every label table."""
    slices = sorted(set(zip(bars["ticker"], bars["session_date"], strict=True)))
    DuckDBBarStore(path).replace_bars(as_stored(bars), slices)
    store = DuckDBLabelStore(DuckDBBarStore(path))

    def run() -> None:
        if one_read:
            materialize_label_sets(label_sets, slices, store, CALENDAR, TIMEFRAMES["1Min"])
            return
        for label_set in label_sets:
            materialize_labels(label_set, slices, store, CALENDAR, TIMEFRAMES["1Min"])

    return run


def best_of(fn: Callable[[], None], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    args = parser.parse_args()
    label_sets = load_label_sets()
    sample = synthetic_bars(PER_TICKER)[:20_000]
    kernels_only(label_sets, sample, kernels)()  # JIT warm-up (or cache load)
    pandas_s = best_of(lambda: pandas_labels.compute(label_sets, sample), 1)
    oracle_s = best_of(kernels_only(label_sets, sample, reference), 1)
    ref_rate = len(sample) / pandas_s * 60
    lines = [
        "| bars | stage | seconds | candles/min | vs pandas |",
        "|---:|---|---:|---:|---:|",
        f"| {len(sample):,} | pandas script (per-event slices, Series.ewm), compute | {pandas_s:.2f} "
        f"| {ref_rate / 1e6:,.2f}M | 1x |",
        f"| {len(sample):,} | pure-Python test oracle, compute | {oracle_s:.2f} "
        f"| {len(sample) / oracle_s * 60 / 1e6:,.2f}M | {pandas_s / oracle_s:,.1f}x |",
    ]
    tmp = Path(tempfile.mkdtemp())
    for n in args.sizes:
        bars = synthetic_bars(n)
        compute_s = best_of(kernels_only(label_sets, bars, kernels), 3)
        one_s = best_of(end_to_end(label_sets[:1], bars, tmp / f"one_{n}.duckdb"), 2)
        all_s = best_of(end_to_end(label_sets, bars, tmp / f"all_{n}.duckdb"), 1)
        shared_s = best_of(end_to_end(label_sets, bars, tmp / f"shared_{n}.duckdb", one_read=True), 2)
        stages = (
            ("numba kernels of all three sets, compute only", compute_s),
            (f"DuckDB read + compute + write, one set ({label_sets[0].name})", one_s),
            ("DuckDB read + compute + write, all three sets (3 reads, 3 tables)", all_s),
            ("DuckDB read + compute + write, all three sets from one read (the label multi-asset)", shared_s),
        )
        for stage, seconds in stages:
            rate = n / seconds * 60
            lines.append(
                f"| {n:,} | {stage} | {seconds:.2f} | {rate / 1e6:,.0f}M | {rate / ref_rate:,.0f}x |"
            )
    header = f"Labels: the three default sets (H=60, span 100), one process, {dt.date.today()}"
    publish("labels", [header, "", *lines])


if __name__ == "__main__":
    main()
