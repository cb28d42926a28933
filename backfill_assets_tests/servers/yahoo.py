"""A protocol-faithful fake of Yahoo Finance's chart API, as reached by yfinance 1.7.0, for tests.

yfinance talks to several hosts: `fc.yahoo.com` (sets the A3 cookie), `query1|query2.finance.yahoo.com`
(`/v1/test/getcrumb`, `/v8/finance/chart/{SYMBOL}`, and for unknown symbols `/v10/finance/quoteSummary`,
`/v7/finance/quote`, `/ws/fundamentals-timeseries/...`) and, after any HTTP error, the csrf consent flow
on `guce.yahoo.com` / `consent.yahoo.com`. `yahoo_session()` sends all of them here, naming the original
host in `X-Original-Host`, so one local server can route them.

Chart answers use Yahoo's JSON shape: split-adjusted OHLC, `adjclose` for daily bars, `splits` events,
`tradingPeriods` for intraday, 404 for unknown symbols, 422 for intraday history limits, and a
plain-text 429 ("Edge: Too Many Requests", no rate-limit headers) when over the configured rate.

Imports curl_cffi and requests (yfinance's own deps); the project's calendar and SyntheticProvider and
yfinance itself are imported lazily.
"""

import atexit
import contextlib
import copy
import dataclasses
import datetime as dt
import http.cookiejar
import json
import math
import shutil
import socket
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

import curl_cffi.requests
import requests

if TYPE_CHECKING:
    from backfill_assets.calendar import TradingCalendar

UTC = dt.UTC
NEW_YORK = ZoneInfo("America/New_York")
CHART_PATH = "/v8/finance/chart/"
CRUMB = "fAkEcRuMb.0"  # Yahoo crumbs are ~11 url-safe characters
FIRST_TRADE = 946909800  # 2000-01-03 09:30 New York: the synthetic calendar's first session

Bar = dict[str, Any]  # {"t": aware UTC datetime, "o","h","l","c": float, "v": float}
BarSource = Callable[[str, str, dt.datetime, dt.datetime], list[Bar]]  # (symbol, interval, start, end)
Fault = int | str  # an HTTP status, or "slow" | "malformed" | "truncated"

# What Yahoo accepts in `interval`; the BarSource decides which of these it can produce.
INTERVALS = ("1m", "2m", "5m", "15m", "30m", "60m", "90m", "1h", "4h", "1d", "5d", "1wk", "1mo", "3mo")
DAILY = frozenset({"1d", "5d", "1wk", "1mo", "3mo"})  # only these carry `adjclose`
# How far back Yahoo serves intraday bars, in days before now.
HISTORY_DAYS = {"1m": 30, "2m": 60, "5m": 60, "15m": 60, "30m": 60, "90m": 60, "60m": 730, "1h": 730}
MAX_1M_SPAN_S = 8 * 86400  # 1m: at most 8 days per request
VALID_RANGES = ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max"]
RANGE_DAYS = {"1mo": 31, "3mo": 92, "6mo": 183, "1y": 366, "2y": 731, "5y": 1827, "10y": 3653}


@dataclass
class YahooServerConfig:
    bars: BarSource | None = None  # raw (unadjusted) bars; None = synthetic_bar_source(), built at start()
    prepost_bars: BarSource | None = None  # the same with pre-market and after-hours (includePrePost=true)
    unknown_symbols: frozenset[str] = frozenset()  # answered 404 "No data found, symbol may be delisted"
    rate_limit: int | None = None  # API requests (query1/query2 hosts) per rate_window_s; None = unlimited
    rate_window_s: float = 60.0
    faults: list[Fault | None] = field(default_factory=list)  # one per chart request, in order
    slow_s: float = 5.0  # how long a "slow" fault stalls before answering
    latency_s: float = 0.0  # added to every request
    now: dt.datetime | None = None  # the server's "now" for history limits and ranges; None = real now
    splits: dict[str, tuple[dt.date, float]] = field(default_factory=dict)  # symbol -> (ex-date, ratio)


