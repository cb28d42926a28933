"""The README's first command: a real daemon backfill through dagster dev, webserver GraphQL and DuckDB."""

import datetime as dt
from pathlib import Path

import dagster as dg
import pytest

from backfill_assets.storage.duckdb_store import DuckDBBarStore
from backfill_assets_tests.conftest import BIN, run

pytestmark = pytest.mark.slow


def test_demo_backfills_through_the_daemon(project_env: dict[str, str], db_path: Path) -> None:
    result = run(
        [str(BIN / "backfill-assets"), "demo", "--tickers", "AAPL,BRK.B", "--sessions", "3"], project_env, 600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "COMPLETED_SUCCESS  6/6 materialized" in result.stdout
    assert str(db_path) in result.stdout
    # The demo's backfill and nothing else: no sensor or schedule fetched other sessions.
    bars = DuckDBBarStore(db_path).read_bars()
    assert bars.groupby(["ticker", "session_date"]).size().to_dict() == {
        (t, dt.date(2024, 1, d)): 390 for t in ("AAPL", "BRK.B") for d in (2, 3, 4)
    }
    with dg.DagsterInstance.from_config(project_env["DAGSTER_HOME"]) as instance:
        backfill_id = result.stdout.split("launched backfill ")[1].split()[0]
        runs = instance.get_runs()
    # Dagster's backfill engine made the runs, one per ticker (the selection's smaller dimension),
    # and they are the instance's only runs, all finished: a clean instance for the first `make dev`.
    assert [r.tags.get("dagster/backfill") for r in runs] == [backfill_id] * 2
    assert {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}


def test_demo_rejects_bad_arguments(project_env: dict[str, str], db_path: Path) -> None:
    bad = run([str(BIN / "backfill-assets"), "demo", "--tickers", "AAPL,m$ ft"], project_env)
    assert bad.returncode == 2 and "invalid ticker 'm$'" in bad.stderr
    zero = run([str(BIN / "backfill-assets"), "demo", "--sessions", "0"], project_env)
    assert zero.returncode == 2 and "--sessions must be at least 1, got 0" in zero.stderr
    assert not db_path.exists()
