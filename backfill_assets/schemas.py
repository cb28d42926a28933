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


Slice = tuple[str, dt.date]


def _first(frame: pd.DataFrame, mask: np.ndarray, rule: str) -> str:
    first = frame.loc[mask].iloc[0]
    return (
        f"{rule}: ticker {first['ticker']} ts {pd.Timestamp(first['ts']).isoformat()} "
        f"({int(mask.sum())} bar(s) affected)"
    )


def _rules(frame: pd.DataFrame) -> list[tuple[str, np.ndarray]]:
    """Each per-bar rule and the mask of the bars breaking it, in the order they are reported."""
    prices = frame[["open", "high", "low", "close"]].to_numpy(dtype="float64")
    o, h, low, c = prices.T
    volume = frame["volume"].to_numpy(dtype="float64")
    return [
        ("missing or non-finite price", ~np.isfinite(prices).all(axis=1)),
        ("non-positive price", (prices <= 0).any(axis=1)),
        ("high below max(open, close)", h < np.maximum(o, c)),
        ("low above min(open, close)", low > np.minimum(o, c)),
        ("negative or missing volume", ~np.isfinite(volume) | (volume < 0)),
        ("duplicate timestamp", frame.duplicated(["ticker", "ts"], keep="first").to_numpy()),
    ]


def bad_slices(
    frame: pd.DataFrame,
    exchange_tz: str,
    slices: set[Slice],
    days: pd.Series | None = None,
) -> dict[Slice, str]:
    """The requested (ticker, session) `slices` holding a bar that must not be stored, each with the
    first rule it breaks, naming the ticker, the first bad ts and how many bars break it.

    Rules: finite positive prices, high >= max(open, close), low <= min(open, close), non-negative
    volume, unique (ticker, ts), and each bar's exchange-local day being a requested session of its
    ticker; a bar on another day fails every requested slice of its ticker (the provider answered
    that ticker wrongly). `days`, if the caller has it, is `session_of(frame["ts"])`. The per-slice
    grouping runs only on the failure path: a clean frame costs the vector rules alone.
    """
    if frame.empty:
        return {}
    day = session_of(frame["ts"], exchange_tz) if days is None else days
    pairs = pd.DataFrame({"ticker": frame["ticker"], "day": day})
    bad: dict[Slice, str] = {}
    if not set(distinct_pairs(pairs)) <= slices:
        outside = ~np.array([key in slices for key in zip(pairs["ticker"], pairs["day"], strict=True)])
        for ticker in pd.unique(frame.loc[outside, "ticker"]):
            mask = outside & (frame["ticker"] == ticker).to_numpy()
            reason = _first(frame, mask, "bar outside the requested sessions' days")
            bad |= {key: reason for key in slices if key[0] == ticker}
    for rule, mask in _rules(frame):
        if not mask.any():
            continue
        for key in distinct_pairs(pairs[mask]):
            if key in slices and key not in bad:
                rows = mask & (pairs["ticker"] == key[0]).to_numpy() & (pairs["day"] == key[1]).to_numpy()
                bad[key] = _first(frame, rows, rule)
    return bad


def validate_bars(
    frame: pd.DataFrame,
    exchange_tz: str,
    slices: set[Slice],
    days: pd.Series | None = None,
) -> None:
    """Raise BarValidationError naming the first bad slice's rule (see `bad_slices`)."""
    bad = bad_slices(frame, exchange_tz, slices, days)
    if bad:
        raise BarValidationError(next(iter(sorted(bad.items())))[1])


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