@dataclass(frozen=True)
class RequestRecord:
    time: float  # time.monotonic() on arrival
    method: str
    path: str
    params: dict[str, str]
    status: int
    original_host: str | None  # from X-Original-Host; None if the client called the server directly
    fault: str | None


@dataclass
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json;charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)  # a list: Set-Cookie may repeat


def _json(status: int, payload: object) -> _Reply:
    return _Reply(status, json.dumps(payload, separators=(",", ":")).encode())


def _chart_error(status: int, description: str) -> _Reply:
    error = {"code": HTTPStatus(status).phrase, "description": description}
    return _json(status, {"chart": {"result": None, "error": error}})


def _html(status: int, body: str, cookies: tuple[str, ...] = ()) -> _Reply:
    return _Reply(status, body.encode(), "text/html;charset=utf-8", [("Set-Cookie", c) for c in cookies])


def _cookie(name: str, value: str) -> str:
    # No Domain=.yahoo.com (nor Secure): the client reaches us at http://127.0.0.1 and would drop such
    # a cookie. The session copies it to ".yahoo.com" itself (see _Rewriting._mirror_cookies).
    expires = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 365 * 86400))
    return f"{name}={value}; Expires={expires}; Path=/; HttpOnly"


TOO_MANY = _Reply(429, b"Edge: Too Many Requests", "text/plain;charset=utf-8")
CONSENT_FORM = """<!DOCTYPE html><html><body>
<form method="post" action="https://consent.yahoo.com/v2/collectConsent?sessionId=fake-session">
<input type="hidden" name="csrfToken" value="fake-csrf-token">
<input type="hidden" name="sessionId" value="fake-session">
<input type="hidden" name="originalDoneUrl" value="https://finance.yahoo.com/">
<input type="hidden" name="namespace" value="yahoo">
<button type="submit" name="agree" value="agree">Accept all</button>
</form></body></html>"""


def _finite(x: float) -> float | None:
    return None if math.isnan(x) else x  # Yahoo sends null for missing values; json would write NaN


@lru_cache(maxsize=1)
def _calendar() -> "TradingCalendar":
    """XNYS sessions, for tradingPeriods and split timestamps (every fake symbol trades on NMS)."""
    from backfill_assets.calendar import get_calendar

    return get_calendar("XNYS", dt.date(2000, 1, 3))


