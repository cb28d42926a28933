"""DAGSTER_HOME for the project's commands: the shipped dagster.yaml in a project-local home by default."""

import os
import shutil
from pathlib import Path

from backfill_assets.settings import PROJECT_ROOT

DEFAULT_HOME = PROJECT_ROOT / ".dagster_home"
SHIPPED_CONFIG = PROJECT_ROOT / "dagster.yaml"


def ensure_dagster_home() -> Path:
    """Use $DAGSTER_HOME, else .dagster_home/; give it the shipped dagster.yaml if it has none.

    The project-local home always takes the shipped file afresh, so edits to dagster.yaml apply.
    """
    home = Path(os.environ.get("DAGSTER_HOME") or DEFAULT_HOME).resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if home == DEFAULT_HOME.resolve() or not config.exists():
        shutil.copyfile(SHIPPED_CONFIG, config)
    os.environ["DAGSTER_HOME"] = str(home)
    return home
