"""The team-server setup end to end: Dagster's instance and the store both on Postgres, the webserver,
the daemon and four run worker processes at once, against the local Alpaca server."""

import datetime as dt
import secrets
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import yaml

from backfill_assets.calendar import TradingCalendar
from backfill_assets.settings import PROJECT_ROOT
from backfill_assets.storage.postgres_store import PostgresStore
from backfill_assets_tests.conftest import BIN, fresh_database, run
from backfill_assets_tests.servers.alpaca import AlpacaServer, AlpacaServerConfig, running_alpaca
from backfill_assets_tests.test_e2e_daemon import KEY, SECRET, max_overlap, running_dagster

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
TICKERS = ["AAPL", "AMZN", "GOOGL", "META", "MSFT", "NFLX", "NVDA", "TSLA"]
FIRST, LAST = dt.date(2024, 3, 1), dt.date(2024, 3, 21)  # 15 sessions
RUNS_AT_ONCE = 4


@pytest.fixture
def instance_url(postgres_url: str) -> Iterator[str]:
    """A fresh database for Dagster's run, event and schedule storage."""
    with fresh_database(postgres_url, "backfill_instance") as url:
        yield url


@pytest.fixture
def slow_alpaca() -> Iterator[AlpacaServer]:
    with running_alpaca(AlpacaServerConfig(api_key=KEY, secret_key=SECRET, latency_s=4.0)) as server:
        yield server


def postgres_config(home: Path) -> dict[str, object]:
    """The shipped dagster.postgres.yaml with every run limit raised to RUNS_AT_ONCE."""
    config = yaml.safe_load((PROJECT_ROOT / "dagster.postgres.yaml").read_text())
    config["concurrency"]["runs"]["max_concurrent_runs"] = RUNS_AT_ONCE
    for limit in config["concurrency"]["runs"]["tag_concurrency_limits"]:
        limit["limit"] = RUNS_AT_ONCE
    config["concurrency"]["pools"]["default_limit"] = RUNS_AT_ONCE
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return config


def test_daemon_backfill_with_instance_and_store_on_postgres(
    project_env: dict[str, str], instance_url: str, pg_database: str, slow_alpaca: AlpacaServer,
    calendar: TradingCalendar, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    schema = f"e2e_{secrets.token_hex(4)}"
    env = project_env | {
        "DAGSTER_PG_URL": instance_url, "BACKFILL_STORE": "postgres", "BACKFILL_POSTGRES_URL": pg_database,
        "BACKFILL_POSTGRES_SCHEMA": schema, "BACKFILL_PROVIDER": "alpaca", "ALPACA_DATA_URL": slow_alpaca.url,
        "ALPACA_API_KEY": KEY, "ALPACA_SECRET_KEY": SECRET,
    }  # fmt: skip
    home = Path(env["DAGSTER_HOME"])
    postgres_config(home)
    with running_dagster(env) as processes:
        env["DAGSTER_WEBSERVER_URL"] = processes.url
        command = [str(BIN / "backfill-assets"), "backfill", "--tickers", ",".join(TICKERS)]
        launched = run([*command, "--start", str(FIRST), "--end", str(LAST)], env)
        assert launched.returncode == 0, launched.stderr
        backfill_id = launched.stdout.split("launched backfill ")[1].split(":")[0]
        # Under the suite's 600 s pytest timeout, so a stall fails here, with the status printed.
        status = run([str(BIN / "backfill-assets"), "status", backfill_id], env, timeout=480)
        assert "120/120 done, 0 in progress, 0 failed  COMPLETED_SUCCESS" in status.stdout, status.stdout

    sessions = calendar.sessions_in(FIRST, LAST)
    bars = PostgresStore(pg_database, schema).read_bars()
    counts = bars.groupby(["ticker", "session_date"]).size()
    assert len(counts) == len(TICKERS) * 15 and not bars.duplicated(["ticker", "ts"]).any()
    assert all(counts[(t, d)] == calendar.session_minutes(d) for t in TICKERS for d in sessions)

    assert not list(home.rglob("*.db"))  # no SQLite storage: only compute logs stay on local disk
    monkeypatch.setenv("DAGSTER_PG_URL", instance_url)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        events = instance.fetch_materializations(dg.AssetKey("bars"), limit=1000).records
        assert sorted(e.partition_key or "" for e in events) == sorted(
            f"{d}|{t}" for t in TICKERS for d in sessions
        )
        runs = [
            r for r in instance.get_run_records() if r.dagster_run.tags.get("dagster/backfill") == backfill_id
        ]
        spans = [(r.start_time, r.end_time) for r in runs if r.start_time and r.end_time]
    assert len(spans) == len(runs) == len(TICKERS)  # one run per ticker, each its own process
    # Several run workers wrote to Postgres at once, never more than the limits allow (how many
    # overlap depends on how fast the queue launches them against how long each run takes)
    assert 2 <= max_overlap(spans) <= RUNS_AT_ONCE
    with psycopg.connect(instance_url) as conn:  # the shared API budget lives in the instance's database
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"runs", "event_logs"} <= tables and any("budget" in t or "rate" in t for t in tables), tables
