"""Ingest against the local Alpaca server at Alpaca's free-plan limit: ours vs a seed-style script.

The server (the test suite's protocol-faithful one, on loopback) enforces R requests per window and
pages of at most 10,000 bars, and answers 429 with Retry-After beyond that. Both sides fetch the
same universe of 1-minute bars through alpaca-py:
- ours: the bars asset's ingest (multi-symbol pages, the shared rate budget, retries), in process;
- the baseline: what a hand-written backfill does, one request series per symbol, 4 threads, a fixed
  delay of window/R after each request, a fixed sleep and retry on errors.
Figures: bars/min as a share of the physical limit (R per window x 10,000 bars), 429s, requests
against the lower bound ceil(bars / 10,000). `--mode short` scales the window to 6 s (20 requests,
the same 200/min); `--mode full` is the real minute.
Usage: python benchmarks/bench_alpaca.py [--mode short|full]
"""

import argparse
import datetime as dt
import math
import multiprocessing as mp
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from alpaca.common.exceptions import APIError
from alpaca.data.enums import DataFeed
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.models import BarSet
from alpaca.data.requests import StockBarsRequest
from alpaca.data.timeframe import TimeFrame
from report import publish, timed

from backfill_assets.calendar import get_calendar
from backfill_assets.chunked import ingest_in_chunks
from backfill_assets.defs.providers import AlpacaProviderResource
from backfill_assets.memory import MemoryBudget
from backfill_assets.storage.duckdb_store import DuckDBBarStore
from backfill_assets.timeframes import TIMEFRAMES

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the test servers live with the tests
from backfill_assets_tests.servers.alpaca import AlpacaServerConfig, running_alpaca  # noqa: E402

KEY, SECRET, PAGE = "PKBENCH0000000000001", "bench-secret", 10_000
MODES = {  # window s, requests per window, tickers, sessions
    "short": (6.0, 20, 100, 50),  # ~195 requests: ~10 windows
    "full": (60.0, 200, 100, 250),  # ~975 requests: ~5 minutes
}


def ours(url: str, tickers: list[str], days: list[dt.date], window_s: float, limit: int) -> int:
    calendar = get_calendar("XNYS", dt.date(2024, 1, 2))
    resource = AlpacaProviderResource(
        api_key=KEY, secret_key=SECRET, base_url=url, requests_per_minute=round(limit * 60 / window_s),
        budget_window_s=window_s, budget_dir=tempfile.mkdtemp(), max_retries=10,
    )  # fmt: skip
    store = DuckDBBarStore(Path(tempfile.mkdtemp()) / "ours.duckdb")
    slices = [(t, d) for t in tickers for d in days]
    provider, budget = resource.build(calendar), MemoryBudget(1024)
    return ingest_in_chunks(slices, provider, store, calendar, TIMEFRAMES["1Min"], budget)[0].total_rows


def seed_script(url: str, tickers: list[str], days: list[dt.date], window_s: float, limit: int) -> int:
    """Per-symbol requests, a semaphore of 4, a fixed delay, sleep-and-retry on any API error."""
    client = StockHistoricalDataClient(KEY, SECRET, url_override=url)
    client._retry = 0  # noqa: SLF001  # the script does its own retrying, as such scripts do
    delay, gate, rows = window_s / limit, threading.Semaphore(4), [0]
    lock = threading.Lock()

    def fetch(symbol: str) -> None:
        with gate:
            for _attempt in range(20):
                try:
                    request = StockBarsRequest(symbol_or_symbols=symbol, timeframe=TimeFrame.Minute,
                                               start=dt.datetime.combine(days[0], dt.time(), dt.UTC),
                                               end=dt.datetime.combine(days[-1], dt.time(23, 59), dt.UTC),
                                               limit=None, feed=DataFeed.IEX)  # fmt: skip
                    found = client.get_stock_bars(request)
                    bars = found.data.get(symbol, []) if isinstance(found, BarSet) else []
                    with lock:
                        rows[0] += len(bars)
                    time.sleep(delay)
                    return
                except APIError:
                    time.sleep(window_s / 2)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(fetch, tickers))
    return rows[0]


def measure(
    name: str, fn: Callable[..., int], mode: tuple[float, int, int, int], days: list[dt.date]
) -> tuple[str, int, float, int, int]:
    """`fn` in a fresh process (its RSS is its own: the server's memory must not count against our
    memory budget, nor the script's parsed bars), against a fresh server in this process."""
    window_s, limit, n_tickers, _ = mode
    tickers = [f"T{i:03d}" for i in range(n_tickers)]
    config = AlpacaServerConfig(api_key=KEY, secret_key=SECRET, rate_limit=limit, rate_window_s=window_s,
                                max_page_size=PAGE, latency_s=0.05)  # fmt: skip
    with running_alpaca(config) as server, ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        rows, seconds = pool.submit(timed, fn, server.url, tickers, days, window_s, limit).result()
        return name, rows, seconds, server.count(), server.count(status=429)


def main() -> None:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=list(MODES), default="short")
    args = parser.parse_args()
    mode = MODES[args.mode]
    window_s, limit, n_tickers, n_sessions = mode
    days = list(get_calendar("XNYS", dt.date(2024, 1, 2)).sessions[:n_sessions])
    physical = limit * PAGE * 60 / window_s  # bars per minute at the limit, full pages
    results = [measure("seed-style script (baseline)", seed_script, mode, days),
               measure("bars asset ingest (ours)", ours, mode, days)]  # fmt: skip
    base_rate = results[0][1] / results[0][2] * 60
    lines = [
        f"Alpaca ingest, local server at {limit} requests / {window_s:g} s "
        f"({limit * 60 / window_s:.0f}/min), "
        f"pages of {PAGE:,} bars, {n_tickers} tickers x {n_sessions} sessions of 1Min bars "
        f"({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, mode {args.mode})",
        "",
        "| path | bars | seconds | bars/min | share of limit | requests | lower bound | 429s | x baseline |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rows, seconds, requests, throttled in results:
        rate = rows / seconds * 60
        lines.append(
            f"| {name} | {rows:,} | {seconds:.1f} | {rate:,.0f} | {rate / physical:.0%} | {requests} "
            f"| {math.ceil(rows / PAGE)} | {throttled} | {rate / base_rate:.1f} |"
        )
    publish(f"alpaca_{args.mode}", lines)


if __name__ == "__main__":
    main()
