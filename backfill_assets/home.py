"""DAGSTER_HOME for the project's commands: a shipped instance config in a project-local home.

BACKFILL_INSTANCE picks the config: `sqlite` (dagster.yaml, storage under the home) or `postgres`
(dagster.postgres.yaml: runs, events, schedules and the API budget in the DAGSTER_PG_URL database).
"""

import os
import shutil
from pathlib import Path

from backfill_assets.settings import PROJECT_ROOT, SettingsError

INSTANCES = {
    "sqlite": (PROJECT_ROOT / "dagster.yaml", PROJECT_ROOT / ".dagster_home"),
    "postgres": (PROJECT_ROOT / "dagster.postgres.yaml", PROJECT_ROOT / ".dagster_home_postgres"),
}
DEFAULT_HOME = INSTANCES["sqlite"][1]
SHIPPED_CONFIG = INSTANCES["sqlite"][0]


def instance_kind() -> str:
    kind = os.environ.get("BACKFILL_INSTANCE", "sqlite").strip() or "sqlite"
    if kind not in INSTANCES:
        raise SettingsError(f"BACKFILL_INSTANCE={kind!r}: expected one of {', '.join(INSTANCES)}")
    if kind == "postgres" and not os.environ.get("DAGSTER_PG_URL", "").strip():
        raise SettingsError("BACKFILL_INSTANCE='postgres' needs DAGSTER_PG_URL (postgresql://user@host/db)")
    return kind


def ensure_dagster_home() -> Path:
    """Use $DAGSTER_HOME, else the project-local home of BACKFILL_INSTANCE; give it the shipped
    config if it has none. A project-local home always takes the shipped file afresh, so edits apply."""
    shipped, default = INSTANCES[instance_kind()]
    home = Path(os.environ.get("DAGSTER_HOME") or default).resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if home in {d.resolve() for _, d in INSTANCES.values()} or not config.exists():
        shutil.copyfile(shipped, config)
    os.environ["DAGSTER_HOME"] = str(home)
    return home
