"""One store suite, two backends (DuckDB file, Postgres schema): slice replace is idempotent, atomic,
exact; concurrent writers of different and overlapping slices never collide, the last one wins."""

import datetime as dt
import multiprocessing as mp
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from backfill_assets.calendar import TradingCalendar
from backfill_assets.ingest import ingest
from backfill_assets.providers.synthetic import SyntheticProvider
from backfill_assets.storage.base import StoreError
from backfill_assets.storage.duckdb_store import DuckDBBarStore
from backfill_assets.storage.locks import LockTimeoutError
from backfill_assets.storage.postgres_store import PostgresStore
from backfill_assets.timeframes import TIMEFRAMES
from backfill_assets_tests.store_writers import KILLED_WRITER, spec_of, write_rounds

Store = DuckDBBarStore | PostgresStore

D = dt.date
M1 = TIMEFRAMES["1Min"]
VALUE_COLUMNS = [
    "ticker",
    "ts",
    "session_date",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "trade_count",
    "vwap",
]


def slices(tickers: list[str], days: list[dt.date]) -> list[tuple[str, dt.date]]:
    return [(t, d) for t in tickers for d in days]


def test_replace_twice_gives_identical_rows(
    any_store: Store, synthetic: SyntheticProvider, calendar: TradingCalendar
) -> None:
    store = any_store
    wanted = slices(["AAPL", "MSFT"], [D(2024, 1, 2), D(2024, 1, 3)])
    ingest(wanted, synthetic, store, calendar, M1)
    first = store.read_bars()
    ingest(wanted, synthetic, store, calendar, M1)
    second = store.read_bars()
    assert len(first) == 4 * 390
    pd.testing.assert_frame_equal(first[VALUE_COLUMNS], second[VALUE_COLUMNS])
    assert (second["fetched_at"] > first["fetched_at"]).all()  # lineage says when, values are identical


def test_replace_touches_only_its_slices(
    any_store: Store, synthetic: SyntheticProvider, calendar: TradingCalendar
) -> None:
    store = any_store
    ingest(slices(["AAPL", "MSFT"], [D(2024, 1, 2), D(2024, 1, 3)]), synthetic, store, calendar, M1)
    before = store.read_bars(["MSFT"])
    ingest(slices(["AAPL"], [D(2024, 1, 3)]), synthetic, store, calendar, M1)
    pd.testing.assert_frame_equal(before, store.read_bars(["MSFT"]))
    assert store.read_bars(["AAPL"]).groupby("session_date").size().tolist() == [390, 390]


def test_failure_mid_write_keeps_previous_rows(
    any_store: Store, synthetic: SyntheticProvider, calendar: TradingCalendar
) -> None:
    store, wanted = any_store, slices(["AAPL"], [D(2024, 1, 2)])
    ingest(wanted, synthetic, store, calendar, M1)
    before = store.read_bars()
    # A frame whose INSERT fails on the primary key after the DELETE already ran in the transaction.
    broken = pd.concat([before, before.iloc[:1]], ignore_index=True)
    with pytest.raises(Exception, match="(?i)constraint|duplicate"):
        store.replace_bars(broken, wanted)
    pd.testing.assert_frame_equal(before, store.read_bars())


def test_rows_outside_the_slices_are_refused(
    any_store: Store, synthetic: SyntheticProvider, calendar: TradingCalendar
) -> None:
    store = any_store
    ingest(slices(["AAPL"], [D(2024, 1, 2), D(2024, 1, 3)]), synthetic, store, calendar, M1)
    before = store.read_bars()
    with pytest.raises(StoreError, match="rows outside the slices"):
        store.replace_bars(before, [("AAPL", D(2024, 1, 2))])
    pd.testing.assert_frame_equal(before, store.read_bars())


def test_read_of_an_empty_store_is_empty(any_store: Store) -> None:
    assert any_store.read_bars().empty and list(any_store.read_bars().columns)[:2] == ["ticker", "ts"]


def _write_many(spec: tuple[str, ...], ticker: str, n_days: int) -> None:
    from backfill_assets.calendar import get_calendar
    from backfill_assets_tests.store_writers import open_spec

    calendar = get_calendar("XNYS", D(2024, 1, 2))
    store, provider = open_spec(spec), SyntheticProvider(calendar)
    for day in calendar.sessions_in(D(2024, 1, 2), D(2024, 12, 31))[:n_days]:
        ingest([(ticker, day)], provider, store, calendar, M1)


def test_concurrent_writer_processes_all_land(any_store: Store) -> None:
    tickers = ["AAPL", "MSFT", "NVDA", "AMZN"]
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(spec_of(any_store), t, 8)) for t in tickers]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    counts = any_store.read_bars().groupby("ticker").size().to_dict()
    assert counts == {t: 8 * 390 for t in tickers}


