"""The `files` provider: CSV and Parquet in three layouts, read into the same partitions, checks and
labels as any provider's bars (real files, real DuckDB, real Dagster; the CLI for the real data)."""

import datetime as dt
from collections.abc import Iterator
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pandas as pd
import pytest

from backfill_assets.calendar import TradingCalendar, get_calendar
from backfill_assets.defs.bars import bars
from backfill_assets.defs.providers import FilesProviderResource
from backfill_assets.defs.resources import BarStoreResource
from backfill_assets.defs.run_facts import run_facts
from backfill_assets.labels.config import load_label_sets
from backfill_assets.providers.base import BarRequest
from backfill_assets.providers.synthetic import SyntheticProvider
from backfill_assets.settings import SettingsError, load_settings
from backfill_assets.storage.duckdb_labels import DuckDBLabelStore
from backfill_assets.storage.duckdb_store import DuckDBBarStore
from backfill_assets.timeframes import TIMEFRAMES
from backfill_assets_tests.conftest import BIN, run
from backfill_assets_tests.test_label_staleness import from_scratch

D = dt.date
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
VALUES = ["ticker", "ts", "open", "high", "low", "close", "volume"]
DAYS = (D(2024, 3, 1), D(2024, 3, 4))  # a weekend between: inside one request window


@pytest.fixture(scope="module")
def bokeh_stocks() -> Iterator[Path]:
    with as_file(files("bokeh_sampledata").joinpath("_data/stocks.csv.gz")) as path:
        yield path


