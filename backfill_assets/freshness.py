"""Freshness of `bars` (pure: no Dagster): the session to fetch after its close, which recent
partitions are gaps worth re-driving and when, and how to cover them with few ranged runs.

A partition is a Slice (ticker, session); its Dagster key is "YYYY-MM-DD|TICKER".
"""

import bisect
import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import exchange_calendars as xcals
import pandas as pd

from backfill_assets.calendar import TradingCalendar
from backfill_assets.settings import SettingsError
from backfill_assets.storage.base import Slice

Range = tuple[Slice, Slice]  # first and last partition of a rectangle: sessions x tickers, inclusive


class NoSessionError(ValueError):
    """The day of a schedule tick is no session to fetch (weekend, holiday, not closed yet)."""


def key_str(key: Slice) -> str:
    ticker, day = key
    return f"{day.isoformat()}|{ticker}"


def after_close_cron(calendar: TradingCalendar, margin: dt.timedelta = dt.timedelta(minutes=30)) -> str:
    """Weekday cron, in the calendar's timezone, `margin` after the latest regular close (16:30 for XNYS).

    Early closes (13:00 half days) fall before it, so one cron serves every session.
    """
    closes = [calendar.open_close(day)[1].tz_convert(calendar.tz) for day in calendar.sessions]
    latest = max(c - c.normalize() for c in closes) + pd.Timedelta(margin)
    minutes = int(latest / pd.Timedelta(minutes=1))
    return f"{minutes % 60} {minutes // 60} * * 1-5"


def closed_session(calendar: TradingCalendar, now: dt.datetime) -> dt.date:
    """The exchange-local day of `now` if it is a session that has closed; else NoSessionError saying why."""
    day = pd.Timestamp(now).tz_convert(calendar.tz).date()
    if day > calendar.last_session or day < calendar.first_session:
        raise NoSessionError(
            f"{day} is outside the {calendar.name} calendar ({calendar.first_session}.."
            f"{calendar.last_session}); reload the code location to extend it"
        )
    if not calendar.is_session(day):
        holidays = xcals.get_calendar(calendar.name, start=pd.Timestamp(calendar.start)).regular_holidays
        names = holidays.holidays(pd.Timestamp(day), pd.Timestamp(day), return_name=True)
        why = names.iloc[0] if len(names) else ("a weekend" if day.weekday() >= 5 else "an exchange closure")
        raise NoSessionError(f"{day} ({day:%A}) is not a {calendar.name} session: {why}")
    close = calendar.open_close(day)[1]
    if pd.Timestamp(now) < close:
        raise NoSessionError(f"the {day} session closes at {close.tz_convert(calendar.tz):%H:%M %Z}")
    return day


def freshness_enabled(env: Mapping[str, str]) -> bool:
    """BACKFILL_FRESHNESS: `on` (default) starts the schedule and gap sensor with the daemon; `off`
    leaves them stopped until switched on in the UI (a demo or a one-off backfill wants no extra runs)."""
    return _switch(env, "BACKFILL_FRESHNESS")


def label_automation_enabled(env: Mapping[str, str]) -> bool:
    """BACKFILL_LABEL_AUTOMATION: `on` (default) starts the sensor that requests labels after new
    bars; `off` leaves it stopped (the demo: its own backfill only, then a clean instance)."""
    return _switch(env, "BACKFILL_LABEL_AUTOMATION")


