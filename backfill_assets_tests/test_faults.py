"""Fault suite, bad input and exposure: every refusal names the bad value and leaves the stored data
bit for bit as it was (a checksum of every row before and after); the UI binds to loopback only."""

import datetime as dt
import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest

from backfill_assets.calendar import TradingCalendar
from backfill_assets.settings import PROJECT_ROOT
from backfill_assets.storage.duckdb_store import DuckDBBarStore
from backfill_assets.storage.postgres_store import PostgresStore
from backfill_assets.webserver import free_port, wait_until_loaded
from backfill_assets_tests.conftest import BIN, run
from backfill_assets_tests.servers.alpaca import AlpacaServerConfig, running_alpaca
from backfill_assets_tests.test_e2e_daemon import KEY, SECRET, running_dagster

pytestmark = [pytest.mark.faults, pytest.mark.slow]
CLI = str(BIN / "backfill-assets")
MATERIALIZE = [str(BIN / "dagster"), "asset", "materialize", "-m", "backfill_assets.definitions"]
INJECTION = "AAPL';DELETE--"
LOOPBACK = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1 and ::1 as /proc/net spells them


def checksum(store: DuckDBBarStore | PostgresStore) -> str:
    """SHA-256 of every stored bar, in key order, lineage included."""
    bars = store.read_bars()
    return f"{len(bars)}:{hashlib.sha256(bars.to_csv(index=False).encode()).hexdigest()}"


@pytest.fixture(params=["duckdb", "postgres"])
def loaded(
    request: pytest.FixtureRequest, project_env: dict[str, str], db_path: Path
) -> tuple[dict[str, str], DuckDBBarStore | PostgresStore]:
    """A project environment whose store holds one materialized partition."""
    env, store = dict(project_env), DuckDBBarStore(db_path)
    if request.param == "postgres":
        pg: PostgresStore = request.getfixturevalue("pg_store")
        env |= {
            "BACKFILL_STORE": "postgres",
            "BACKFILL_POSTGRES_URL": pg.url,
            "BACKFILL_POSTGRES_SCHEMA": pg.schema,
        }
        store = pg
    assert run([CLI, "tickers", "sync"], env).returncode == 0
    done = run([*MATERIALIZE, "--select", "bars", "--partition", "2024-03-05|AAPL"], env)
    assert done.returncode == 0, done.stderr[-2000:]
    return env, store


def bad_inputs(tmp_path: Path) -> list[tuple[list[str], dict[str, str], str]]:
    """(command, environment overrides, the message naming the bad value)."""
    labels = tmp_path / "labels.yaml"
    labels.write_text("label_sets:\n  - {name: x, kind: alpha, horizon: 10}\n")
    materialize = [*MATERIALIZE, "--select", "bars", "--partition", "2024-03-06|AAPL"]
    return [
        ([CLI, "tickers", "add", INJECTION], {}, f"invalid ticker {INJECTION!r}"),
        ([CLI, "tickers", "add", "ÄPFEL"], {}, "invalid ticker 'ÄPFEL'"),
        ([CLI, "backfill", "--start", "2024-03-08", "--end", "2024-03-01"], {}, "is before --start"),
        ([CLI, "backfill", "--start", "1999-01-04"], {}, "1999-01-04..1999-01-04 is outside the partitions"),
        ([CLI, "backfill", "--start", "2024-03-05", "--tickers", "ＡＡＰＬ"], {}, "'ＡＡＰＬ'"),
        (materialize, {"BACKFILL_REQUESTS_PER_MINUTE": "-5"}, "BACKFILL_REQUESTS_PER_MINUTE='-5'"),
        (materialize, {"BACKFILL_MEMORY_BUDGET_MB": "-1"}, "BACKFILL_MEMORY_BUDGET_MB='-1'"),
        (materialize, {"BACKFILL_LABEL_SETS": str(labels)}, "unknown kind 'alpha'"),
        (materialize, {"BACKFILL_POSTGRES_SCHEMA": "x;drop"}, "BACKFILL_POSTGRES_SCHEMA='x;drop'"),
        ([*MATERIALIZE, "--select", "bars", "--partition", "2024-03-05|AAPL'--"], {}, "AAPL'--"),
    ]  # fmt: skip


