"""Request planning and the validation gate between a provider and the store."""

import datetime as dt
from collections.abc import Callable

import pandas as pd
import pytest

from backfill_assets.calendar import CalendarError, TradingCalendar
from backfill_assets.ingest import ingest, plan_requests, spread
from backfill_assets.providers.base import BarRequest, FetchResult, regular_hours
from backfill_assets.providers.synthetic import SyntheticProvider
from backfill_assets.schemas import BarValidationError, validate_bars
from backfill_assets.storage.duckdb_store import DuckDBBarStore
from backfill_assets.symbols import InvalidTickerError
from backfill_assets.timeframes import TIMEFRAMES

D = dt.date
M1 = TIMEFRAMES["1Min"]


def days(calendar: TradingCalendar, n: int) -> list[dt.date]:
    return calendar.sessions_in(D(2024, 1, 2), D(2024, 12, 31))[:n]


def test_one_ticker_over_a_range_is_one_request(calendar: TradingCalendar) -> None:
    requests = plan_requests([("AAPL", d) for d in days(calendar, 25)], calendar, M1)
    assert [(r.tickers, len(r.sessions)) for r in requests] == [(("AAPL",), 25)]


def test_one_date_over_many_tickers_is_one_request(calendar: TradingCalendar) -> None:
    tickers = [f"T{i:03d}" for i in range(40)]
    requests = plan_requests([(t, D(2024, 1, 5)) for t in tickers], calendar, M1)
    assert len(requests) == 1 and requests[0].tickers == tuple(tickers)


def test_ragged_selection_splits_on_gaps_only(calendar: TradingCalendar) -> None:
    s = days(calendar, 10)
    wanted = (
        [("AAPL", d) for d in s] + [("MSFT", d) for d in s] + [("NVDA", s[2]), ("NVDA", s[3]), ("NVDA", s[7])]
    )
    requests = plan_requests(wanted, calendar, M1)
    shapes = sorted((r.tickers, r.sessions[0], len(r.sessions)) for r in requests)
    assert shapes == [(("AAPL", "MSFT"), s[0], 10), (("NVDA",), s[2], 2), (("NVDA",), s[7], 1)]


def test_bad_ticker_or_non_session_is_rejected_before_any_fetch(calendar: TradingCalendar) -> None:
    with pytest.raises(InvalidTickerError, match="'AAPL;--'"):
        plan_requests([("AAPL;--", D(2024, 1, 2))], calendar, M1)
    with pytest.raises(CalendarError, match="2024-07-04"):
        plan_requests([("AAPL", D(2024, 7, 4))], calendar, M1)


class TamperedProvider:
    """The synthetic provider with one bar altered: the kind of bad data a real API can send."""

    name, adjustment = "tampered", "raw"

    def __init__(self, calendar: TradingCalendar, tamper: Callable[[pd.DataFrame], None]) -> None:
        self.inner, self.tamper = SyntheticProvider(calendar), tamper

    def fetch(self, request: BarRequest) -> FetchResult:
        bars = self.inner.fetch(request).bars
        self.tamper(bars)
        return FetchResult(bars)


def _set(column: str, value: float, row: int = 5) -> Callable[[pd.DataFrame], None]:
    return lambda bars: bars.__setitem__(column, bars[column].where(bars.index != row, value))


def _duplicate(bars: pd.DataFrame) -> None:
    bars.loc[6, "ts"] = bars.loc[5, "ts"]


def _shift_day(bars: pd.DataFrame) -> None:
    bars.loc[5, "ts"] = bars.loc[5, "ts"] - pd.Timedelta(days=1)


@pytest.mark.parametrize(
    ("tamper", "rule"),
    [
        (_set("close", 0.0), "non-positive price"),
        (_set("open", -1.0), "non-positive price"),
        (_set("high", 1.0), "high below max"),
        (_set("low", 1e6), "low above min"),
        (_set("volume", -5.0), "negative or missing volume"),
        (_set("close", float("nan")), "missing or non-finite price"),
        (_duplicate, "duplicate timestamp"),
        (_shift_day, "outside the requested sessions"),
    ],
    ids=[
        "zero-close",
        "negative-open",
        "high-too-low",
        "low-too-high",
        "negative-volume",
        "nan",
        "dup-ts",
        "wrong-day",
    ],
)
def test_bad_bars_fail_their_partition_alone_by_rule_and_the_others_land(
    tamper: Callable[[pd.DataFrame], None], rule: str, calendar: TradingCalendar, store: DuckDBBarStore
) -> None:
    d2, d3 = D(2024, 1, 2), D(2024, 1, 3)
    both = [(t, d) for t in ("AAPL", "MSFT") for d in (d2, d3)]
    ingest(both, SyntheticProvider(calendar), store, calendar, M1)
    before = store.read_bars()
    # Row 5 is AAPL's: its session fails, by rule; MSFT's lands from the same provider answer.
    report = ingest([("AAPL", d3), ("MSFT", d3)], TamperedProvider(calendar, tamper), store, calendar, M1)
    assert list(report.failed) == [("AAPL", d3)]
    assert rule in report.failed[("AAPL", d3)] and "ticker AAPL ts 2024-01-0" in report.failed[("AAPL", d3)]
    assert list(report.rows) == [("MSFT", d3)] and report.rows[("MSFT", d3)] == 390
    after = store.read_bars()
    pd.testing.assert_frame_equal(before[before["ticker"] == "AAPL"], after[after["ticker"] == "AAPL"])
    msft = after[after["ticker"] == "MSFT"].groupby("session_date")["provider"].unique()
    assert list(msft[d2]) == ["synthetic"] and list(msft[d3]) == ["tampered"]


