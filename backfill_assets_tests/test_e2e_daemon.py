"""End to end: dagster-webserver and dagster-daemon on loopback, a CLI backfill, the shipped limits."""

import datetime as dt
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from backfill_assets.calendar import TradingCalendar
from backfill_assets.settings import PROJECT_ROOT
from backfill_assets.storage.duckdb_store import DuckDBBarStore
from backfill_assets.supervise import default_signals
from backfill_assets.webserver import free_port, wait_until_loaded
from backfill_assets_tests.conftest import BIN, run
from backfill_assets_tests.servers.alpaca import AlpacaServer, AlpacaServerConfig, running_alpaca

pytestmark = pytest.mark.slow
TICKERS = ["AAPL", "AMZN", "GOOGL", "MSFT", "NVDA", "TSLA"]
FIRST, LAST = dt.date(2024, 3, 1), dt.date(2024, 3, 21)  # 15 sessions
KEY, SECRET = "PKE2EKEY000000000001", "SECRETe2e0123456789abcdef"


@pytest.fixture
def slow_alpaca() -> Iterator[AlpacaServer]:
    with running_alpaca(AlpacaServerConfig(api_key=KEY, secret_key=SECRET, latency_s=1.5)) as server:
        yield server


@pytest.fixture(params=["synthetic", "alpaca"])
def dagster(
    request: pytest.FixtureRequest, project_env: dict[str, str]
) -> Iterator[tuple[str, dict[str, str]]]:
    """The shipped dagster.yaml in a fresh DAGSTER_HOME; webserver and daemon as separate processes."""
    if request.param == "alpaca":
        server = request.getfixturevalue("slow_alpaca")
        project_env = {**project_env, "BACKFILL_PROVIDER": "alpaca", "ALPACA_DATA_URL": server.url,
                       "ALPACA_API_KEY": KEY, "ALPACA_SECRET_KEY": SECRET}  # fmt: skip
    with running_dagster(project_env) as processes:
        yield processes.url, {**project_env, "DAGSTER_WEBSERVER_URL": processes.url}


class DagsterProcesses:
    """dagster-webserver (on a free loopback port) and dagster-daemon for `env`'s DAGSTER_HOME, each in
    a process group of its own; logs next to DAGSTER_HOME in process_logs/."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env, port = env, free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.logs = Path(env["DAGSTER_HOME"]).parent / "process_logs"  # Dagster owns DAGSTER_HOME/logs
        self.logs.mkdir(exist_ok=True)
        workspace = str(PROJECT_ROOT / "workspace.yaml")
        self.commands = {
            "webserver": [
                str(BIN / "dagster-webserver"),
                "-w",
                workspace,
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            "daemon": [str(BIN / "dagster-daemon"), "run", "-w", workspace],
        }
        self.started: list[subprocess.Popen[bytes]] = []
        self.current: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        log = (self.logs / f"{name}.log").open("ab")
        # Signals at their defaults: started from a background job, SIGTERM would not stop them.
        proc = subprocess.Popen(self.commands[name], cwd=PROJECT_ROOT, env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=default_signals)  # fmt: skip
        self.started.append(proc)
        self.current[name] = proc

    def peak_rss_mb(self) -> dict[str, float]:
        """Peak RSS (VmHWM) of the webserver and the daemon, and the largest of each one's children
        (code servers; run workers come and go)."""

        def hwm(pid: int) -> float:
            with suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
            return 0.0

        peaks, tree = {}, children()
        for name, proc in self.current.items():
            peaks[name] = hwm(proc.pid)
            peaks[f"{name}'s largest child"] = max((hwm(c) for c in descendants(tree, proc.pid)), default=0.0)
        return peaks

    def kill(self, name: str) -> None:
        """SIGKILL the process alone, as a crash would: its children (code server, runs) live on."""
        self.current[name].kill()
        self.current[name].wait()

    def stop(self) -> None:
        """Stop both and everything they started: code servers run in sessions of their own, so
        killing the process groups alone left a `dagster api grpc` behind after every test."""
        tree = children()
        spawned = {d for proc in self.started for d in descendants(tree, proc.pid)}
        for proc in self.started:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, 15)
        for proc in self.started:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
        deadline = time.monotonic() + 10  # Dagster stops its code servers itself, given a moment
        while (
            alive := [pid for pid in spawned if Path(f"/proc/{pid}").exists()]
        ) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in alive:
            with suppress(ProcessLookupError):
                os.kill(pid, 9)
        if os.environ.get("BACKFILL_KEEP_LOGS"):
            shutil.copytree(self.logs, Path(os.environ["BACKFILL_KEEP_LOGS"]), dirs_exist_ok=True)


def children() -> dict[int, list[int]]:
    """Each live process's children, from /proc."""
    found: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            found.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return found


def descendants(children: dict[int, list[int]], pid: int) -> list[int]:
    found = children.get(pid, [])
    return found + [d for c in found for d in descendants(children, c)]