def test_bad_input_is_refused_by_name_and_the_data_is_unchanged(
    loaded: tuple[dict[str, str], DuckDBBarStore | PostgresStore], tmp_path: Path
) -> None:
    env, store = loaded
    before = checksum(store)
    assert before.startswith("390:")
    env = env | {"DAGSTER_WEBSERVER_URL": "http://127.0.0.1:9"}  # refusals come before any launch
    for command, overrides, message in bad_inputs(tmp_path):
        result = run(command, env | overrides)
        assert result.returncode != 0, command
        assert message in result.stdout + result.stderr, (command, result.stderr[-1500:])
        assert checksum(store) == before, command


def listening_addresses(port: int) -> set[str]:
    """Local addresses (as /proc/net spells them) with a socket listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:
                found.add(address)
    return found


def test_the_ui_binds_to_loopback_by_default(project_env: dict[str, str]) -> None:
    port = free_port()
    serve = subprocess.Popen(
        [CLI, "serve", "--port", str(port)], cwd=PROJECT_ROOT, env=project_env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        wait_until_loaded(f"http://127.0.0.1:{port}")
        addresses = listening_addresses(port)
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        try:
            serve.wait(timeout=60)
        except subprocess.TimeoutExpired:  # dagster dev can wait long on its daemon's threads
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait(timeout=30)
    assert addresses and addresses <= LOOPBACK, addresses
    assert (
        "$(BIN)/backfill-assets serve --port $(PORT)\n" in (PROJECT_ROOT / "Makefile").read_text()
    )  # make dev: the default


def test_daemon_killed_and_restarted_mid_backfill_completes_every_partition_once(
    project_env: dict[str, str], db_path: Path, calendar: TradingCalendar
) -> None:
    """kill -9 of dagster-daemon while the backfill's runs are under way, then a new daemon: the backfill
    ends COMPLETED_SUCCESS with every partition materialized once and the rows exact."""
    tickers, first, last = ["AAPL", "AMZN", "MSFT", "NVDA"], dt.date(2024, 3, 1), dt.date(2024, 3, 14)
    with running_alpaca(AlpacaServerConfig(api_key=KEY, secret_key=SECRET, latency_s=3.0)) as server:
        env = project_env | {"BACKFILL_PROVIDER": "alpaca", "ALPACA_DATA_URL": server.url,
                             "ALPACA_API_KEY": KEY, "ALPACA_SECRET_KEY": SECRET}  # fmt: skip
        with running_dagster(env) as dagster:
            env["DAGSTER_WEBSERVER_URL"] = dagster.url
            dates = ["--start", str(first), "--end", str(last)]
            launched = run([CLI, "backfill", "--tickers", ",".join(tickers), *dates], env)
            assert launched.returncode == 0, launched.stderr
            backfill_id = launched.stdout.split("launched backfill ")[1].split(":")[0]
            with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
                runs = dg.RunsFilter(tags={"dagster/backfill": backfill_id})
                deadline, started = time.monotonic() + 300, False
                while not started and time.monotonic() < deadline:
                    statuses = {r.dagster_run.status for r in instance.get_run_records(filters=runs)}
                    started = dg.DagsterRunStatus.STARTED in statuses
                    time.sleep(0.2)
                assert started, "no run of the backfill ever started"
                dagster.kill("daemon")  # a run is executing; others wait in the queue or the backfill
                time.sleep(5)
                dagster.start("daemon")
                status = run([CLI, "status", backfill_id], env, timeout=900)
                n = len(tickers) * len(calendar.sessions_in(first, last))
                assert f"{n}/{n} done, 0 in progress, 0 failed  COMPLETED_SUCCESS" in status.stdout, (
                    status.stdout
                )
                events = instance.fetch_materializations(dg.AssetKey("bars"), limit=1000).records
    sessions = calendar.sessions_in(first, last)
    keys = [e.partition_key for e in events]
    assert sorted(keys) == sorted(f"{d}|{t}" for t in tickers for d in sessions)  # each exactly once
    bars = DuckDBBarStore(db_path).read_bars()
    assert not bars.duplicated(["ticker", "ts"]).any()
    assert len(bars) == len(tickers) * sum(map(calendar.session_minutes, sessions))
