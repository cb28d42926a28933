"""A real daemon backfill: runs created, Dagster's overhead per run, and peak RSS against the budget.

Starts dagster-webserver and dagster-daemon on loopback with a fresh DAGSTER_HOME and the shipped
dagster.yaml, launches `backfill-assets backfill` (synthetic provider, DuckDB) for tickers x sessions,
then reads the runs back from the instance. Run with 1x and 10x the sessions per run.
Usage: python benchmarks/bench_backfill.py [--tickers 6] [--sessions 15 150]
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
from report import publish  # run as a script: benchmarks/ is on sys.path

from backfill_assets.calendar import get_calendar
from backfill_assets.settings import PROJECT_ROOT, load_settings
from backfill_assets.webserver import wait_until_loaded

BIN = Path(sys.executable).parent
TICKERS = ["AAPL", "AMZN", "GOOGL", "MSFT", "NVDA", "TSLA", "META", "NFLX"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def measure(n_tickers: int, n_sessions: int) -> str:
    home = Path(tempfile.mkdtemp())
    (home / "dagster.yaml").write_text((PROJECT_ROOT / "dagster.yaml").read_text())
    env = {**os.environ, "DAGSTER_HOME": str(home), "BACKFILL_DUCKDB_PATH": str(home / "market.duckdb"),
           "BACKFILL_FRESHNESS": "off"}  # fmt: skip
    port, workspace = free_port(), str(PROJECT_ROOT / "workspace.yaml")
    commands = [
        [str(BIN / "dagster-webserver"), "-w", workspace, "-h", "127.0.0.1", "-p", str(port)],
        [str(BIN / "dagster-daemon"), "run", "-w", workspace],
    ]
    null = subprocess.DEVNULL
    procs = [
        subprocess.Popen(c, env=env, cwd=PROJECT_ROOT, stdout=null, stderr=null, start_new_session=True)
        for c in commands
    ]
    url = f"http://127.0.0.1:{port}"
    calendar = get_calendar("XNYS", load_settings().start_date)
    sessions = calendar.sessions_in(calendar.first_session, calendar.last_completed())[:n_sessions]
    try:
        wait_until_loaded(url)
        started = time.monotonic()
        command = [str(BIN / "backfill-assets"), "backfill", "--tickers", ",".join(TICKERS[:n_tickers]),
                   "--start", str(sessions[0]), "--end", str(sessions[-1]), "--wait"]  # fmt: skip
        out = subprocess.run(
            command, env={**env, "DAGSTER_WEBSERVER_URL": url}, check=True, capture_output=True
        )
        backfill_id = out.stdout.decode().split("launched backfill ")[1].split(":")[0]
        wall = time.monotonic() - started
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        # Only the CLI's backfill: the label assets follow in backfills of their own.
        runs = [
            r for r in instance.get_run_records() if r.dagster_run.tags.get("dagster/backfill") == backfill_id
        ]
        records = instance.fetch_materializations(dg.AssetKey("bars"), limit=10_000).records
    ids = {r.dagster_run.run_id for r in runs}
    per_run = {
        r.run_id: r.asset_materialization for r in records if r.asset_materialization and r.run_id in ids
    }
    compute = sum(float(m.metadata["duration_s"].value) for m in per_run.values())  # type: ignore[misc,arg-type]
    run_wall = sum((r.end_time or 0) - (r.start_time or 0) for r in runs)
    peak = max(float(m.metadata["peak_rss_mb"].value) for m in per_run.values())  # type: ignore[arg-type]
    budget = next(iter(per_run.values())).metadata["memory_budget_mb"].value
    return (
        f"| {n_tickers} x {len(sessions)} | {len(runs)} | {wall:.0f} | {run_wall / len(runs):.1f} "
        f"| {(run_wall - compute) / len(runs):.1f} | {compute / len(runs):.2f} | {peak:.0f} / {budget} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tickers", type=int, default=6)
    parser.add_argument("--sessions", type=int, nargs="+", default=[15, 150])
    args = parser.parse_args()
    lines = [
        "| partitions (tickers x sessions) | runs | backfill wall s | run wall s | overhead s/run "
        "| asset compute s/run | peak RSS MB / budget |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(measure(args.tickers, n) for n in args.sessions),
    ]
    publish("backfill", ["Daemon backfills (synthetic provider, DuckDB, shipped dagster.yaml)", "", *lines])


if __name__ == "__main__":
    main()
