"""Fetch, validate and store a set of (session, ticker) partitions in as few provider calls as possible."""

import datetime as dt
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from backfill_assets.calendar import TradingCalendar
from backfill_assets.providers.base import BarProvider, BarRequest, FetchResult, in_regular_hours
from backfill_assets.schemas import bad_slices, distinct_pairs, empty_bars, session_of
from backfill_assets.storage.base import BarStore, Slice
from backfill_assets.symbols import validate_ticker
from backfill_assets.timeframes import Timeframe


@dataclass(frozen=True)
class IngestReport:
    """What one ingest wrote: rows per (ticker, session) slice and where they came from."""

    rows: Mapping[Slice, int]
    spans: Mapping[Slice, tuple[pd.Timestamp, pd.Timestamp]]  # first and last bar of each non-empty slice
    failed: Mapping[Slice, str]
    unlisted: frozenset[Slice]  # sessions before a ticker's first bar: written empty, not holes
    first_ts: pd.Timestamp | None
    last_ts: pd.Timestamp | None
    provider: str
    timeframe: str
    adjustment: str
    requests: int
    duration_s: float
    dropped: int = 0  # bars the provider received and left out on purpose (FetchResult.dropped)
    sources: Mapping[Slice, str] = field(default_factory=dict)  # the file behind a slice, if any
    outside: int = 0  # bars stored outside regular hours (BACKFILL_TRADING_HOURS=extended)

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def plan_requests(
    slices: Iterable[Slice], calendar: TradingCalendar, timeframe: Timeframe
) -> list[BarRequest]:
    """Group slices into requests: tickers sharing the same sessions, per run of consecutive sessions.

    One ticker x a date range or one date x a ticker range (what Dagster's backfill runs hold) becomes
    a single request; ragged selections become a few rectangles without fetching unrequested bars.
    """
    sessions_by_ticker: dict[str, set[dt.date]] = defaultdict(set)
    for ticker, day in slices:
        calendar.position(day)  # raises on a non-session
        sessions_by_ticker[validate_ticker(ticker)].add(day)
    tickers_by_sessions: dict[frozenset[dt.date], list[str]] = defaultdict(list)
    for ticker, days in sessions_by_ticker.items():
        tickers_by_sessions[frozenset(days)].append(ticker)
    requests = [
        BarRequest(tuple(sorted(tickers)), tuple(run), timeframe)
        for days, tickers in tickers_by_sessions.items()
        for run in calendar.contiguous_runs(days)
    ]
    return sorted(requests, key=lambda r: (r.tickers, r.sessions[0]))


