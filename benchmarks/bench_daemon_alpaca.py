"""End to end through Dagster against the local Alpaca server: what a user gets, against a script.

Ours: dagster-webserver and dagster-daemon on a fresh DAGSTER_HOME (the shipped dagster.yaml, or
dagster.postgres.yaml on a fresh database), `backfill-assets backfill --wait` from a shell, timed from
the command's start to COMPLETED_SUCCESS (registration, launch, the daemon's loop, run start-up,
fetch, write, checks, events). The baseline: the seed-style per-symbol script of bench_alpaca.py.
The server enforces 20 requests / 6 s (Alpaca's 200/min, scaled as bench_alpaca's short mode) and
pages of 10,000 bars; the project's budget is set to the same (BACKFILL_BUDGET_WINDOW_S=6).
Scenarios: (a) 500 tickers x 1 session (the daily update), (b) 100 x 5; `--full` adds (c) 100 x 250,
at Alpaca's own 200 requests / 60 s.
(c) is written to results/daemon_alpaca_full.md, the others to results/daemon_alpaca.md.
Usage: python benchmarks/bench_daemon_alpaca.py [--full] [--postgres URL] [--only a,b,c]
       [--paths backfill,as-run,per-run] [--instances sqlite,postgres]
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

WINDOW_S, LIMIT = 6.0, 20  # Alpaca's 200/min scaled to a 6 s window, so (a) and (b) stay short
# (c) runs minutes either way, at Alpaca's own window: a 6 s window punishes a burst 10x sooner, and
# the script, which restarts a symbol's whole series on a 429 mid-pagination, then barely finishes.
FULL_WINDOW_S, FULL_LIMIT = 60.0, 200
SCENARIOS = {"a": (500, 1), "b": (100, 5), "c": (100, 250)}
PATHS = {"backfill": (False, False), "as-run": (True, False), "per-run": (True, True)}  # (as_run, planned)


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
    window: tuple[float, int] = (WINDOW_S, LIMIT),
) -> tuple[float, int, int]:
    """Wall seconds from the CLI's start to success (the backfill's COMPLETED_SUCCESS, or with
    `as_run` the queued run's SUCCESS), the server's requests and 429s. `planned_per_run` starts
    webserver and daemon with Dagster's switch for one planned event per run."""
    shipped = "dagster.postgres.yaml" if instance == "postgres" else "dagster.yaml"
    home, env = fresh_home((PROJECT_ROOT / shipped).read_text(), planned_per_run)
    if instance == "postgres":
        assert pg_server, "--postgres URL is needed for the Postgres instance"
        env["DAGSTER_PG_URL"] = fresh_pg_database(pg_server, "bench_daemon")
    window_s, limit = window
    config = AlpacaServerConfig(api_key=KEY, secret_key=SECRET, rate_limit=limit, rate_window_s=window_s,
                                max_page_size=PAGE, latency_s=0.05)  # fmt: skip
    with running_alpaca(config) as server:
        per_minute = str(round(limit * 60 / window_s))
        env |= {"BACKFILL_PROVIDER": "alpaca", "ALPACA_DATA_URL": server.url, "ALPACA_API_KEY": KEY,
                "ALPACA_SECRET_KEY": SECRET, "BACKFILL_REQUESTS_PER_MINUTE": per_minute,
                "BACKFILL_BUDGET_WINDOW_S": str(int(window_s))}  # fmt: skip
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
    parser.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated, of {','.join(PATHS)}")
    parser.add_argument("--instances", default="sqlite,postgres", help="comma-separated: sqlite,postgres")
    args = parser.parse_args()
    if unknown := set(args.paths.split(",")) - set(PATHS):
        parser.error(f"--paths: unknown {', '.join(sorted(unknown))} (known: {', '.join(PATHS)})")
    instances = [i for i in args.instances.split(",") if i == "sqlite" or args.postgres]
    calendar = get_calendar("XNYS", dt.date(2024, 1, 2))

    def header(window_s: float, limit: int) -> list[str]:
        return [
            f"End to end through Dagster (webserver + daemon, `backfill-assets backfill --wait`), local "
            f"Alpaca server at {limit} requests / {window_s:g} s, pages of {PAGE:,} bars, 1Min bars "
            f"({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC)",
            "",
            "| scenario | path | wall s | requests | lower bound | 429s | share of limit | ours / script |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]

    tables: dict[str, list[str]] = {}
    names = args.only.split(",") if args.only else (["a", "b", "c"] if args.full else ["a", "b"])
    for name in names:
        n_tickers, n_sessions = SCENARIOS[name]
        tickers = [f"T{i:03d}" for i in range(n_tickers)]
        days = list(calendar.sessions[:n_sessions])
        bars = n_tickers * sum(map(calendar.session_minutes, days))
        label = f"({name}) {n_tickers} x {n_sessions}"
        # (c) takes most of an hour: its table is a file of its own, so the others can be re-run alone.
        window_s, limit = (FULL_WINDOW_S, FULL_LIMIT) if name == "c" else (WINDOW_S, LIMIT)
        physical = limit * PAGE * 60 / window_s
        lines = tables.setdefault(
            "daemon_alpaca_full" if name == "c" else "daemon_alpaca", header(window_s, limit)
        )
        _, rows, script_s, script_requests, script_429 = measure(
            "script", seed_script, (window_s, limit, n_tickers, n_sessions), days
        )
        lines.append(
            f"| {label} | seed-style script | {script_s:.1f} | {script_requests} | {math.ceil(bars / PAGE)} "
            f"| {script_429} | {rows / script_s * 60 / physical:.0%} | 1.0 |"
        )
        print(lines[-1], flush=True)
        chosen = [PATHS[p] for p in args.paths.split(",")]
        paths = [(i, a, p) for a, p in chosen for i in instances]
        for instance, as_run, per_run in paths:
            wall, requests, throttled = ours(
                instance, tickers, days, args.postgres, as_run, per_run, (window_s, limit)
            )
            how = "`backfill-assets backfill --as-run`" if as_run else "`backfill-assets backfill`"
            how += ", planned events per run" if per_run else ""
            bound = math.ceil(bars / PAGE)
            lines.append(
                f"| {label} | Dagster, {how}, {instance} instance | {wall:.1f} | {requests} | {bound} "
                f"| {throttled} | {bars / wall * 60 / physical:.0%} | {script_s / wall:.1f}x |"
            )
            print(lines[-1], flush=True)
    for file, lines in tables.items():
        publish(file, lines)


if __name__ == "__main__":
    main()
