"""Coarse bars anchored at the session: a bucket starts at its trading span's start plus whole bar
widths (09:30, 10:30, ... on XNYS; after a lunch break, at the break's end), never at the clock's hh:00.

Alpaca stamps hourly bars at hh:00, so its 09:00 bar mixes 09:00-09:30 pre-market trades into the
first regular half hour. A provider whose bars are not aligned to the session therefore fetches the
finest timeframe that is (`source_minutes`: 30-minute bars for 1Hour on XNYS, each of them wholly
inside or wholly outside regular hours) and builds the coarse bars here, from regular-hours bars only.
"""

import datetime as dt
import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from backfill_assets.calendar import TradingCalendar
from backfill_assets.schemas import PROVIDER_COLUMNS
from backfill_assets.timeframes import Timeframe

NS_PER_MINUTE = 60_000_000_000


def span_starts(calendar: TradingCalendar, days: Iterable[dt.date], extended: bool = False) -> np.ndarray:
    """UTC ns of every span's start over `days`, sorted: the open and a break's end, and with
    `extended` hours also 04:00 and the close (calendar.extended_spans)."""
    spans = calendar.extended_spans if extended else calendar.trading_spans
    return np.array(sorted(start.value for day in days for start, _ in spans(day)), dtype="int64")


def bucket_of(ts_ns: np.ndarray, starts_ns: np.ndarray, minutes: int) -> np.ndarray:
    """The anchored bucket start of each bar start `ts_ns` (all inside spans of `starts_ns`)."""
    width = minutes * NS_PER_MINUTE
    span = starts_ns[np.searchsorted(starts_ns, ts_ns, side="right") - 1]
    return span + (ts_ns - span) // width * width


def source_minutes(
    calendar: TradingCalendar, days: Iterable[dt.date], timeframe: Timeframe, extended: bool = False
) -> int:
    """The coarsest bar size whose clock-aligned buckets are also anchored at every span start of
    `days` (the gcd of the width and each start's minute of the day): the timeframe itself on XNYS
    for 5, 15 and 30 minutes, 30 for 1Hour (09:30 is not on the hour)."""
    if timeframe.is_daily:
        return timeframe.minutes
    size = timeframe.minutes
    for start in span_starts(calendar, days, extended):
        size = math.gcd(size, int(start // NS_PER_MINUTE) % (24 * 60))
    return size


def aggregate(
    frame: pd.DataFrame, calendar: TradingCalendar, timeframe: Timeframe, extended: bool = False
) -> pd.DataFrame:
    """`frame`'s bars (provider columns, finer and aligned; inside the spans, `extended` or not) as
    anchored `timeframe` bars: first open, highest high, lowest low, last close, summed volume and
    trades, and the volume-weighted vwap."""
    if frame.empty:
        return frame
    ts = pd.DatetimeIndex(frame["ts"]).as_unit("ns").asi8
    local = frame["ts"].dt.tz_convert(calendar.tz).dt.date.unique()
    days = [d for d in local if calendar.is_session(d)]
    order = np.lexsort((ts, frame["ticker"].to_numpy()))
    frame = frame.iloc[order].reset_index(drop=True)
    bucket = bucket_of(ts[order], span_starts(calendar, days, extended), timeframe.minutes)
    volume = frame["volume"].to_numpy("float64")
    weighted = frame["vwap"].to_numpy("float64") * volume
    keys = frame.assign(bucket=bucket, weighted=weighted).groupby(["ticker", "bucket"], sort=False)
    out = keys.agg(
        open=("open", "first"),
        high=("high", "max"),
        low=("low", "min"),
        close=("close", "last"),
        volume=("volume", "sum"),
        trade_count=("trade_count", "sum"),
        weighted=("weighted", "sum"),
    ).reset_index()
    with np.errstate(divide="ignore", invalid="ignore"):
        out["vwap"] = np.where(out["volume"] > 0, out["weighted"] / out["volume"], np.nan)
    out["ts"] = pd.to_datetime(out["bucket"].to_numpy("int64"), unit="ns", utc=True).astype(
        "datetime64[us, UTC]"
    )
    return out[list(PROVIDER_COLUMNS)]
