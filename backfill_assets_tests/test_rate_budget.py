"""The API budget across processes: three `dagster asset materialize` runs share one instance's budget.

Each run fetches one ticker over three whole exchange days (~1,740 bars with the outside-hours ones)
in 600-bar pages: three requests per run, nine in all, more than one minute's budget, so the test
spans two rate windows (about 70 s per test).
"""

import subprocess
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from backfill_assets.defs.run_facts import run_facts
from backfill_assets.storage.duckdb_store import DuckDBBarStore
from backfill_assets_tests.conftest import BIN, run
from backfill_assets_tests.servers.alpaca import AlpacaServer, AlpacaServerConfig, running_alpaca

pytestmark = pytest.mark.slow
KEY, SECRET = "PKBUDGETKEY000000001", "SECRETbudget0123456789abcdef"
TICKERS = ("AAPL", "MSFT", "NVDA")


@pytest.fixture
def alpaca() -> Iterator[AlpacaServer]:
    config = AlpacaServerConfig(api_key=KEY, secret_key=SECRET, max_page_size=600)
    with running_alpaca(config) as server:
        yield server


def materialize_concurrently(env: dict[str, str], server: AlpacaServer, budget: int) -> None:
    """Three runs at once, one per ticker, all bound to the same DAGSTER_HOME and so the same budget."""
    env = {
        **env,
        "BACKFILL_PROVIDER": "alpaca",
        "BACKFILL_REQUESTS_PER_MINUTE": str(budget),
        "ALPACA_DATA_URL": server.url,
        "ALPACA_API_KEY": KEY,
        "ALPACA_SECRET_KEY": SECRET,
    }
    sync = run([str(BIN / "backfill-assets"), "tickers", "sync"], env)
    assert sync.returncode == 0, sync.stderr
    command = [str(BIN / "dagster"), "asset", "materialize", "-m", "backfill_assets.definitions"]
    procs = [
        subprocess.Popen(
            [*command, "--select", "bars", "--partition-range", f"2024-03-04|{t}...2024-03-06|{t}"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for t in TICKERS
    ]
    for proc in procs:
        output = proc.communicate(timeout=400)[0]
        assert proc.returncode == 0, output[-3000:]


def assert_all_rows_landed(db_path: Path) -> None:
    counts = DuckDBBarStore(db_path).read_bars().groupby("ticker").size().to_dict()
    assert counts == {t: 3 * 390 for t in TICKERS}


def test_a_shared_budget_keeps_three_runs_under_the_server_limit(
    project_env: dict[str, str], alpaca: AlpacaServer, db_path: Path
) -> None:
    alpaca.configure(rate_limit=6, rate_window_s=60.0)
    materialize_concurrently(project_env, alpaca, budget=6)
    assert alpaca.count(status=429) == 0
    assert alpaca.count(status=200) == 9
    assert alpaca.requests_per_window(60.0) <= 6  # observed from the server's own request log
    times = sorted(r.time for r in alpaca.records())
    assert times[6] - times[0] >= 60.0  # the seventh request had to wait for the next window
    assert_all_rows_landed(db_path)


def test_a_server_stricter_than_the_budget_is_absorbed_by_retry_after(
    project_env: dict[str, str], alpaca: AlpacaServer, db_path: Path
) -> None:
    alpaca.configure(rate_limit=6, rate_window_s=60.0)
    materialize_concurrently(project_env, alpaca, budget=12)
    rejected = [r for r in alpaca.records() if r.status == 429]
    assert 1 <= len(rejected) <= len(TICKERS)  # one 429 per waiting run, then it waits for the reset
    window_end = min(r.time for r in alpaca.records()) + 60.0
    late = [r.time for r in alpaca.records() if r.status == 200 and r.time > rejected[0].time]
    assert late and min(late) >= window_end  # nobody retried before Retry-After said so
    assert alpaca.count(status=200) == 9
    with dg.DagsterInstance.from_config(project_env["DAGSTER_HOME"]) as instance:
        records = instance.fetch_materializations(dg.AssetKey("bars"), limit=20).records
        per_run = {r.run_id: run_facts(instance, r.run_id, dg.AssetKey("bars"))["http_429"] for r in records}
    assert len(per_run) == 3 and sum(per_run.values()) == len(rejected)  # each run reports its 429s
    assert_all_rows_landed(db_path)
