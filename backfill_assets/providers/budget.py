"""The API budget shared by every run and process of an instance: requests per minute and in flight.

Requests/minute is a pyrate-limiter sliding-window log: a SQLite file guarded by a file lock on one
machine, or a Postgres table when the instance runs on Postgres (runs on several machines share it).
In-flight requests are slots: flock'd files, or Postgres session advisory locks. Either way the
operating system or the server frees the slot of a run that dies, so a killed run never leaks one.
"""

import fcntl
import hashlib
import os
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from psycopg_pool import ConnectionPool
from pyrate_limiter import AbstractBucket, Limiter, PostgresBucket, Rate, SQLiteBucket


class BudgetExhaustedError(TimeoutError):
    """Waited longer than allowed for a request token or a concurrency slot."""


class _Slots(Protocol):
    def try_take(self, index: int) -> object | None: ...
    def give_back(self, handle: object) -> None: ...


class _FileSlots:
    def __init__(self, directory: Path, provider: str) -> None:
        self._paths = directory / provider

    def try_take(self, index: int) -> object | None:
        fd = os.open(f"{self._paths}.slot{index}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def give_back(self, handle: object) -> None:
        os.close(handle)  # type: ignore[arg-type]  # closing the file releases the flock


class _PostgresSlots:
    def __init__(self, pool: ConnectionPool, provider: str) -> None:
        self._pool, self._provider = pool, provider

    def _key(self, index: int) -> int:
        digest = hashlib.sha256(f"backfill_assets/{self._provider}/slot{index}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    def try_take(self, index: int) -> object | None:
        conn = self._pool.getconn()
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key(index),)).fetchone()
        if row and row[0]:
            return (conn, index)
        self._pool.putconn(conn)
        return None

    def give_back(self, handle: Any) -> None:
        conn, index = handle
        conn.execute("SELECT pg_advisory_unlock(%s)", (self._key(index),))
        self._pool.putconn(conn)


class RateBudget:
    """`requests_per_minute` and `max_concurrent` for one provider, shared through `directory` or,
    given `postgres_url`, through the instance's Postgres database.

    The limit holds over any `window_s` (a minute by default: `requests_per_minute` per minute; a
    shorter window scales the limit, e.g. 20 per 6 s for 200/min). The window is padded by a 60th of
    itself (1 s per minute) so requests admitted at its edge still arrive inside the provider's own
    window despite network jitter.
    """

    def __init__(
        self,
        provider: str,
        directory: Path,
        requests_per_minute: int,
        max_concurrent: int,
        postgres_url: str | None = None,
        window_s: float = 60.0,
        max_wait_s: float = 600.0,
    ) -> None:
        if requests_per_minute < 1:
            raise ValueError(f"requests_per_minute must be at least 1, got {requests_per_minute}")
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent_requests must be at least 1, got {max_concurrent}")
        self.provider = provider
        self.requests_per_minute, self.max_concurrent = requests_per_minute, max_concurrent
        self.max_wait_s = max_wait_s
        if not 1 <= window_s <= 3600:
            raise ValueError(f"budget window must be 1-3600 s, got {window_s}")
        per_window = max(1, round(requests_per_minute * window_s / 60))
        rates = [Rate(per_window, int(window_s * 1000 * 61 / 60))]
        # One log per provider, whatever each run's limit or window: runs whose configs differ still
        # share it, so the requests in flight to one provider are counted in one place.
        table = f"budget_{provider}"
        bucket: AbstractBucket
        self._slots: _Slots
        if postgres_url:
            # Two pools: the bucket locks its table inside transactions; slot locks live on
            # autocommit sessions held for the length of a request.
            tokens = ConnectionPool(postgres_url, min_size=1, max_size=2, open=True)
            slots = ConnectionPool(
                postgres_url, min_size=1, max_size=max_concurrent, kwargs={"autocommit": True}, open=True
            )
            bucket, self._slots = PostgresBucket(tokens, table, rates), _PostgresSlots(slots, provider)
        else:
            directory.mkdir(parents=True, exist_ok=True)
            db_path = str(directory / f"{provider}.rate.sqlite")
            bucket = SQLiteBucket.init_from_file(rates, table=table, db_path=db_path, use_file_lock=True)
            self._slots = _FileSlots(directory, provider)
        self._limiter = Limiter(bucket)
        self._pools = [tokens, slots] if postgres_url else []
        self._local = threading.BoundedSemaphore(max_concurrent)

    def _acquire_token(self) -> None:
        """Spend a token, polling a fresh item each time. pyrate-limiter's own blocking wait records
        the item at its first timestamp plus the sleeps it planned, so a wait that overslept (a busy
        machine, another process holding the bucket's lock) stored the request earlier than it was
        sent, and it left the window early: 31 requests in a 60 s window at 30/min."""
        deadline = time.monotonic() + self.max_wait_s
        while not self._limiter.try_acquire(self.provider, timeout=0):  # one try, no pyrate sleep
            if time.monotonic() >= deadline:
                raise BudgetExhaustedError(
                    f"{self.provider}: no request token within {self.max_wait_s:.0f} s "
                    f"(budget {self.requests_per_minute}/min shared by all runs)"
                )
            time.sleep(0.02 + random.uniform(0, 0.03))  # polls are one indexed count, under a lock

    @contextmanager
    def _slot(self) -> Iterator[None]:
        deadline = time.monotonic() + self.max_wait_s
        if not self._local.acquire(timeout=self.max_wait_s):
            raise BudgetExhaustedError(f"{self.provider}: no concurrency slot within {self.max_wait_s:.0f} s")
        try:
            while (handle := self._take_any()) is None:
                if time.monotonic() > deadline:
                    raise BudgetExhaustedError(
                        f"{self.provider}: no concurrency slot within {self.max_wait_s:.0f} s"
                    )
                time.sleep(0.01)
            try:
                yield
            finally:
                self._slots.give_back(handle)
        finally:
            self._local.release()

    def _take_any(self) -> object | None:
        for index in range(self.max_concurrent):
            if (handle := self._slots.try_take(index)) is not None:
                return handle
        return None

    def close(self) -> None:
        """Stop the limiter's leak thread and close database connections."""
        self._limiter.close()
        for pool in self._pools:
            pool.close()

    @contextmanager
    def request(self) -> Iterator[None]:
        """Hold a concurrency slot and spend one request token for the duration of one HTTP request."""
        with self._slot():
            self._acquire_token()
            yield


_SHARED: dict[tuple[str, Path, int, int, str | None, float], RateBudget] = {}
_SHARED_LOCK = threading.Lock()


def shared_budget(
    provider: str,
    directory: Path,
    requests_per_minute: int,
    max_concurrent: int,
    postgres_url: str | None,
    window_s: float = 60.0,
) -> RateBudget:
    """One RateBudget per configuration and process: runs in one process share its connections."""
    key = (provider, directory, requests_per_minute, max_concurrent, postgres_url, window_s)
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = RateBudget(
                provider, directory, requests_per_minute, max_concurrent, postgres_url, window_s
            )
        return _SHARED[key]


def close_shared_budgets() -> None:
    """Stop every shared budget's background work and close its connections."""
    with _SHARED_LOCK:
        for budget in _SHARED.values():
            budget.close()
        _SHARED.clear()