@pytest.mark.faults
def test_overlapping_writers_never_deadlock_or_mix_and_the_last_wins(any_store: Store) -> None:
    """Four processes rewrite overlapping slices (in different orders, 5 rounds each) at once: every
    slice ends as exactly one writer's complete rows, the one that committed it last."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=write_rounds, args=(spec_of(any_store), f"w{i}", i, 5, queue)) for i in range(4)
    ]
    for p in procs:
        p.start()
    writes = [queue.get(timeout=300) for _ in range(4 * 5)]  # (writer, started, returned, slices)
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    bars = any_store.read_bars()
    per_slice = bars.groupby(["ticker", "session_date"]).agg(
        rows=("ts", "size"), writers=("provider", "nunique")
    )
    assert (per_slice["rows"] == 390).all() and (per_slice["writers"] == 1).all()
    assert not bars.duplicated(["ticker", "ts"]).any()
    spans: dict[tuple[str, dt.date], list[tuple[str, float, float]]] = {}
    for writer, started, returned, written in writes:
        for ticker, day in written:
            spans.setdefault((ticker, dt.date.fromisoformat(day)), []).append((writer, started, returned))
    winners = bars.groupby(["ticker", "session_date"])["provider"].first().to_dict()
    assert set(winners) == set(spans)
    for key, winner in winners.items():
        # The winner wrote this slice, and no write of it began after the winner's had returned.
        assert any(w == winner for w, _, _ in spans[key])
        last_return = max(r for w, _, r in spans[key] if w == winner)
        assert not [w for w, s, _ in spans[key] if w != winner and s > last_return], key


def test_writer_waits_for_lock_then_fails_clearly(
    db_path: Path, synthetic: SyntheticProvider, calendar: TradingCalendar
) -> None:
    store = DuckDBBarStore(db_path, lock_timeout_s=60)
    ingest(slices(["AAPL"], [D(2024, 1, 2)]), synthetic, store, calendar, M1)
    before = store.read_bars()
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX);"
            "print('held', flush=True); time.sleep(60)"
        ), str(store.lock_path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        impatient = DuckDBBarStore(db_path, lock_timeout_s=0.5)
        started = time.monotonic()
        with pytest.raises(LockTimeoutError, match="could not lock .* within 0 s|could not lock"):
            ingest(slices(["AAPL"], [D(2024, 1, 3)]), synthetic, impatient, calendar, M1)
        assert time.monotonic() - started < 10
    finally:
        holder.kill()
        holder.wait()
    pd.testing.assert_frame_equal(before, store.read_bars())


def test_writer_waits_out_a_foreign_duckdb_lock(
    db_path: Path, synthetic: SyntheticProvider, calendar: TradingCalendar
) -> None:
    store = DuckDBBarStore(db_path, lock_timeout_s=60)
    ingest(slices(["AAPL"], [D(2024, 1, 2)]), synthetic, store, calendar, M1)
    # Another program (a DuckDB shell, a notebook) holds DuckDB's own lock for ~2 s, ignoring ours.
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('open', flush=True);"
            "time.sleep(2); c.close()"
        ), str(db_path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
    ingest(slices(["AAPL"], [D(2024, 1, 3)]), synthetic, store, calendar, M1)
    holder.wait(timeout=30)
    assert len(store.read_bars()) == 2 * 390


def wait_for_copy(store: PostgresStore, timeout_s: float = 60) -> None:
    """Until a COPY into the store's database is in progress (the writer's staging COPY)."""
    deadline = time.monotonic() + timeout_s
    query = "SELECT 1 FROM pg_stat_progress_copy WHERE command = 'COPY FROM' AND datname = current_database()"
    with store.connect(autocommit=True) as conn:
        while time.monotonic() < deadline:
            if conn.execute(query).fetchone():
                return
            time.sleep(0.005)
    raise AssertionError("the writer never started its COPY")


@pytest.mark.faults
@pytest.mark.slow
@pytest.mark.parametrize("delay_s", [0.2, 0.5, 0.8])
def test_kill_9_mid_write_leaves_old_or_new_never_partial(
    any_store: Store, synthetic: SyntheticProvider, calendar: TradingCalendar, delay_s: float
) -> None:
    """SIGKILL a writer mid-write (on Postgres: once its COPY is seen running, then `delay_s` later)."""
    store = any_store
    days = calendar.sessions_in(D(2024, 1, 2), D(2024, 12, 31))
    wanted = slices(["AAPL", "MSFT", "NVDA", "AMZN"], days)
    ingest(wanted, synthetic, store, calendar, M1)
    n_rows = len(store.read_bars())
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, *spec_of(store)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None and writer.stdout.readline().strip() == "writing"
    if isinstance(store, PostgresStore):
        wait_for_copy(store)
    time.sleep(delay_s)
    writer.kill()  # SIGKILL: no cleanup, no rollback by the writer
    writer.wait()
    after = store.read_bars()
    assert len(after) == n_rows
    assert set(after["provider"]) in ({"synthetic"}, {"second-write"})  # one transaction: all or nothing
    ingest(wanted, synthetic, store, calendar, M1)  # the re-run completes over whatever is there
    rerun = store.read_bars()
    assert len(rerun) == n_rows and set(rerun["provider"]) == {"synthetic"}
