"""Dagster on loopback for the benchmarks: a fresh DAGSTER_HOME, the test suite's webserver + daemon
processes, and a backfill launched as a user does it (`backfill-assets backfill --wait`)."""

import datetime as dt
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from backfill_assets.settings import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT))  # the process helpers live with the tests
from backfill_assets_tests.test_e2e_daemon import running_dagster  # noqa: E402

BIN = Path(sys.executable).parent
# Dagster's own switch: one ASSET_MATERIALIZATION_PLANNED event per asset and run (its partitions as
# a subset) instead of one per partition; read by whichever process creates the run.
PLANNED_SUBSET = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"
__all__ = [
    "BIN",
    "PLANNED_SUBSET",
    "cli_backfill",
    "fresh_home",
    "fresh_pg_database",
    "running_dagster",
    "stop_sensor",
]


def fresh_home(yaml_text: str | None = None, planned_per_run: bool = False) -> tuple[Path, dict[str, str]]:
    """A new DAGSTER_HOME holding the shipped dagster.yaml (or `yaml_text`), and the env using it,
    with Dagster's one-planned-event-per-run switch set only if `planned_per_run`.
    It sits in a directory of its own, where the process logs go beside it."""
    home = Path(tempfile.mkdtemp()) / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml_text or (PROJECT_ROOT / "dagster.yaml").read_text())
    env = {**os.environ, "DAGSTER_HOME": str(home),
           "BACKFILL_DUCKDB_PATH": str(home / "market.duckdb"), "BACKFILL_FRESHNESS": "off"}  # fmt: skip
    env.pop(PLANNED_SUBSET, None)
    if planned_per_run:
        env[PLANNED_SUBSET] = "true"
    return home, env


def fresh_pg_database(server: str, prefix: str) -> str:
    """URL of a new database on the Postgres `server` (left for inspection: it is a benchmark's)."""
    import secrets
    from urllib.parse import urlsplit

    import psycopg

    name = f"{prefix}_{secrets.token_hex(3)}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlsplit(server)._replace(path=f"/{name}").geturl()


def cli_backfill(
    env: dict[str, str], url: str, tickers: list[str], sessions: list[dt.date], wait: bool = True
) -> str:
    """`backfill-assets backfill --assets bars ... [--wait]` against `url`; the backfill's id."""
    command = [str(BIN / "backfill-assets"), "backfill", "--assets", "bars", "--tickers", ",".join(tickers),
               "--start", str(sessions[0]), "--end", str(sessions[-1])]  # fmt: skip
    command += ["--wait"] if wait else []
    out = subprocess.run(command, env={**env, "DAGSTER_WEBSERVER_URL": url}, check=True, capture_output=True)
    return out.stdout.decode().split("launched backfill ")[1].split(":")[0]


def stop_sensor(env: dict[str, str], name: str) -> None:
    """Stop a sensor in the instance (as the UI's toggle does), so its runs do not share the queue."""
    workspace = str(PROJECT_ROOT / "workspace.yaml")
    subprocess.run([str(BIN / "dagster"), "sensor", "stop", name, "-w", workspace],
                   env=env, cwd=PROJECT_ROOT, check=True, capture_output=True)  # fmt: skip
