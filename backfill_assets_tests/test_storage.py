"""The DuckDB store: slice replace is idempotent, atomic, exact; concurrent writers never collide."""

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
from backfill_assets.timeframes import TIMEFRAMES

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
    store: DuckDBBarStore, synthetic: SyntheticProvider, calendar: TradingCalendar
) -> None:
    wanted = slices(["AAPL", "MSFT"], [D(2024, 1, 2), D(2024, 1, 3)])
    ingest(wanted, synthetic, store, calendar, M1)
    first = store.read_bars()
    ingest(wanted, synthetic, store, calendar, M1)
    second = store.read_bars()
    assert len(first) == 4 * 390
    pd.testing.assert_frame_equal(first[VALUE_COLUMNS], second[VALUE_COLUMNS])
    assert (second["fetched_at"] > first["fetched_at"]).all()  # lineage says when, values are identical


def test_replace_touches_only_its_slices(
    store: DuckDBBarStore, synthetic: SyntheticProvider, calendar: TradingCalendar
) -> None:
    ingest(slices(["AAPL", "MSFT"], [D(2024, 1, 2), D(2024, 1, 3)]), synthetic, store, calendar, M1)
    before = store.read_bars(["MSFT"])
    ingest(slices(["AAPL"], [D(2024, 1, 3)]), synthetic, store, calendar, M1)
    pd.testing.assert_frame_equal(before, store.read_bars(["MSFT"]))
    assert store.read_bars(["AAPL"]).groupby("session_date").size().tolist() == [390, 390]


def test_failure_mid_write_keeps_previous_rows(
    store: DuckDBBarStore, synthetic: SyntheticProvider, calendar: TradingCalendar
) -> None:
    wanted = slices(["AAPL"], [D(2024, 1, 2)])
    ingest(wanted, synthetic, store, calendar, M1)
    before = store.read_bars()
    # A frame whose INSERT fails on the primary key after the DELETE already ran in the transaction.
    broken = pd.concat([before, before.iloc[:1]], ignore_index=True)
    with pytest.raises(Exception, match="(?i)constraint|duplicate"):
        store.replace_bars(broken, wanted)
    pd.testing.assert_frame_equal(before, store.read_bars())


def test_rows_outside_the_slices_are_refused(
    store: DuckDBBarStore, synthetic: SyntheticProvider, calendar: TradingCalendar
) -> None:
    ingest(slices(["AAPL"], [D(2024, 1, 2), D(2024, 1, 3)]), synthetic, store, calendar, M1)
    before = store.read_bars()
    with pytest.raises(StoreError, match="rows outside the slices"):
        store.replace_bars(before, [("AAPL", D(2024, 1, 2))])
    pd.testing.assert_frame_equal(before, store.read_bars())


def test_read_of_missing_file_is_empty(tmp_path: Path) -> None:
    assert DuckDBBarStore(tmp_path / "none.duckdb").read_bars().empty


def _write_many(path: str, ticker: str, n_days: int) -> None:
    from backfill_assets.calendar import get_calendar

    calendar = get_calendar("XNYS", D(2024, 1, 2))
    store, provider = DuckDBBarStore(Path(path), lock_timeout_s=120), SyntheticProvider(calendar)
    for day in calendar.sessions_in(D(2024, 1, 2), D(2024, 12, 31))[:n_days]:
        ingest([(ticker, day)], provider, store, calendar, M1)


def test_concurrent_writer_processes_all_land(db_path: Path, store: DuckDBBarStore) -> None:
    tickers = ["AAPL", "MSFT", "NVDA", "AMZN"]
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(str(db_path), t, 8)) for t in tickers]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    counts = store.read_bars().groupby("ticker").size().to_dict()
    assert counts == {t: 8 * 390 for t in tickers}


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


KILLED_WRITER = """
import sys, datetime as dt
from pathlib import Path
from backfill_assets.calendar import get_calendar
from backfill_assets.providers.base import BarRequest
from backfill_assets.providers.synthetic import SyntheticProvider
from backfill_assets.schemas import session_of
from backfill_assets.storage.duckdb_store import DuckDBBarStore
from backfill_assets.timeframes import TIMEFRAMES
cal = get_calendar("XNYS", dt.date(2024, 1, 2))
days = tuple(cal.sessions_in(dt.date(2024, 1, 2), dt.date(2024, 12, 31)))
tickers = ("AAPL", "MSFT", "NVDA", "AMZN")
bars = SyntheticProvider(cal).fetch(BarRequest(tickers, days, TIMEFRAMES["1Min"])).bars
bars["session_date"] = session_of(bars["ts"], cal.tz)
bars["provider"], bars["timeframe"], bars["adjustment"] = "second-write", "1Min", "raw"
bars["fetched_at"] = bars["ts"]
print("writing", flush=True)
DuckDBBarStore(Path(sys.argv[1])).replace_bars(bars, [(t, d) for t in tickers for d in days])
print("committed", flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("delay_s", [0.2, 0.5, 0.8])
def test_kill_9_mid_write_leaves_old_or_new_never_partial(
    db_path: Path, synthetic: SyntheticProvider, calendar: TradingCalendar, delay_s: float
) -> None:
    store = DuckDBBarStore(db_path, lock_timeout_s=60)
    days = calendar.sessions_in(D(2024, 1, 2), D(2024, 12, 31))
    wanted = slices(["AAPL", "MSFT", "NVDA", "AMZN"], days)
    ingest(wanted, synthetic, store, calendar, M1)
    n_rows = len(store.read_bars())
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(db_path)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None and writer.stdout.readline().strip() == "writing"
    time.sleep(delay_s)
    writer.kill()  # SIGKILL: no cleanup, no rollback by the writer
    writer.wait()
    after = store.read_bars()
    assert len(after) == n_rows
    assert set(after["provider"]) in ({"synthetic"}, {"second-write"})  # one transaction: all or nothing
    ingest(wanted, synthetic, store, calendar, M1)  # the re-run completes over whatever is there
    rerun = store.read_bars()
    assert len(rerun) == n_rows and set(rerun["provider"]) == {"synthetic"}
