"""The API budget shared by every run and process on one machine: requests per minute and in flight.

Requests/minute: pyrate-limiter's SQLite bucket (a sliding-window log in one SQLite file, guarded by
a file lock), so N concurrent runs together never exceed the budget. In-flight requests: N flock'd
slot files; the kernel frees a slot when its holder dies, so a killed run never leaks one.
"""

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyrate_limiter import Limiter, Rate, SQLiteBucket


class BudgetExhaustedError(TimeoutError):
    """Waited longer than allowed for a request token or a concurrency slot."""


class RateBudget:
    """`requests_per_minute` for one provider, shared through files in `directory`.

    The window is padded by `margin_s` so requests admitted at the edge of a minute still arrive
    inside the provider's own window despite network jitter.
    """

    def __init__(
        self,
        provider: str,
        directory: Path,
        requests_per_minute: int,
        max_concurrent: int,
        margin_s: float = 1.0,
        max_wait_s: float = 600.0,
    ) -> None:
        if requests_per_minute < 1:
            raise ValueError(f"requests_per_minute must be at least 1, got {requests_per_minute}")
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent_requests must be at least 1, got {max_concurrent}")
        directory.mkdir(parents=True, exist_ok=True)
        self.provider = provider
        self.requests_per_minute = requests_per_minute
        self.max_wait_s = max_wait_s
        window_ms = int(60_000 + margin_s * 1000)
        bucket = SQLiteBucket.init_from_file(
            [Rate(requests_per_minute, window_ms)],
            table=f"budget_{provider}_{requests_per_minute}",
            db_path=str(directory / f"{provider}.rate.sqlite"),
            use_file_lock=True,
        )
        self._limiter = Limiter(bucket)
        self._slots = [directory / f"{provider}.slot{i}.lock" for i in range(max_concurrent)]
        self._local = threading.BoundedSemaphore(max_concurrent)

    def _acquire_token(self) -> None:
        if not self._limiter.try_acquire(self.provider, blocking=True, timeout=self.max_wait_s):
            raise BudgetExhaustedError(
                f"{self.provider}: no request token within {self.max_wait_s:.0f} s "
                f"(budget {self.requests_per_minute}/min shared by all runs)"
            )

    @contextmanager
    def _slot(self) -> Iterator[None]:
        deadline = time.monotonic() + self.max_wait_s
        if not self._local.acquire(timeout=self.max_wait_s):
            raise BudgetExhaustedError(f"{self.provider}: no concurrency slot within {self.max_wait_s:.0f} s")
        try:
            while True:
                for path in self._slots:
                    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        os.close(fd)
                        continue
                    try:
                        yield
                        return
                    finally:
                        os.close(fd)  # releases the flock
                if time.monotonic() > deadline:
                    raise BudgetExhaustedError(
                        f"{self.provider}: no concurrency slot within {self.max_wait_s:.0f} s"
                    )
                time.sleep(0.01)
        finally:
            self._local.release()

    @contextmanager
    def request(self) -> Iterator[None]:
        """Hold a concurrency slot and spend one request token for the duration of one HTTP request."""
        with self._slot():
            self._acquire_token()
            yield
