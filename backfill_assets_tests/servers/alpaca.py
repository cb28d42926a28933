"""A protocol-faithful fake of Alpaca's historical stock bars API (`GET /v2/stocks/bars`) for tests.

It answers exactly what alpaca-py 0.44.0's StockHistoricalDataClient sends: the APCA-API-KEY-ID /
APCA-API-SECRET-KEY headers and the query `symbols` (comma-separated), `timeframe` ("5Min"),
`start`/`end` (RFC3339, both inclusive), `limit` (page size across all symbols), `adjustment`,
`feed`, `sort` and `page_token`. Errors are Alpaca-shaped JSON `{"code": ..., "message": ...}`.
Rate limits, latency and injected faults (HTTP errors, slow, unparseable or truncated bodies,
connection resets) are configurable, and every request is logged for assertions.

Stdlib only; `synthetic_bar_source` imports the project lazily so the server itself has no deps.
"""

import base64
import contextlib
import copy
import dataclasses
import datetime as dt
import json
import math
import random
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

UTC = dt.UTC
NEW_YORK = ZoneInfo("America/New_York")
BARS_PATH = "/v2/stocks/bars"
STATS_PATH = "/__stats"

Bar = dict[str, Any]  # {"t": aware datetime, "o","h","l","c","v","vw": float, "n": int}; "json": its text
# (symbol, timeframe, start, end) -> the bars in [start, end], in ascending time order
BarSource = Callable[[str, str, dt.datetime, dt.datetime], list[Bar]]
Fault = int | str  # an HTTP status, or "slow" | "malformed" | "truncated" | "reset"

TIMEFRAMES = frozenset({"1Min", "5Min", "15Min", "30Min", "1Hour", "1Day"})
ADJUSTMENTS = frozenset({"raw", "split", "dividend", "all"})
FEEDS = frozenset({"iex", "sip", "delayed_sip", "otc", "boats", "overnight"})
SYMBOL = re.compile(r"[A-Z0-9][A-Z0-9.\-]{0,20}")  # "BRK.B" is valid; lowercase or spaces are not
MAX_LIMIT = 10_000
DEFAULT_LIMIT = 1_000


@dataclass
class AlpacaServerConfig:
    api_key: str = "test-key-id"
    secret_key: str = "test-secret-key"
    rate_limit: int | None = None  # requests per rate_window_s per API key; None = unlimited
    rate_window_s: float = 60.0
    retry_after: bool = True  # send Retry-After on 429 (X-RateLimit-* are always sent)
    fault_wait_s: int = 1  # the wait an injected 429 asks for (Retry-After and X-RateLimit-Reset)
    max_page_size: int = MAX_LIMIT  # caps `limit`: data points per page across all symbols
    latency_s: float = 0.0
    faults: list[Fault | None] = field(default_factory=list)  # one per request, in order; None = no fault
    fault_rate: float = 0.0  # once `faults` is exhausted, fault_kind with this probability
    fault_kind: Fault = 429
    fault_seed: int = 7
    slow_s: float = 5.0
    unknown_symbols: frozenset[str] = frozenset()  # omitted from `bars`, like delisted symbols
    listed_from: dict[str, dt.date] = field(default_factory=dict)  # no bars before this New York date
    splits: dict[str, tuple[dt.date, float]] = field(default_factory=dict)  # symbol -> (ex-date, ratio)
    timeframes: frozenset[str] = TIMEFRAMES  # what the BarSource can produce; others get 422
    bars: BarSource | None = None  # raw bars; None = synthetic_bar_source(), built at start()


@dataclass(frozen=True)
class RequestRecord:
    time: float  # time.monotonic() when the request arrived
    wall: float
    path: str
    params: dict[str, str]
    key_id: str | None
    status: int  # 0 for an injected connection reset (no response at all)
    n_bars: int
    fault: str | None


@dataclass
class _Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    n_bars: int = 0
    content_type: str = "application/json; charset=UTF-8"


@dataclass(frozen=True)
class _Query:
    symbols: tuple[str, ...]
    timeframe: str
    start: dt.datetime
    end: dt.datetime
    limit: int
    adjustment: str
    descending: bool
    token: tuple[str, dt.datetime] | None


