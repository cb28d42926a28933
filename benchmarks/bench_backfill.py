"""Real daemon backfills: Dagster's overhead, and peak RSS per run against the memory budget.

Starts dagster-webserver and dagster-daemon on loopback with a fresh DAGSTER_HOME and the shipped
dagster.yaml, launches `backfill-assets backfill --assets bars` (synthetic provider, DuckDB) for
tickers x sessions, then reads the runs and materializations back from the instance.
- Memory: 1x and 10x the sessions per run (single_run: one run per ticker).
- Orchestration: 2,000 partitions, as single_run (8 runs) and as multi_run of 50 (40 runs). The
  overhead share is the part of the backfill's wall time (launch to COMPLETED) in which no run was
  computing the asset: the daemon's cadences, queueing, run process start-up and tear-down. The
  label sensor is stopped so that the queue holds only this backfill's runs.
Usage: python benchmarks/bench_backfill.py [--quick]
"""

import argparse
import time

import dagster as dg
from dagster_procs import cli_backfill, fresh_home, running_dagster, stop_sensor  # benchmarks/ on sys.path
from report import publish

from backfill_assets.calendar import get_calendar
from backfill_assets.defs.run_facts import run_facts
from backfill_assets.settings import load_settings

TICKERS = ["AAPL", "AMZN", "GOOGL", "MSFT", "NVDA", "TSLA", "META", "NFLX"]


def busy_seconds(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end] intervals: time in which at least one run computed."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def measure(n_tickers: int, n_sessions: int, batch: int | None) -> str:
    home, env = fresh_home()
    if batch is not None:
        env["BACKFILL_PARTITIONS_PER_RUN"] = str(batch)
    calendar = get_calendar("XNYS", load_settings().start_date)
    sessions = calendar.sessions_in(calendar.first_session, calendar.last_completed())[:n_sessions]
    # Labels follow new bars through their own runs; kept out so the queue holds only this backfill.
    stop_sensor(env, "label_recompute_sensor")
    with running_dagster(env) as dagster:
        started = time.monotonic()
        backfill_id = cli_backfill(env, dagster.url, TICKERS[:n_tickers], sessions)
        wall = time.monotonic() - started
    with dg.DagsterInstance.from_config(str(home)) as instance:
        # Only the CLI's backfill: the label assets follow in backfills of their own.
        runs = [
            r for r in instance.get_run_records() if r.dagster_run.tags.get("dagster/backfill") == backfill_id
        ]
        records = instance.fetch_materializations(dg.AssetKey("bars"), limit=100_000).records
        facts = {
            r.dagster_run.run_id: run_facts(instance, r.dagster_run.run_id, dg.AssetKey("bars")) for r in runs
        }
    durations = {run_id: float(f["duration_s"]) for run_id, f in facts.items() if f}
    compute = sum(durations.values())
    ends = {run_id: max(r.timestamp for r in records if r.run_id == run_id) for run_id in durations}
    busy = busy_seconds([(ends[run_id] - d, ends[run_id]) for run_id, d in durations.items()])
    run_wall = sum((r.end_time or 0) - (r.start_time or 0) for r in runs)
    peak = max(float(f["peak_rss_mb"]) for f in facts.values() if f)
    budget = next(f for f in facts.values() if f)["memory_budget_mb"]
    policy = "single_run" if batch is None else f"multi_run({batch})"
    return (
        f"| {n_tickers} x {len(sessions)} = {n_tickers * len(sessions):,} | {policy} | {len(runs)} "
        f"| {wall:.0f} | {1 - busy / wall:.0%} | {run_wall / len(runs):.1f} "
        f"| {(run_wall - compute) / len(runs):.1f} | {compute / len(runs):.2f} | {peak:.0f} / {budget} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="only the 1x/10x memory rows")
    args = parser.parse_args()
    scenarios: list[tuple[int, int, int | None]] = [(6, 15, None), (6, 150, None)]
    if not args.quick:
        scenarios += [(8, 250, None), (8, 250, 50)]
    lines = [
        "| partitions (tickers x sessions) | backfill policy | runs | backfill wall s "
        "| wall outside asset compute | run wall s | run overhead s/run | asset compute s/run "
        "| peak RSS MB / budget |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        *(measure(*scenario) for scenario in scenarios),
    ]
    publish("backfill", ["Daemon backfills (synthetic provider, DuckDB, shipped dagster.yaml)", "", *lines])


if __name__ == "__main__":
    main()
