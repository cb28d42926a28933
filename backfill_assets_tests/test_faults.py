"""Fault suite, bad input and exposure: every refusal names the bad value and leaves the stored data
bit for bit as it was (a checksum of every row before and after); the UI binds to loopback only."""

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from backfill_assets.settings import PROJECT_ROOT
from backfill_assets.storage.duckdb_store import DuckDBBarStore
from backfill_assets.storage.postgres_store import PostgresStore
from backfill_assets.webserver import wait_until_loaded
from backfill_assets_tests.conftest import BIN, run
from backfill_assets_tests.test_e2e_daemon import free_port

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
        os.killpg(serve.pid, 15)
        serve.wait(timeout=60)
    assert addresses and addresses <= LOOPBACK, addresses
    assert (
        "$(BIN)/backfill-assets serve\n" in (PROJECT_ROOT / "Makefile").read_text()
    )  # make dev: the default
