"""Yahoo Finance through yfinance, under our HTTP policy, with errors surfaced instead of swallowed.

Yahoo serves one symbol per chart request, so a request is split per ticker and, for intraday bars,
into chunks Yahoo accepts (1m: 8 days per request). Intraday history only reaches back so far
(1m: 30 days, 5m/15m: 60 days, 1h: 730 days); older ranges fail at once with a clear error. OHLC
from Yahoo are always split-adjusted; `auto_adjust` also applies dividends (recorded as "all").
Daily bars keep yfinance's stamp, 00:00 exchange time, the project's daily convention.
"""

import atexit
import datetime as dt
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import yfinance as yf
from yfinance import cache as yf_cache
from yfinance import exceptions as yfe
from yfinance.data import YfData

from backfill_assets.calendar import TradingCalendar
from backfill_assets.providers.base import BarRequest, FetchResult, ProviderError, hours_filter, own_symbols
from backfill_assets.providers.sessions import BudgetedCurlSession
from backfill_assets.schemas import PROVIDER_COLUMNS, empty_bars

INTERVALS = {"1Min": "1m", "5Min": "5m", "15Min": "15m", "30Min": "30m", "1Hour": "1h", "1Day": "1d"}
HISTORY_DAYS = {"1m": 30, "5m": 60, "15m": 60, "30m": 60, "1h": 730}
CHUNK_DAYS = {"1m": 8, "5m": 60, "15m": 60, "30m": 60, "1h": 730, "1d": 365 * 100}
# Yahoo's chart errors (yfinance passes on their description) that retrying cannot fix.
UNKNOWN_SYMBOL = ("No data found", "delisted")
BAD_REQUEST = ("must be within", "Invalid input", "not supported", "Unprocessable")
_setup_lock = threading.Lock()
_setup: tuple[int, Path] | None = None  # (pid, cache dir) of the process that configured yfinance


def configure_yfinance() -> Path:
    """Once per process: yfinance raises instead of logging, and keeps its caches in a directory of
    this process (a SQLite file shared by parallel runs fails with "database is locked")."""
    global _setup
    with _setup_lock:
        if _setup is None or _setup[0] != os.getpid():  # a forked child must not reuse its parent's
            directory = Path(tempfile.gettempdir()) / f"backfill-assets-yf-{os.getpid()}"
            directory.mkdir(parents=True, exist_ok=True)
            yf.set_tz_cache_location(str(directory))
            yf.config.debug.hide_exceptions = False  # what the deprecated `raise_errors=True` did
            # Open the databases now, under the lock: their lazy first use is unsynchronised, and
            # threads racing to set up a fresh file fail with "database is locked" too.
            yf_cache.get_tz_cache().lookup("")
            yf_cache.get_cookie_cache().lookup("")
            atexit.register(shutil.rmtree, directory, ignore_errors=True)
            _setup = (os.getpid(), directory)
        return _setup[1]


def chunk_sessions(sessions: tuple[dt.date, ...], max_days: int, tz: str) -> list[tuple[dt.date, ...]]:
    """Consecutive sessions split so each request window, [first 00:00, day after last 00:00) in
    exchange time, lasts at most `max_days` x 24 h: a window over a DST change gains or loses an hour."""
    zone, limit = ZoneInfo(tz), max_days * 86400

    def midnight(day: dt.date) -> float:
        return dt.datetime.combine(day, dt.time(), zone).timestamp()

    chunks: list[list[dt.date]] = []
    for day in sessions:
        if chunks and midnight(day + dt.timedelta(days=1)) - midnight(chunks[-1][0]) <= limit:
            chunks[-1].append(day)
        else:
            chunks.append([day])
    return [tuple(c) for c in chunks]


class _UnknownSymbol(Exception):
    """Yahoo does not know the ticker: that ticker alone fails."""


