"""The CLI against a webserver that is there, answers with an error, or is not there: each said as
what it is, with what to do; Ctrl-C stops following, never the backfill."""

import http.server
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import dagster as dg
import pytest

from backfill_assets.settings import PROJECT_ROOT
from backfill_assets.supervise import POOL_LIMITS, default_signals
from backfill_assets.webserver import backfill_progress, free_port, wait_until_loaded
from backfill_assets_tests.conftest import BIN, run
from backfill_assets_tests.test_e2e_daemon import DagsterProcesses, children, descendants

pytestmark = pytest.mark.slow
CLI = str(BIN / "backfill-assets")


@pytest.fixture
def webserver(project_env: dict[str, str]) -> Iterator[tuple[str, dict[str, str]]]:
    """A webserver without a daemon: a launched backfill stays requested, nothing runs."""
    subprocess.run([str(BIN / "dagster"), "instance", "info"], env=project_env, cwd=PROJECT_ROOT,
                   check=True, capture_output=True)  # fmt: skip
    processes = DagsterProcesses(project_env)
    processes.start("webserver")
    try:
        wait_until_loaded(processes.url)
        yield processes.url, {**project_env, "DAGSTER_WEBSERVER_URL": processes.url}
    finally:
        processes.stop()


def test_label_backfills_launch_and_ctrl_c_leaves_the_backfill_running(
    webserver: tuple[str, dict[str, str]],
) -> None:
    url, env = webserver
    command = [CLI, "backfill", "--assets", "labels/mfe_mae", "--tickers", "AAPL", "--start", "2024-03-05"]
    with subprocess.Popen(
        [*command, "--wait"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_signals,  # Ctrl-C as a terminal delivers it, whatever started the suite
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        launched = proc.stdout.readline()
        assert launched.startswith("registered") or launched.startswith("launched backfill"), launched
        while not launched.startswith("launched backfill"):
            launched = proc.stdout.readline()
        backfill_id = launched.split()[2].rstrip(":")
        proc.stdout.readline()  # its URL; then the progress bar
        proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        err = proc.stderr.read()
        assert proc.wait(timeout=30) == 130
    assert "Traceback" not in err
    assert f"backfill {backfill_id} goes on in the daemon: backfill-assets status {backfill_id}" in err
    progress = backfill_progress(url, backfill_id)
    assert progress.status == "REQUESTED" and progress.targeted == 1  # labels/mfe_mae x (2024-03-05, AAPL)


def test_no_webserver_says_to_start_one(project_env: dict[str, str]) -> None:
    env = {**project_env, "DAGSTER_WEBSERVER_URL": f"http://127.0.0.1:{free_port()}"}
    for command in (["backfill", "--start", "2024-03-05"], ["status", "abc"]):
        result = run([CLI, *command], env)
        assert result.returncode == 2, result.stderr
        assert "no dagster-webserver at http://127.0.0.1:" in result.stderr and "`make dev`" in result.stderr
        assert "Traceback" not in result.stderr


class _Failing(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = b"Internal Server Error: the code location is reloading"
        self.send_response(500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


def test_an_http_error_is_reported_as_what_it_is(project_env: dict[str, str], tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = run([CLI, "status", "abc", "--url", url], project_env)
    finally:
        server.shutdown()
    assert result.returncode == 1
    said = f"dagster-webserver at {url} answered HTTP 500 Internal Server Error: Internal Server Error: the"
    assert f"{said} code location is reloading" in result.stderr
    assert "cannot reach" not in result.stderr


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a shell's background job starts a command


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_serve_stops_with_everything_it_started_within_seconds(
    project_env: dict[str, str], signum: int
) -> None:
    port = free_port()
    serve = subprocess.Popen(
        [CLI, "serve", "--port", str(port)], cwd=PROJECT_ROOT, env=project_env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True, preexec_fn=_ignore_sigint,
    )  # fmt: skip
    spawned: list[int] = []
    try:
        wait_until_loaded(f"http://127.0.0.1:{port}")
        with dg.DagsterInstance.from_config(project_env["DAGSTER_HOME"]) as instance:
            # What holds provider runs back when the UI launches them (no `provider` run tag).
            pools = {p: instance.event_log_storage.get_concurrency_info(p).slot_count for p in POOL_LIMITS}
        assert pools == POOL_LIMITS
        spawned = descendants(children(), serve.pid)
        assert len(spawned) >= 4, spawned  # dagster dev, its webserver, daemon and code server(s)
        started = time.monotonic()
        serve.send_signal(signum)
        assert serve.wait(timeout=60) == 130
        while (
            alive := [p for p in spawned if Path(f"/proc/{p}").exists()]
        ) and time.monotonic() - started < 60:
            time.sleep(0.2)
        took = time.monotonic() - started
    finally:
        with suppress(ProcessLookupError):
            os.killpg(serve.pid, signal.SIGKILL)
        for pid in spawned:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert not alive and took < 30, (alive, took)
