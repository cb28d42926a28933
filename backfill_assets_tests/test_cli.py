"""The Dagster CLI and the project CLI in real subprocesses, against real DuckDB files."""

import datetime as dt
import subprocess
from pathlib import Path

import pytest

from backfill_assets.calendar import TradingCalendar
from backfill_assets.settings import SettingsError
from backfill_assets.storage.duckdb_labels import DuckDBLabelStore
from backfill_assets.storage.duckdb_store import DuckDBBarStore
from backfill_assets_tests.conftest import BIN, run

pytestmark = pytest.mark.slow
D = dt.date
MATERIALIZE = [
    str(BIN / "dagster"),
    "asset",
    "materialize",
    "-m",
    "backfill_assets.definitions",
    "--select",
    "bars",
]


def sync(env: dict[str, str]) -> None:
    result = run([str(BIN / "backfill-assets"), "tickers", "sync"], env)
    assert result.returncode == 0, result.stderr
    assert "added 5 ticker(s): AAPL, AMZN, GOOGL, MSFT, NVDA" in result.stdout


def test_cli_materializes_a_key_and_a_range(project_env: dict[str, str], db_path: Path) -> None:
    sync(project_env)
    one = run([*MATERIALIZE, "--partition", "2024-01-03|AAPL"], project_env)
    assert one.returncode == 0, one.stderr[-3000:]
    dates = run([*MATERIALIZE, "--partition-range", "2024-07-01|NVDA...2024-07-05|NVDA"], project_env)
    assert dates.returncode == 0, dates.stderr[-3000:]
    tickers = run([*MATERIALIZE, "--partition-range", "2024-01-04|AMZN...2024-01-04|MSFT"], project_env)
    assert tickers.returncode == 0, tickers.stderr[-3000:]
    counts = DuckDBBarStore(db_path).read_bars().groupby(["ticker", "session_date"]).size().to_dict()
    assert counts == {
        ("AAPL", D(2024, 1, 3)): 390,
        ("AMZN", D(2024, 1, 4)): 390,
        ("GOOGL", D(2024, 1, 4)): 390, ("MSFT", D(2024, 1, 4)): 390,
        ("NVDA", D(2024, 7, 1)): 390, ("NVDA", D(2024, 7, 2)): 390, ("NVDA", D(2024, 7, 3)): 210,
        ("NVDA", D(2024, 7, 5)): 390,
    }  # fmt: skip


def test_dg_launches_a_key_and_a_range_as_dagster_asset_materialize_does(
    project_env: dict[str, str], db_path: Path
) -> None:
    sync(project_env)
    dg = [str(BIN / "dg"), "launch", "--assets", "bars"]
    one = run([*dg, "--partition", "2024-01-03|AAPL"], project_env)
    assert one.returncode == 0, one.stderr[-3000:]
    dates = run([*dg, "--partition-range", "2024-07-01|NVDA...2024-07-02|NVDA"], project_env)
    assert dates.returncode == 0, dates.stderr[-3000:]
    counts = DuckDBBarStore(db_path).read_bars().groupby(["ticker", "session_date"]).size().to_dict()
    assert counts == {
        ("AAPL", D(2024, 1, 3)): 390,
        ("NVDA", D(2024, 7, 1)): 390,
        ("NVDA", D(2024, 7, 2)): 390,
    }


def test_two_cli_processes_write_different_partitions_at_once(
    project_env: dict[str, str], db_path: Path, calendar: TradingCalendar
) -> None:
    sync(project_env)
    ranges = ["2024-01-02|AAPL...2024-02-29|AAPL", "2024-01-02|MSFT...2024-02-29|MSFT"]
    procs = [
        subprocess.Popen([*MATERIALIZE, "--partition-range", r], env=project_env, cwd=BIN.parent.parent,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for r in ranges
    ]  # fmt: skip
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for proc, output in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, output[-3000:]
        assert "Could not set lock" not in output
    bars = DuckDBBarStore(db_path).read_bars()
    n_minutes = sum(map(calendar.session_minutes, calendar.sessions_in(D(2024, 1, 2), D(2024, 2, 29))))
    assert bars.groupby("ticker").size().to_dict() == {"AAPL": n_minutes, "MSFT": n_minutes}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BACKFILL_TICKERS": "AAPL,MS FT;"}, "invalid ticker 'FT;'"),
        ({"BACKFILL_TIMEFRAME": "3Min"}, "unknown timeframe '3Min'"),
        ({"BACKFILL_START_DATE": (dt.date.today() + dt.timedelta(days=30)).isoformat()}, "is in the future"),
    ],
    ids=["ticker", "timeframe", "future-start"],
)
def test_bad_settings_fail_clearly_and_write_nothing(
    project_env: dict[str, str], db_path: Path, env: dict[str, str], message: str
) -> None:
    bad = {**project_env, **env}
    validate = run(
        [str(BIN / "dagster"), "definitions", "validate", "-m", "backfill_assets.definitions"], bad
    )
    assert validate.returncode != 0 and message in validate.stdout + validate.stderr
    materialize = run([*MATERIALIZE, "--partition", "2024-01-03|AAPL"], bad)
    assert materialize.returncode != 0 and message in materialize.stdout + materialize.stderr
    project = run([str(BIN / "backfill-assets"), "tickers", "sync"], bad)
    assert project.returncode == 2 and message in project.stderr
    assert not db_path.exists()