def _open_close(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    cal = _calendar()
    if cal.is_session(day):
        o, c = cal.open_close(day)
        return o.to_pydatetime(), c.to_pydatetime()
    local = dt.datetime.combine(day, dt.time(9, 30), NEW_YORK)  # a BarSource bar on a non-session
    return local.astimezone(UTC), (local + dt.timedelta(hours=6, minutes=30)).astimezone(UTC)


def _period(start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
    offset = start.astimezone(NEW_YORK).utcoffset() or dt.timedelta(0)
    tzname = start.astimezone(NEW_YORK).tzname()
    return {"timezone": tzname, "start": int(start.timestamp()), "end": int(end.timestamp()),
            "gmtoffset": int(offset.total_seconds())}  # fmt: skip


def _periods(day: dt.date) -> dict[str, dict[str, Any]]:
    """Pre (04:00-open), regular and post (close + 4h) trading periods of one day, as Yahoo lists them."""
    o, c = _open_close(day)
    pre = dt.datetime.combine(day, dt.time(4, 0), NEW_YORK).astimezone(UTC)
    return {"pre": _period(pre, o), "regular": _period(o, c), "post": _period(c, c + dt.timedelta(hours=4))}


def _last_session(day: dt.date) -> dt.date:
    sessions = _calendar().sessions_in(day - dt.timedelta(days=10), day)
    return sessions[-1] if sessions else day


def _range_window(rng: str, now: dt.datetime) -> tuple[dt.datetime, dt.datetime] | None:
    """[start, now) for a `range=` request; day ranges count sessions, like Yahoo's 1d/5d."""
    today = now.astimezone(NEW_YORK).date()
    if rng.endswith("d") and rng[:-1].isdigit():
        days = _calendar().sessions_in(today - dt.timedelta(days=7 * int(rng[:-1]) + 7), today)
        first = days[-int(rng[:-1])] if len(days) >= int(rng[:-1]) else today
        return dt.datetime.combine(first, dt.time(0), NEW_YORK).astimezone(UTC), now
    if rng == "ytd":
        return dt.datetime(today.year, 1, 1, tzinfo=NEW_YORK).astimezone(UTC), now
    if rng == "max":
        return dt.datetime.fromtimestamp(FIRST_TRADE, UTC), now
    if rng in RANGE_DAYS:
        return now - dt.timedelta(days=RANGE_DAYS[rng]), now
    return None


def _limit_error(interval: str, p1: int, p2: int, now: dt.datetime) -> str | None:
    """Yahoo's 422 description if an intraday request reaches too far back or spans too much."""
    days = HISTORY_DAYS.get(interval)
    if days is None:
        return None
    if p1 < (now - dt.timedelta(days=days)).timestamp():
        return (
            f"{interval} data not available for startTime={p1} and endTime={p2}. "
            f"The requested range must be within the last {days} days."
        )
    if interval == "1m" and p2 - p1 > MAX_1M_SPAN_S:
        return "Only 8 days worth of 1m granularity data are allowed to be fetched per request."
    return None


def _split_event(day: dt.date, ratio: float) -> tuple[int, dict[str, Any]]:
    when = int(_open_close(day)[0].timestamp())  # Yahoo stamps events at the session open
    frac = Fraction(ratio).limit_denominator(1000)
    num, den = float(frac.numerator), float(frac.denominator)
    return when, {"date": when, "numerator": num, "denominator": den,
                  "splitRatio": f"{frac.numerator}:{frac.denominator}"}  # fmt: skip


class _FixedWindow:
    """One fixed window over all API requests. Rejected requests count too, so a client hammering
    through 429s stays limited until the window ends (Yahoo publishes no rules: the strict reading)."""

    def __init__(self) -> None:
        self.end, self.count = 0.0, 0

    def hit(self, limit: int, window_s: float, now: float) -> bool:
        if now >= self.end:
            self.end, self.count = now + window_s, 0
        self.count += 1
        return self.count <= limit


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a client holding a keep-alive connection must not block stop()
    request_queue_size = 128

    def __init__(self, app: "YahooServer") -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.app = app
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # quiet: clients hanging up during a "slow" fault are expected


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so pooled client connections are reused as on Yahoo
    timeout = 30.0
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without NODELAY, Nagle + the client's delayed ACK
        # add ~40 ms to every request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)  # drain the (consent form) body so the connection stays usable
        self.server.app._serve(self)

    do_GET = do_POST = do_HEAD = _dispatch

    def send(self, reply: _Reply) -> None:
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers:
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply.body)
        except OSError:  # the client gave up (its timeout fired during a slow fault)
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet test output


class YahooServer:
    """The fake on 127.0.0.1:<free port>. Change `config` while running only through `configure`."""

    def __init__(self, config: YahooServerConfig | None = None) -> None:
        self.config = config or YahooServerConfig()
        self.log: list[RequestRecord] = []  # appended under the lock; read via records() when busy
        self.errors: list[BaseException] = []  # exceptions in the fake or the BarSource (answered 500)
        self._lock = threading.Lock()
        self._window = _FixedWindow()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> str:
        if self._httpd is not None:
            return self.url
        if self.config.bars is None:
            self.config.bars = synthetic_bar_source()
        if self.config.prepost_bars is None:
            self.config.prepost_bars = synthetic_bar_source(hours="extended")
        _calendar()  # build it now (~1 s) rather than inside the first request's client timeout
        self._httpd = _HTTPServer(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-yahoo", daemon=True
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        httpd.shutdown()
        with httpd.connections_lock:  # wake handler threads parked on idle keep-alive connections
            for conn in list(httpd.connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        if thread is not None:
            thread.join()
        self._httpd = self._thread = None

    def __enter__(self) -> "YahooServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("YahooServer is not running; call start()")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- introspection ---------------------------------------------------------------------------

    def configure(self, **changes: Any) -> None:
        """Change config fields atomically with respect to requests (each request reads one snapshot)."""
        with self._lock:
            for name, value in changes.items():
                if not hasattr(self.config, name):
                    raise AttributeError(f"YahooServerConfig has no field {name!r}")
                setattr(self.config, name, value)

    def records(self) -> list[RequestRecord]:
        with self._lock:
            return list(self.log)

    def chart_requests(self) -> list[RequestRecord]:
        """Only `/v8/finance/chart/...` calls (timezone look-ups included), in arrival order."""
        return [r for r in self.records() if r.path.startswith(CHART_PATH)]

    def clear(self) -> None:
        """Forget the log, errors and the rate-limit window (e.g. between phases of a test)."""
        with self._lock:
            self.log.clear()
            self.errors.clear()
            self._window = _FixedWindow()

    # -- request handling ------------------------------------------------------------------------

    def _serve(self, handler: _Handler) -> None:
        arrived = time.monotonic()
        url = urllib.parse.urlsplit(handler.path)
        params = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        host = handler.headers.get("X-Original-Host")
        api = host is None or host.startswith("query")  # the rate-limited API hosts
        with self._lock:
            cfg = copy.copy(self.config)  # one consistent view even if a test reconfigures mid-request
            limited = (
                api
                and cfg.rate_limit is not None
                and not self._window.hit(cfg.rate_limit, cfg.rate_window_s, arrived)
            )
            # Faults are consumed only by chart requests the limiter let through.
            chart = url.path.startswith(CHART_PATH)
            fault = self.config.faults.pop(0) if chart and not limited and self.config.faults else None
        if cfg.latency_s > 0:
            time.sleep(cfg.latency_s)
        if fault == "slow":
            time.sleep(cfg.slow_s)
        try:
            if limited:
                reply = TOO_MANY
            elif fault in (None, "slow", "truncated"):
                reply = self._answer(cfg, handler.command, host or "", url.path, params)
            else:
                reply = self._fault_reply(fault)
        except Exception as exc:  # a bug here or in the BarSource must not look like a Yahoo answer
            with self._lock:
                self.errors.append(exc)
            reply = _chart_error(500, f"fake server error: {exc!r}")
        if fault == "truncated":  # the real answer cut in half (Content-Length matches the cut)
            reply = dataclasses.replace(reply, body=reply.body[: len(reply.body) // 2])
        label = None if fault is None else str(fault)
        record = RequestRecord(arrived, handler.command, url.path, params, reply.status, host, label)
        with self._lock:
            self.log.append(record)
        handler.send(reply)

    @staticmethod
    def _fault_reply(fault: Fault) -> _Reply:
        if fault == "malformed":  # an HTML error page with status 200, as Yahoo's edge sometimes sends
            return _html(200, "<html><body><h1>Service error</h1></body></html>")
        if not isinstance(fault, int):
            raise ValueError(f"unknown fault {fault!r}")
        if fault == 429:
            return TOO_MANY
        if fault in (502, 503, 504):  # from the edge, not the chart service: HTML
            phrase = f"{fault} {HTTPStatus(fault).phrase}"
            return _html(fault, f"<html><head><title>{phrase}</title></head><body>{phrase}</body></html>")
        if fault == 404:
            return _chart_error(404, "No data found, symbol may be delisted")
        return _chart_error(fault, "injected fault")

    def _answer(
        self, cfg: YahooServerConfig, method: str, host: str, path: str, params: Mapping[str, str]
    ) -> _Reply:
        if host == "fc.yahoo.com":  # Yahoo answers 404 but sets the A3 session cookie
            return _html(404, "<html><body>Not Found</body></html>", (_cookie("A3", "d=fake&S=fake"),))
        if host == "guce.yahoo.com":
            if path == "/consent":  # the csrf strategy scrapes csrfToken/sessionId from this form
                return _html(200, CONSENT_FORM)
            if path == "/copyConsent":
                return _html(
                    200, "<html><body>ok</body></html>", (_cookie("A1", "d=fake"), _cookie("A3", "d=fake"))
                )
        if host == "consent.yahoo.com" and path == "/v2/collectConsent" and method == "POST":
            # Yahoo redirects to guce here; we never redirect, so no Location can lead to a real host.
            return _html(200, "<html><body>ok</body></html>", (_cookie("GUCS", "fake"),))
        if path == "/v1/test/getcrumb":
            return _Reply(200, CRUMB.encode(), "text/plain;charset=utf-8")
        if path.startswith(CHART_PATH):
            return self._chart(cfg, urllib.parse.unquote(path[len(CHART_PATH) :]), params)
        if path.startswith("/v10/finance/quoteSummary/"):
            return self._quote_summary(cfg, urllib.parse.unquote(path.rsplit("/", 1)[1]))
        if path == "/v7/finance/quote":
            symbols = [s for s in params.get("symbols", "").split(",") if s and s not in cfg.unknown_symbols]
            result = [{"symbol": s, "exchangeTimezoneName": "America/New_York", "quoteType": "EQUITY"}
                      for s in symbols]  # fmt: skip
            return _json(200, {"quoteResponse": {"result": result, "error": None}})
        if path.startswith("/ws/fundamentals-timeseries/"):
            return _json(200, {"timeseries": {"result": [], "error": None}})
        error = {"code": "Not Found", "description": "HTTP 404 Not Found"}
        return _json(404, {"finance": {"result": None, "error": error}})

    @staticmethod
    def _quote_summary(cfg: YahooServerConfig, symbol: str) -> _Reply:
        # Reached only when the timezone chart call failed; `quoteType.timeZoneFullName` is what
        # yfinance falls back to.
        if symbol in cfg.unknown_symbols:
            error = {"code": "Not Found", "description": f"Quote not found for symbol: {symbol}"}
            return _json(404, {"quoteSummary": {"result": None, "error": error}})
        quote_type = {"exchange": "NMS", "quoteType": "EQUITY", "symbol": symbol,
                      "timeZoneFullName": "America/New_York", "timeZoneShortName": "EST"}  # fmt: skip
        return _json(200, {"quoteSummary": {"result": [{"quoteType": quote_type}], "error": None}})

    def _chart(self, cfg: YahooServerConfig, symbol: str, params: Mapping[str, str]) -> _Reply:
        if cfg.now is not None and cfg.now.tzinfo is None:
            raise ValueError(f"YahooServerConfig.now must be timezone-aware, got {cfg.now!r}")
        now = (cfg.now or dt.datetime.now(UTC)).astimezone(UTC)
        if symbol in cfg.unknown_symbols:
            return _chart_error(404, "No data found, symbol may be delisted")
        interval = params.get("interval", "1d")
        if interval not in INTERVALS:
            valid = ", ".join(INTERVALS)
            return _chart_error(
                400, f"Invalid input - interval={interval} is not supported. Valid intervals: [{valid}]"
            )
        rng = "" if "period1" in params or "period2" in params else params.get("range", "1mo")
        if rng:
            window = _range_window(rng, now)
            if window is None:
                return _chart_error(400, f"Invalid input - range={rng} is not supported")
            p1, p2 = (int(t.timestamp()) for t in window)
        else:
            p1, p2 = int(params.get("period1") or 0), int(params.get("period2") or now.timestamp())
        if p1 >= p2:
            return _chart_error(
                400, f"Invalid input - start date cannot be after end date. startDate = {p1}, endDate = {p2}"
            )
        if (limit := _limit_error(interval, p1, p2, now)) is not None:
            return _chart_error(422, limit)
        start = dt.datetime.fromtimestamp(p1, UTC)
        end = min(dt.datetime.fromtimestamp(p2, UTC), now)  # Yahoo has no bars from the future
        assert cfg.bars is not None and cfg.prepost_bars is not None  # start() installs the synthetic sources
        prepost = params.get("includePrePost", "").lower() == "true" and interval not in DAILY
        source = cfg.prepost_bars if prepost else cfg.bars
        raw = source(symbol, interval, start, end) if start < end else []
        return _json(200, self._chart_body(cfg, symbol, interval, rng, params, start, end, now, raw))

    @staticmethod
    def _chart_body(
        cfg: YahooServerConfig,
        symbol: str,
        interval: str,
        rng: str,
        params: Mapping[str, str],
        start: dt.datetime,
        end: dt.datetime,
        now: dt.datetime,
        raw: list[Bar],
    ) -> dict[str, Any]:
        bars = sorted(raw, key=lambda b: b["t"])
        ex_date, ratio = cfg.splits.get(symbol, (None, 1.0))
        # Yahoo's OHLC are split-adjusted: bars before the ex-date are divided (volume multiplied).
        before = [ex_date is not None and b["t"].astimezone(NEW_YORK).date() < ex_date for b in bars]
        factors = [ratio if adjust else 1.0 for adjust in before]
        pairs = list(zip(bars, factors, strict=True))
        quote = {k: [_finite(b[k[0]] / f) for b, f in pairs] for k in ("open", "high", "low", "close")}
        quote["volume"] = [None if math.isnan(b["v"]) else int(round(b["v"] * f)) for b, f in pairs]
        today = _last_session(now.astimezone(NEW_YORK).date())
        current = _periods(today)
        meta: dict[str, Any] = {
            "currency": "USD",
            "symbol": symbol,
            "exchangeName": "NMS",
            "fullExchangeName": "NasdaqGS",
            "instrumentType": "EQUITY",
            "firstTradeDate": FIRST_TRADE,
            "regularMarketTime": min(int(now.timestamp()), current["regular"]["end"]),
            "hasPrePostMarketData": True,
            "gmtoffset": current["regular"]["gmtoffset"],
            "timezone": current["regular"]["timezone"],
            "exchangeTimezoneName": "America/New_York",
            "regularMarketPrice": quote["close"][-1] if bars else None,
            "priceHint": 2,
            "currentTradingPeriod": current,
            "dataGranularity": interval,
            "range": rng,
            "validRanges": VALID_RANGES,
        }
        if interval not in DAILY:  # yfinance drops intraday bars outside these (unless prepost)
            first = start.astimezone(NEW_YORK).date()
            last = (end - dt.timedelta(microseconds=1)).astimezone(NEW_YORK).date()  # end is exclusive
            days = set(_calendar().sessions_in(first, last)) | {
                b["t"].astimezone(NEW_YORK).date() for b in bars
            }
            per_day = [_periods(d) for d in sorted(days or {today})]
            if params.get("includePrePost", "").lower() == "true":
                meta["tradingPeriods"] = {k: [[p[k]] for p in per_day] for k in ("pre", "regular", "post")}
            else:
                meta["tradingPeriods"] = [[p["regular"]] for p in per_day]
        result: dict[str, Any] = {"meta": meta}
        if bars:
            result["timestamp"] = [int(b["t"].timestamp()) for b in bars]
        if ex_date is not None and "split" in params.get("events", ""):
            when, event = _split_event(ex_date, ratio)
            if start.timestamp() <= when < end.timestamp():
                result["events"] = {"splits": {str(when): event}}
        # With no bars Yahoo still answers 200, with empty indicator objects.
        result["indicators"] = {"quote": [quote if bars else {}]}
        if interval in DAILY:  # no dividends are modelled, so adjclose == (split-adjusted) close
            result["indicators"]["adjclose"] = [{"adjclose": quote["close"]} if bars else {}]
        return {"chart": {"result": [result], "error": None}}


@contextlib.contextmanager
def running_yahoo(config: YahooServerConfig | None = None) -> Iterator[YahooServer]:
    """`with running_yahoo(cfg) as server:` for tests and fixtures; always stops the server."""
    server = YahooServer(config)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- the client side ---------------------------------------------------------------------------------


class RefusedHostError(RuntimeError):
    """The session was asked for a host that is neither Yahoo nor the fake (never sent anywhere).

    A RuntimeError on purpose: yfinance swallows OSError-like "transient" errors in places.
    """


class _Rewriting:
    """Mixin over a Session class: every *.yahoo.com URL goes to the fake, nothing goes elsewhere."""

    server_url: str
    refused: list[str]
    cookies: Any  # the Session's

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        parts, target = urllib.parse.urlsplit(url), urllib.parse.urlsplit(self.server_url)
        host = parts.hostname or ""
        headers = dict(kwargs.get("headers") or {})
        if host == "yahoo.com" or host.endswith(".yahoo.com"):
            url = urllib.parse.urlunsplit(parts._replace(scheme=target.scheme, netloc=target.netloc))
            headers["X-Original-Host"] = host
        elif parts.netloc != target.netloc:
            self.refused.append(url)
            raise RefusedHostError(f"yahoo_session refuses {method} {url}: only *.yahoo.com is faked")
        kwargs["headers"] = headers
        kwargs["allow_redirects"] = False  # a Location could name a real host and bypass the rewrite
        response = super().request(method, url, *args, **kwargs)  # type: ignore[misc]
        if "X-Original-Host" in headers:
            self._mirror_cookies(target.hostname or "")
        return response

    def _mirror_cookies(self, local_host: str) -> None:
        """Copy the fake's cookies to ".yahoo.com", where a jar talking to the real hosts holds them.

        yfinance persists the ".yahoo.com" A3 cookie in its sqlite cache and reloads it from there;
        without this copy it would call fc.yahoo.com before every request, unlike against Yahoo.
        Curl never sends the copies anywhere: no request goes to a *.yahoo.com host.
        """
        # curl_cffi wraps a CookieJar; a requests jar is one.
        jar: http.cookiejar.CookieJar = getattr(self.cookies, "jar", self.cookies)
        for cookie in list(jar):
            if cookie.domain == local_host:
                mirror = copy.copy(cookie)
                mirror.domain, mirror.domain_specified, mirror.domain_initial_dot = ".yahoo.com", True, True
                jar.set_cookie(mirror)


class YahooCurlSession(_Rewriting, curl_cffi.requests.Session):  # type: ignore[misc]
    """curl_cffi Session (what yfinance creates itself), rewired to the fake."""

    def __init__(self, server_url: str) -> None:
        super().__init__(impersonate="chrome", trust_env=False)  # trust_env: no proxy for loopback
        self.server_url, self.refused = server_url.rstrip("/"), []


class YahooRequestsSession(_Rewriting, requests.Session):  # type: ignore[misc]
    """Plain requests Session, rewired to the fake. yfinance accepts it, but catches only curl_cffi's
    exception classes: e.g. an unknown symbol's quoteSummary 404 escapes as requests.HTTPError."""

    def __init__(self, server_url: str) -> None:
        super().__init__()
        self.trust_env = False
        self.server_url, self.refused = server_url.rstrip("/"), []


def yahoo_session(
    server_url: str, kind: Literal["curl", "requests"] = "curl"
) -> YahooCurlSession | YahooRequestsSession:
    """A session for `yf.Ticker(sym, session=s)` / `yf.download(..., session=s)` that only reaches the fake.

    The default is curl_cffi because yfinance's error handling is written against its exceptions.
    """
    return YahooCurlSession(server_url) if kind == "curl" else YahooRequestsSession(server_url)


_cache_dir: str | None = None


def reset_yfinance_state() -> None:
    """Forget everything yfinance keeps process-wide, so each test starts like a fresh process.

    That is: the YfData singleton (session, cookie, crumb, cookie strategy), its in-memory response
    cache (`cache_get` is an lru_cache over URL+params: past-dated chart answers, even errors, are
    reused), the counter that allows only two `.info` timezone fallbacks per process, and the sqlite
    timezone/cookie/ISIN caches, which move to a fresh private directory (no "database is locked"
    between parallel processes sharing ~/.cache/py-yfinance) and are opened here, before any thread.
    """
    global _cache_dir
    from yfinance import base, cache, data

    with data.SingletonMeta._lock:
        data.SingletonMeta._instances.pop(data.YfData, None)
    data.YfData.cache_get.cache_clear()
    base._tz_info_fetch_ctr = 0
    old, _cache_dir = _cache_dir, tempfile.mkdtemp(prefix="yf-cache-")
    cache.set_cache_location(_cache_dir)  # closes the open databases
    # The cache objects hold their database; drop them so the next use opens the new location.
    cache._TzCacheManager._tz_cache = None
    cache._CookieCacheManager._Cookie_cache = None
    cache._ISINCacheManager._isin_cache = None
    # Open both databases now, in this thread: their lazy initialise() is unsynchronised, and threads
    # racing to run "PRAGMA journal_mode=wal" on a fresh file fail with "database is locked".
    cache.get_tz_cache().lookup("")
    cache.get_cookie_cache().lookup("")
    if old is None:
        atexit.register(_remove_cache_dir)
    else:
        shutil.rmtree(old, ignore_errors=True)


def _remove_cache_dir() -> None:
    if _cache_dir is not None:
        shutil.rmtree(_cache_dir, ignore_errors=True)


# -- bars --------------------------------------------------------------------------------------------

# yfinance interval -> the project's timeframe name (30m is fetched as 15m by yfinance itself).
PROJECT_TIMEFRAMES = {
    "1m": "1Min",
    "5m": "5Min",
    "15m": "15Min",
    "30m": "30Min",
    "1h": "1Hour",
    "60m": "1Hour",
    "1d": "1Day",
}


def synthetic_bar_source(hours: str = "regular") -> BarSource:
    """Raw bars from the project's SyntheticProvider on XNYS, cached per (symbol, interval, session).

    Returns bars with start <= t < end. Daily bars are stamped at the session's open (09:30 New York),
    as Yahoo stamps them; intraday bars keep the provider's stamps (bar start; 1h anchored at 09:30
    as Yahoo's are). `hours="extended"` adds the pre-market and after-hours minutes (includePrePost):
    Yahoo's hourly bars then run 04:00 ... 09:00 (a half hour), 09:30 ... 15:30, 16:00 ... 19:00.
    """
    from backfill_assets.providers.base import BarRequest
    from backfill_assets.providers.synthetic import SyntheticProvider
    from backfill_assets.timeframes import TIMEFRAMES

    calendar = _calendar()
    provider = SyntheticProvider(calendar, hours=hours)
    cache: dict[tuple[str, str, dt.date], list[Bar]] = {}
    lock = threading.Lock()

    def fill(symbol: str, interval: str, days: list[dt.date]) -> None:
        timeframe = TIMEFRAMES[PROJECT_TIMEFRAMES[interval]]
        frame = provider.fetch(BarRequest((symbol,), tuple(days), timeframe)).bars
        fresh: dict[dt.date, list[Bar]] = {day: [] for day in days}
        columns = [frame[c].tolist() for c in ("ts", "open", "high", "low", "close", "volume")]
        for ts, o, h, lo, c, v in zip(*columns, strict=True):
            t = ts.to_pydatetime()
            day = t.astimezone(NEW_YORK).date()
            if timeframe.is_daily:
                t = _open_close(day)[0]
            fresh[day].append({"t": t, "o": o, "h": h, "l": lo, "c": c, "v": float(v)})
        with lock:
            cache.update({(symbol, interval, day): bars for day, bars in fresh.items()})

    def source(symbol: str, interval: str, start: dt.datetime, end: dt.datetime) -> list[Bar]:
        if interval not in PROJECT_TIMEFRAMES:
            raise ValueError(
                f"synthetic_bar_source has no {interval!r} bars, only {sorted(PROJECT_TIMEFRAMES)}"
            )
        last = (end - dt.timedelta(microseconds=1)).astimezone(NEW_YORK).date()
        days = calendar.sessions_in(start.astimezone(NEW_YORK).date(), last)
        with lock:
            missing = [day for day in days if (symbol, interval, day) not in cache]
        if missing:  # concurrent requests may both compute a session; the results are identical
            fill(symbol, interval, missing)
        with lock:
            per_day = [cache[(symbol, interval, day)] for day in days]
        return [bar for bars in per_day for bar in bars if start <= bar["t"] < end]

    return source
