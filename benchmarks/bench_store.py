"""Store write throughput: the same bars and labels into DuckDB and into Postgres, in one run.

Bars: a first write (empty table) and a rewrite of the same slices (the delete included), through
`replace_bars`. Labels: one label set's run (read the bars, compute, replace the label slices), the
label write alone, and every set from one read into empty tables, then rewritten. Postgres is the
server of BACKFILL_BENCH_POSTGRES_URL (default: the local test server); the benchmark works in a
schema of its own and drops it. Ratios are Postgres / DuckDB.
Usage: python benchmarks/bench_store.py [--bars 1000000]
"""

import argparse
import datetime as dt
import os
import secrets
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pandas_labels  # run as a script: benchmarks/ is on sys.path
import psycopg
from bench_labels import CALENDAR, as_stored, synthetic_bars  # run as a script: benchmarks/ is on sys.path
from report import publish  # run as a script: benchmarks/ is on sys.path

from backfill_assets.labels.compute import compute_labels, output_types
from backfill_assets.labels.config import LabelSet, load_label_sets
from backfill_assets.labels.materialize import materialize_label_sets, materialize_labels
from backfill_assets.storage.base import LabelStore, Slice
from backfill_assets.storage.duckdb_labels import DuckDBLabelStore
from backfill_assets.storage.duckdb_store import DuckDBBarStore
from backfill_assets.storage.postgres_labels import PostgresLabelStore
from backfill_assets.storage.postgres_store import PostgresStore
from backfill_assets.timeframes import TIMEFRAMES

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def seconds(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def measure(
    bars: pd.DataFrame, slices: list[Slice], store: DuckDBBarStore | PostgresStore, labels: LabelStore
) -> dict[str, float]:
    """Seconds per stage on one backend."""
    label_set = load_label_sets()[0]
    times = {
        "bars, first write": seconds(lambda: store.replace_bars(bars, slices)),
        "bars, rewrite of the same slices": seconds(lambda: store.replace_bars(bars, slices)),
    }
    days = [d for _, d in slices]
    history = labels.read_history({t for t, _ in slices}, min(days), max(days), 0)
    computed = compute_labels(label_set, history)
    types = output_types(label_set)
    labels.claim_version(label_set.table, label_set.version("1Min"), label_set.parameters("1Min"))
    every = load_label_sets()
    return (
        times
        | {
            f"labels ({label_set.name}): write only": seconds(
                lambda: labels.replace_labels(label_set.table, types, computed, slices)
            ),
            f"labels ({label_set.name}): read + compute + write": seconds(
                lambda: materialize_labels(label_set, slices, labels, CALENDAR, TIMEFRAMES["1Min"])
            ),
        }
        | all_sets(every, slices, labels)
    )


def all_sets(every: tuple[LabelSet, ...], slices: list[Slice], labels: LabelStore) -> dict[str, float]:
    """Every set from one read into empty tables (a backfill, or a rebuild after `labels reset`),
    then again over the same slices (each row deleted and rewritten)."""
    for label_set in every:
        labels.drop_labels(label_set.table)

    def run() -> None:
        materialize_label_sets(every, slices, labels, CALENDAR, TIMEFRAMES["1Min"])

    stage = f"labels, all {len(every)} sets from one read: read + compute + write"
    return {f"{stage}, empty tables": seconds(run), f"{stage}, rewrite of the same slices": seconds(run)}


def main() -> None:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    parser = argparse.ArgumentParser()
    parser.add_argument("--bars", type=int, default=1_000_000, help="a multiple of 100,000")
    args = parser.parse_args()
    bars = as_stored(synthetic_bars(args.bars))
    slices = sorted(set(zip(bars["ticker"], bars["session_date"], strict=True)), key=lambda s: (s[1], s[0]))
    duck = DuckDBBarStore(Path(tempfile.mkdtemp()) / "bench.duckdb")
    on_duckdb = measure(bars, slices, duck, DuckDBLabelStore(duck))
    url = os.environ.get("BACKFILL_BENCH_POSTGRES_URL") or DEFAULT_URL
    schema = f"bench_{secrets.token_hex(4)}"
    pg = PostgresStore(url, schema)
    try:
        on_postgres = measure(bars, slices, pg, PostgresLabelStore(pg))
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    n = len(bars)
    lines = [
        f"Store writes: {n:,} one-minute bars ({n // 100_000} tickers x 100,000), one process, "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; Postgres {pg.describe().split(' schema')[0]}",
        "",
        "| stage | DuckDB s | DuckDB rows/min | Postgres s | Postgres rows/min | Postgres / DuckDB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for stage, duck_s in on_duckdb.items():
        pg_s = on_postgres[stage]
        lines.append(
            f"| {stage} | {duck_s:.2f} | {n / duck_s * 60 / 1e6:,.1f}M | {pg_s:.2f} "
            f"| {n / pg_s * 60 / 1e6:,.1f}M | {duck_s / pg_s:.2f}x |"
        )
    # The label benchmark's baseline, measured here too so the ratio is of one run.
    sample = synthetic_bars(100_000)[:20_000]
    pandas_rate = len(sample) / seconds(lambda: pandas_labels.compute(load_label_sets()[:1], sample)) * 60
    stage = next(s for s in on_duckdb if "read + compute + write" in s)
    lines += [
        "",
        f"Pandas script, one label set, compute only (same run): {pandas_rate / 1e6:,.2f}M candles/min; "
        f"this label set end to end is {n / on_duckdb[stage] * 60 / pandas_rate:,.0f}x that on DuckDB and "
        f"{n / on_postgres[stage] * 60 / pandas_rate:,.0f}x on Postgres.",
    ]
    publish("store", lines)


if __name__ == "__main__":
    main()
