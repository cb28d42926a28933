"""A cross-process file lock with a timeout (fcntl.flock), held only around short store operations.

Why not filelock (a dependency already, for pyrate-limiter): its FileLock is exclusive only, and the
store needs shared locks for readers. Its ReadWriteLock (3.21+) is an SQLite transaction whose holds
are per thread and per instance (a singleton per path unless told otherwise) and raise on a change of
mode; the store takes a fresh lock per access from any thread of a run. flock gives exactly that, and
the kernel frees it when a holder dies (the kill -9 tests), in the lines below.
"""

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class LockTimeoutError(TimeoutError):
    """The lock stayed held by another process for longer than the timeout."""


@contextmanager
def file_lock(path: Path, *, shared: bool = False, timeout_s: float = 600.0) -> Iterator[None]:
    """Hold an exclusive (or shared) flock on `path`, polling until `timeout_s`.

    flock is released by the kernel when a holder dies, so a killed run never leaves the lock stuck.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    try:
        while True:
            try:
                fcntl.flock(fd, mode)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeoutError(
                        f"could not lock {path} within {timeout_s:.0f} s: another process keeps it"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock
