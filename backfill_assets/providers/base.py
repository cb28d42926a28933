"""The provider contract: a request for consecutive sessions of some tickers, answered in bulk."""

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd

from backfill_assets.calendar import TradingCalendar
from backfill_assets.schemas import session_of
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
    day = session_of(frame["ts"], calendar.tz)
    sessions = [d for d in day.unique() if d is not None and calendar.is_session(d)]
    bounds = {d: (spans[0][0], spans[-1][1]) for d in sessions if (spans := calendar.extended_spans(d))}
    start = pd.to_datetime(day.map({d: a for d, (a, _) in bounds.items()}), utc=True)
    end = pd.to_datetime(day.map({d: b for d, (_, b) in bounds.items()}), utc=True)
    return frame[((frame["ts"] >= start) & (frame["ts"] < end)).fillna(False)].reset_index(drop=True)


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


def _regular_mask(
    frame: pd.DataFrame, calendar: TradingCalendar, timeframe: Timeframe, floor: bool
) -> np.ndarray:
    day = session_of(frame["ts"], calendar.tz)
    sessions = [d for d in day.unique() if d is not None and calendar.is_session(d)]
    bounds = {d: calendar.open_close(d) for d in sessions}
    pauses = {d: pause for d in sessions if (pause := calendar.break_of(d)) is not None}
    width = pd.Timedelta(minutes=timeframe.minutes)
    # Dict lookups per row, not Python calls per row: this ran on every fetched page.
    opens = {d: o.floor(width) if floor else o for d, (o, _) in bounds.items()}
    start = pd.to_datetime(day.map(opens), utc=True)
    end = pd.to_datetime(day.map({d: c for d, (_, c) in bounds.items()}), utc=True)
    keep = (frame["ts"] >= start) & (frame["ts"] < end)
    if pauses:
        paused = pd.to_datetime(day.map({d: b for d, (b, _) in pauses.items()}), utc=True)
        resumed = pd.to_datetime(day.map({d: e for d, (_, e) in pauses.items()}), utc=True)
        # A floored bucket is in the break only if it lies wholly inside it; a bar start, if it starts there.
        last = frame["ts"] + width if floor else frame["ts"] + pd.Timedelta(microseconds=1)
        inside = (frame["ts"] >= paused) & (last <= resumed)
        keep &= ~inside.fillna(False)
    return keep.fillna(False).to_numpy(dtype=bool)
