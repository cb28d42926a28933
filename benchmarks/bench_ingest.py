"""Ingest throughput: one batched run vs per-partition runs vs a hand-written row-by-row script.

All three fetch the same synthetic 1-minute bars and write them to a fresh DuckDB file in this run;
figures are bars/minute and ratios against the row-by-row baseline measured alongside.
Usage: python benchmarks/bench_ingest.py [--tickers 5] [--sessions 60]
"""

import argparse
import datetime as dt
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import duckdb
from report import publish  # run as a script: benchmarks/ is on sys.path

from backfill_assets.calendar import get_calendar
from backfill_assets.ingest import ingest
from backfill_assets.providers.base import BarRequest
from backfill_assets.providers.synthetic import SyntheticProvider
from backfill_assets.storage.duckdb_store import DuckDBBarStore
from backfill_assets.timeframes import TIMEFRAMES

M1 = TIMEFRAMES["1Min"]


def timed(fn: Callable[[], int]) -> tuple[int, float]:
    started = time.perf_counter()
    rows = fn()
    return rows, time.perf_counter() - started


def main() -> None:
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # pandas 3.1 notices from dependencies
    parser = argparse.ArgumentParser()
    parser.add_argument("--tickers", type=int, default=5)
    parser.add_argument("--sessions", type=int, default=60)
    args = parser.parse_args()
    calendar = get_calendar("XNYS", dt.date(2024, 1, 2))
    provider = SyntheticProvider(calendar)
    tickers = [f"T{i:03d}" for i in range(args.tickers)]
    sessions = calendar.sessions[: args.sessions]
    slices = [(t, d) for t in tickers for d in sessions]
    tmp = Path(tempfile.mkdtemp())

    def batched() -> int:
        return ingest(slices, provider, DuckDBBarStore(tmp / "batched.duckdb"), calendar, M1).total_rows

    def per_partition() -> int:
        store = DuckDBBarStore(tmp / "per_partition.duckdb")
        return sum(ingest([s], provider, store, calendar, M1).total_rows for s in slices)

    def row_by_row() -> int:
        # What a typical hand-written script does: a request per (ticker, day), executemany inserts.
        con = duckdb.connect(str(tmp / "script.duckdb"))
        con.execute(
            "CREATE TABLE bars (ticker VARCHAR, ts TIMESTAMPTZ, open DOUBLE, high DOUBLE, low DOUBLE,"
            " close DOUBLE, volume DOUBLE, trade_count BIGINT, vwap DOUBLE, PRIMARY KEY (ticker, ts))"
        )
        rows = 0
        for ticker, day in slices[: max(1, len(slices) // 20)]:  # a 5% sample: the loop is slow
            bars = provider.fetch(BarRequest((ticker,), (day,), M1)).bars
            con.execute("DELETE FROM bars WHERE ticker = ? AND CAST(ts AS DATE) = ?", [ticker, day])
            con.executemany(
                "INSERT INTO bars VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", bars.itertuples(index=False)
            )
            rows += len(bars)
        con.close()
        return rows

    results = {name: timed(fn) for name, fn in [("row-by-row script (baseline)", row_by_row),
                                                ("per-partition runs", per_partition),
                                                ("batched run (bars asset)", batched)]}  # fmt: skip
    base_rows, base_s = results["row-by-row script (baseline)"]
    base_rate = base_rows / base_s * 60
    lines = [
        f"Ingest, synthetic 1Min bars into DuckDB: {len(tickers)} tickers x {len(sessions)} sessions "
        f"({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        "| path | bars | seconds | bars/min | x baseline |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, (rows, seconds) in results.items():
        rate = rows / seconds * 60
        lines.append(f"| {name} | {rows:,} | {seconds:.2f} | {rate:,.0f} | {rate / base_rate:.1f} |")
    publish("ingest", lines)


if __name__ == "__main__":
    main()
