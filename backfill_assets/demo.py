"""`backfill-assets demo`: a real daemon backfill on the embedded defaults, start to finish.

Starts `dagster dev` (webserver + daemon) on loopback, registers the tickers, launches a backfill
of tickers x sessions through the webserver's GraphQL API, follows it until the daemon finishes,
stops Dagster and prints what landed in the store.
"""

import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from backfill_assets.calendar import TradingCalendar, get_calendar
from backfill_assets.headless import partition_ranges
from backfill_assets.home import instance_kind
from backfill_assets.settings import PROJECT_ROOT, Settings
from backfill_assets.storage.open import open_store
from backfill_assets.supervise import spawn, stop
from backfill_assets.webserver import backfill_progress, free_port, launch_backfill, wait_until_loaded


def dagster_dev_command(host: str, port: int) -> list[str]:
    """`dagster dev` (webserver + daemon) for the project's workspace on host:port."""
    dagster = str(Path(sys.executable).with_name("dagster"))
    return [dagster, "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"), "-h", host, "-p", str(port)]


# The demo runs its own backfill and nothing else: the freshness schedule, the gap sensor and the
# label sensor start stopped in its `dagster dev` (they run in `make dev`), so no run of theirs takes
# the queue or is cut short when the demo stops Dagster.
QUIET = {"BACKFILL_FRESHNESS": "off", "BACKFILL_LABEL_AUTOMATION": "off"}
UNFINISHED = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")


@contextmanager
def dagster_dev(home: Path, port: int, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run `dagster dev` on 127.0.0.1:port for the project's workspace; stop it on exit."""
    log_path = home / "logs" / "dagster-dev.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = dagster_dev_command("127.0.0.1", port)
    with log_path.open("wb") as log:
        env = {**os.environ, **(env or {})}
        process = spawn(command, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        yield f"http://127.0.0.1:{port}"
    except BaseException:
        print(f"dagster dev log: {log_path}", file=sys.stderr)
        raise
    finally:
        stop(process)


def follow(url: str, backfill_id: str, timeout_s: float) -> str:
    """Print progress until the backfill ends; return its final status."""
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        progress = backfill_progress(url, backfill_id)
        line = (
            f"  {progress.status:<18} {progress.materialized}/{progress.targeted} materialized, "
            f"{progress.in_progress} in progress, {progress.failed} failed"
        )
        if line != last:
            print(line, flush=True)
            last = line
        if progress.done:
            return progress.status
        time.sleep(2)
    raise TimeoutError(f"backfill {backfill_id} still running after {timeout_s:.0f} s")


def wait_until_idle(timeout_s: float) -> None:
    """Return once the instance has no run queued, starting or running, so stopping Dagster cuts
    none short (a run the daemon launched as the backfill ended, a retry)."""
    import dagster as dg

    deadline = time.monotonic() + timeout_s
    statuses = [dg.DagsterRunStatus[name] for name in UNFINISHED]
    with dg.DagsterInstance.get() as instance:
        while (busy := instance.get_runs_count(dg.RunsFilter(statuses=statuses))) > 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{busy} run(s) still unfinished after {timeout_s:.0f} s")
            time.sleep(1)


def run_demo(settings: Settings, tickers: list[str], n_sessions: int, home: Path, timeout_s: float) -> int:
    """Backfill `tickers` x the first `n_sessions` sessions from the start date; 0 when every row landed."""
    import dagster as dg

    calendar = get_calendar(settings.calendar, settings.start_date)
    sessions = [d for d in calendar.sessions if d >= settings.start_date][:n_sessions]
    with dg.DagsterInstance.get() as instance:
        known = set(instance.get_dynamic_partitions("tickers"))
        instance.add_dynamic_partitions("tickers", [t for t in tickers if t not in known])
        ranges = partition_ranges(
            tickers, instance.get_dynamic_partitions("tickers"), sessions[0], sessions[-1]
        )
    partitions = len(tickers) * len(sessions)
    started = time.monotonic()
    with dagster_dev(home, free_port(), QUIET) as url:
        print(f"dagster dev is up at {url} (DAGSTER_HOME={home})", flush=True)
        wait_until_loaded(url)
        title = f"demo: {len(tickers)} tickers x {len(sessions)} sessions"
        backfill_id, _ = launch_backfill(url, ["bars"], ranges, title, tags={"provider": settings.provider})
        print(f"launched backfill {backfill_id} ({partitions} partitions): {url}/runs/b/{backfill_id}")
        status = follow(url, backfill_id, timeout_s)
        wait_until_idle(timeout_s)
    print(f"backfill {backfill_id} {status} in {time.monotonic() - started:.0f} s")
    return _report(settings, tickers, sessions, calendar) if status == "COMPLETED_SUCCESS" else 1


def _report(
    settings: Settings, tickers: list[str], sessions: list[dt.date], calendar: TradingCalendar
) -> int:
    """Print rows per ticker; 0 when every (ticker, session) landed with the expected bar count."""
    store = open_store(settings)
    bars = store.read_bars(tickers, sessions[0], sessions[-1])
    counts = bars.groupby("ticker").agg(sessions=("session_date", "nunique"), rows=("ts", "size"))
    print(f"\n{'ticker':<8}{'sessions':>9}{'rows':>9}")
    per_ticker = counts.to_dict("index")
    for ticker in tickers:
        row = per_ticker.get(ticker, {"sessions": 0, "rows": 0})
        print(f"{ticker:<8}{int(row['sessions']):>9}{int(row['rows']):>9}")
    print(f"\nData: {store.describe()} ({settings.store}, table bars, {len(bars)} rows in this range)")
    target = "make dev-postgres" if instance_kind() == "postgres" else "make dev"
    print(f"Open the UI: {target}  ->  http://127.0.0.1:3000  (Assets > bars > Partitions)")
    complete = len(counts) == len(tickers) and bool((counts["sessions"] == len(sessions)).all())
    if settings.timeframe.name == "1Min":
        complete = complete and bool((counts["rows"] == sum(map(calendar.session_minutes, sessions))).all())
    return 0 if complete else 1
