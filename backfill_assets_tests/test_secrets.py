"""API keys reach the provider and nothing else: not logs, run config, tags, metadata or instance files."""

from pathlib import Path

import dagster as dg
import pytest

from backfill_assets_tests.conftest import BIN, run
from backfill_assets_tests.servers.alpaca import AlpacaServerConfig, running_alpaca

pytestmark = [pytest.mark.slow, pytest.mark.faults]
KEY, SECRET = "PKSECRETKEYNEVERLOGGED", "SECRETvalueThatMustNeverBeLogged42"
MATERIALIZE = [str(BIN / "dagster"), "asset", "materialize", "-m", "backfill_assets.definitions"]


def texts_of(instance: dg.DagsterInstance) -> list[str]:
    """Everything a user can see of the instance's runs: events, metadata, errors, config and tags."""
    seen: list[str] = []
    for record in instance.get_run_records():
        seen += [repr(record.dagster_run.run_config), repr(record.dagster_run.tags)]
        seen += [repr(entry) for entry in instance.all_logs(record.dagster_run.run_id)]
    return seen


def test_keys_never_leave_the_provider(project_env: dict[str, str], db_path: Path) -> None:
    env = {
        **project_env,
        "BACKFILL_PROVIDER": "alpaca",
        "ALPACA_API_KEY": KEY,
        "ALPACA_SECRET_KEY": SECRET,
    }
    assert run([str(BIN / "backfill-assets"), "tickers", "sync"], env).returncode == 0
    outputs = []
    with running_alpaca(AlpacaServerConfig(api_key=KEY, secret_key=SECRET)) as server:
        env["ALPACA_DATA_URL"] = server.url
        good = run([*MATERIALIZE, "--select", "bars", "--partition", "2024-03-05|AAPL"], env)
        assert good.returncode == 0, good.stderr[-3000:]
        server.configure(secret_key="rotated-on-the-server")  # our keys now get 401
        bad = run([*MATERIALIZE, "--select", "bars", "--partition", "2024-03-06|AAPL"], env)
        assert bad.returncode != 0 and "HTTP 401" in bad.stdout + bad.stderr
        assert {r.key_id for r in server.records()} == {KEY}  # the keys did reach the provider
        outputs += [good.stdout, good.stderr, bad.stdout, bad.stderr]
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        seen = texts_of(instance)
        assert len(instance.get_run_records()) == 2
    files = [
        p.read_bytes().decode("utf-8", "replace") for p in Path(env["DAGSTER_HOME"]).rglob("*") if p.is_file()
    ]
    assert any("HTTP 401" in text for text in seen)  # the failure itself is visible
    for text in [*seen, *outputs, *files]:
        assert KEY not in text and SECRET not in text