class _Rejected(Exception):
    """A request Alpaca would refuse; becomes an error reply."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _json_reply(status: int, payload: object, n_bars: int = 0) -> _Reply:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return _Reply(status, body, n_bars=n_bars)


def _error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> _Reply:
    reply = _json_reply(status, {"code": code, "message": message})
    reply.headers.update(headers or {})
    return reply


def _gateway_page(status: int) -> _Reply:
    # 502/503/504 come from the load balancer in front of the API, so they are HTML, not Alpaca JSON.
    title = {502: "502 Bad Gateway", 503: "503 Service Temporarily Unavailable", 504: "504 Gateway Time-out"}
    text = title.get(status, f"{status} Error")
    page = f"<html><head><title>{text}</title></head><body><center><h1>{text}</h1></center></body></html>"
    return _Reply(status, page.encode(), content_type="text/html")


def _rfc3339(t: dt.datetime) -> str:
    # The server renders ~40k bars/s per core; on 2 cores strftime per bar capped the benchmark at
    # the server's speed instead of the rate limit. isoformat is the same text, several times cheaper.
    utc = t if t.utcoffset() == dt.timedelta(0) else t.astimezone(UTC)
    return utc.replace(tzinfo=None, microsecond=0).isoformat() + "Z"


def _aware(t: dt.datetime) -> dt.datetime:
    if t.tzinfo is None:
        raise ValueError(f"BarSource returned a naive timestamp {t!r}; bars must be tz-aware UTC")
    return t


def _encode_token(symbol: str, t: dt.datetime) -> str:
    stamp = t.astimezone(UTC).isoformat().replace("+00:00", "Z")  # keeps sub-second bars resumable
    return base64.b64encode(f"{symbol}|{stamp}".encode()).decode()


def _decode_token(token: str) -> tuple[str, dt.datetime]:
    try:
        symbol, stamp = base64.b64decode(token, validate=True).decode().split("|", 1)
        return symbol, _aware(dt.datetime.fromisoformat(stamp))
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors too
        raise _Rejected(400, 40010001, "invalid page token") from None


def _parse_time(value: str, name: str) -> dt.datetime:
    try:
        t = dt.datetime.fromisoformat(value)  # 3.11 reads "Z", offsets and bare dates
    except ValueError:
        t = None
    if t is None or (t.tzinfo is None and len(value) != 10):  # naive date-times are not RFC3339
        raise _Rejected(400, 40010001, f"Invalid format for parameter {name}: {value!r} is not RFC3339")
    return t.replace(tzinfo=t.tzinfo or UTC).astimezone(UTC)  # a bare date means UTC midnight


def _parse_query(params: Mapping[str, str], cfg: AlpacaServerConfig) -> _Query:
    names = list(dict.fromkeys(s for s in params.get("symbols", "").split(",") if s))
    if not names:
        raise _Rejected(400, 40010001, "missing required parameter: symbols")
    # Alpaca rejects a request only when nothing in it can be a symbol; otherwise bad ones just
    # yield no bars, exactly like unknown ones.
    symbols = tuple(s for s in names if SYMBOL.fullmatch(s))
    if not symbols:
        raise _Rejected(400, 40010001, f"invalid symbol: {','.join(names)}")
    timeframe = params.get("timeframe")
    if timeframe is None:
        raise _Rejected(400, 40010001, "missing required parameter: timeframe")
    if timeframe not in cfg.timeframes:
        raise _Rejected(422, 42210000, "invalid timeframe")
    now = dt.datetime.now(UTC)
    # Alpaca's defaults: start at the beginning of the current (New York) day, end now.
    today = dt.datetime.combine(now.astimezone(NEW_YORK).date(), dt.time(), NEW_YORK).astimezone(UTC)
    start = _parse_time(params["start"], "start") if params.get("start") else today
    end = _parse_time(params["end"], "end") if params.get("end") else now
    if end < start:
        raise _Rejected(422, 42210000, "end should not be before start")
    try:
        limit = int(params.get("limit") or DEFAULT_LIMIT)
    except ValueError:
        raise _Rejected(400, 40010001, f"Invalid format for parameter limit: {params['limit']!r}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise _Rejected(422, 42210000, f"invalid limit: must be between 1 and {MAX_LIMIT}")
    adjustment = params.get("adjustment") or "raw"
    if adjustment not in ADJUSTMENTS:
        raise _Rejected(422, 42210000, f"invalid adjustment: {adjustment}")
    if params.get("feed") and params["feed"] not in FEEDS:
        raise _Rejected(422, 42210000, f"invalid feed: {params['feed']}")
    sort = params.get("sort") or "asc"
    if sort not in ("asc", "desc"):
        raise _Rejected(422, 42210000, f"invalid sort: {sort}")
    token = _decode_token(params["page_token"]) if params.get("page_token") else None
    return _Query(
        symbols, timeframe, start, end, min(limit, cfg.max_page_size), adjustment, sort == "desc", token
    )


def _render(bar: Bar, factor: float) -> dict[str, Any]:
    """Alpaca's JSON for one bar; `factor` > 1 splits-adjusts it (prices / factor, volume * factor)."""

    def price(x: float) -> float:
        return round(x / factor, 4) if factor != 1 else x

    volume = bar["v"] * factor
    return {
        "t": _rfc3339(bar["t"]),
        "o": price(bar["o"]),
        "h": price(bar["h"]),
        "l": price(bar["l"]),
        "c": price(bar["c"]),
        "v": int(volume) if float(volume).is_integer() else volume,  # Alpaca sends whole shares as ints
        "n": int(bar["n"]),
        "vw": price(bar["vw"]),
    }


