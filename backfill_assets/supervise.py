"""`backfill-assets serve`: `dagster dev` as a child that stops, with everything it started, within
seconds of Ctrl-C or SIGTERM.

Run as a shell's background job, `dagster dev` inherits SIGINT ignored and maps SIGTERM onto it, so
both were lost; stopped in the foreground, its daemon could wait on its shutdown pipe and a code
server outlive it. Here it runs in a session of its own with both signals at their defaults; a
signal to this process interrupts that session, and what is left after `grace_s` is killed.
"""

import os
import signal
import subprocess
import threading
from collections.abc import Sequence
from contextlib import suppress
from types import FrameType

GRACE_S = 20.0


def default_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def supervise(command: Sequence[str], grace_s: float = GRACE_S) -> int:
    """Run `command` until it exits or this process gets SIGINT/SIGTERM; its exit code (130 when
    stopped by a signal)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    child = subprocess.Popen(list(command), start_new_session=True, preexec_fn=default_signals)
    while child.poll() is None and not stop.wait(0.5):
        pass
    if child.poll() is None:
        os.killpg(child.pid, signal.SIGINT)  # dagster dev's own clean shutdown, given `grace_s`
        with suppress(subprocess.TimeoutExpired):
            child.wait(timeout=grace_s)
    with suppress(ProcessLookupError):  # a code server or a daemon still waiting on its pipe
        os.killpg(child.pid, signal.SIGKILL)
    code = child.wait()
    return 130 if stop.is_set() else code
