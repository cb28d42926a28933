"""Yahoo Finance through yfinance, under our HTTP policy, with errors surfaced instead of swallowed.

Yahoo serves one symbol per chart request, so a request is split per ticker and, for intraday bars,
into chunks Yahoo accepts (1m: 8 days per request). Intraday history only reaches back so far
(1m: 30 days, 5m/15m: 60 days, 1h: 730 days); older ranges fail at once with a clear error. OHLC
from Yahoo are always split-adjusted; `auto_adjust` also applies dividends (recorded as "all").
"""

import datetime as dt
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import yfinance as yf
from yfinance import exceptions as yfe

from backfill_assets.calendar import TradingCalendar
from backfill_assets.providers.base import BarRequest, FetchResult, ProviderError, regular_hours
from backfill_assets.providers.sessions import BudgetedCurlSession
from backfill_assets.schemas import PROVIDER_COLUMNS, empty_bars

INTERVALS = {"1Min": "1m", "5Min": "5m", "15Min": "15m", "1Hour": "1h", "1Day": "1d"}
HISTORY_DAYS = {"1m": 30, "5m": 60, "15m": 60, "1h": 730}
CHUNK_DAYS = {"1m": 8, "5m": 60, "15m": 60, "1h": 730, "1d": 365 * 100}
_tz_cache_lock = threading.Lock()
_tz_cache_dir: Path | None = None


def use_process_tz_cache() -> Path:
    """Give this process its own yfinance timezone cache: a shared SQLite file locks under parallel runs."""
    global _tz_cache_dir
    with _tz_cache_lock:
        if _tz_cache_dir is None:
            _tz_cache_dir = Path(tempfile.gettempdir()) / f"backfill-assets-yf-{os.getpid()}"
            _tz_cache_dir.mkdir(parents=True, exist_ok=True)
            yf.set_tz_cache_location(str(_tz_cache_dir))
        return _tz_cache_dir


def chunk_sessions(sessions: tuple[dt.date, ...], max_days: int) -> list[tuple[dt.date, ...]]:
    """Consecutive sessions split so each chunk spans at most `max_days` calendar days."""
    chunks: list[list[dt.date]] = []
    for day in sessions:
        if chunks and (day - chunks[-1][0]).days < max_days:
            chunks[-1].append(day)
        else:
            chunks.append([day])
    return [tuple(c) for c in chunks]


class YFinanceProvider:
    """Bars from Yahoo's chart API via yfinance's `Ticker.history(raise_errors=True)`."""

    name = "yfinance"

    def __init__(
        self,
        calendar: TradingCalendar,
        session: BudgetedCurlSession,
        auto_adjust: bool,
        timeout_s: float,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.calendar, self.session, self.auto_adjust, self.timeout_s, self.now = (
            calendar, session, auto_adjust, timeout_s, now,
        )  # fmt: skip
        self.adjustment = "all" if auto_adjust else "split"
        use_process_tz_cache()

    def _check_history_limit(self, interval: str, request: BarRequest) -> None:
        days = HISTORY_DAYS.get(interval)
        if days is None:
            return
        oldest = (self.now() - dt.timedelta(days=days)).date()
        if request.sessions[0] <= oldest:
            raise ProviderError(
                f"yfinance: {request.timeframe.name} bars exist only for the last {days} days "
                f"(after {oldest}); {request.sessions[0]} for {','.join(request.tickers)} cannot be fetched",
                permanent=True,
            )

    def fetch(self, request: BarRequest) -> FetchResult:
        interval = INTERVALS[request.timeframe.name]
        self._check_history_limit(interval, request)
        frames: list[pd.DataFrame] = []
        failed: dict[str, str] = {}
        for ticker in request.tickers:
            try:
                for chunk in chunk_sessions(request.sessions, CHUNK_DAYS[interval]):
                    frames.append(self._history(ticker, chunk, interval))
            except yfe.YFTickerMissingError as exc:  # unknown or delisted symbol: that ticker alone fails
                failed[ticker] = f"yfinance has no data for {ticker}: {exc}"
        frame = pd.concat(frames, ignore_index=True) if frames else empty_bars()
        return FetchResult(bars=regular_hours(frame, self.calendar, request.timeframe), failed=failed)

    def _history(self, ticker: str, sessions: tuple[dt.date, ...], interval: str) -> pd.DataFrame:
        span = f"{ticker} {sessions[0]}..{sessions[-1]} ({interval})"
        try:
            history = yf.Ticker(ticker, session=self.session).history(
                start=sessions[0].isoformat(),
                end=(sessions[-1] + dt.timedelta(days=1)).isoformat(),  # yfinance's end is exclusive
                interval=interval,
                auto_adjust=self.auto_adjust,
                actions=False,
                prepost=False,
                repair=False,
                timeout=self.timeout_s,
                raise_errors=True,
            )
        except yfe.YFTickerMissingError:
            raise
        except yfe.YFRateLimitError as exc:
            raise ProviderError(f"yfinance rate-limited fetching {span} after retries: {exc}") from None
        except yfe.YFException as exc:
            permanent = "422" in str(exc) or "Unprocessable" in str(exc) or "must be within" in str(exc)
            raise ProviderError(f"yfinance failed fetching {span}: {exc}", permanent=permanent) from None
        return self._frame(ticker, history)

    @staticmethod
    def _frame(ticker: str, history: pd.DataFrame) -> pd.DataFrame:
        if history.empty:
            return empty_bars()
        ts = pd.DatetimeIndex(history.index).tz_convert("UTC").astype("datetime64[us, UTC]")
        frame = pd.DataFrame(
            {
                "ticker": ticker,
                "ts": ts,
                "open": history["Open"].to_numpy("float64"),
                "high": history["High"].to_numpy("float64"),
                "low": history["Low"].to_numpy("float64"),
                "close": history["Close"].to_numpy("float64"),
                "volume": history["Volume"].to_numpy("float64"),
                "trade_count": pd.array([None] * len(history), dtype="Int64"),  # Yahoo has no trade counts
                "vwap": float("nan"),
            }
        )
        return frame[list(PROVIDER_COLUMNS)]
