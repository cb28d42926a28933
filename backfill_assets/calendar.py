"""Trading-session helpers over exchange-calendars (pure: no Dagster).

Sessions are exchange-local dates; open/close instants are UTC. Half days (e.g. 2024-07-03,
13:00 close) and lunch breaks (XHKG 12:00-13:00, XTKS 11:30-12:30) come from the calendar, so
completeness checks never assume 390 minutes: a session trades in one span, or two around its break.
"""

import bisect
import datetime as dt
from collections.abc import Iterable
from functools import lru_cache

import exchange_calendars as xcals
import pandas as pd


class CalendarError(ValueError):
    """An unknown calendar, a non-session date, or a date outside the calendar's bounds."""


class TradingCalendar:
    """The sessions of one exchange from `start` to the calendar's forward bound (about a year ahead)."""

    def __init__(self, name: str, start: dt.date) -> None:
        try:
            self._cal = xcals.get_calendar(name, start=pd.Timestamp(start))
        except xcals.errors.InvalidCalendarName:
            raise CalendarError(f"unknown exchange calendar {name!r} (e.g. XNYS, XNAS, XLON)") from None
        self.name = name
        self.start = start
        self.tz = str(self._cal.tz)
        schedule = self._cal.schedule
        self._open = schedule["open"]
        self._close = schedule["close"]
        self._break_start = schedule["break_start"]
        self._break_end = schedule["break_end"]
        self._index = {ts.date(): i for i, ts in enumerate(schedule.index)}
        self.sessions: tuple[dt.date, ...] = tuple(self._index)

    @property
    def first_session(self) -> dt.date:
        return self.sessions[0]

    @property
    def last_session(self) -> dt.date:
        return self.sessions[-1]

    def last_completed(self, now: pd.Timestamp | None = None) -> dt.date:
        """The last session whose close has passed (`now` defaults to the current time)."""
        now = pd.Timestamp.now(tz="UTC") if now is None else now
        closed = self._close[self._close <= now]
        if closed.empty:
            raise CalendarError(f"no session of {self.name} has closed since {self.start}")
        return closed.index[-1].date()

    def last_partitioned(self, now: pd.Timestamp | None = None) -> dt.date:
        """The last session with a Dagster partition: a daily partition appears when its
        exchange-local day ends at midnight, hours after the session's close."""
        now = pd.Timestamp.now(tz="UTC") if now is None else now
        today = now.tz_convert(self.tz).date()
        i = bisect.bisect_left(self.sessions, today)
        if i == 0:
            raise CalendarError(f"no session of {self.name} has a partition yet (from {self.start})")
        return self.sessions[i - 1]

    def is_session(self, day: dt.date) -> bool:
        return day in self._index

    def position(self, day: dt.date) -> int:
        """Index of a session in this calendar; CalendarError if `day` is not a session."""
        try:
            return self._index[day]
        except KeyError:
            raise CalendarError(f"{day.isoformat()} is not a {self.name} session") from None

    def offset(self, day: dt.date, n: int) -> dt.date:
        """The session `n` sessions after session `day` (before it for n < 0), capped at the calendar's
        first and last sessions."""
        return self.sessions[max(0, min(self.position(day) + n, len(self.sessions) - 1))]

    def sessions_in(self, start: dt.date, end: dt.date) -> list[dt.date]:
        """Sessions in the closed range [start, end]."""
        return [d for d in self.sessions if start <= d <= end]

    def non_session_weekdays(self) -> list[dt.date]:
        """Weekdays from `start` to the calendar's end that are not sessions (holidays, closures)."""
        days = pd.bdate_range(self.start, self.last_session)
        return [d.date() for d in days if d.date() not in self._index]

    def open_close(self, day: dt.date) -> tuple[pd.Timestamp, pd.Timestamp]:
        """UTC open and close of a session; bars are stamped at their start in [open, close)."""
        i = self.position(day)
        return self._open.iloc[i], self._close.iloc[i]

    def break_of(self, day: dt.date) -> tuple[pd.Timestamp, pd.Timestamp] | None:
        """UTC start and end of a session's trading break (lunch), or None (no break that day)."""
        i = self.position(day)
        start, end = self._break_start.iloc[i], self._break_end.iloc[i]
        return None if pd.isna(start) or pd.isna(end) else (start, end)

    def trading_spans(self, day: dt.date) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
        """The [start, end) UTC spans a session trades in: [open, close), or the two around its break."""
        open_, close = self.open_close(day)
        pause = self.break_of(day)
        return [(open_, close)] if pause is None else [(open_, pause[0]), (pause[1], close)]

    def extended_spans(self, day: dt.date) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
        """The exchange day's spans with its outside hours, 04:00 to the open and four hours after the
        close (the US pre-market and after-hours sessions: to 20:00, 17:00 after a 13:00 close)."""
        midnight = pd.Timestamp(day, tz=self.tz)
        open_, close = self.open_close(day)
        pre = ((midnight + pd.Timedelta(hours=4)).tz_convert("UTC"), open_)
        post = (
            close,
            min(close + pd.Timedelta(hours=4), (midnight + pd.Timedelta(days=1)).tz_convert("UTC")),
        )
        return [span for span in (pre, *self.trading_spans(day), post) if span[0] < span[1]]

    def session_minutes(self, day: dt.date) -> int:
        """Regular-hours minutes of a session: 390 on a full XNYS day, 210 on a 13:00 early close,
        330 on an XHKG day (its lunch break excluded)."""
        return sum(int((end - start) / pd.Timedelta(minutes=1)) for start, end in self.trading_spans(day))

    def contiguous_runs(self, days: Iterable[dt.date]) -> list[list[dt.date]]:
        """Split sessions into runs of consecutive sessions (a weekend or holiday does not break a run)."""
        runs: list[list[dt.date]] = []
        for day in sorted(set(days), key=self.position):
            if runs and self.position(day) == self.position(runs[-1][-1]) + 1:
                runs[-1].append(day)
            else:
                runs.append([day])
        return runs


@lru_cache(maxsize=8)
def get_calendar(name: str, start: dt.date) -> TradingCalendar:
    """A cached TradingCalendar; building one takes ~0.1-1 s depending on the span."""
    return TradingCalendar(name, start)
