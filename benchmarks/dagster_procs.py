"""dagster-webserver and dagster-daemon on loopback for a fresh DAGSTER_HOME, as the benchmarks use them."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from backfill_assets.settings import PROJECT_ROOT
from backfill_assets.webserver import wait_until_loaded

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fresh_home(yaml_text: str | None = None) -> tuple[Path, dict[str, str]]:
    """A new DAGSTER_HOME holding the shipped dagster.yaml (or `yaml_text`), and the env using it."""
    home = Path(tempfile.mkdtemp())
    (home / "dagster.yaml").write_text(yaml_text or (PROJECT_ROOT / "dagster.yaml").read_text())
    env = {**os.environ, "DAGSTER_HOME": str(home), "BACKFILL_DUCKDB_PATH": str(home / "market.duckdb"),
           "BACKFILL_FRESHNESS": "off"}  # fmt: skip
    return home, env


@contextmanager
def running_dagster(env: dict[str, str], daemon: bool = True) -> Iterator[str]:
    """Yield the webserver's URL once the code location has loaded; stop both on exit."""
    port, workspace = free_port(), str(PROJECT_ROOT / "workspace.yaml")
    commands = [[str(BIN / "dagster-webserver"), "-w", workspace, "-h", "127.0.0.1", "-p", str(port)]]
    if daemon:
        commands.append([str(BIN / "dagster-daemon"), "run", "-w", workspace])
    null = subprocess.DEVNULL
    procs = [
        subprocess.Popen(c, env=env, cwd=PROJECT_ROOT, stdout=null, stderr=null, start_new_session=True)
        for c in commands
    ]
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_loaded(url)
        yield url
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)


def stop_sensor(env: dict[str, str], name: str) -> None:
    """Stop a sensor in the instance (as the UI's toggle does), so its runs do not share the queue."""
    workspace = str(PROJECT_ROOT / "workspace.yaml")
    subprocess.run([str(BIN / "dagster"), "sensor", "stop", name, "-w", workspace],
                   env=env, cwd=PROJECT_ROOT, check=True, capture_output=True)  # fmt: skip
