"""Sessions with a lunch break (XHKG 12:00-13:00 Hong Kong time): minutes, expected bar counts, the
synthetic provider, the regular-hours filter and the coverage check all leave the break out."""

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from backfill_assets import quality
from backfill_assets.calendar import TradingCalendar, get_calendar
from backfill_assets.providers.base import BarRequest, regular_hours
from backfill_assets.providers.synthetic import SyntheticProvider
from backfill_assets.schemas import BARS_COLUMNS, validate_bars
from backfill_assets.storage.duckdb_store import DuckDBBarStore
from backfill_assets.timeframes import TIMEFRAMES

D = dt.date
DAYS = (D(2024, 1, 2), D(2024, 1, 3), D(2024, 2, 9))  # two full days, then a half day (no afternoon)


@pytest.fixture(scope="module")
def xhkg() -> TradingCalendar:
    return get_calendar("XHKG", D(2024, 1, 2))


def hong_kong(bars: pd.DataFrame) -> pd.Series:
    return bars["ts"].dt.tz_convert("Asia/Hong_Kong").dt.strftime("%H:%M")


def test_a_break_is_not_trading_time(xhkg: TradingCalendar, calendar: TradingCalendar) -> None:
    assert [xhkg.session_minutes(d) for d in DAYS] == [330, 330, 150]
    spans = [(a.isoformat(), b.isoformat()) for a, b in xhkg.trading_spans(DAYS[0])]
    assert spans == [("2024-01-02T01:30:00+00:00", "2024-01-02T04:00:00+00:00"),
                     ("2024-01-02T05:00:00+00:00", "2024-01-02T08:00:00+00:00")]  # fmt: skip
    assert xhkg.break_of(DAYS[2]) is None and calendar.break_of(D(2024, 1, 2)) is None
    assert calendar.session_minutes(D(2024, 1, 2)) == 390  # one span, as before


@pytest.mark.parametrize("name, full, half", [("1Min", 330, 150), ("5Min", 66, 30), ("1Hour", 6, 3)])
def test_expected_bars_leave_the_break_out(xhkg: TradingCalendar, name: str, full: int, half: int) -> None:
    assert quality.bars_per_session(xhkg, DAYS[0], TIMEFRAMES[name]) == full
    assert quality.bars_per_session(xhkg, DAYS[2], TIMEFRAMES[name]) == half


@pytest.mark.parametrize("name", ["1Min", "5Min", "1Hour"])
def test_synthetic_bars_have_none_in_the_break(xhkg: TradingCalendar, name: str) -> None:
    tf = TIMEFRAMES[name]
    bars = SyntheticProvider(xhkg).fetch(BarRequest(("AAPL",), DAYS, tf)).bars
    validate_bars(bars, xhkg.tz, {("AAPL", d) for d in DAYS})
    local = hong_kong(bars)
    assert not local.between("12:00", "12:59").any()
    day = bars["ts"].dt.tz_convert("Asia/Hong_Kong").dt.date
    assert [int((day == d).sum()) for d in DAYS] == [quality.bars_per_session(xhkg, d, tf) for d in DAYS]
    if name == "1Min":
        first_day = local[day == DAYS[0]].tolist()
        assert (
            first_day[0] == "09:30" and first_day[149:151] == ["11:59", "13:00"] and first_day[-1] == "15:59"
        )
        # the afternoon opens where the morning closed: the path runs on across the break
        morning_close, afternoon_open = bars["close"].iloc[149], bars["open"].iloc[150]
        assert morning_close == afternoon_open


def test_regular_hours_drops_bars_inside_the_break(xhkg: TradingCalendar) -> None:
    def bars_at(*times: str) -> pd.DataFrame:
        stamps = pd.DatetimeIndex([f"2024-01-02 {t}" for t in times]).tz_localize("Asia/Hong_Kong")
        return pd.DataFrame({"ts": stamps.tz_convert("UTC")})

    kept = regular_hours(bars_at("11:59", "12:00", "12:59", "13:00"), xhkg, TIMEFRAMES["1Min"])
    assert hong_kong(kept).tolist() == ["11:59", "13:00"]
    hourly = regular_hours(bars_at("11:00", "12:00", "13:00"), xhkg, TIMEFRAMES["1Hour"])
    assert hong_kong(hourly).tolist() == ["11:00", "13:00"]


def test_complete_sessions_with_a_break_are_not_short(xhkg: TradingCalendar, tmp_path: Path) -> None:
    tf = TIMEFRAMES["1Min"]
    bars = SyntheticProvider(xhkg).fetch(BarRequest(("AAPL",), DAYS, tf)).bars
    stored = bars.assign(ticker="AAPL", session_date=bars["ts"].dt.tz_convert("Asia/Hong_Kong").dt.date,
                         provider="synthetic", timeframe=tf.name, adjustment="raw",
                         fetched_at=pd.Timestamp.now(tz="UTC"))[list(BARS_COLUMNS)]  # fmt: skip
    store = DuckDBBarStore(tmp_path / "xhkg.duckdb")
    store.replace_bars(stored, {("AAPL", d) for d in DAYS})
    with store.reader() as reader:
        coverage = quality.session_coverage(
            reader, quality.expected_bars(xhkg, [tf], DAYS), quality.Scope("bars")
        )
    assert coverage.counts["sessions_checked"] == 3
    assert coverage.counts["short_sessions"] == coverage.counts["excess_sessions"] == 0
