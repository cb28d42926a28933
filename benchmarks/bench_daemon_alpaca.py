"""End to end through Dagster against the local Alpaca server: what a user gets, against a script.

Ours: dagster-webserver and dagster-daemon on a fresh DAGSTER_HOME (the shipped dagster.yaml, or
dagster.postgres.yaml on a fresh database), `backfill-assets backfill --wait` from a shell, timed from
the command's start to COMPLETED_SUCCESS (registration, launch, the daemon's loop, run start-up,
fetch, write, checks, events). The baseline: the seed-style per-symbol script of bench_alpaca.py.
The server enforces 20 requests / 6 s (Alpaca's 200/min, scaled as bench_alpaca's short mode) and
pages of 10,000 bars; the project's budget is set to the same (BACKFILL_BUDGET_WINDOW_S=6).
Scenarios: (a) 500 tickers x 1 session (the daily update), (b) 100 x 5; `--full` adds (c) 100 x 250.
Usage: python benchmarks/bench_daemon_alpaca.py [--full] [--postgres URL]
"""

import argparse
import datetime as dt
import math
import os
import subprocess
import time
import warnings

from bench_alpaca import KEY, PAGE, SECRET, measure, seed_script
from dagster_procs import BIN, cli_backfill, fresh_home, fresh_pg_database, running_dagster, stop_sensor
from report import publish

from backfill_assets.calendar import get_calendar
from backfill_assets.settings import PROJECT_ROOT
from backfill_assets_tests.servers.alpaca import AlpacaServerConfig, running_alpaca

WINDOW_S, LIMIT = 6.0, 20
PLANNED_SUBSET = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"  # Dagster's: one planned event per run
SCENARIOS = {"a": (500, 1), "b": (100, 5), "c": (100, 250)}


def one_run(env: dict[str, str], url: str, tickers: list[str], days: list[dt.date]) -> None:
    """`backfill-assets backfill --as-run --wait`: the sessions for every ticker as one queued run,
    the shape of the after-close schedule's RunRequest, followed until it ends."""
    command = [str(BIN / "backfill-assets"), "backfill", "--assets", "bars", "--tickers", ",".join(tickers),
               "--start", str(days[0]), "--end", str(days[-1]), "--as-run", "--wait"]  # fmt: skip
    subprocess.run(command, env={**env, "DAGSTER_WEBSERVER_URL": url}, check=True, capture_output=True)


def ours(
    instance: str,
    tickers: list[str],
    days: list[dt.date],
    pg_server: str | None,
    as_run: bool = False,
    planned_per_run: bool = False,
) -> tuple[float, int, int]:
    """Wall seconds from the CLI's start to success (the backfill's COMPLETED_SUCCESS, or with
    `as_run` the queued run's SUCCESS), the server's requests and 429s. `planned_per_run` starts
    webserver and daemon with Dagster's switch for one planned event per run."""
    shipped = "dagster.postgres.yaml" if instance == "postgres" else "dagster.yaml"
    home, env = fresh_home((PROJECT_ROOT / shipped).read_text())
    env.pop(PLANNED_SUBSET, None)
    if planned_per_run:
        env[PLANNED_SUBSET] = "true"
    if instance == "postgres":
        assert pg_server, "--postgres URL is needed for the Postgres instance"
        env["DAGSTER_PG_URL"] = fresh_pg_database(pg_server, "bench_daemon")
    config = AlpacaServerConfig(api_key=KEY, secret_key=SECRET, rate_limit=LIMIT, rate_window_s=WINDOW_S,
                                max_page_size=PAGE, latency_s=0.05)  # fmt: skip
    with running_alpaca(config) as server:
        per_minute = str(round(LIMIT * 60 / WINDOW_S))
        env |= {"BACKFILL_PROVIDER": "alpaca", "ALPACA_DATA_URL": server.url, "ALPACA_API_KEY": KEY,
                "ALPACA_SECRET_KEY": SECRET, "BACKFILL_REQUESTS_PER_MINUTE": per_minute,
                "BACKFILL_BUDGET_WINDOW_S": str(int(WINDOW_S))}  # fmt: skip
        # Labels follow in runs of their own; kept out so the queue holds only this backfill.
        stop_sensor(env, "label_recompute_sensor")
        with running_dagster(env) as dagster:
            started = time.monotonic()
            if as_run:
                one_run(env, dagster.url, tickers, days)
            else:
                cli_backfill(env, dagster.url, tickers, days)
            wall = time.monotonic() - started
        return wall, server.count(), server.count(status=429)


def main() -> None:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    parser = argparse.ArgumentParser()
    parser.add_argument("--full", action="store_true", help="add (c) 100 tickers x 250 sessions")
    parser.add_argument("--postgres", default=os.environ.get("BACKFILL_TEST_POSTGRES_URL"))
    parser.add_argument("--only", help="comma-separated scenarios, e.g. a,b (default: a,b; c with --full)")
    args = parser.parse_args()
    instances = ["sqlite", "postgres"] if args.postgres else ["sqlite"]
    calendar = get_calendar("XNYS", dt.date(2024, 1, 2))
    physical = LIMIT * PAGE * 60 / WINDOW_S
    lines = [
        f"End to end through Dagster (webserver + daemon, `backfill-assets backfill --wait`), local Alpaca "
        f"server at {LIMIT} requests / {WINDOW_S:g} s, pages of {PAGE:,} bars, 1Min bars "
        f"({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        "| scenario | path | wall s | requests | lower bound | 429s | share of limit | ours / script |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    names = args.only.split(",") if args.only else (["a", "b", "c"] if args.full else ["a", "b"])
    for name in names:
        n_tickers, n_sessions = SCENARIOS[name]
        tickers = [f"T{i:03d}" for i in range(n_tickers)]
        days = list(calendar.sessions[:n_sessions])
        bars = n_tickers * sum(map(calendar.session_minutes, days))
        label = f"({name}) {n_tickers} x {n_sessions}"
        _, rows, script_s, script_requests, script_429 = measure(
            "script", seed_script, (WINDOW_S, LIMIT, n_tickers, n_sessions), days
        )
        lines.append(
            f"| {label} | seed-style script | {script_s:.1f} | {script_requests} | {math.ceil(bars / PAGE)} "
            f"| {script_429} | {rows / script_s * 60 / physical:.0%} | 1.0 |"
        )
        print(lines[-1], flush=True)
        paths = [(i, a, p) for a, p in ((False, False), (True, False), (True, True)) for i in instances]
        for instance, as_run, per_run in paths:
            wall, requests, throttled = ours(instance, tickers, days, args.postgres, as_run, per_run)
            how = "`backfill-assets backfill --as-run`" if as_run else "`backfill-assets backfill`"
            how += ", planned events per run" if per_run else ""
            bound = math.ceil(bars / PAGE)
            lines.append(
                f"| {label} | Dagster, {how}, {instance} instance | {wall:.1f} | {requests} | {bound} "
                f"| {throttled} | {bars / wall * 60 / physical:.0%} | {script_s / wall:.1f}x |"
            )
            print(lines[-1], flush=True)
    publish("daemon_alpaca", lines)


if __name__ == "__main__":
    main()
