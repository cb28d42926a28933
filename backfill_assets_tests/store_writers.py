"""Writer processes for the store suite: a store named by a picklable spec, frames tagged by writer."""

import datetime as dt
import random
import time
from pathlib import Path
from typing import Any

import pandas as pd

from backfill_assets.calendar import get_calendar
from backfill_assets.providers.base import BarRequest
from backfill_assets.providers.synthetic import SyntheticProvider
from backfill_assets.schemas import session_of
from backfill_assets.storage.duckdb_store import DuckDBBarStore
from backfill_assets.storage.postgres_store import PostgresStore
from backfill_assets.timeframes import TIMEFRAMES


def spec_of(store: DuckDBBarStore | PostgresStore) -> tuple[str, ...]:
    if isinstance(store, PostgresStore):
        return ("postgres", store.url, store.schema)
    return ("duckdb", str(store.path))


def open_spec(spec: tuple[str, ...]) -> DuckDBBarStore | PostgresStore:
    if spec[0] == "postgres":
        return PostgresStore(spec[1], spec[2], lock_timeout_s=120)
    return DuckDBBarStore(Path(spec[1]), lock_timeout_s=120)


def tagged_bars(tickers: tuple[str, ...], days: tuple[dt.date, ...], tag: str) -> pd.DataFrame:
    """Synthetic 1Min bars of `tickers` x `days` with `provider` = `tag` (who wrote a slice)."""
    calendar = get_calendar("XNYS", dt.date(2024, 1, 2))
    bars = SyntheticProvider(calendar).fetch(BarRequest(tickers, days, TIMEFRAMES["1Min"])).bars
    bars["session_date"] = session_of(bars["ts"], calendar.tz)
    bars["provider"], bars["timeframe"], bars["adjustment"] = tag, "1Min", "raw"
    bars["fetched_at"] = bars["ts"]
    return bars


def write_rounds(spec: tuple[str, ...], tag: str, seed: int, rounds: int, queue: Any) -> None:
    """Rewrite random overlapping sets of 2 of 4 tickers x 3 of 5 sessions; report each write's span."""
    calendar = get_calendar("XNYS", dt.date(2024, 1, 2))
    store, rng = open_spec(spec), random.Random(seed)
    tickers = ("AAPL", "MSFT", "NVDA", "AMZN")
    days = tuple(calendar.sessions_in(dt.date(2024, 1, 2), dt.date(2024, 1, 8)))
    for _ in range(rounds):
        mine = tuple(rng.sample(tickers, 2))
        my_days = tuple(sorted(rng.sample(days, 3)))
        wanted = [(t, d) for t in mine for d in my_days]
        frame = tagged_bars(mine, my_days, tag)
        started = time.time()
        store.replace_bars(frame, list(reversed(wanted)) if seed % 2 else wanted)
        queue.put((tag, started, time.time(), [(t, d.isoformat()) for t, d in wanted]))


KILLED_WRITER = """
import sys, datetime as dt
from backfill_assets.calendar import get_calendar
from backfill_assets_tests.store_writers import open_spec, tagged_bars
cal = get_calendar("XNYS", dt.date(2024, 1, 2))
days = tuple(cal.sessions_in(dt.date(2024, 1, 2), dt.date(2024, 12, 31)))
tickers = ("AAPL", "MSFT", "NVDA", "AMZN")
bars = tagged_bars(tickers, days, "second-write")
store = open_spec(tuple(sys.argv[1:]))
print("writing", flush=True)
store.replace_bars(bars, [(t, d) for t in tickers for d in days])
print("committed", flush=True)
"""
