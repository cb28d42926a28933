"""HTTP policy for provider clients: budget, timeouts, retries and a circuit breaker, in one place.

Client libraries keep their own request building, pagination and parsing; their HTTP session is
replaced by one whose `request` spends the shared budget and owns retries. 429 waits for
Retry-After / X-RateLimit-Reset when given, else backs off exponentially with jitter; 5xx, timeouts
and dropped connections retry a bounded number of times; anything else is returned at once for the
client to raise (401/403/404/422 are permanent).

Why not tenacity or stamina: an attempt here is not "call, raise, retry". Each attempt spends a
shared-budget token and a concurrency slot, a 429 waits for the server's own hint and does not count
towards the breaker while a 5xx does, a 200 with a body that is not JSON is retried but its response
is handed back on the last try so the client raises its own error, and the breaker is shared by every
request of a run. Expressed with tenacity's stop/wait/retry callbacks it takes as many lines, split
across callbacks; the retry tests (test_transport, the fault suites) pin the behaviour either way.
"""

import email.utils
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from backfill_assets.providers.base import ProviderError
from backfill_assets.providers.budget import RateBudget

TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
LOG_WAIT_S = 5.0  # a wait this long is logged: a run silent at STEP_START for minutes looks hung


class CircuitOpenError(ProviderError):
    """The provider kept failing: the run stops instead of hammering it (permanent for this run)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)


class Response(Protocol):
    status_code: int
    headers: Mapping[str, str]


@dataclass
class RetryPolicy:
    """Bounded retries with exponential backoff and full jitter, capped at `max_delay_s`; a server's
    own wait (Retry-After) is honoured up to `max_server_wait_s`, and past it the request fails."""

    max_retries: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 60.0
    max_server_wait_s: float = 300.0

    def backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.max_delay_s, self.base_delay_s * 2**attempt))


def server_wait_s(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asked us to wait: Retry-After (seconds or HTTP date) or X-RateLimit-Reset."""
    now = time.time() if now is None else now
    retry_after = headers.get("Retry-After")
    if retry_after:
        if retry_after.strip().isdigit():
            return float(retry_after)
        try:
            parsed = email.utils.parsedate_to_datetime(retry_after)
        except (TypeError, ValueError):  # an unreadable hint: fall back to our own backoff
            return None
        return max(0.0, parsed.timestamp() - now)
    reset = headers.get("X-RateLimit-Reset") or headers.get("X-Ratelimit-Reset")
    if reset and reset.strip().replace(".", "", 1).isdigit():
        return max(0.0, float(reset) - now)
    return None


@dataclass
class CircuitBreaker:
    """Opens after `threshold` consecutive failed attempts (5xx, timeouts, cut connections, unreadable
    bodies) across all requests of a run. 429s are the budget's business and do not count."""

    provider: str
    threshold: int = 10
    _failures: int = 0
    _open: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self) -> None:
        if self._open:
            raise CircuitOpenError(
                f"{self.provider}: circuit open after {self._failures} consecutive failed requests; "
                "this run sends nothing more"
            )

    def record(self, ok: bool, cause: str = "") -> None:
        """Count an attempt; raise CircuitOpenError when this failure is the one that opens the circuit."""
        with self._lock:
            if ok:
                self._failures = 0
                return
            self._failures += 1
            self._open = self._failures >= self.threshold
        if self._open:
            raise CircuitOpenError(
                f"{self.provider}: circuit open after {self._failures} consecutive failed requests "
                f"(last: {cause}); stopping this run instead of hammering the provider"
            )


@dataclass
class RequestStats:
    """What the transport did, for metadata: requests sent, 429s and other retries, time waited."""

    requests: int = 0
    throttled: int = 0
    retried: int = 0
    waited_s: float = 0.0


def _is_json(response: Any) -> bool:
    """Whether the body parses; the client's own `response.json()` then reuses the parse, since
    decoding 10,000-bar pages twice cost a quarter of an ingest's CPU."""
    try:
        parsed = response.json()
    except ValueError:
        return False
    try:
        response.json = lambda **_: parsed
    except AttributeError:  # a response class with slots: it parses again
        pass
    return True


@dataclass
class Transport:
    """Runs one logical request through budget, retries and breaker. Thread-safe."""

    budget: RateBudget
    retry: RetryPolicy
    breaker: CircuitBreaker
    timeout_s: float
    transient_errors: tuple[type[BaseException], ...]
    json_body: bool = False  # a 200 whose body is not JSON (cut connection, proxy page) is transient
    stats: RequestStats = field(default_factory=RequestStats)
    sleep: Callable[[float], None] = time.sleep
    log: Callable[[str], None] = lambda _: None  # where waits of LOG_WAIT_S or more are said
    _count_lock: threading.Lock = field(default_factory=threading.Lock)  # requests run in threads

    def send(self, do_request: Callable[[float], Any]) -> Any:
        """Call `do_request(timeout)` until it succeeds, fails permanently, or retries run out."""
        for attempt in range(self.retry.max_retries + 1):
            self.breaker.check()
            last = attempt == self.retry.max_retries
            try:
                asked = time.monotonic()
                with self.budget.request():
                    if (queued := time.monotonic() - asked) >= LOG_WAIT_S:
                        self.log(f"{self.breaker.provider}: waited {queued:.0f} s for the shared budget")
                    self._count(requests=1)
                    response = do_request(self.timeout_s)
            except self.transient_errors as exc:
                self.breaker.record(False, f"{type(exc).__name__}: {exc}"[:200])
                if last:
                    raise
                self._pause(self.retry.backoff(attempt), type(exc).__name__)
                continue
            status = int(response.status_code)
            if status == 200 and self.json_body and not _is_json(response):
                self.breaker.record(False, "HTTP 200 with a body that is not JSON")
                if last:
                    return response  # the client raises its own decoding error
                self._pause(self.retry.backoff(attempt), "a body that is not JSON")
                continue
            if status not in TRANSIENT_STATUS:
                self.breaker.record(True)
                return response
            if status != 429:
                self.breaker.record(False, f"HTTP {status}")
            if last:
                return response  # the client raises its own error with the provider's message
            wait = server_wait_s(response.headers) if status == 429 else None
            self._count(throttled=int(status == 429))
            if wait is not None and wait > self.retry.max_server_wait_s:
                # Waiting a day would hold the run and its pool slots with nothing to show for it.
                raise ProviderError(
                    f"{self.breaker.provider}: HTTP 429 asking to wait {wait:.0f} s, over the "
                    f"{self.retry.max_server_wait_s:.0f} s this run waits (max_retry_after_s); nothing "
                    "was written for the request, retry it later",
                    permanent=True,
                )
            if wait is not None:
                self._pause(wait + random.uniform(0, 0.25), f"HTTP 429, the server asked for {wait:.0f} s")
            else:
                self._pause(self.retry.backoff(attempt), f"HTTP {status}")
        raise AssertionError("unreachable")

    def _count(self, requests: int = 0, throttled: int = 0, retried: int = 0, waited_s: float = 0.0) -> None:
        with self._count_lock:
            self.stats.requests += requests
            self.stats.throttled += throttled
            self.stats.retried += retried
            self.stats.waited_s += waited_s

    def _pause(self, seconds: float, why: str) -> None:
        if seconds >= LOG_WAIT_S:
            self.log(f"{self.breaker.provider}: {why}; waiting {seconds:.0f} s before retrying")
        self._count(retried=1, waited_s=seconds)
        self.sleep(seconds)