def synthetic(calendar: TradingCalendar, tickers: tuple[str, ...], timeframe: str) -> pd.DataFrame:
    frame = SyntheticProvider(calendar).fetch(BarRequest(tickers, DAYS, TIMEFRAMES[timeframe])).bars
    return frame.sort_values(["ticker", "ts"], ignore_index=True)


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Parquet through DuckDB (the project needs no pyarrow)."""
    with duckdb.connect() as conn:
        conn.register("frame", frame)
        conn.execute(f"COPY frame TO '{path}' (FORMAT parquet)")


def run_bars(
    instance: dg.DagsterInstance, db_path: Path, first: str, last: str, **config: Any
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [bars],
        instance=instance,
        resources={
            "bar_provider": FilesProviderResource(**config),
            "bar_store": BarStoreResource(duckdb_path=str(db_path)),
        },
        tags={RANGE_START: first, RANGE_END: last},
        raise_on_error=False,
    )


def source_files(instance: dg.DagsterInstance) -> dict[str, str]:
    records = instance.fetch_materializations(dg.AssetKey("bars"), limit=100).records
    return {
        str(r.partition_key): r.asset_materialization.metadata["source_file"].value  # type: ignore[union-attr]
        for r in records
    }


def test_per_ticker_parquet_in_utc_keeps_regular_hours_and_counts_the_rest(
    instance: dg.DagsterInstance, db_path: Path, tmp_path: Path, calendar: TradingCalendar
) -> None:
    regular = synthetic(calendar, ("AAPL", "MSFT"), "1Min")
    # The export also holds pre- and after-market minutes and a Saturday, stamped naive UTC.
    extra = regular.groupby("ticker").head(3).copy()
    extra["ts"] = extra["ts"] - pd.Timedelta(hours=2)  # 07:30 New York
    late = regular.groupby("ticker").tail(2).copy()
    late["ts"] = late["ts"] + pd.Timedelta(hours=1)  # after the close
    weekend = regular.groupby("ticker").head(1).copy()
    weekend["ts"] = weekend["ts"] + pd.Timedelta(days=2)  # Sunday 3 Mar
    export = pd.concat([regular, extra, late, weekend]).sample(frac=1.0, random_state=7)
    export["ts"] = export["ts"].dt.tz_convert("UTC").dt.tz_localize(None)
    for ticker, rows in export.groupby("ticker"):
        write_parquet(rows.drop(columns="ticker"), tmp_path / f"{str(ticker).lower()}.parquet")

    path = str(tmp_path / "{ticker_lower}.parquet")
    result = run_bars(instance, db_path, "2024-03-01|AAPL", "2024-03-04|NVDA", path=path, timezone="UTC")
    assert not result.success  # NVDA has no file: it alone fails, by name
    stored = DuckDBBarStore(db_path).read_bars()
    pd.testing.assert_frame_equal(stored[VALUES], regular[VALUES])
    assert set(stored["provider"]) == {"files"} and set(stored["adjustment"]) == {"raw"}
    facts = run_facts(instance, result.run_id, dg.AssetKey("bars"))
    assert facts["bars_dropped"] == 2 * (3 + 2 + 1)
    sources = source_files(instance)
    assert sources["2024-03-04|MSFT"] == str(tmp_path / "msft.parquet") and len(sources) == 4
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert failure is not None and f"no file {tmp_path / 'nvda.parquet'} for NVDA" in failure.to_string()


def test_hive_partitioned_csv_with_mapped_columns_and_offsets(
    instance: dg.DagsterInstance, db_path: Path, tmp_path: Path, calendar: TradingCalendar
) -> None:
    expected = synthetic(calendar, ("AAPL", "MSFT"), "5Min")
    for ticker, rows in expected.groupby("ticker"):
        directory = tmp_path / "bars" / f"symbol={ticker}"
        directory.mkdir(parents=True)
        local = rows["ts"].dt.tz_convert("America/New_York")  # ISO text with its -05:00 offset
        pd.DataFrame(
            {"time": local.map(pd.Timestamp.isoformat), "o": rows["open"], "h": rows["high"],
             "l": rows["low"], "c": rows["close"], "vol": rows["volume"]}
        ).to_csv(directory / "part-0.csv", index=False)  # fmt: skip
    columns = {
        "ticker": "symbol",
        "ts": "time",
        "open": "o",
        "high": "h",
        "low": "l",
        "close": "c",
        "volume": "vol",
    }
    result = run_bars(
        instance, db_path, "2024-03-01|AAPL", "2024-03-04|MSFT",
        path=str(tmp_path / "bars"), columns=columns, timeframe="5Min",
    )  # fmt: skip
    assert result.success
    stored = DuckDBBarStore(db_path).read_bars()
    pd.testing.assert_frame_equal(stored[VALUES], expected[VALUES])
    assert source_files(instance)["2024-03-04|AAPL"].endswith("symbol=AAPL/part-0.csv")


def test_bad_files_fail_by_name_once_and_leave_stored_bars_alone(
    instance: dg.DagsterInstance, db_path: Path, tmp_path: Path, calendar: TradingCalendar
) -> None:
    good = synthetic(calendar, ("AAPL",), "1Min")
    good.to_csv(tmp_path / "bars.csv", index=False)
    keys = ("2024-03-01|AAPL", "2024-03-04|AAPL")
    assert run_bars(instance, db_path, *keys, path=str(tmp_path / "bars.csv")).success
    before = DuckDBBarStore(db_path).read_bars()

    good.drop(columns="volume").to_csv(tmp_path / "no_volume.csv", index=False)
    cases = [
        ("bars.csv", {"ts": "Dat"}, "files column 'Dat' (mapped to ts) is not in"),
        ("no_volume.csv", {}, "no_volume.csv has no column for volume (it has ticker, ts, open,"),
    ]
    for name, mapping, message in cases:
        result = run_bars(instance, db_path, *keys, path=str(tmp_path / name), columns=mapping)
        (failure,) = result.get_step_failure_events()  # one attempt: a bad mapping stays bad
        error = failure.step_failure_data.error
        assert error is not None and message in error.to_string()
    broken = good.astype({"open": object})
    broken.loc[5, "open"] = "n/a"
    broken.to_csv(tmp_path / "broken.csv", index=False)
    result = run_bars(instance, db_path, *keys, path=str(tmp_path / "broken.csv"))
    (failure,) = result.get_step_failure_events()
    assert failure.step_failure_data.error is not None
    assert f"files: reading {tmp_path / 'broken.csv'} failed" in failure.step_failure_data.error.to_string()
    missing = run_bars(instance, db_path, *keys, path=str(tmp_path / "nothing-*.csv"))
    assert not missing.success
    pd.testing.assert_frame_equal(DuckDBBarStore(db_path).read_bars(), before)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "BACKFILL_FILES_PATH='': the files provider needs a path"),
        ({"BACKFILL_FILES_COLUMNS": "ts=Date,price=Close"}, "BACKFILL_FILES_COLUMNS='ts=Date,price=Close'"),
        ({"BACKFILL_FILES_COLUMNS": "ts"}, "column mapping 'ts': expected our_column=file_column"),
        ({"BACKFILL_FILES_TZ": "Mars/Olympus"}, "BACKFILL_FILES_TZ='Mars/Olympus': files timezone"),
        ({"BACKFILL_FILES_FORMAT": "xlsx"}, "BACKFILL_FILES_FORMAT='xlsx': files format 'xlsx'"),
        ({"BACKFILL_FILES_ADJUSTMENT": "adj"}, "BACKFILL_FILES_ADJUSTMENT='adj'"),
    ],
    ids=["no-path", "unknown-column", "no-equals", "zone", "format", "adjustment"],
)
def test_files_settings_are_refused_by_name(env: dict[str, str], message: str) -> None:
    base = {"BACKFILL_PROVIDER": "files", "BACKFILL_TICKERS": "AAPL"}
    if env:
        base["BACKFILL_FILES_PATH"] = "stocks.csv"
    with pytest.raises(SettingsError) as raised:
        load_settings(base | env)
    assert message in str(raised.value)


@pytest.mark.slow
def test_bokeh_sampledata_daily_stocks_land_and_label_through_the_cli(
    project_env: dict[str, str], db_path: Path, bokeh_stocks: Path
) -> None:
    env = project_env | {
        "BACKFILL_PROVIDER": "files",
        "BACKFILL_FILES_PATH": str(bokeh_stocks),  # Ticker, Date, Open, ... found by name
        "BACKFILL_TIMEFRAME": "1Day",
        "BACKFILL_START_DATE": "2012-01-03",
        "BACKFILL_TICKERS": "AAPL,FB,IBM,MSFT",  # FB listed on 2012-05-18
    }
    assert run([str(BIN / "backfill-assets"), "tickers", "sync"], env).returncode == 0
    materialize = [str(BIN / "dagster"), "asset", "materialize", "-m", "backfill_assets.definitions"]
    # 188 sessions of bars; labels for June, when sigma has its 100 bars and the 60-bar horizon is
    # inside the bars (FB, listed on 18 May, has neither: its labels are pending, not missing).
    bar_range = "2012-01-03|AAPL...2012-09-28|MSFT"
    loaded = run([*materialize, "--select", "bars", "--partition-range", bar_range], env)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    labels = ",".join(f"labels/{s.name}" for s in load_label_sets())
    label_range = "2012-06-01|AAPL...2012-06-29|MSFT"
    labelled = run([*materialize, "--select", labels, "--partition-range", label_range], env)
    assert labelled.returncode == 0, labelled.stderr[-3000:]

    source = pd.read_csv(bokeh_stocks, parse_dates=["Date"])
    wanted = source["Ticker"].isin(["AAPL", "FB", "IBM", "MSFT"])  # the file also holds GOOG
    source = source[wanted & (source["Date"] >= "2012-01-03") & (source["Date"] <= "2012-09-28")]
    stored = DuckDBBarStore(db_path).read_bars()
    assert len(stored) == len(source) == 3 * 188 + 93
    assert list(stored["session_date"]) == [d.date() for d in source["Date"]]
    assert (stored["ts"].dt.tz_convert("America/New_York").dt.strftime("%H:%M") == "00:00").all()
    for ours, theirs in {
        "open": "Open",
        "high": "High",
        "low": "Low",
        "close": "Close",
        "volume": "Volume",
    }.items():
        assert stored[ours].tolist() == source[theirs].astype("float64").tolist()
    label_store = DuckDBLabelStore(DuckDBBarStore(db_path))
    calendar = get_calendar("XNYS", D(2012, 1, 3))
    for label_set in load_label_sets():
        rows = label_store.read_labels(label_set.table)
        assert len(rows) == 4 * 21 and set(rows["ticker"]) == {"AAPL", "FB", "IBM", "MSFT"}
        listed = rows[rows["ticker"] != "FB"]
        assert not listed["pending"].any() and listed["trgt"].notna().all()
        last = D(2012, 9, 28)  # every stored bar: the June labels look 60 sessions ahead
        scratch = from_scratch(label_store, label_set, TIMEFRAMES["1Day"], D(2012, 6, 1), last, calendar)
        scratch = scratch[scratch["session_date"] <= D(2012, 6, 29)].reset_index(drop=True)
        pd.testing.assert_frame_equal(rows, scratch)
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        (record,) = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("bars"), asset_partitions=["2012-03-01|IBM"]), limit=1
        ).records
        assert record.asset_materialization is not None
        assert record.asset_materialization.metadata["source_file"].value == str(bokeh_stocks)


def test_extended_hours_from_files_are_kept_and_flagged(
    instance: dg.DagsterInstance, db_path: Path, tmp_path: Path, calendar: TradingCalendar
) -> None:
    provider = SyntheticProvider(calendar, hours="extended")
    everything = provider.fetch(BarRequest(("AAPL",), DAYS, TIMEFRAMES["1Min"])).bars
    late = everything.tail(1).assign(ts=everything["ts"].iloc[-1] + pd.Timedelta(hours=1))  # 20:59
    pd.concat([everything, late]).to_csv(tmp_path / "aapl.csv", index=False)
    keys = ("2024-03-01|AAPL", "2024-03-04|AAPL")
    result = run_bars(instance, db_path, *keys, path=str(tmp_path / "aapl.csv"), trading_hours="extended")
    assert result.success
    stored = DuckDBBarStore(db_path).read_bars(extended=True)
    pd.testing.assert_frame_equal(stored[VALUES], everything[VALUES])
    assert (~stored["regular_hours"]).sum() == len(everything) - 2 * 390
    facts = run_facts(instance, result.run_id, dg.AssetKey("bars"))
    assert facts["bars_dropped"] == 1 and facts["bars_outside_regular_hours"] == len(everything) - 780


def test_an_unknown_trading_hours_setting_is_refused_by_name() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({"BACKFILL_TICKERS": "AAPL", "BACKFILL_TRADING_HOURS": "all"})
    assert "BACKFILL_TRADING_HOURS='all': expected one of regular, extended" in str(raised.value)