class YFinanceProvider:
    """Bars from Yahoo's chart API via yfinance's `Ticker.history`."""

    name = "yfinance"

    def __init__(
        self,
        calendar: TradingCalendar,
        session: BudgetedCurlSession,
        auto_adjust: bool,
        timeout_s: float,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        hours: str = "regular",
    ) -> None:
        self.hours = hours  # extended: prepost=True, the exchange day's every bar
        self.calendar, self.session, self.auto_adjust, self.timeout_s, self.now = (
            calendar, session, auto_adjust, timeout_s, now,
        )  # fmt: skip
        self.adjustment = "all" if auto_adjust else "split"
        configure_yfinance()

    def _check_history_limit(self, interval: str, request: BarRequest) -> None:
        days = HISTORY_DAYS.get(interval)
        if days is None:
            return
        oldest = (self.now() - dt.timedelta(days=days)).date()
        if request.sessions[0] <= oldest:
            raise ProviderError(
                f"yfinance: {request.timeframe.name} bars exist only for the last {days} days "
                f"(after {oldest}); {','.join(request.tickers)} "
                f"{request.sessions[0]}..{request.sessions[-1]} cannot be fetched",
                permanent=True,
            )

    def fetch(self, request: BarRequest) -> FetchResult:
        request, refused = own_symbols(request, self.name)
        interval = INTERVALS[request.timeframe.name]
        self._check_history_limit(interval, request)
        chunks = chunk_sessions(request.sessions, CHUNK_DAYS[interval], self.calendar.tz)
        span = f"{request.sessions[0]}..{request.sessions[-1]}"
        frames: list[pd.DataFrame] = []
        failed: dict[str, str] = dict(refused)
        for ticker in request.tickers:
            try:  # a ticker's bars are kept only if all its chunks came back
                bars = pd.concat([self._history(ticker, chunk, interval) for chunk in chunks])
            except _UnknownSymbol as exc:
                failed[ticker] = f"yfinance has no data for {ticker} ({exc})"
                continue
            if bars.empty:
                failed[ticker] = f"yfinance returned no bars for {ticker} over {span}"
            else:
                frames.append(bars)
        frame = pd.concat(frames, ignore_index=True) if frames else empty_bars()
        keep = hours_filter(self.hours)
        kept = keep(frame, self.calendar, request.timeframe)
        return FetchResult(bars=kept, failed=failed, dropped=len(frame) - len(kept))

    def _history(self, ticker: str, sessions: tuple[dt.date, ...], interval: str) -> pd.DataFrame:
        """One chart request; an unreadable body (cut, or a proxy's HTML page) is asked for again."""
        span = f"{ticker} {sessions[0]}..{sessions[-1]} ({interval})"
        retry = self.session.transport.retry
        for attempt in range(retry.max_retries + 1):
            try:
                history = self._chart(ticker, sessions, interval, span)
            except ValueError as exc:  # json.JSONDecodeError, raised bare by yfinance
                unreadable = f"{type(exc).__name__}: {exc}"
                # yfinance memoizes answers for past dates process-wide, unreadable ones too.
                YfData.cache_get.cache_clear()
            else:
                return self._frame(ticker, history)
            if attempt < retry.max_retries:
                time.sleep(retry.backoff(attempt))
        # Permanent like an open circuit: the HTTP layer's retries are spent, the step's would be too.
        raise ProviderError(
            f"yfinance got {retry.max_retries + 1} unreadable chart answers in a row for {span}; "
            f"last: {unreadable}",
            permanent=True,
        )

    def _chart(self, ticker: str, sessions: tuple[dt.date, ...], interval: str, span: str) -> pd.DataFrame:
        symbol = yf.Ticker(ticker, session=self.session)
        # Sessions are exchange-local days of our calendar: give yfinance its timezone rather than
        # spend a request per ticker looking it up (a failed look-up would read as "unknown symbol").
        symbol._tz = self.calendar.tz
        try:
            return symbol.history(
                start=sessions[0].isoformat(),
                end=(sessions[-1] + dt.timedelta(days=1)).isoformat(),  # yfinance's end is exclusive
                interval=interval,
                auto_adjust=self.auto_adjust,
                actions=False,
                prepost=self.hours == "extended",
                repair=False,
                timeout=self.timeout_s,
            )
        except yfe.YFPricesMissingError as exc:
            if exc.yahoo_reason is None:  # Yahoo answered, with no bars in this window
                return pd.DataFrame()
            YfData.cache_get.cache_clear()
            reason = f"Yahoo: {exc.yahoo_reason}"
            if any(s in exc.yahoo_reason for s in UNKNOWN_SYMBOL):
                raise _UnknownSymbol(reason) from None
            permanent = any(s in exc.yahoo_reason for s in BAD_REQUEST)
            raise ProviderError(f"yfinance failed fetching {span}: {reason}", permanent=permanent) from None
        except yfe.YFTickerMissingError as exc:  # no timezone: yfinance's own unknown-symbol signal
            raise _UnknownSymbol(exc.rationale) from None
        except yfe.YFRateLimitError as exc:
            raise ProviderError(f"yfinance rate-limited fetching {span} after retries: {exc}") from None
        except (yfe.YFException, OSError) as exc:  # Yahoo down, or the network after retries
            YfData.cache_get.cache_clear()
            raise ProviderError(f"yfinance failed fetching {span}: {exc}") from None

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
