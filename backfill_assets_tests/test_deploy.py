"""The instance configs a team deploys: the Postgres and scale-out variants never drift from dagster.yaml."""

from pathlib import Path

import pytest
import yaml

from backfill_assets.settings import PROJECT_ROOT
from backfill_assets_tests.conftest import BIN, run

SHARED = ("run_coordinator", "backfills", "concurrency", "run_retries", "run_monitoring", "telemetry")
VARIANTS = ["dagster.postgres.yaml", "deploy/dagster.docker.yaml", "deploy/dagster.k8s.yaml"]


def load(name: str) -> dict[str, object]:
    return dict(yaml.safe_load((PROJECT_ROOT / name).read_text()))


@pytest.mark.parametrize("name", VARIANTS)
def test_variants_share_queue_limits_and_retries_with_dagster_yaml(name: str) -> None:
    config, base = load(name), load("dagster.yaml")
    assert {k: config[k] for k in SHARED} == {k: base[k] for k in SHARED}
    assert config["storage"] == {"postgres": {"postgres_url": {"env": "DAGSTER_PG_URL"}}}


@pytest.mark.parametrize("name", VARIANTS[1:])
def test_scale_out_launchers_pass_the_store_and_keys_by_environment(name: str) -> None:
    launcher = load(name)["run_launcher"]
    assert isinstance(launcher, dict) and launcher["class"] in ("DockerRunLauncher", "K8sRunLauncher")
    text = (PROJECT_ROOT / name).read_text()
    assert "BACKFILL_POSTGRES_URL" in text and "postgresql://" not in text  # URLs come from secrets


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BACKFILL_INSTANCE": "mysql"}, "BACKFILL_INSTANCE='mysql': expected one of sqlite, postgres"),
        ({"BACKFILL_INSTANCE": "postgres"}, "BACKFILL_INSTANCE='postgres' needs DAGSTER_PG_URL"),
        ({"BACKFILL_STORE": "postgres"}, "BACKFILL_STORE='postgres' needs BACKFILL_POSTGRES_URL"),
    ],
)
def test_serve_refuses_an_incomplete_team_setup(
    project_env: dict[str, str], tmp_path: Path, env: dict[str, str], message: str
) -> None:
    result = run([str(BIN / "backfill-assets"), "serve", "--port", "1"], project_env | env)
    assert result.returncode == 2 and message in result.stderr


def test_instance_commands_run_on_a_postgres_instance(project_env: dict[str, str], pg_database: str) -> None:
    env = project_env | {"BACKFILL_INSTANCE": "postgres", "DAGSTER_PG_URL": pg_database}
    (Path(env["DAGSTER_HOME"]) / "dagster.yaml").unlink()  # the command puts dagster.postgres.yaml there
    added = run([str(BIN / "backfill-assets"), "tickers", "add", "ZZZ"], env)
    assert added.returncode == 0, added.stderr
    listed = run([str(BIN / "backfill-assets"), "tickers", "list"], env)
    assert "ZZZ" in listed.stdout.split()
    assert "postgres" in (Path(env["DAGSTER_HOME"]) / "dagster.yaml").read_text()


def test_the_shipped_instance_waits_for_slow_run_starts(tmp_path: Path) -> None:
    """Dagster's run monitoring fails a run not STARTED 180 s after launch; runs of a large backfill
    took longer under load. The instance loaded from the shipped dagster.yaml waits 15 minutes."""
    import dagster as dg

    (tmp_path / "dagster.yaml").write_text((PROJECT_ROOT / "dagster.yaml").read_text())
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_start_timeout_seconds == 900
