"""`backfill-assets serve`: `dagster dev` as a child that stops, with everything it started, within
seconds of Ctrl-C or SIGTERM, on an instance whose provider pools have their limits.

Run as a shell's background job, `dagster dev` inherits SIGINT ignored and maps SIGTERM onto it, so
both were lost; stopped in the foreground, its daemon could wait on its shutdown pipe and a code
server outlive it. Here it runs in a session of its own with both signals at their defaults; a
signal to this process interrupts that session, and what is left after `grace_s` is killed.
"""

import os
import signal
import socket
import subprocess
import threading
from collections.abc import Sequence
from contextlib import suppress
from types import FrameType
from typing import Any

GRACE_S = 20.0
POOL_LIMITS = {"synthetic_api": 4, "alpaca_api": 2, "yfinance_api": 1}


def default_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def spawn(command: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
    """`command` in a session of its own, with SIGINT and SIGTERM at their defaults."""
    return subprocess.Popen(list(command), start_new_session=True, preexec_fn=default_signals, **popen)


def stop(child: subprocess.Popen[Any], grace_s: float = GRACE_S) -> int:
    """Interrupt `child`'s session (dagster dev's own clean shutdown), wait `grace_s`, then kill what
    is left of it (a code server, a daemon still waiting on its shutdown pipe); its exit code."""
    if child.poll() is None:
        os.killpg(child.pid, signal.SIGINT)
        with suppress(subprocess.TimeoutExpired):
            child.wait(timeout=grace_s)
    with suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)
    return child.wait()


def supervise(command: Sequence[str], grace_s: float = GRACE_S) -> int:
    """Run `command` until it exits or this process gets SIGINT/SIGTERM; its exit code (130 when
    stopped by a signal)."""
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    child = spawn(command)
    while child.poll() is None and not stopping.wait(0.5):
        pass
    code = stop(child, grace_s)
    return 130 if stopping.is_set() else code


def serve(host: str, port: int) -> int:
    """`dagster dev` (webserver + daemon) on the project's DAGSTER_HOME, stopped cleanly and fast."""
    from backfill_assets.demo import dagster_dev_command
    from backfill_assets.home import ensure_dagster_home
    from backfill_assets.settings import PROJECT_ROOT, SettingsError, load_settings

    load_settings()  # a bad setting fails here, clearly, not in the webserver's log
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SettingsError(
                f"cannot serve on {host}:{port} ({exc.strerror}): pick another port, "
                f"e.g. `make dev PORT={port + 1}` or `backfill-assets serve --port {port + 1}`"
            ) from None
    home = ensure_dagster_home()
    set_pools = default_pool_limits()
    print(f"DAGSTER_HOME={home}: http://{host}:{port}", flush=True)
    if set_pools:
        print("pool limits set: " + ", ".join(f"{p}={n}" for p, n in set_pools.items()), flush=True)
    os.chdir(PROJECT_ROOT)
    return supervise(dagster_dev_command(host, port))


def default_pool_limits() -> dict[str, int]:
    """Give each provider pool without a limit its default (POOL_LIMITS); never change one set.

    The pools are what holds provider runs back whatever launched them (the UI's launch dialog adds
    no `provider` run tag), but dagster.yaml only takes one default for every pool."""
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        unset = {p: n for p, n in POOL_LIMITS.items() if p not in set(storage.get_concurrency_keys())}
        for pool, limit in unset.items():
            storage.set_concurrency_slots(pool, limit)
    return unset