def _switch(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower() or "on"
    if raw not in ("on", "off"):
        raise SettingsError(f"{name}={raw!r}: expected on or off")
    return raw == "on"


@dataclass(frozen=True)
class GapPolicy:
    """How the gap sensor re-drives partitions; every field has a BACKFILL_GAP_* variable."""

    min_age: dt.timedelta = dt.timedelta(hours=1)  # after the session's close
    window_sessions: int = 5
    max_attempts: int = 3
    backoff: dt.timedelta = dt.timedelta(minutes=30)  # doubles after each attempt

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "GapPolicy":
        def number(name: str, default: float, minimum: float) -> float:
            raw = env.get(name, "").strip()
            try:
                value = float(raw) if raw else default
            except ValueError:
                raise SettingsError(f"{name}={raw!r} is not a number") from None
            if value < minimum:
                raise SettingsError(f"{name}={raw!r} must be at least {minimum:g}")
            return value

        def whole(name: str, default: int) -> int:
            value = number(name, default, 1)
            if value != int(value):
                raise SettingsError(f"{name}={env[name]!r} must be a whole number")
            return int(value)

        return cls(
            min_age=dt.timedelta(hours=number("BACKFILL_GAP_MIN_AGE_HOURS", 1, 0)),
            window_sessions=whole("BACKFILL_GAP_WINDOW_SESSIONS", 5),
            max_attempts=whole("BACKFILL_GAP_MAX_ATTEMPTS", 3),
            backoff=dt.timedelta(minutes=number("BACKFILL_GAP_BACKOFF_MINUTES", 30, 1 / 60)),
        )


def due_sessions(
    calendar: TradingCalendar, now: dt.datetime, policy: GapPolicy, latest: dt.date
) -> list[dt.date]:
    """The last `window_sessions` sessions up to `latest` that closed at least `min_age` before `now`."""
    due: list[dt.date] = []
    for day in reversed(calendar.sessions[: bisect.bisect_right(calendar.sessions, latest)]):
        if len(due) == policy.window_sessions:
            break
        if calendar.open_close(day)[1] + policy.min_age <= now:
            due.append(day)
    return due[::-1]


@dataclass(frozen=True)
class Attempt:
    """Re-drives of one partition by the gap sensor: how many, and the last one's time (UTC)."""

    count: int
    last: dt.datetime

    def next_at(self, backoff: dt.timedelta) -> dt.datetime:
        """The earliest time for the next attempt: `backoff` after the first, doubling after each."""
        return self.last + backoff * 2 ** (self.count - 1)


def load_attempts(cursor: str | None) -> dict[str, Attempt]:
    """The sensor cursor: {"YYYY-MM-DD|TICKER": {"attempts": n, "last": iso time}}; empty if unset."""
    state = json.loads(cursor) if cursor else {}
    return {k: Attempt(int(v["attempts"]), dt.datetime.fromisoformat(v["last"])) for k, v in state.items()}


def dump_attempts(attempts: Mapping[str, Attempt]) -> str:
    state = {k: {"attempts": a.count, "last": a.last.isoformat()} for k, a in sorted(attempts.items())}
    return json.dumps(state, separators=(",", ":"))


def _runs(indices: Iterable[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for i in sorted(indices):
        if runs and i == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


def _rectangles(cells: set[tuple[int, int]]) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Contiguous column runs per row, merged down consecutive rows that have the same run."""
    by_row: dict[int, list[int]] = defaultdict(list)
    for row, col in cells:
        by_row[row].append(col)
    done: list[tuple[tuple[int, int], tuple[int, int]]] = []
    open_: dict[tuple[int, int], int] = {}  # column run -> first row of the rectangle it extends
    previous = -2
    for row in sorted(by_row):
        runs = set(_runs(by_row[row]))
        for run in [r for r in open_ if row != previous + 1 or r not in runs]:
            done.append(((open_.pop(run), run[0]), (previous, run[1])))
        open_.update({run: row for run in runs if run not in open_})
        previous = row
    done += [((first, run[0]), (previous, run[1])) for run, first in open_.items()]
    return sorted(done)


def cover(keys: Iterable[Slice], sessions: Sequence[dt.date], tickers: Sequence[str]) -> list[Range]:
    """Exactly `keys` as few rectangles as the simple plans find: ticker ranges per session merged over
    consecutive sessions, or session ranges per ticker merged over neighbouring tickers.

    `sessions` and `tickers` are the partition orders a Dagster range follows: all sessions of the
    calendar, and tickers in the order they were added.
    """
    s_pos = {d: i for i, d in enumerate(sessions)}
    t_pos = {t: i for i, t in enumerate(tickers)}
    cells = {(s_pos[day], t_pos[ticker]) for ticker, day in keys}
    by_session = _rectangles(cells)
    by_ticker = [((s0, t0), (s1, t1)) for (t0, s0), (t1, s1) in _rectangles({(t, s) for s, t in cells})]
    best = by_ticker if len(by_ticker) < len(by_session) else by_session
    return [((tickers[t0], sessions[s0]), (tickers[t1], sessions[s1])) for (s0, t0), (s1, t1) in sorted(best)]


@dataclass(frozen=True)
class GapPlan:
    """One gap-sensor tick: rectangles to request (with their attempt number) and the new cursor state."""

    requests: list[tuple[Range, int]]
    attempts: dict[str, Attempt]
    waiting: dict[str, dt.datetime]  # backing off until
    gave_up: list[str]


def plan_gaps(
    gaps: Iterable[Slice],
    window: Iterable[str],
    attempts: Mapping[str, Attempt],
    now: dt.datetime,
    policy: GapPolicy,
    order: tuple[Sequence[dt.date], Sequence[str]],
) -> GapPlan:
    """Decide which gaps (missing or failed partitions, none in progress) to request now.

    Attempts are kept while a partition stays in the `window` (so the cap holds even if a re-driven
    partition fails again later) and forgotten when it leaves it.
    """
    in_window = set(window)
    state = {k: a for k, a in attempts.items() if k in in_window}
    ready: list[Slice] = []
    waiting: dict[str, dt.datetime] = {}
    gave_up: list[str] = []
    for gap in gaps:
        key, past = key_str(gap), state.get(key_str(gap))
        if past is not None and past.count >= policy.max_attempts:
            gave_up.append(key)
        elif past is not None and now < past.next_at(policy.backoff):
            waiting[key] = past.next_at(policy.backoff)
        else:
            ready.append(gap)
    for key in map(key_str, ready):
        state[key] = Attempt(state[key].count + 1 if key in state else 1, now)
    pos = {t: i for i, t in enumerate(order[1])}
    requests = []
    for (t0, d0), (t1, d1) in cover(ready, *order):
        inside = [k for k in ready if d0 <= k[1] <= d1 and pos[t0] <= pos[k[0]] <= pos[t1]]
        requests.append((((t0, d0), (t1, d1)), max(state[key_str(k)].count for k in inside)))
    return GapPlan(requests, state, waiting, sorted(gave_up))