def test_a_bad_bar_fails_its_own_session_and_the_tickers_other_sessions_land(
    calendar: TradingCalendar, store: DuckDBBarStore
) -> None:
    d2, d3 = D(2024, 1, 2), D(2024, 1, 3)
    report = ingest(
        [("AAPL", d2), ("AAPL", d3)], TamperedProvider(calendar, _set("volume", -5.0)), store, calendar, M1
    )
    assert list(report.failed) == [("AAPL", d2)] and list(report.rows) == [("AAPL", d3)]
    assert set(store.read_bars()["session_date"]) == {d3}
    with pytest.raises(BarValidationError, match="negative or missing volume: ticker AAPL"):
        validate_bars(
            TamperedProvider(calendar, _set("volume", -5.0)).fetch(BarRequest(("AAPL",), (d2,), M1)).bars,
            calendar.tz,
            {("AAPL", d2)},
        )


class HoleyProvider:
    """A provider that loses one session of one ticker, as real feeds sometimes do."""

    name, adjustment = "holey", "raw"

    def __init__(self, calendar: TradingCalendar, hole: tuple[str, dt.date]) -> None:
        self.inner, self.hole, self.tz = SyntheticProvider(calendar), hole, calendar.tz

    def fetch(self, request: BarRequest) -> FetchResult:
        bars = self.inner.fetch(request).bars
        day = bars["ts"].dt.tz_convert(self.tz).dt.date
        return FetchResult(bars[~((bars["ticker"] == self.hole[0]) & (day == self.hole[1]))])


def test_a_session_missing_inside_a_tickers_data_is_a_failed_hole(
    calendar: TradingCalendar, store: DuckDBBarStore
) -> None:
    sessions = days(calendar, 4)
    wanted = [(t, d) for t in ("AAPL", "MSFT") for d in sessions]
    report = ingest(wanted, HoleyProvider(calendar, ("MSFT", sessions[2])), store, calendar, M1)
    assert list(report.failed) == [("MSFT", sessions[2])]
    assert "a hole at the provider" in report.failed[("MSFT", sessions[2])]
    stored = store.read_bars().groupby(["ticker", "session_date"]).size()
    assert len(stored) == 7 and ("MSFT", sessions[2]) not in stored.index
    assert not report.unlisted


def test_many_page_requests_spread_over_the_parallel_connections(calendar: TradingCalendar) -> None:
    """One 100-ticker x 50-session request (195 pages) becomes 4 ticker groups covering every ticker
    once; a one-page request and a provider without parallelism stay as planned."""
    days = tuple(calendar.sessions_in(D(2024, 1, 2), D(2024, 3, 14)))
    big = BarRequest(tuple(f"T{i:03d}" for i in range(100)), days, M1)
    groups = spread([big], parallel=4, bars_per_page=10_000)
    assert len(groups) == 4 and all(g.sessions == days for g in groups)
    assert sorted(t for g in groups for t in g.tickers) == list(big.tickers)
    small = BarRequest(("AAPL", "MSFT"), days[:1], M1)
    assert spread([small], parallel=4, bars_per_page=10_000) == [small]
    assert spread([big], parallel=1, bars_per_page=10_000) == [big]


def test_regular_hours_keeps_bars_overlapping_each_session(calendar: TradingCalendar) -> None:
    stamps = {  # UTC (New York is UTC-4 in July); 2024-07-03 closes at 13:00, 07-04 is a holiday
        "2024-07-03 13:29": False, "2024-07-03 13:30": True, "2024-07-03 16:59": True,
        "2024-07-03 17:00": False, "2024-07-04 14:00": False, "2024-07-05 19:59": True,
        "2024-07-05 20:00": False,
    }  # fmt: skip
    frame = pd.DataFrame({"ticker": "AAPL", "ts": pd.to_datetime(list(stamps), utc=True).as_unit("us")})
    kept = regular_hours(frame, calendar, M1)
    assert list(kept["ts"].dt.strftime("%Y-%m-%d %H:%M")) == [k for k, keep in stamps.items() if keep]
    # An hourly bar starting before the 9:30 open still covers regular hours: the open is floored.
    hourly = pd.DataFrame(
        {"ticker": "AAPL", "ts": pd.to_datetime(["2024-07-05 12:00", "2024-07-05 13:00"], utc=True)}
    )
    assert list(regular_hours(hourly, calendar, TIMEFRAMES["1Hour"])["ts"].dt.hour) == [13]