def _bar_json(bar: Bar, factor: float) -> str:
    """`_render`'s JSON text; synthetic_bar_source writes it once per bar ("json"), since json.dumps
    of a page's 10,000 dicts was most of the server's CPU, and on 2 cores the benchmarks' limit."""
    if factor == 1 and "json" in bar:
        return str(bar["json"])
    return json.dumps(_render(bar, factor), separators=(",", ":"))


class _FixedWindows:
    """Alpaca-style fixed windows per API key: a window opens at the first request after the last ended.

    Rejected (429) requests count too, as on the real API, so a client that hammers through 429s
    stays limited until the reset instead of getting a free request each time.
    """

    def __init__(self) -> None:
        self._windows: dict[str, tuple[float, int]] = {}  # key -> (window end, epoch s; requests)

    def hit(self, key: str, limit: int, window_s: float, now: float) -> tuple[bool, float, dict[str, str]]:
        end, count = self._windows.get(key, (0.0, 0))
        if now >= end:
            end, count = now + window_s, 0
        count += 1
        self._windows[key] = (end, count)
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(max(0, limit - count)),
            "X-RateLimit-Reset": str(math.ceil(end)),
        }
        return count <= limit, end, headers


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a client holding a keep-alive connection must not block stop()
    request_queue_size = 128  # many concurrent test clients connect at once

    def __init__(self, app: "AlpacaServer") -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.app = app
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # quiet: clients hanging up mid-answer (timeouts during "slow") are expected in tests


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive like the real API, so pooled client connections are reused
    timeout = 30.0  # an idle keep-alive connection gives its thread back eventually
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
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
            self.rfile.read(length)  # drain any body so the connection stays usable
        self.server.app._serve(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _dispatch

    def send(self, reply: _Reply) -> None:
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply.body)
        except OSError:  # the client gave up (e.g. its read timeout fired during a slow fault)
            self.close_connection = True

    def reset(self) -> None:
        """Drop the connection with a TCP RST (SO_LINGER 0), like a load balancer killing it."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet test output


class AlpacaServer:
    """The fake on 127.0.0.1:<free port>. `config` may be changed while running (see `configure`)."""

    def __init__(self, config: AlpacaServerConfig | None = None) -> None:
        self.config = config or AlpacaServerConfig()
        self.log: list[RequestRecord] = []  # appended under the lock; read it via records() when busy
        self.errors: list[BaseException] = []  # exceptions in the fake or the BarSource (answered 500)
        self._lock = threading.Lock()
        self._windows = _FixedWindows()
        self._rng = random.Random(self.config.fault_seed)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> str:
        if self._httpd is not None:
            return self.url
        if self.config.bars is None:
            self.config.bars = synthetic_bar_source()
        self._httpd = _HTTPServer(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-alpaca", daemon=True
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

    def __enter__(self) -> "AlpacaServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("AlpacaServer is not running; call start()")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- introspection ---------------------------------------------------------------------------

    def configure(self, **changes: Any) -> None:
        """Change config fields atomically with respect to requests (each request reads one snapshot)."""
        with self._lock:
            for name, value in changes.items():
                if not hasattr(self.config, name):
                    raise AttributeError(f"AlpacaServerConfig has no field {name!r}")
                setattr(self.config, name, value)

    def records(self) -> list[RequestRecord]:
        with self._lock:
            return list(self.log)

    def clear(self) -> None:
        """Forget the log, errors and rate-limit windows (e.g. between phases of a test)."""
        with self._lock:
            self.log.clear()
            self.errors.clear()
            self._windows = _FixedWindows()

    def count(self, status: int | None = None, path: str | None = None) -> int:
        return sum(
            1
            for r in self.records()
            if (status is None or r.status == status) and (path is None or r.path == path)
        )

    def requests_per_window(self, window_s: float, status: int | None = None) -> int:
        """Most requests (optionally of one status) that arrived within any window_s-long interval."""
        times = sorted(r.time for r in self.records() if status is None or r.status == status)
        best, lo = 0, 0
        for hi, t in enumerate(times):
            while t - times[lo] >= window_s:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    def stats(self) -> dict[str, Any]:
        records = self.records()
        by_status: dict[str, int] = {}
        faults: dict[str, int] = {}
        for r in records:
            by_status[str(r.status)] = by_status.get(str(r.status), 0) + 1
            if r.fault is not None:
                faults[r.fault] = faults.get(r.fault, 0) + 1
        bars = sum(r.n_bars for r in records)
        return {"requests": len(records), "by_status": by_status, "faults": faults, "bars": bars}

    # -- request handling ------------------------------------------------------------------------

    def _next_fault(self) -> Fault | None:
        if self.config.faults:
            return self.config.faults.pop(0)
        if self.config.fault_rate > 0 and self._rng.random() < self.config.fault_rate:
            return self.config.fault_kind
        return None

    def _serve(self, handler: _Handler) -> None:
        url = urlsplit(handler.path)
        if url.path == STATS_PATH:  # introspection: never faulted, limited or logged
            handler.send(_json_reply(200, self.stats()))
            return
        arrived, wall = time.monotonic(), time.time()
        with self._lock:
            cfg = copy.copy(self.config)  # one consistent view even if a test reconfigures mid-request
            fault = self._next_fault()
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        key_id = handler.headers.get("APCA-API-KEY-ID")
        if cfg.latency_s > 0:
            time.sleep(cfg.latency_s)
        if fault == "slow":
            time.sleep(cfg.slow_s)
        if fault == "reset":
            self._record(RequestRecord(arrived, wall, url.path, params, key_id, 0, 0, "reset"))
            handler.reset()
            return
        try:
            if fault in (None, "slow", "truncated"):
                reply = self._answer(cfg, handler, url.path, params, wall)
            else:
                reply = self._fault_reply(cfg, fault)
        except Exception as exc:  # a bug here or in the BarSource must not look like a network fault
            with self._lock:
                self.errors.append(exc)
            reply = _error(500, 50010000, f"fake server error: {exc!r}")
        if fault == "truncated":  # the real answer, cut in half in transit (Content-Length matches the cut)
            reply = dataclasses.replace(reply, body=reply.body[: len(reply.body) // 2])
        label = None if fault is None else str(fault)
        record = RequestRecord(arrived, wall, url.path, params, key_id, reply.status, reply.n_bars, label)
        self._record(record)
        handler.send(reply)

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self.log.append(record)

    def _fault_reply(self, cfg: AlpacaServerConfig, fault: Fault) -> _Reply:
        if fault == "malformed":
            return _Reply(200, b"<html><body>upstream hiccup</body></html>", content_type="text/html")
        if not isinstance(fault, int):
            raise ValueError(f"unknown fault {fault!r}")
        if fault == 429:
            # As if another client drained the window: wait about a second (no budget is consumed).
            headers = {"X-RateLimit-Limit": str(cfg.rate_limit or 200), "X-RateLimit-Remaining": "0"}
            headers["X-RateLimit-Reset"] = str(math.ceil(time.time()) + cfg.fault_wait_s)
            if cfg.retry_after:
                headers["Retry-After"] = str(cfg.fault_wait_s)
            return _error(429, 42910000, "too many requests", headers)
        if fault in (502, 503, 504):
            return _gateway_page(fault)
        messages = {
            401: "request is not authorized",
            403: "subscription does not permit querying recent SIP data",
            500: "internal server error",
        }
        return _error(fault, fault * 100_000 + 10_000, messages.get(fault, "injected fault"))

    def _answer(
        self, cfg: AlpacaServerConfig, handler: _Handler, path: str, params: Mapping[str, str], now: float
    ) -> _Reply:
        key_id = handler.headers.get("APCA-API-KEY-ID")
        secret = handler.headers.get("APCA-API-SECRET-KEY")
        if key_id != cfg.api_key or secret != cfg.secret_key:
            return _error(401, 40110000, "request is not authorized")  # before the limiter: costs nothing
        rate_headers: dict[str, str] = {}
        if cfg.rate_limit is not None:
            with self._lock:
                allowed, reset_at, rate_headers = self._windows.hit(
                    cfg.api_key, cfg.rate_limit, cfg.rate_window_s, now
                )
            if not allowed:
                headers = dict(rate_headers)
                if cfg.retry_after:
                    headers["Retry-After"] = str(max(1, math.ceil(reset_at - now)))
                return _error(429, 42910000, "too many requests", headers)
        if handler.command != "GET" or path != BARS_PATH:
            reply = _error(404, 40410000, "not found")
        else:
            try:
                reply = self._page(cfg, _parse_query(params, cfg))
            except _Rejected as exc:
                reply = _error(exc.status, exc.code, exc.message)
        reply.headers.update(rate_headers)
        return reply

    def _page(self, cfg: AlpacaServerConfig, q: _Query) -> _Reply:
        """One page: symbols ascending, then time; at most q.limit bars in total across symbols."""
        symbols = sorted(s for s in q.symbols if s not in cfg.unknown_symbols)
        if q.token is not None:
            symbols = [s for s in symbols if s >= q.token[0]]
        out: dict[str, list[str]] = {}
        taken, next_token = 0, None
        for symbol in symbols:
            lo, hi = q.start, q.end
            if q.token is not None and symbol == q.token[0]:  # resume at the token's bar, inclusive
                lo, hi = (lo, min(hi, q.token[1])) if q.descending else (max(lo, q.token[1]), hi)
            for bar, factor in self._bars(cfg, symbol, q, lo, hi, need=q.limit - taken + 1):
                if taken == q.limit:
                    next_token = _encode_token(symbol, bar["t"])
                    break
                out.setdefault(symbol, []).append(_bar_json(bar, factor))
                taken += 1
            if next_token is not None:
                break
        listed = ",".join(f"{json.dumps(symbol)}:[{','.join(bars)}]" for symbol, bars in out.items())
        body = f'{{"bars":{{{listed}}},"next_page_token":{json.dumps(next_token)}}}'
        return _Reply(200, body.encode(), n_bars=taken)

    @staticmethod
    def _bars(
        cfg: AlpacaServerConfig, symbol: str, q: _Query, lo: dt.datetime, hi: dt.datetime, need: int
    ) -> list[tuple[Bar, float]]:
        """The symbol's first `need` bars in [lo, hi] after listing, in the query's order, with their
        split-adjustment factor. Only what the page takes is built (a page of a long range would
        otherwise render the whole rest of the range, and the server's CPU would be the limit)."""
        if lo > hi or cfg.bars is None:
            return []
        listed = cfg.listed_from.get(symbol)
        ex_date, ratio = cfg.splits.get(symbol, (None, 1.0))
        adjusts = q.adjustment in ("split", "all")  # no dividends are modelled, so "dividend" is raw
        bars: list[tuple[Bar, float]] = []
        needs_day = listed is not None or (adjusts and ex_date is not None)
        source = cfg.bars(symbol, q.timeframe, lo, hi)
        previous: dt.datetime | None = None
        for bar in reversed(source) if q.descending else source:
            t = _aware(bar["t"])
            if previous is not None and (t > previous if q.descending else t < previous):
                raise ValueError(f"BarSource returned {symbol} bars out of time order at {t.isoformat()}")
            previous = t
            if not lo <= t <= hi:
                continue
            day = t.astimezone(NEW_YORK).date() if needs_day else None
            if listed is not None and day is not None and day < listed:
                continue
            factor = ratio if adjusts and ex_date is not None and day is not None and day < ex_date else 1.0
            bars.append((bar, factor))
            if len(bars) == need:
                break
        return bars


@contextlib.contextmanager
def running_alpaca(config: AlpacaServerConfig | None = None) -> Iterator[AlpacaServer]:
    """`with running_alpaca(cfg) as server:` for tests and fixtures; always stops the server."""
    server = AlpacaServer(config)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def synthetic_bar_source() -> BarSource:
    """Raw bars from the project's SyntheticProvider on the XNYS calendar, cached per session: the
    whole exchange day as Alpaca serves it, pre-market (from 04:00) and after-hours (to 20:00) minutes
    included, coarse bars clock-aligned (a 09:00 hourly bar holds 09:00-09:30 pre-market trades).

    Sessions are the calendar sessions whose New York date lies within the window's New York dates;
    bars are then cut to [start, end], both inclusive as on Alpaca.
    """
    from backfill_assets.calendar import get_calendar
    from backfill_assets.providers.base import BarRequest
    from backfill_assets.providers.synthetic import SyntheticProvider
    from backfill_assets.timeframes import TIMEFRAMES as PROJECT_TIMEFRAMES

    calendar = get_calendar("XNYS", dt.date(2000, 1, 3))
    provider = SyntheticProvider(calendar, hours="extended", anchor="clock")
    cache: dict[tuple[str, str, dt.date], list[Bar]] = {}
    lock = threading.Lock()

    def fill(symbol: str, timeframe: str, days: list[dt.date]) -> None:
        frame = provider.fetch(BarRequest((symbol,), tuple(days), PROJECT_TIMEFRAMES[timeframe])).bars
        fresh: dict[dt.date, list[Bar]] = {day: [] for day in days}
        ts = pd.to_datetime(frame["ts"], utc=True)
        # Each bar's JSON is written here, once, as json.dumps renders `_render`'s dict (seconds, "Z";
        # a float's repr): rendering per page was most of the server's CPU. Columns as Python lists,
        # since iterating pandas Series built a numpy scalar per value.
        stamps = np.datetime_as_string(ts.dt.tz_localize(None).to_numpy().astype("datetime64[s]"), unit="s")
        prices = [frame[c].astype(float).tolist() for c in ("open", "high", "low", "close", "volume", "vwap")]
        counts = frame["trade_count"].astype("int64").tolist()
        for t, stamp, o, h, lo, c, v, vw, n in zip(
            ts.dt.to_pydatetime(), stamps, *prices, counts, strict=True
        ):
            volume = str(int(v)) if v.is_integer() else repr(v)
            text = (f'{{"t":"{stamp}Z","o":{o!r},"h":{h!r},"l":{lo!r},"c":{c!r},"v":{volume},"n":{n},'
                    f'"vw":{vw!r}}}')  # fmt: skip
            bar = {"t": t, "o": o, "h": h, "l": lo, "c": c, "v": v, "n": n, "vw": vw, "json": text}
            fresh[t.astimezone(NEW_YORK).date()].append(bar)
        with lock:
            cache.update({(symbol, timeframe, day): bars for day, bars in fresh.items()})

    def source(symbol: str, timeframe: str, start: dt.datetime, end: dt.datetime) -> list[Bar]:
        days = calendar.sessions_in(start.astimezone(NEW_YORK).date(), end.astimezone(NEW_YORK).date())
        with lock:
            missing = [day for day in days if (symbol, timeframe, day) not in cache]
        if missing:  # concurrent requests may both compute a session; the results are identical
            fill(symbol, timeframe, missing)
        with lock:
            per_day = [cache[(symbol, timeframe, day)] for day in days]
        # Only the first and last sessions can hold bars outside [start, end]: a page of a long
        # range otherwise compared every bar of the range, on every page.
        out: list[Bar] = []
        for i, bars in enumerate(per_day):
            edge = i == 0 or i == len(per_day) - 1
            out.extend([bar for bar in bars if start <= bar["t"] <= end] if edge else bars)
        return out

    return source
