"""A reader left open outside the project (a notebook's DuckDB connection) holds the file: a write
waits it out and says who holds it, and the project's own readers are not queued behind that write."""

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from backfill_assets.calendar import TradingCalendar
from backfill_assets.ingest import ingest
from backfill_assets.providers.synthetic import SyntheticProvider
from backfill_assets.read import query
from backfill_assets.storage.duckdb_store import DuckDBBarStore
from backfill_assets.storage.postgres_store import PostgresStore
from backfill_assets.timeframes import TIMEFRAMES

pytestmark = pytest.mark.faults
M1 = TIMEFRAMES["1Min"]
HOLD = (
    "import duckdb, sys, time; con = duckdb.connect(sys.argv[1], read_only=True); "
    "print('open', flush=True); time.sleep(float(sys.argv[2]))"
)


def test_a_write_waits_out_a_notebooks_connection_names_it_and_readers_go_on(
    db_path: Path, calendar: TradingCalendar
) -> None:
    messages: list[str] = []
    store = DuckDBBarStore(db_path, lock_timeout_s=60, log=messages.append)
    store.log_every_s = 1.0
    days = calendar.sessions[calendar.sessions.index(calendar.first_session) :][:2]
    ingest([("AAPL", days[0])], SyntheticProvider(calendar), store, calendar, M1)
    with subprocess.Popen(
        [sys.executable, "-c", HOLD, str(db_path), "4"], stdout=subprocess.PIPE, text=True
    ) as notebook:
        assert notebook.stdout is not None and notebook.stdout.readline().strip() == "open"
        writer = threading.Thread(
            target=ingest, args=([("AAPL", days[1])], SyntheticProvider(calendar), store, calendar, M1)
        )
        started = time.monotonic()
        writer.start()
        time.sleep(1.5)
        assert writer.is_alive()  # waiting on the notebook's lock
        counted = query("SELECT count(*) AS n FROM bars", path=db_path)  # not behind the waiting write
        read_after = time.monotonic() - started
        writer.join(timeout=60)
        wrote_after = time.monotonic() - started
    assert int(counted["n"][0]) == 390 and read_after < 3.0
    assert 3.0 < wrote_after < 30 and len(store.read_bars()) == 780
    assert messages and f"PID {notebook.pid} (python" in messages[0] and "keeps it open" in messages[0]


def test_query_reads_either_store_with_the_same_sql(
    any_store: DuckDBBarStore | PostgresStore, calendar: TradingCalendar, monkeypatch: pytest.MonkeyPatch
) -> None:
    days = calendar.sessions[calendar.sessions.index(calendar.first_session) :][:2]
    wanted = [(t, d) for t in ("AAPL", "MSFT") for d in days]
    ingest(wanted, SyntheticProvider(calendar), any_store, calendar, M1)
    if isinstance(any_store, PostgresStore):
        monkeypatch.setenv("BACKFILL_STORE", "postgres")
        monkeypatch.setenv("BACKFILL_POSTGRES_URL", any_store.url)
        monkeypatch.setenv("BACKFILL_POSTGRES_SCHEMA", any_store.schema)
    else:
        monkeypatch.setenv("BACKFILL_DUCKDB_PATH", str(any_store.path))
    sql = (
        "SELECT ticker, count(*) AS n FROM bars WHERE ticker LIKE 'A%' AND session_date >= ? GROUP BY ticker"
    )
    rows = query(sql, [days[1]])
    assert rows.to_dict("records") == [{"ticker": "AAPL", "n": 390}]
    assert query("SELECT '?' AS q, CAST(? AS VARCHAR) AS p", ["x"]).to_dict("records") == [
        {"q": "?", "p": "x"}
    ]
