"""The synthetic provider: deterministic, valid, realistic shape, consistent across timeframes."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from backfill_assets.calendar import TradingCalendar
from backfill_assets.providers.base import BarRequest
from backfill_assets.providers.synthetic import SyntheticProvider
from backfill_assets.schemas import session_of, validate_bars
from backfill_assets.timeframes import TIMEFRAMES

D = dt.date
JULY = (D(2024, 7, 1), D(2024, 7, 2), D(2024, 7, 3), D(2024, 7, 5))


def fetch(
    provider: SyntheticProvider, tickers: tuple[str, ...], days: tuple[dt.date, ...], tf: str = "1Min"
) -> pd.DataFrame:
    return provider.fetch(BarRequest(tickers, days, TIMEFRAMES[tf])).bars


def test_same_request_gives_identical_bars(synthetic: SyntheticProvider) -> None:
    pd.testing.assert_frame_equal(fetch(synthetic, ("AAPL",), JULY), fetch(synthetic, ("AAPL",), JULY))


def test_bars_do_not_depend_on_request_shape(synthetic: SyntheticProvider) -> None:
    together = fetch(synthetic, ("AAPL", "MSFT"), JULY)
    apart = pd.concat(
        [fetch(synthetic, (t,), (d,)) for t in ("AAPL", "MSFT") for d in JULY], ignore_index=True
    )
    pd.testing.assert_frame_equal(together, apart)


def test_minute_bars_fill_regular_hours_only(synthetic: SyntheticProvider, calendar: TradingCalendar) -> None:
    bars = fetch(synthetic, ("AAPL",), JULY)
    for day, group in bars.groupby(session_of(bars["ts"], calendar.tz)):
        open_, close = calendar.open_close(day)
        assert len(group) == calendar.session_minutes(day)
        assert group["ts"].min() == open_ and group["ts"].max() == close - pd.Timedelta(minutes=1)
    assert len(bars[session_of(bars["ts"], calendar.tz) == D(2024, 7, 3)]) == 210


@pytest.mark.parametrize("tf", list(TIMEFRAMES))
def test_every_timeframe_passes_validation(
    synthetic: SyntheticProvider, calendar: TradingCalendar, tf: str
) -> None:
    bars = fetch(synthetic, ("AAPL", "BRK.B"), JULY, tf)
    validate_bars(bars, calendar.tz, {(t, d) for t in ("AAPL", "BRK.B") for d in JULY})
    assert (bars["low"] <= bars["vwap"]).all() and (bars["vwap"] <= bars["high"]).all()


@pytest.mark.parametrize(
    ("tf", "full", "half"), [("5Min", 78, 42), ("15Min", 26, 14), ("1Hour", 7, 4), ("1Day", 1, 1)]
)
def test_coarse_bars_aggregate_the_minute_path(
    synthetic: SyntheticProvider, tf: str, full: int, half: int
) -> None:
    minute = fetch(synthetic, ("NVDA",), (D(2024, 7, 2), D(2024, 7, 3)))
    coarse = fetch(synthetic, ("NVDA",), (D(2024, 7, 2), D(2024, 7, 3)), tf)
    assert len(coarse) == full + half
    assert coarse["volume"].sum() == minute["volume"].sum()
    assert coarse["high"].max() == minute["high"].max() and coarse["low"].min() == minute["low"].min()
    assert coarse["close"].iloc[-1] == minute["close"].iloc[-1]


def test_daily_bar_is_stamped_midnight_new_york(synthetic: SyntheticProvider) -> None:
    bars = fetch(synthetic, ("AAPL",), (D(2024, 1, 2), D(2024, 7, 2)), "1Day")
    assert [t.isoformat() for t in bars["ts"]] == ["2024-01-02T05:00:00+00:00", "2024-07-02T04:00:00+00:00"]


def test_volume_is_u_shaped_and_sessions_continue(synthetic: SyntheticProvider) -> None:
    days = tuple(d for d in pd.bdate_range("2024-03-04", "2024-03-29").date if d != D(2024, 3, 29))
    bars = fetch(synthetic, ("MSFT",), days)
    minute_of_day = np.tile(np.arange(390), len(days))
    by_minute = bars.groupby(minute_of_day)["volume"].mean()
    assert by_minute.iloc[:30].mean() > 1.5 * by_minute.iloc[180:210].mean() < by_minute.iloc[-30:].mean()
    closes = bars.groupby(bars["ts"].dt.date)["close"].last().to_numpy()
    opens = bars.groupby(bars["ts"].dt.date)["open"].first().to_numpy()
    assert np.abs(opens[1:] / closes[:-1] - 1).max() < 0.03  # overnight gaps stay small
