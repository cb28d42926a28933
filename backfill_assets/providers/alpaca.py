"""Alpaca market data through alpaca-py's StockHistoricalDataClient, under our HTTP policy.

One request covers many symbols over consecutive sessions; alpaca-py follows `next_page_token`
(pages of up to 10,000 bars across all symbols). Windows are computed in exchange time: a daily
bar is stamped 00:00 New York, so a naive-UTC end would drop the last session.
"""

import datetime as dt

import pandas as pd
from alpaca.common.exceptions import APIError
from alpaca.data.enums import Adjustment, DataFeed
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.requests import StockBarsRequest
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

from backfill_assets.anchored import aggregate, source_minutes
from backfill_assets.calendar import TradingCalendar
from backfill_assets.providers.base import BarRequest, FetchResult, ProviderError, hours_filter, own_symbols
from backfill_assets.providers.sessions import BudgetedSession
from backfill_assets.schemas import PROVIDER_COLUMNS, empty_bars
from backfill_assets.timeframes import Timeframe, minutes_timeframe

DEFAULT_URL = "https://data.alpaca.markets"
PERMANENT_STATUS = frozenset({400, 401, 403, 404, 422})


# Alpaca's bar fields by our column names.
FIELDS = {"ts": "t", "open": "o", "high": "h", "low": "l", "close": "c", "volume": "v",
          "trade_count": "n", "vwap": "vw"}  # fmt: skip


def alpaca_timeframe(timeframe: Timeframe) -> TimeFrame:
    if timeframe.is_daily:
        return TimeFrame(1, TimeFrameUnit.Day)
    if timeframe.minutes % 60 == 0:
        return TimeFrame(timeframe.minutes // 60, TimeFrameUnit.Hour)
    return TimeFrame(timeframe.minutes, TimeFrameUnit.Minute)


def _api_message(exc: APIError) -> str:
    """Alpaca's error message; a gateway's HTML page is not JSON, so APIError.message would raise."""
    try:
        return str(exc.message)
    except ValueError:
        return str(exc)[:200]


class AlpacaProvider:
    """Bars from Alpaca's `/v2/stocks/bars`; `adjustment` and `feed` are recorded on every row."""

    name = "alpaca"

    def __init__(
        self,
        calendar: TradingCalendar,
        session: BudgetedSession,
        api_key: str,
        secret_key: str,
        base_url: str = DEFAULT_URL,
        feed: str = "iex",
        adjustment: str = "raw",
        parallel_requests: int = 1,
        hours: str = "regular",
    ) -> None:
        self.calendar, self.feed, self.adjustment, self.hours = calendar, DataFeed(feed), adjustment, hours
        self.parallel_requests = parallel_requests  # requests ingest may have in flight at once
        self.bars_per_page = 10_000  # alpaca-py's page size (the API's maximum)
        self._adjustment = Adjustment(adjustment)
        self._client = StockHistoricalDataClient(api_key, secret_key, raw_data=True, url_override=base_url)
        # alpaca-py has no parameter for these: its session and its fixed-3-s retry (which ignores
        # Retry-After and sets no timeout) are replaced so our Transport owns budget and retries.
        self._client._session = session
        self._client._retry = 0

    def _windows(self, request: BarRequest) -> list[tuple[dt.datetime, dt.datetime]]:
        """[start, end] (Alpaca's end is inclusive) of each call. Alpaca has no regular-hours filter
        and sends the whole exchange day: a request whose every session fills a page by itself (one
        session, or many tickers) asks per session for [open, close) instead; a long range of few
        tickers asks for whole days, since a call per session would cost more than the outside-hours
        bars it saves (they are dropped and counted in `FetchResult.dropped`)."""
        tz, second = self.calendar.tz, pd.Timedelta(seconds=1)
        per_page = len(request.tickers) * request.timeframe.bars_per_session >= self.bars_per_page
        whole_days = self.hours == "extended" or not (len(request.sessions) == 1 or per_page)
        if request.timeframe.is_daily or whole_days:
            start = pd.Timestamp(request.sessions[0], tz=tz)
            end = pd.Timestamp(request.sessions[-1], tz=tz) + pd.Timedelta(days=1) - second
            return [(start.tz_convert("UTC").to_pydatetime(), end.tz_convert("UTC").to_pydatetime())]
        bounds = [self.calendar.open_close(day) for day in request.sessions]
        return [(o.to_pydatetime(), (c - second).to_pydatetime()) for o, c in bounds]

    def _get(self, request: BarRequest, timeframe: Timeframe, start: dt.datetime, end: dt.datetime) -> object:
        span = f"{request.sessions[0]}..{request.sessions[-1]}"
        what = f"{','.join(request.tickers)} {span}"
        params = StockBarsRequest(
            symbol_or_symbols=list(request.tickers),
            timeframe=alpaca_timeframe(timeframe),
            start=start,
            end=end,
            adjustment=self._adjustment,
            feed=self.feed,
        )
        try:
            return self._client.get_stock_bars(params)
        except APIError as exc:
            permanent = exc.status_code in PERMANENT_STATUS
            raise ProviderError(
                f"alpaca refused bars for {what}: HTTP {exc.status_code} {_api_message(exc)}",
                permanent=permanent,
            ) from None
        except ValueError as exc:  # malformed or truncated JSON that survived the retries
            raise ProviderError(f"alpaca sent an unreadable payload for {what}: {exc}") from None

    def fetch(self, request: BarRequest) -> FetchResult:
        request, refused = own_symbols(request, self.name)
        if not request.tickers:
            return FetchResult(bars=empty_bars(), failed=refused)
        # Alpaca's buckets are clock-aligned: fetch the coarsest size aligned to the session too
        # (30Min for 1Hour on XNYS), keep regular hours, then build the bars anchored at the open.
        extended = self.hours == "extended"
        minutes = source_minutes(self.calendar, request.sessions, request.timeframe, extended)
        fetched = request.timeframe if minutes == request.timeframe.minutes else minutes_timeframe(minutes)
        served = pd.concat(
            [self._frame(self._get(request, fetched, a, b)) for a, b in self._windows(request)],
            ignore_index=True,
        )
        keep = hours_filter(self.hours)
        frame = keep(served, self.calendar, fetched)
        dropped = len(served) - len(frame)
        if fetched is not request.timeframe:
            frame = aggregate(frame, self.calendar, request.timeframe, extended)
        span = f"{request.sessions[0]}..{request.sessions[-1]}"
        missing = sorted(set(request.tickers) - set(frame["ticker"]))
        failed = {
            t: f"alpaca returned no bars for {t} over {span} (unknown or unlisted symbol)" for t in missing
        }
        return FetchResult(bars=frame, failed=failed | refused, dropped=dropped)

    @staticmethod
    def _frame(raw: object) -> pd.DataFrame:
        if not isinstance(raw, dict) or not raw:
            return empty_bars()
        bars = [bar for symbol_bars in raw.values() for bar in symbol_bars]
        # Column by column: a list per field is several times cheaper than a row tuple per bar.
        columns = {
            "ticker": [symbol for symbol, symbol_bars in raw.items() for _ in symbol_bars],
            **{name: [bar.get(key) for bar in bars] for name, key in FIELDS.items()},
        }
        frame = pd.DataFrame(columns, columns=list(PROVIDER_COLUMNS))
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="ISO8601").astype("datetime64[us, UTC]")
        for name in ("open", "high", "low", "close", "volume", "vwap"):
            frame[name] = frame[name].astype("float64")
        frame["trade_count"] = frame["trade_count"].fillna(0).astype("int64")
        return frame