@contextmanager
def running_dagster(env: dict[str, str]) -> Iterator[DagsterProcesses]:
    """Webserver and daemon for `env`, stopped (with every process they started) on exit."""
    dagster = DagsterProcesses(env)
    # Create the instance's storage once, first: a webserver and a daemon starting together on a fresh
    # SQLite home can both stamp its schema (alembic then finds two heads and the location fails).
    subprocess.run([str(BIN / "dagster"), "instance", "info"], env=env, cwd=PROJECT_ROOT, check=True,
                   capture_output=True)  # fmt: skip
    try:
        dagster.start("webserver")
        dagster.start("daemon")
        wait_until_loaded(dagster.url)
        yield dagster
    finally:
        dagster.stop()


def max_overlap(spans: list[tuple[float, float]]) -> int:
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    level = best = 0
    for _, step in edges:
        level += step
        best = max(best, level)
    return best


def test_cli_backfill_runs_through_the_daemon_within_limits(
    dagster: tuple[str, dict[str, str]], db_path: Path, calendar: TradingCalendar
) -> None:
    url, env = dagster
    command = [str(BIN / "backfill-assets"), "backfill", "--tickers", ",".join(TICKERS)]
    launched = run([*command, "--start", str(FIRST), "--end", str(LAST)], env)
    assert launched.returncode == 0, launched.stderr
    # TSLA is not in the universe, so the command registers it (the universe sensor may add the rest first)
    assert "TSLA" in launched.stdout.splitlines()[0] and "90 partitions per asset" in launched.stdout
    backfill_id = launched.stdout.split("launched backfill ")[1].split(":")[0]
    assert f"{url}/runs/b/{backfill_id}" in launched.stdout
    # A retried launch (same assets, range, tags) finds the running backfill instead of adding one
    again = run([*command, "--start", str(FIRST), "--end", str(LAST)], env)
    assert again.returncode == 0, again.stderr
    assert f"backfill {backfill_id} of this launch is already running" in again.stdout
    status = run([str(BIN / "backfill-assets"), "status", backfill_id], env, timeout=600)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "90/90 done, 0 in progress, 0 failed  COMPLETED_SUCCESS" in status.stdout.splitlines()[-1]

    sessions = calendar.sessions_in(FIRST, LAST)
    counts = DuckDBBarStore(db_path).read_bars().groupby(["ticker", "session_date"]).size()
    assert len(sessions) == 15 and len(counts) == 90
    assert all(counts[(t, d)] == calendar.session_minutes(d) for t in TICKERS for d in sessions)

    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        events = instance.fetch_materializations(dg.AssetKey("bars"), limit=1000).records
        partitions = [str(e.partition_key) for e in events]  # a missing key fails as "None"
        assert sorted(partitions) == sorted(
            f"{d}|{t}" for t in TICKERS for d in sessions
        )  # each exactly once
        runs = [
            r for r in instance.get_run_records() if r.dagster_run.tags.get("dagster/backfill") == backfill_id
        ]
        spans = [(r.start_time, r.end_time) for r in runs if r.start_time and r.end_time]
    config = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())["concurrency"]
    assert len(spans) == len(runs) == 6  # single_run: one run per ticker over the 15 sessions
    assert max_overlap(spans) <= config["pools"]["default_limit"]  # the synthetic_api pool holds runs back
    provider = env.get("BACKFILL_PROVIDER", "synthetic")
    assert all(r.dagster_run.tags["provider"] == provider for r in runs)

    gaps = run([str(BIN / "backfill-assets"), "gaps", "--assets", "bars", "--tickers", ",".join(TICKERS),
                "--start", "2024-02-28", "--end", str(LAST)], env)  # fmt: skip
    assert gaps.returncode == 0, gaps.stderr
    lines = gaps.stdout.splitlines()
    assert lines[0] == "bars: 12 missing (ticker, session) pair(s) in 2024-02-28..2024-03-21"
    assert lines[1:3] == ["  AAPL 2024-02-28..2024-02-29 (2)", "  AMZN 2024-02-28..2024-02-29 (2)"]
    fill = f"  fill: backfill-assets backfill --assets bars --tickers {','.join(TICKERS)} --start 2024-02-28"
    assert lines[-1].startswith(f"{fill} --end 2024-02-29")

    # One session across the tickers as one queued run (the schedule's shape): no backfill, same rows
    before = DuckDBBarStore(db_path).read_bars().drop(columns="fetched_at")
    one = run([*command, "--start", str(LAST), "--as-run", "--wait"], env)
    assert one.returncode == 0, one.stdout + one.stderr
    assert "launched run" in one.stdout and one.stdout.splitlines()[-1].endswith(": SUCCESS")
    after = DuckDBBarStore(db_path).read_bars().drop(columns="fetched_at")
    pd.testing.assert_frame_equal(before, after)
