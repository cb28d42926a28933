"""Deterministic offline bars: the embedded default, so the project runs with no keys or network.

Each ticker has a stationary AR(1) log-price walk across sessions (seeded by the ticker) and, inside
each session, a random path seeded by (ticker, session) with U-shaped volatility and volume that
ends exactly on that day's close. Bars lie only inside regular hours; half days are shorter, and a
lunch break (XHKG, XTKS) has no bars.
Coarser timeframes aggregate the 1-minute path anchored at the session (anchored.py: 09:30, 10:30,
...), as the project stores them. `hours="extended"` adds sparse, thinly traded pre-market (from 04:00)
and after-hours (to 20:00) minutes (anchored at 04:00 and at the close), and `anchor="clock"` buckets at
hh:00: together, what Alpaca serves (the local test server's bars), where a 09:00 hourly bar holds
pre-market trades.
"""

import datetime as dt
import hashlib

import numpy as np
import pandas as pd

from backfill_assets.anchored import bucket_of
from backfill_assets.calendar import TradingCalendar
from backfill_assets.providers.base import BarRequest, FetchResult
from backfill_assets.schemas import PROVIDER_COLUMNS, empty_bars
from backfill_assets.timeframes import Timeframe

EPOCH = np.datetime64("1970-01-01", "D")
PHI = 0.999  # daily AR(1) persistence: trends for months, never drifts to zero
DAILY_SD = 0.015
GAP_SD = 0.004
MINUTE_SD = 0.0006
VOLUME_U_MEAN = 1 + 2.5 / 3  # mean of the 1 + 2.5u^2 volume profile over u in [-1, 1]
MINUTE_NS = 60_000_000_000


