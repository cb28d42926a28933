"""What a label backfill reads: bars read per label row written, by the run shapes Dagster makes.

Bars for N tickers x S one-minute sessions are stored through the bars asset (synthetic provider,
DuckDB, a real SQLite instance), then one label set is backfilled the two ways a single_run backfill
splits the same work: one run per ticker over all sessions (what Dagster runs when tickers are the
smaller dimension, as here) and one run per session over all tickers (when sessions are). Each run
is the asset job over a partition range, as the daemon launches it; bars read come from each run's
recorded facts. Usage: python benchmarks/bench_label_reads.py [--tickers 100] [--sessions 250]
"""

import argparse
import datetime as dt
import os
import tempfile
import time
from pathlib import Path

home = Path(tempfile.mkdtemp()) / "dagster_home"
home.mkdir()
os.environ |= {"DAGSTER_HOME": str(home), "BACKFILL_DUCKDB_PATH": str(home / "market.duckdb"),
               "BACKFILL_FRESHNESS": "off"}  # fmt: skip

import dagster as dg  # noqa: E402
from report import publish  # noqa: E402  (benchmarks/ on sys.path)

from backfill_assets.calendar import get_calendar  # noqa: E402
from backfill_assets.definitions import defs  # noqa: E402
from backfill_assets.defs.run_facts import run_facts  # noqa: E402
from backfill_assets.labels.config import load_label_sets  # noqa: E402
from backfill_assets.labels.materialize import warmup_sessions  # noqa: E402
from backfill_assets.settings import PROJECT_ROOT, get_settings  # noqa: E402

RANGE = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


def run_range(
    job: dg.JobDefinition, instance: dg.DagsterInstance, key: dg.AssetKey, start: str, end: str
) -> str:
    tags = dict(zip(RANGE, (start, end), strict=True))
    result = job.execute_in_process(instance=instance, tags=tags, asset_selection=[key])
    assert result.success
    return result.run_id


def backfill(
    job: dg.JobDefinition, instance: dg.DagsterInstance, key: dg.AssetKey, ranges: list[tuple[str, str]]
) -> tuple[float, int, int]:
    """Wall seconds, bars read and label rows written over the runs of `ranges`."""
    started, read, written = time.perf_counter(), 0, 0
    for start, end in ranges:
        facts = run_facts(instance, run_range(job, instance, key, start, end), key)
        read += int(facts["bars_read"])
        written += int(facts["rows_total"])
    return time.perf_counter() - started, read, written


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tickers", type=int, default=100)
    parser.add_argument("--sessions", type=int, default=250)
    args = parser.parse_args()
    (home / "dagster.yaml").write_text((PROJECT_ROOT / "dagster.yaml").read_text())
    tickers = [f"T{i:03d}" for i in range(args.tickers)]
    calendar = get_calendar("XNYS", get_settings().start_date)
    days = list(calendar.sessions[: args.sessions])
    label_set = load_label_sets()[0]
    key = dg.AssetKey(["labels", label_set.name])
    job = defs().resolve_implicit_global_asset_job_def()
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("tickers", tickers)
        for ticker in tickers:
            run_range(job, instance, dg.AssetKey("bars"), f"{days[0]}|{ticker}", f"{days[-1]}|{ticker}")
        per_ticker = [(f"{days[0]}|{t}", f"{days[-1]}|{t}") for t in tickers]
        per_session = [(f"{d}|{tickers[0]}", f"{d}|{tickers[-1]}") for d in days]
        shapes = {
            f"one run per ticker ({len(per_ticker)} runs of {len(days)} sessions)": per_ticker,
            f"one run per session ({len(per_session)} runs of {len(tickers)} tickers)": per_session,
        }
        results = {name: backfill(job, instance, key, ranges) for name, ranges in shapes.items()}
    base = next(iter(results.values()))[0]
    warmup = warmup_sessions(label_set, get_settings().timeframe)
    lines = [
        f"Label backfill of `{label_set.name}` (H={label_set.horizon}, span {label_set.span}: warm-up "
        f"{warmup} sessions), {args.tickers} tickers x {args.sessions} one-minute sessions, DuckDB, "
        f"SQLite instance ({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        "| run shape | wall s | bars read | label rows written | bars read per row | wall / per-ticker |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, (wall, read, written) in results.items():
        lines.append(
            f"| {name} | {wall:.1f} | {read:,} | {written:,} | {read / written:.2f} | {wall / base:.2f} |"
        )
    publish("label_reads", lines)


if __name__ == "__main__":
    main()
