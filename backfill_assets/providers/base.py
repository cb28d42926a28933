"""The provider contract: a request for consecutive sessions of some tickers, answered in bulk."""

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd

from backfill_assets.calendar import TradingCalendar
from backfill_assets.symbols import refusal
from backfill_assets.timeframes import Timeframe


@dataclass(frozen=True)
class BarRequest:
    """Bars of `tickers` over consecutive exchange `sessions` at `timeframe`, in one provider call."""

    tickers: tuple[str, ...]
    sessions: tuple[dt.date, ...]
    timeframe: Timeframe


@dataclass(frozen=True)
class FetchResult:
    """Bars in the provider columns (schemas.PROVIDER_COLUMNS) plus tickers that failed, with reasons.

    `dropped` counts bars the provider received and left out on purpose (outside regular hours or
    the requested sessions), so a run can say so; `sources` names the file behind a (ticker,
    session), for providers that read files."""

    bars: pd.DataFrame
    failed: Mapping[str, str] = field(default_factory=dict)
    dropped: int = 0
    sources: Mapping[tuple[str, dt.date], str] = field(default_factory=dict)


class ProviderError(RuntimeError):
    """A provider could not answer a request; the message names tickers, dates and the cause.

    `permanent` errors (bad credentials, bad request) must not be retried; others may succeed later.
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class BarProvider(Protocol):
    """What every provider implements. `adjustment` is recorded on every stored row."""

    name: str
    adjustment: str

    def fetch(self, request: BarRequest) -> FetchResult:
        """Return the bars of every (ticker, session) in `request`."""
        ...


def own_symbols(request: BarRequest, provider: str) -> tuple[BarRequest, dict[str, str]]:
    """`request` without the tickers outside `provider`'s symbol grammar, and why each was left out:
    they fail by name without spending a request (0700.HK is a Yahoo symbol, not an Alpaca one)."""
    refused = {t: reason for t in request.tickers if (reason := refusal(t, provider)) is not None}
    kept = tuple(t for t in request.tickers if t not in refused)
    return dataclasses.replace(request, tickers=kept), refused


def hours_filter(hours: str) -> Callable[[pd.DataFrame, TradingCalendar, Timeframe], pd.DataFrame]:
    """What a provider keeps of the bars it got: the exchange day (`extended`) or regular hours."""
    return exchange_day if hours == "extended" else regular_hours


def exchange_day(frame: pd.DataFrame, calendar: TradingCalendar, timeframe: Timeframe) -> pd.DataFrame:
    """Keep bars inside the exchange day's extended spans (calendar.extended_spans: 04:00-20:00)."""
    if timeframe.is_daily or frame.empty:
        return frame

    def day(session: dt.date) -> tuple[pd.Timestamp, ...]:
        spans = calendar.extended_spans(session)
        return spans[0][0], spans[-1][1]

    ts, (start, end) = _per_session(frame, calendar, day)
    return frame[(ts >= start) & (ts < end)].reset_index(drop=True)


def in_regular_hours(frame: pd.DataFrame, calendar: TradingCalendar, timeframe: Timeframe) -> np.ndarray:
    """Whether each anchored bar (anchored.py) starts in regular hours: in [open, close), outside a
    break. Anchored buckets never straddle the open, so the start decides."""
    if frame.empty or timeframe.is_daily:
        return np.ones(len(frame), dtype=bool)
    return _regular_mask(frame, calendar, timeframe, floor=False)


def regular_hours(frame: pd.DataFrame, calendar: TradingCalendar, timeframe: Timeframe) -> pd.DataFrame:
    """Keep bars whose bucket overlaps regular hours: [open floored to the bar size, close), less
    the buckets that lie wholly inside a session's trading break."""
    if timeframe.is_daily or frame.empty:
        return frame
    return frame[_regular_mask(frame, calendar, timeframe, floor=True)].reset_index(drop=True)


def _per_session(
    frame: pd.DataFrame, calendar: TradingCalendar, bounds: Callable[[dt.date], tuple[pd.Timestamp, ...]]
) -> tuple[np.ndarray, np.ndarray]:
    """Each bar's start and the `bounds` of its session, as UTC ns (rows of the result), computed
    once per distinct exchange day, not per bar (this runs on every fetched page). Bars on a day
    that is not a session get bounds of 0, which hold no bar."""
    stamps = pd.DatetimeIndex(frame["ts"]).as_unit("ns")
    codes, days = pd.factorize(stamps.tz_convert(calendar.tz).tz_localize(None).normalize())
    per_day = [
        [t.value for t in bounds(day.date())] if calendar.is_session(day.date()) else None for day in days
    ]
    width = max((len(row) for row in per_day if row is not None), default=0)
    table = np.zeros((len(per_day) + 1, width), dtype="int64")  # the last row: NaT, code -1
    for i, row in enumerate(per_day):
        if row is not None:
            table[i] = row
    return stamps.asi8, table[codes].T


def _regular_mask(
    frame: pd.DataFrame, calendar: TradingCalendar, timeframe: Timeframe, floor: bool
) -> np.ndarray:
    width = pd.Timedelta(minutes=timeframe.minutes)

    def day(session: dt.date) -> tuple[pd.Timestamp, ...]:
        open_, close = calendar.open_close(session)
        pause = calendar.break_of(session) or (pd.Timestamp(0, tz="UTC"), pd.Timestamp(0, tz="UTC"))
        return open_.floor(width) if floor else open_, close, *pause

    ts, (start, end, paused, resumed) = _per_session(frame, calendar, day)
    # A floored bucket is in the break only if it lies wholly inside it; a bar start, if it starts there.
    last = ts + width.value if floor else ts + 1
    return (ts >= start) & (ts < end) & ~((ts >= paused) & (last <= resumed))
