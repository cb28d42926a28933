"""Trading sessions and the session partitions built from them."""

import datetime as dt

import pandas as pd
import pytest

from backfill_assets.calendar import CalendarError, TradingCalendar, get_calendar
from backfill_assets.defs.partitions import session_partitions_for

D = dt.date


def test_calendar_2024_has_252_sessions(calendar: TradingCalendar) -> None:
    sessions = calendar.sessions_in(D(2024, 1, 1), D(2024, 12, 31))
    assert len(sessions) == 252
    assert D(2024, 7, 4) not in sessions and D(2024, 3, 29) not in sessions  # Independence Day, Good Friday


@pytest.mark.parametrize(
    ("day", "minutes"),
    [(D(2024, 7, 2), 390), (D(2024, 7, 3), 210), (D(2024, 11, 29), 210), (D(2024, 12, 24), 210)],
)
def test_session_minutes_know_early_closes(calendar: TradingCalendar, day: dt.date, minutes: int) -> None:
    assert calendar.session_minutes(day) == minutes


def test_open_close_are_utc_and_follow_dst(calendar: TradingCalendar) -> None:
    assert calendar.open_close(D(2024, 1, 2))[0].isoformat() == "2024-01-02T14:30:00+00:00"
    assert calendar.open_close(D(2024, 7, 2))[0].isoformat() == "2024-07-02T13:30:00+00:00"


def test_non_session_is_rejected_by_name(calendar: TradingCalendar) -> None:
    with pytest.raises(CalendarError, match="2024-07-04 is not a XNYS session"):
        calendar.position(D(2024, 7, 4))


def test_unknown_calendar_is_named() -> None:
    with pytest.raises(CalendarError, match="'NOPE'"):
        TradingCalendar("NOPE", D(2024, 1, 2))


def test_contiguous_runs_bridge_weekends_and_holidays(calendar: TradingCalendar) -> None:
    days = [D(2024, 7, 3), D(2024, 7, 5), D(2024, 7, 8), D(2024, 7, 10), D(2024, 7, 2)]
    assert calendar.contiguous_runs(days) == [
        [D(2024, 7, 2), D(2024, 7, 3), D(2024, 7, 5), D(2024, 7, 8)],
        [D(2024, 7, 10)],
    ]


def test_session_partitions_are_exactly_the_sessions(calendar: TradingCalendar) -> None:
    keys = session_partitions_for(calendar, D(2024, 1, 2)).get_partition_keys()
    in_2024 = [k for k in keys if k.startswith("2024")]
    assert len(in_2024) == 252
    assert "2024-07-04" not in keys and "2024-01-06" not in keys
    assert in_2024 == [d.isoformat() for d in calendar.sessions_in(D(2024, 1, 1), D(2024, 12, 31))]


def test_start_on_a_holiday_yields_no_holiday_partition() -> None:
    calendar = TradingCalendar("XNYS", D(2024, 1, 1))
    assert session_partitions_for(calendar, D(2024, 1, 1)).get_partition_keys()[:2] == [
        "2024-01-02",
        "2024-01-03",
    ]


def test_a_session_is_partitioned_at_midnight_new_york_not_at_its_close() -> None:
    calendar = get_calendar("XNYS", dt.date(2024, 1, 2))
    after_close = pd.Timestamp("2024-07-05 21:00", tz="UTC")  # Friday 17:00 in New York
    assert calendar.last_completed(after_close) == dt.date(2024, 7, 5)
    assert calendar.last_partitioned(after_close) == dt.date(2024, 7, 3)  # 07-04 is a holiday
    assert calendar.last_partitioned(pd.Timestamp("2024-07-06 04:00", tz="UTC")) == dt.date(2024, 7, 5)
    with pytest.raises(CalendarError, match="no session of XNYS has a partition"):
        calendar.last_partitioned(pd.Timestamp("2024-01-02 20:00", tz="UTC"))
