"""Shared fixtures: a real calendar, real DuckDB files in tmp dirs, real Dagster instances, and a
database of the test session's own on the real Postgres server."""

import datetime as dt
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import pytest

from backfill_assets.calendar import TradingCalendar, get_calendar
from backfill_assets.defs.providers import SyntheticProviderResource
from backfill_assets.defs.resources import BarStoreResource
from backfill_assets.providers.synthetic import SyntheticProvider
from backfill_assets.settings import PROJECT_ROOT
from backfill_assets.storage.duckdb_store import DuckDBBarStore
from backfill_assets.storage.postgres_store import PostgresStore

BIN = Path(sys.executable).parent
pytest_plugins = ["backfill_assets_tests.fault_report"]


@pytest.fixture(scope="session")
def calendar() -> TradingCalendar:
    return get_calendar("XNYS", dt.date(2024, 1, 2))


@pytest.fixture
def synthetic(calendar: TradingCalendar) -> SyntheticProvider:
    return SyntheticProvider(calendar)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The test Postgres server from BACKFILL_TEST_POSTGRES_URL (CI sets it: there, tests must run)."""
    url = os.environ.get("BACKFILL_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("BACKFILL_TEST_POSTGRES_URL is not set: no Postgres server to test against")
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        pytest.fail(f"BACKFILL_TEST_POSTGRES_URL is set but the server is unreachable: {exc}")
    return url


def database_url(server_url: str, name: str) -> str:
    return urlsplit(server_url)._replace(path=f"/{name}").geturl()


@contextmanager
def fresh_database(server_url: str, prefix: str) -> Iterator[str]:
    """URL of a new database on the test server, dropped (connections and all) afterwards."""
    import psycopg

    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_database(postgres_url: str) -> Iterator[str]:
    """A database of this test session's own on the test server, dropped at its end."""
    with fresh_database(postgres_url, "backfill_test") as url:
        yield url


@pytest.fixture
def pg_store(pg_database: str) -> PostgresStore:
    """An empty store: a schema of its own (created on first write) in the session's database."""
    return PostgresStore(pg_database, schema=f"t_{secrets.token_hex(4)}", lock_timeout_s=60)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "market.duckdb"


@pytest.fixture
def store(db_path: Path) -> DuckDBBarStore:
    return DuckDBBarStore(db_path, lock_timeout_s=60)


@pytest.fixture(params=["duckdb", "postgres"])
def any_store(request: pytest.FixtureRequest, db_path: Path) -> DuckDBBarStore | PostgresStore:
    """The same test on both backends (Postgres skips without a server, fails in CI if unreachable)."""
    if request.param == "postgres":
        store: PostgresStore = request.getfixturevalue("pg_store")
        return store
    return DuckDBBarStore(db_path, lock_timeout_s=60)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("tickers", ["AAPL", "MSFT", "NVDA"])
        yield inst


@pytest.fixture
def resources(db_path: Path) -> dict[str, dg.ConfigurableResource]:
    return {
        "bar_provider": SyntheticProviderResource(),
        "bar_store": BarStoreResource(duckdb_path=str(db_path)),
    }


@pytest.fixture
def project_env(tmp_path: Path, db_path: Path) -> dict[str, str]:
    """Environment for project commands in subprocesses: own DAGSTER_HOME and DuckDB file."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKFILL_")}
    env.update(DAGSTER_HOME=str(home), BACKFILL_DUCKDB_PATH=str(db_path), PATH=f"{BIN}:{env['PATH']}")
    env["BACKFILL_FRESHNESS"] = "off"  # the after-close schedule and gap sensor would add recent sessions
    return env


def run(command: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run a project command from the project root; output captured as text."""
    return subprocess.run(
        command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