def _seed(*parts: str) -> int:
    digest = hashlib.blake2b("|".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _ticker_constants(ticker: str) -> tuple[float, float, float]:
    """Base price (20-500), daily volume (1M-30M shares), and average trade size of a ticker."""
    rng = np.random.default_rng(_seed(ticker, "constants"))
    return 10 ** rng.uniform(1.3, 2.7), 10 ** rng.uniform(6.0, 7.5), rng.uniform(80, 250)


def _close_logs(ticker: str, days: list[dt.date], base: float) -> tuple[np.ndarray, np.ndarray]:
    """Log closes of each day and of the business day before it (the walk steps per weekday)."""
    idx = np.busday_count(EPOCH, np.array(days, dtype="datetime64[D]"))
    eps = np.random.default_rng(_seed(ticker, "daily")).normal(0.0, DAILY_SD, int(idx.max()) + 1)
    k = np.arange(eps.size, dtype="float64")
    walk = PHI**k * np.cumsum(eps * PHI ** (-k))  # x_n = sum_k phi^(n-k) eps_k, vectorised
    return np.log(base) + walk[idx], np.log(base) + walk[idx - 1]


def _session_minutes(
    ticker: str,
    day: dt.date,
    ts: np.ndarray,
    logs: tuple[float, float],
    consts: tuple[float, float, float],
) -> dict[str, np.ndarray]:
    """One bar per traded minute `ts` (UTC ns): the path runs across a lunch break as if it were
    not there, so the afternoon opens where the morning closed."""
    n = ts.size
    close_log, prev_close_log = logs
    _, daily_volume, trade_size = consts
    rng = np.random.default_rng(_seed(ticker, day.isoformat()))
    u = np.linspace(-1.0, 1.0, n)
    profile = 1.0 + 1.5 * u**2
    steps = rng.standard_normal(n) * MINUTE_SD * profile
    open_log = prev_close_log + rng.normal(0.0, GAP_SD)
    weights = profile**2
    steps += (close_log - open_log - steps.sum()) * weights / weights.sum()
    close = np.round(np.exp(open_log + np.cumsum(steps)), 2)
    open_ = np.concatenate(([np.round(np.exp(open_log), 2)], close[:-1]))
    wicks = np.abs(rng.standard_normal((2, n))) * MINUTE_SD * 0.6 * profile
    high = np.round(np.maximum(open_, close) * np.exp(wicks[0]), 2)
    low = np.round(np.minimum(open_, close) * np.exp(-wicks[1]), 2)
    noise = rng.lognormal(0.0, 0.35, n)
    volume = np.maximum(1.0, np.round(daily_volume / 390 * (1 + 2.5 * u**2) / VOLUME_U_MEAN * noise))
    return _columns(ts, (open_, high, low, close), volume, trade_size)


def _columns(
    ts: np.ndarray, prices: tuple[np.ndarray, ...], volume: np.ndarray, trade_size: float
) -> dict[str, np.ndarray]:
    open_, high, low, close = prices
    return {
        "ts": ts,
        "open": open_,
        "high": high,
        "low": low,
        "close": close,
        "volume": volume,
        "trade_count": np.maximum(1, np.round(volume / trade_size)).astype("int64"),
        "vwap": np.round((high + low + 2 * close) / 4, 4),
    }


def _aggregate(
    bars: dict[str, np.ndarray], starts: np.ndarray, bucket_ts: np.ndarray
) -> dict[str, np.ndarray]:
    """Aggregate consecutive minute bars into buckets starting at row indexes `starts`."""
    ends = np.append(starts[1:], bars["ts"].size) - 1
    volume = np.add.reduceat(bars["volume"], starts)
    return {
        "ts": bucket_ts,
        "open": bars["open"][starts],
        "high": np.maximum.reduceat(bars["high"], starts),
        "low": np.minimum.reduceat(bars["low"], starts),
        "close": bars["close"][ends],
        "volume": volume,
        "trade_count": np.add.reduceat(bars["trade_count"], starts),
        "vwap": np.round(np.add.reduceat(bars["vwap"] * bars["volume"], starts) / volume, 4),
    }


def _resample(
    bars: dict[str, np.ndarray], timeframe: Timeframe, day_start_ns: int, starts: np.ndarray | None
) -> dict[str, np.ndarray]:
    """Minute bars as `timeframe` bars: anchored at the span `starts`, or at the clock (None)."""
    if timeframe.minutes == 1:
        return bars
    if timeframe.is_daily:
        return _aggregate(bars, np.array([0]), np.array([day_start_ns]))
    width = timeframe.minutes * MINUTE_NS
    if starts is None:
        buckets = bars["ts"] // width * width  # ET is a whole-hour UTC offset, so UTC flooring aligns
    else:
        buckets = bucket_of(bars["ts"], starts, timeframe.minutes)
    first = np.flatnonzero(np.diff(buckets, prepend=-1))
    return _aggregate(bars, first, buckets[first])


def _extended_minutes(
    ticker: str, day: dt.date, ts: np.ndarray, start_price: float, daily_volume: float
) -> dict[str, np.ndarray]:
    """Sparse outside-hours minutes `ts` (about one in three trades), walking from `start_price`
    with thin volume: prices and sizes unlike the regular session's."""
    rng = np.random.default_rng(_seed(ticker, day.isoformat(), str(int(ts[0]) if ts.size else 0)))
    ts = ts[rng.random(ts.size) < 0.35]
    n = ts.size
    close = np.round(start_price * np.exp(np.cumsum(rng.standard_normal(n) * MINUTE_SD * 2)), 2)
    open_ = np.concatenate(([round(start_price, 2)], close[:-1]))[:n]
    volume = np.maximum(1.0, np.round(daily_volume / 390 * 0.02 * rng.lognormal(0.0, 0.8, n)))
    return _columns(ts, (open_, np.maximum(open_, close), np.minimum(open_, close), close), volume, 50.0)


def _minutes_in(spans: list[tuple[pd.Timestamp, pd.Timestamp]]) -> np.ndarray:
    """The minute starts (UTC ns) of [start, end) spans."""
    return np.concatenate(
        [np.arange(a.value, b.value, MINUTE_NS, dtype="int64") for a, b in spans] or [np.array([], "int64")]
    )


def _with_extended(
    ticker: str, day: dt.date, minutes: dict[str, np.ndarray], calendar: TradingCalendar, volume: float
) -> dict[str, np.ndarray]:
    """The session's minutes with its pre-market and after-hours minutes (calendar.extended_spans)."""
    spans = calendar.extended_spans(day)
    open_, close = calendar.open_close(day)
    pre = _minutes_in([sp for sp in spans if sp[1] <= open_])
    post = _minutes_in([sp for sp in spans if sp[0] >= close])
    before = _extended_minutes(ticker, day, pre, float(minutes["open"][0]) * 0.997, volume)
    after = _extended_minutes(ticker, day, post, float(minutes["close"][-1]), volume)
    return {c: np.concatenate([before[c], minutes[c], after[c]]) for c in minutes}


class SyntheticProvider:
    """Offline provider; identical output for identical (ticker, session, timeframe)."""

    name = "synthetic"
    adjustment = "raw"

    def __init__(self, calendar: TradingCalendar, hours: str = "regular", anchor: str = "session") -> None:
        if hours not in ("regular", "extended") or anchor not in ("session", "clock"):
            raise ValueError(f"synthetic provider: hours {hours!r}, anchor {anchor!r}")
        self.calendar, self.hours, self.anchor = calendar, hours, anchor

    def fetch(self, request: BarRequest) -> FetchResult:
        days = list(request.sessions)
        parts: list[dict[str, np.ndarray]] = []
        tickers: list[np.ndarray] = []
        extended = self.hours == "extended" and not request.timeframe.is_daily
        for ticker in request.tickers:
            consts = _ticker_constants(ticker)
            closes, prev_closes = _close_logs(ticker, days, consts[0])
            for day, close_log, prev_log in zip(days, closes, prev_closes, strict=True):
                spans = self.calendar.trading_spans(day)
                ts = _minutes_in(spans)
                minutes = _session_minutes(ticker, day, ts, (close_log, prev_log), consts)
                if extended:
                    minutes = _with_extended(ticker, day, minutes, self.calendar, consts[1])
                day_start = pd.Timestamp(day, tz=self.calendar.tz).tz_convert("UTC").value
                anchors = self.calendar.extended_spans(day) if extended else spans
                starts = np.array([a.value for a, _ in anchors]) if self.anchor == "session" else None
                parts.append(_resample(minutes, request.timeframe, day_start, starts))
                tickers.append(np.full(parts[-1]["ts"].size, ticker, dtype=object))
        return FetchResult(bars=self._frame(parts, tickers))

    @staticmethod
    def _frame(parts: list[dict[str, np.ndarray]], tickers: list[np.ndarray]) -> pd.DataFrame:
        if not parts:
            return empty_bars()
        columns = {c: np.concatenate([p[c] for p in parts]) for c in PROVIDER_COLUMNS if c != "ticker"}
        frame = pd.DataFrame({"ticker": np.concatenate(tickers), **columns})
        frame["ts"] = pd.to_datetime(frame["ts"], unit="ns", utc=True).astype("datetime64[us, UTC]")
        return frame[list(PROVIDER_COLUMNS)]