def test_tickers_add_rejects_bad_symbols(project_env: dict[str, str]) -> None:
    bad = run([str(BIN / "backfill-assets"), "tickers", "add", "TSLA", "x;drop"], project_env)
    assert bad.returncode == 2 and "invalid ticker 'x;drop'" in bad.stderr
    good = run([str(BIN / "backfill-assets"), "tickers", "add", "TSLA", "BRK.B"], project_env)
    assert good.returncode == 0 and "added 2 ticker(s): TSLA, BRK.B" in good.stdout
    listed = run([str(BIN / "backfill-assets"), "tickers", "list"], project_env)
    assert listed.stdout.split() == ["TSLA", "BRK.B"]


def test_cli_materializes_labels_after_bars(project_env: dict[str, str], db_path: Path) -> None:
    sync(project_env)
    keys = "2024-07-01|NVDA...2024-07-05|NVDA"
    assert run([*MATERIALIZE, "--partition-range", keys], project_env).returncode == 0
    labels = [*MATERIALIZE[:-1], "labels/enhanced_triple_barrier,labels/mfe_mae"]
    result = run([*labels, "--partition-range", keys], project_env)
    assert result.returncode == 0, result.stderr[-3000:]
    store = DuckDBLabelStore(DuckDBBarStore(db_path))
    for table in ("labels_enhanced_triple_barrier", "labels_mfe_mae"):
        stored = store.read_labels(table)
        assert len(stored) == 4 * 390 - 180  # the 3 Jul half day has 210 bars; 4 Jul is a holiday
        assert stored["pending"].sum() <= 60  # only the last hour waits for the next session


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--start", "2024-03-08", "--end", "2024-03-01"], "--end 2024-03-01 is before --start 2024-03-08"),
        (["--start", "2024-13-01"], "dates must be ISO"),
        (["--start", "2023-06-01"], "2023-06-01..2023-06-01 is outside the partitions"),
        (["--start", "2024-07-04"], "no trading session between 2024-07-04 and 2024-07-04"),
        (["--start", "2024-03-01", "--assets", "bars,labels/nope"], "unknown asset 'labels/nope'"),
        (["--start", "2024-03-01", "--tickers", "AAPL,DROP;"], "invalid ticker 'DROP;'"),
        (["--start", "2024-03-01", "--tag", "novalue"], "--tag expects key=value, got 'novalue'"),
    ],
    ids=["inverted", "not-iso", "before-start", "holiday", "asset", "ticker", "tag"],
)
def test_backfill_rejects_bad_arguments(project_env: dict[str, str], args: list[str], message: str) -> None:
    env = {**project_env, "DAGSTER_WEBSERVER_URL": "http://127.0.0.1:9"}  # never reached
    result = run([str(BIN / "backfill-assets"), "backfill", *args], env)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_setup_sets_the_pool_limits(project_env: dict[str, str]) -> None:
    result = run([str(BIN / "backfill-assets"), "setup", "--limit", "alpaca_api=3"], project_env)
    assert result.returncode == 0, result.stderr
    assert "synthetic_api=4, alpaca_api=3, yfinance_api=1" in result.stdout
    info = run([str(BIN / "dagster"), "instance", "concurrency", "get", "alpaca_api"], project_env)
    assert "3" in info.stdout


def test_partition_ranges_are_boxes_over_the_registered_ticker_order() -> None:
    """Dagster orders the dynamic tickers dimension by registration: consecutive ones share a range."""
    from backfill_assets.headless import partition_ranges

    registered = ["AAPL", "MSFT", "NVDA", "TSLA", "AMZN"]
    first, last = dt.date(2024, 1, 2), dt.date(2024, 12, 31)
    assert partition_ranges(["MSFT", "AAPL", "NVDA"], registered, first, last) == [
        ("2024-01-02|AAPL", "2024-12-31|NVDA")
    ]
    assert partition_ranges(["AMZN", "AAPL", "NVDA", "MSFT"], registered, first, last) == [
        ("2024-01-02|AAPL", "2024-12-31|NVDA"),
        ("2024-01-02|AMZN", "2024-12-31|AMZN"),
    ]
    with pytest.raises(SettingsError, match="'IBM' is not registered"):
        partition_ranges(["IBM"], registered, first, last)
