"""Labels on real daily AAPL bars, raw versus split-adjusted, stored and labelled through DuckDB.

The bars are bokeh-sampledata's `stocks.csv.gz` (Quandl WIKI, public domain): unadjusted OHLCV for
2000-03-01..2013-03-01, read offline from the installed package. AAPL split 2:1 twice inside it.
These tests pin the behaviour described in research/labels.md §4.6: a window that straddles a split
sees a false -50% move on raw prices, and the split return inflates sigma for weeks afterwards.
"""

import datetime as dt
from importlib.resources import as_file, files
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backfill_assets.calendar import get_calendar
from backfill_assets.labels.config import LabelSet
from backfill_assets.labels.materialize import materialize_labels
from backfill_assets.storage.duckdb_labels import DuckDBLabelStore
from backfill_assets.storage.duckdb_store import DuckDBBarStore
from backfill_assets.timeframes import TIMEFRAMES

SPLITS = {dt.date(2000, 6, 21): 2.0, dt.date(2005, 2, 28): 2.0}  # AAPL ex-dates inside the file
H = 10  # sessions
SETS = (
    LabelSet("tb", "triple_barrier", horizon=H, pt=1.0, sl=1.0, span=20),
    LabelSet("excursion", "mfe_mae", horizon=H, span=20),
    LabelSet("vsr", "vol_scaled_return", horizon=H, span=20),
)
CALENDAR = get_calendar("XNYS", dt.date(2000, 3, 1))
Labels = dict[tuple[str, str], pd.DataFrame]  # (adjustment, label set name) -> stored label rows


def aapl_bars(adjustment: str) -> pd.DataFrame:
    """AAPL daily bars in the store's schema; "split" scales OHLC before each ex-date by 1/ratio."""
    with as_file(files("bokeh_sampledata").joinpath("_data/stocks.csv.gz")) as path:
        source = pd.read_csv(path)
    source = source[source["Ticker"] == "AAPL"].sort_values("Date").reset_index(drop=True)
    day = pd.to_datetime(source["Date"])
    bars = pd.DataFrame(
        {
            "ticker": "AAPL",
            "ts": day.dt.tz_localize("America/New_York").dt.tz_convert("UTC"),  # daily bars: 00:00 local
            "session_date": day.dt.date,
        }
    )
    factor = np.ones(len(bars))
    if adjustment == "split":
        for ex_date, ratio in SPLITS.items():
            factor[(bars["session_date"] < ex_date).to_numpy()] /= ratio
    for column in ("open", "high", "low", "close"):
        bars[column] = source[column.title()].to_numpy() * factor
    bars["volume"] = source["Volume"].to_numpy() / factor
    bars["trade_count"] = pd.array([pd.NA] * len(bars), dtype="Int64")
    bars["vwap"] = np.nan
    bars["provider"], bars["timeframe"], bars["adjustment"] = "bokeh_sampledata", "1Day", adjustment
    bars["fetched_at"] = pd.Timestamp("2026-01-01", tz="UTC")
    return bars


@pytest.fixture(scope="module")
def labels(tmp_path_factory: pytest.TempPathFactory) -> Labels:
    """Every label set over all 3,270 AAPL sessions, once per adjustment, each in its own DuckDB file."""
    root: Path = tmp_path_factory.mktemp("real_data")
    result: Labels = {}
    for adjustment in ("raw", "split"):
        bars = aapl_bars(adjustment)
        store = DuckDBBarStore(root / f"{adjustment}.duckdb", lock_timeout_s=60)
        slices = set(zip(bars["ticker"], bars["session_date"], strict=True))
        store.replace_bars(bars, slices)
        label_store = DuckDBLabelStore(store)
        for label_set in SETS:
            materialize_labels(label_set, slices, label_store, CALENDAR, TIMEFRAMES["1Day"])
            result[adjustment, label_set.name] = label_store.read_labels(label_set.table)
    return result


def position(frame: pd.DataFrame, day: dt.date) -> int:
    return int(np.flatnonzero(frame["session_date"] == day)[0])


def straddling(frame: pd.DataFrame) -> np.ndarray:
    """Rows whose horizon t+1..t+H contains an ex-date: the H rows before each split."""
    mask = np.zeros(len(frame), dtype=bool)
    for ex_date in SPLITS:
        at = position(frame, ex_date)
        mask[at - H : at] = True
    return mask


@pytest.mark.parametrize("ex_date", list(SPLITS), ids=str)
def test_labels_straddling_a_split_see_a_false_crash_on_raw_prices(labels: Labels, ex_date: dt.date) -> None:
    raw, adjusted = labels["raw", "excursion"], labels["split", "excursion"]
    rows = slice(position(raw, ex_date) - H, position(raw, ex_date))
    # MAE raw: -0.444..-0.503 (2000), -0.459..-0.564 (2005); adjusted: +0.018..-0.087, +0.010..-0.127
    assert (raw["mae"].iloc[rows] <= -0.4).all()
    assert (adjusted["mae"].iloc[rows] > -0.2).all()
    # vsr raw: -3.34..-4.09 (2000), -6.24..-7.49 (2005); adjusted: -1.36..+1.71
    assert (labels["raw", "vsr"]["vsr"].iloc[rows] < -3).all()
    assert (labels["split", "vsr"]["vsr"].iloc[rows].abs() < 2).all()
    # Triple barrier: raw hits the stop; 6 rows (2000, adjusted +1) and 5 of 9 (2005, adjusted 0) differ
    raw_tb, adjusted_tb = labels["raw", "tb"]["label"].iloc[rows], labels["split", "tb"]["label"].iloc[rows]
    differ = (raw_tb != adjusted_tb).to_numpy(dtype=bool)
    assert differ.sum() >= 5
    assert (raw_tb[differ] == -1).all()


def test_excursions_of_windows_without_a_split_are_identical(labels: Labels) -> None:
    # Adjusted prices are raw prices times 1/2 or 1/4, exact in binary floating point, so high/close
    # and low/close are bitwise the same; a 3:2 split would leave ~1e-16 rounding (compare at rtol 1e-12).
    keep = ~straddling(labels["raw", "excursion"])
    for column in ("mfe", "mae"):
        raw, adjusted = labels["raw", "excursion"][column], labels["split", "excursion"][column]
        pd.testing.assert_series_equal(raw[keep], adjusted[keep], check_exact=True)
        assert raw[keep].notna().sum() == keep.sum() - H  # only the last H rows are pending


def test_sigma_after_a_split_is_inflated_on_raw_prices(labels: Labels) -> None:
    raw, adjusted = labels["raw", "tb"], labels["split", "tb"]
    first = position(raw, min(SPLITS))
    # Before the first split the log returns are the same, so sigma (trgt) is too.
    pd.testing.assert_series_equal(raw["trgt"][:first], adjusted["trgt"][:first], check_exact=True)
    for ex_date in SPLITS:
        after = slice(position(raw, ex_date), position(raw, ex_date) + 20)
        # trgt raw/adjusted over these 20 sessions: >= 1.93 (2000), >= 4.35 (2005; 9.5 on the ex-date)
        assert (raw["trgt"].iloc[after] > 1.5 * adjusted["trgt"].iloc[after]).all()
        # Barriers that wide are never touched: raw labels are 0 where adjusted ones are +-1 (11 and 10 rows)
        raw_tb, adjusted_tb = raw["label"].iloc[after], adjusted["label"].iloc[after]
        differ = (raw_tb != adjusted_tb).to_numpy(dtype=bool)
        assert differ.sum() >= 5
        assert (raw_tb[differ] == 0).all()
