"""The canonical bars contract and the validation every frame passes before it is written."""

import datetime as dt
from collections.abc import Mapping

import numpy as np
import pandas as pd

# Columns a provider returns, in order; the store adds the lineage columns below.
PROVIDER_COLUMNS = ("ticker", "ts", "open", "high", "low", "close", "volume", "trade_count", "vwap")
LINEAGE_COLUMNS = ("session_date", "provider", "timeframe", "adjustment", "fetched_at")
BARS_COLUMNS = (
    "ticker", "ts", "session_date", "open", "high", "low", "close", "volume", "trade_count",
    "vwap", "provider", "timeframe", "adjustment", "fetched_at",
)  # fmt: skip
BARS_SQL_TYPES: Mapping[str, str] = {
    "ticker": "VARCHAR",
    "ts": "TIMESTAMPTZ",
    "session_date": "DATE",
    "open": "DOUBLE",
    "high": "DOUBLE",
    "low": "DOUBLE",
    "close": "DOUBLE",
    "volume": "DOUBLE",
    "trade_count": "BIGINT",
    "vwap": "DOUBLE",
    "provider": "VARCHAR",
    "timeframe": "VARCHAR",
    "adjustment": "VARCHAR",
    "fetched_at": "TIMESTAMPTZ",
}


class BarValidationError(ValueError):
    """A bar that must not be stored; the message names the ticker, the ts and the rule."""


def empty_bars() -> pd.DataFrame:
    """A zero-row frame with the provider columns and their dtypes."""
    return pd.DataFrame(
        {
            "ticker": pd.Series([], dtype=object),
            "ts": pd.Series([], dtype="datetime64[us, UTC]"),
            **{c: pd.Series([], dtype="float64") for c in ("open", "high", "low", "close", "volume")},
            "trade_count": pd.Series([], dtype="int64"),
            "vwap": pd.Series([], dtype="float64"),
        }
    )


def _fail(frame: pd.DataFrame, mask: np.ndarray | np.bool_, rule: str) -> None:
    mask = np.asarray(mask, dtype=bool)
    if mask.any():
        first = frame.loc[mask].iloc[0]
        raise BarValidationError(
            f"{rule}: ticker {first['ticker']} ts {pd.Timestamp(first['ts']).isoformat()} "
            f"({int(mask.sum())} bar(s) affected)"
        )


def validate_bars(
    frame: pd.DataFrame,
    exchange_tz: str,
    slices: set[tuple[str, dt.date]],
    days: pd.Series | None = None,
) -> None:
    """Raise BarValidationError on the first rule a provider frame breaks.

    Rules: finite positive prices, high >= max(open, close), low <= min(open, close),
    non-negative volume, unique (ticker, ts), and each bar's exchange-local day being one of the
    requested (ticker, session) `slices`. `days`, if the caller has it, is `session_of(frame["ts"])`.
    """
    if frame.empty:
        return
    prices = frame[["open", "high", "low", "close"]].to_numpy(dtype="float64")
    _fail(frame, ~np.isfinite(prices).all(axis=1), "missing or non-finite price")
    _fail(frame, (prices <= 0).any(axis=1), "non-positive price")
    o, h, low, c = prices.T
    _fail(frame, h < np.maximum(o, c), "high below max(open, close)")
    _fail(frame, low > np.minimum(o, c), "low above min(open, close)")
    volume = frame["volume"].to_numpy(dtype="float64")
    _fail(frame, ~np.isfinite(volume) | (volume < 0), "negative or missing volume")
    _fail(frame, frame.duplicated(["ticker", "ts"], keep="first").to_numpy(), "duplicate timestamp")
    day = session_of(frame["ts"], exchange_tz) if days is None else days
    pairs = pd.DataFrame({"ticker": frame["ticker"], "day": day})
    if not set(distinct_pairs(pairs)) <= slices:  # the per-row mask only on the failure path
        requested = [key in slices for key in zip(pairs["ticker"], pairs["day"], strict=True)]
        _fail(frame, ~np.array(requested), "bar outside the requested sessions' days")


def session_of(ts: pd.Series, exchange_tz: str) -> pd.Series:
    """The exchange-local calendar date of each bar start (datetime.date objects).

    Bars share few days, so the dates are built once per distinct day, not once per bar (which cost
    about a second per million bars)."""
    days = ts.dt.tz_convert(exchange_tz).dt.tz_localize(None).dt.normalize()
    codes, uniques = pd.factorize(days)
    dates = np.array([day.date() for day in uniques] + [None], dtype=object)
    return pd.Series(dates[codes], index=ts.index, name=ts.name)  # code -1 (NaT) -> None


def distinct_pairs(frame: pd.DataFrame) -> list[tuple[str, dt.date]]:
    """The distinct (ticker, day) rows of a two-column frame, deduplicated before Python sees them."""
    unique = frame.drop_duplicates()
    return list(zip(unique.iloc[:, 0], unique.iloc[:, 1], strict=True))