def spread(requests: list[BarRequest], parallel: int, bars_per_page: int) -> list[BarRequest]:
    """Split requests of many pages into ticker groups, up to `parallel` requests in all.

    A request's pages come one after another (each needs the previous page's token), so one big
    request uses one connection however many the budget allows. Groups keep their pages full but
    the last, so the split costs at most one request per group; one-page requests stay whole."""
    if len(requests) >= parallel:
        return requests
    out: list[BarRequest] = []
    for request in requests:
        bars = len(request.tickers) * len(request.sessions) * request.timeframe.bars_per_session
        pages = math.ceil(bars / bars_per_page)
        groups = max(1, min(parallel // len(requests), len(request.tickers), pages))
        size = math.ceil(len(request.tickers) / groups)
        out += [
            BarRequest(request.tickers[i : i + size], request.sessions, request.timeframe)
            for i in range(0, len(request.tickers), size)
        ]
    return out


def _gaps(
    request: BarRequest, bars: pd.DataFrame, calendar: TradingCalendar
) -> tuple[set[Slice], dict[Slice, str]]:
    """Sessions of `request` without bars, per ticker that has bars: before its first bar the ticker
    was not listed yet (an empty slice); after it, a hole at the provider (a failed slice)."""
    pairs = pd.DataFrame({"ticker": bars["ticker"], "day": session_of(bars["ts"], calendar.tz)})
    have = set(distinct_pairs(pairs))
    unlisted, holes = set(), {}
    for ticker in {t for t, _ in have}:
        days = [day for day in request.sessions if (ticker, day) in have]
        for day in request.sessions:
            if (ticker, day) in have:
                continue
            if day < days[0]:
                unlisted.add((ticker, day))
            else:
                holes[(ticker, day)] = (
                    f"{ticker} {day}: the provider sent no bars for this session but has bars for "
                    f"{days[0]}..{days[-1]}; a hole at the provider, not stored as empty"
                )
    return unlisted, holes


@dataclass(frozen=True)
class Fetched:
    """One chunk's provider answers, validated by nothing yet; `write` stores them."""

    wanted: frozenset[Slice]
    requests: list[BarRequest]
    results: list[FetchResult]
    started: float


def fetch(
    slices: Iterable[Slice], provider: BarProvider, calendar: TradingCalendar, timeframe: Timeframe
) -> Fetched:
    """Every slice's bars, in as few requests as the plan allows, parallel where the provider can."""
    started = time.monotonic()
    wanted = frozenset(slices)
    # Providers that can take several requests at once say so (the budget still caps them).
    parallel = max(1, getattr(provider, "parallel_requests", 1))
    bars_per_page = getattr(provider, "bars_per_page", 10_000)
    requests = spread(plan_requests(wanted, calendar, timeframe), parallel, bars_per_page)
    with ThreadPoolExecutor(min(parallel, len(requests) or 1)) as pool:
        results = list(pool.map(provider.fetch, requests))  # in order; the first error propagates
    return Fetched(wanted, requests, results, started)


def write(
    fetched: Fetched, provider: BarProvider, store: BarStore, calendar: TradingCalendar, timeframe: Timeframe
) -> IngestReport:
    """Validate a chunk's bars, then replace its slices in one store write (see `ingest`)."""
    frames: list[pd.DataFrame] = []
    failed: dict[Slice, str] = {}
    unlisted: set[Slice] = set()
    sources: dict[Slice, str] = {}
    for request, result in zip(fetched.requests, fetched.results, strict=True):
        frames.append(result.bars)
        sources |= result.sources
        for ticker, reason in result.failed.items():
            failed.update({(ticker, day): reason for day in request.sessions})
        empty, holes = _gaps(request, result.bars, calendar)
        unlisted |= empty
        failed |= holes
    frame = pd.concat(frames, ignore_index=True) if frames else empty_bars()
    written = fetched.wanted - failed.keys()
    # Each bar flagged by its start (outside_hours.py). In regular hours a bar that starts outside
    # them (an hh:00 bar straddling the open, from a file) is dropped, counted, never stored.
    regular = in_regular_hours(frame, calendar, timeframe)
    dropped = sum(result.dropped for result in fetched.results)
    if getattr(provider, "hours", "regular") == "regular" and not regular.all():
        frame, dropped = frame[regular].reset_index(drop=True), dropped + int((~regular).sum())
        regular = regular[regular]
    days = session_of(frame["ts"], calendar.tz)
    if bad := bad_slices(frame, calendar.tz, set(written), days):
        # Bad bars fail their own slices (permanently, the rule named); the chunk's others land.
        failed |= bad
        written -= bad.keys()
        unlisted -= bad.keys()
        keep = np.array([key in written for key in zip(frame["ticker"], days, strict=True)], dtype=bool)
        frame, regular = frame[keep].reset_index(drop=True), regular[keep]
        days = days[keep].reset_index(drop=True)
    frame["session_date"] = days
    frame["regular_hours"] = regular
    frame["provider"] = provider.name
    frame["timeframe"] = timeframe.name
    frame["adjustment"] = provider.adjustment
    frame["fetched_at"] = pd.Timestamp.now(tz="UTC")
    if written:
        store.replace_bars(frame, written)
    per_slice = frame.groupby(["ticker", "session_date"])["ts"].agg(["size", "min", "max"])
    counts = per_slice["size"].to_dict()
    spans = dict(zip(per_slice.index, zip(per_slice["min"], per_slice["max"], strict=True), strict=True))
    return IngestReport(
        rows={key: int(counts.get(key, 0)) for key in sorted(written)},
        spans={key: spans[key] for key in written if key in spans},
        failed=dict(sorted(failed.items())),
        unlisted=frozenset(unlisted),
        first_ts=frame["ts"].min() if len(frame) else None,
        last_ts=frame["ts"].max() if len(frame) else None,
        provider=provider.name,
        timeframe=timeframe.name,
        adjustment=provider.adjustment,
        requests=len(fetched.requests),
        duration_s=time.monotonic() - fetched.started,
        dropped=dropped,
        outside=int(len(frame) - regular.sum()),
        sources={key: sources[key] for key in written if key in sources},
    )


def ingest(
    slices: Iterable[Slice],
    provider: BarProvider,
    store: BarStore,
    calendar: TradingCalendar,
    timeframe: Timeframe,
) -> IngestReport:
    """Fetch every slice, validate its bars, then replace the good slices in one store write.

    Slices of tickers the provider does not know, and sessions missing inside a ticker's data, are
    reported in `failed` and left untouched in the store, and so are slices holding a bar that breaks
    a rule of `schemas.bad_slices` (the rule named); sessions before a ticker's first bar are written
    empty and reported in `unlisted`. A provider error raises before anything is written.
    """
    return write(fetch(slices, provider, calendar, timeframe), provider, store, calendar, timeframe)
