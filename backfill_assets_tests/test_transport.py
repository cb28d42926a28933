"""The HTTP policy's parts: server wait hints, backoff bounds, the breaker, budget slots across processes."""

import email.utils
import multiprocessing
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from backfill_assets.defs.providers import AlpacaProviderResource
from backfill_assets.providers.budget import BudgetExhaustedError, RateBudget
from backfill_assets.providers.transport import CircuitBreaker, CircuitOpenError, RetryPolicy, server_wait_s
from backfill_assets.settings import get_settings


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"Retry-After": email.utils.formatdate(1_000_030, usegmt=True)}, 30.0),
        ({"X-RateLimit-Reset": "1000042"}, 42.0),
        ({"X-RateLimit-Reset": "999000"}, 0.0),  # already past: go now
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
    ids=["seconds", "http-date", "reset-epoch", "reset-past", "garbage", "none"],
)
def test_server_wait_hints(headers: dict[str, str], wait: float | None) -> None:
    assert server_wait_s(headers, now=1_000_000.0) == wait


def test_backoff_is_bounded_and_jittered() -> None:
    policy = RetryPolicy(max_retries=10, base_delay_s=0.5, max_delay_s=4.0)
    delays = [policy.backoff(attempt) for attempt in range(10) for _ in range(50)]
    assert all(0 <= d <= 4.0 for d in delays)
    assert len({round(d, 6) for d in delays}) > 400  # full jitter: runs never retry in lockstep


def test_breaker_opens_on_consecutive_failures_only() -> None:
    breaker = CircuitBreaker("alpaca", threshold=3)
    breaker.record(False, "HTTP 500")
    breaker.record(True)  # a success resets the count
    breaker.record(False, "HTTP 502")
    breaker.record(False, "HTTP 503")
    with pytest.raises(
        CircuitOpenError, match=r"after 3 consecutive failed requests \(last: HTTP 504\)"
    ) as info:
        breaker.record(False, "HTTP 504")
    assert info.value.permanent
    with pytest.raises(CircuitOpenError, match="sends nothing more"):
        breaker.check()


@pytest.mark.parametrize(("rpm", "slots", "name"), [(0, 1, "requests_per_minute"), (10, 0, "max_concurrent")])
def test_budget_rejects_impossible_values(tmp_path: Path, rpm: int, slots: int, name: str) -> None:
    with pytest.raises(ValueError, match=f"{name}.* got 0"):
        RateBudget("alpaca", tmp_path, rpm, slots)


@pytest.fixture(params=["files", "postgres"])
def budget_home(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    """Where budgets live: a directory, or a Postgres database (and a provider name of its own)."""
    provider = f"p{uuid.uuid4().hex[:12]}"
    if request.param == "files":
        yield str(tmp_path), None
        return
    url = request.getfixturevalue("postgres_url")
    yield provider, url
    with psycopg.connect(url, autocommit=True) as conn:
        for (table,) in conn.execute(
            "SELECT tablename FROM pg_tables WHERE tablename LIKE %s", (f"%{provider}%",)
        ):
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))


def _budget(home: tuple[str, str | None], rpm: int, slots: int, wait_s: float = 600.0) -> RateBudget:
    where, url = home
    if url is None:
        return RateBudget("alpaca", Path(where), rpm, slots, max_wait_s=wait_s)
    return RateBudget(where, Path("unused"), rpm, slots, postgres_url=url, max_wait_s=wait_s)


def _spend_tokens(home: tuple[str, str | None], out: "multiprocessing.Queue[int]") -> None:
    budget = _budget(home, rpm=5, slots=3, wait_s=3.0)
    spent = 0
    for _ in range(3):
        try:
            with budget.request():
                spent += 1
        except BudgetExhaustedError:
            pass
    out.put(spent)


def test_three_processes_share_one_minute_budget(budget_home: tuple[str, str | None]) -> None:
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[int] = ctx.Queue()
    procs = [ctx.Process(target=_spend_tokens, args=(budget_home, out)) for _ in range(3)]
    for proc in procs:
        proc.start()
    spent = [out.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    assert sum(spent) == 5  # nine wanted, five per minute for all of them; the rest timed out


def _spend_at(home: tuple[str, str | None], rpm: int, out: "multiprocessing.Queue[list[float]]") -> None:
    budget = RateBudget(
        "alpaca" if home[1] is None else home[0], Path(home[0]), rpm, 4, home[1], window_s=2.0, max_wait_s=60
    )
    admitted = []
    for _ in range(12):
        with budget.request():
            admitted.append(time.time())
    out.put(admitted)


@pytest.mark.faults
def test_runs_with_different_limits_share_one_budget_and_no_window_holds_more(
    budget_home: tuple[str, str | None],
) -> None:
    """Two runs at 300/min (10 per 2 s window) and one at 330/min (11): one log for the provider,
    so no 2 s window of admissions holds more than 11, although 36 requests are wanted at once."""
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[list[float]] = ctx.Queue()
    procs = [ctx.Process(target=_spend_at, args=(budget_home, rpm, out)) for rpm in (300, 300, 330)]
    for proc in procs:
        proc.start()
    admitted = sorted(t for _ in procs for t in out.get(timeout=120))
    for proc in procs:
        proc.join(timeout=30)
    busiest = max(sum(1 for u in admitted if t <= u < t + 2.0) for t in admitted)
    assert len(admitted) == 36 and busiest <= 11, busiest


def _hold_a_slot(home: tuple[str, str | None], out: "multiprocessing.Queue[tuple[float, float]]") -> None:
    budget = _budget(home, rpm=100, slots=2)
    with budget.request():
        start = time.monotonic()
        time.sleep(0.4)
        out.put((start, time.monotonic()))


def test_concurrent_requests_are_capped_across_processes(budget_home: tuple[str, str | None]) -> None:
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[tuple[float, float]] = ctx.Queue()
    procs = [ctx.Process(target=_hold_a_slot, args=(budget_home, out)) for _ in range(5)]
    for proc in procs:
        proc.start()
    spans = [out.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    in_flight = [sum(d for _, d in edges[: i + 1]) for i in range(len(edges))]
    assert max(in_flight) == 2  # five processes, two slots: never more than two requests in flight


@pytest.mark.faults
def test_a_run_config_never_raises_the_instances_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKFILL_REQUESTS_PER_MINUTE", "30")
    get_settings.cache_clear()
    try:
        keys = {"api_key": "k", "secret_key": "s"}
        assert AlpacaProviderResource(**keys, requests_per_minute=1000).instance_limit() == 30
        assert AlpacaProviderResource(**keys, requests_per_minute=10).instance_limit() == 10
    finally:
        get_settings.cache_clear()
