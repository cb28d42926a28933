"""Bars from files: a vendor's CSV or Parquet export, a Kaggle dump or another tool's store, read
through DuckDB (globs, gzip, hive partitions, predicate pushdown into Parquet).

A request reads only its tickers and the days of its sessions; what it gets then passes the same
validation, gap rules, checks and labels as any provider's bars. Timestamps without a zone are read
in the source's timezone; a date column (or daily bars) is a session, stamped 00:00 exchange time.
Rows on days that are not requested sessions, and intraday rows outside regular hours, are left out
and counted (`FetchResult.dropped`); each (ticker, session) records the file it came from.
"""

import glob
from collections.abc import Sequence

import duckdb
import pandas as pd

from backfill_assets.calendar import TradingCalendar
from backfill_assets.providers.base import BarRequest, FetchResult, ProviderError, hours_filter, own_symbols
from backfill_assets.providers.file_source import FileSource, FileSourceError
from backfill_assets.schemas import PROVIDER_COLUMNS, empty_bars, session_of

NAIVE = ("TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS", "DATETIME")
AWARE = ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class FilesProvider:
    """Bars of the configured timeframe from `source`; nothing is fetched over a network."""

    name = "files"

    def __init__(self, calendar: TradingCalendar, source: FileSource, hours: str = "regular") -> None:
        self.calendar, self.source, self.hours = calendar, source, hours
        self.adjustment = source.adjustment
        self.parallel_requests = 1

    def _relation(self, pattern: str) -> str:
        reader = "read_parquet" if self.source.file_format() == "parquet" else "read_csv"
        hive = ", hive_partitioning = true" if self.source.hive else ""
        return f"{reader}({_literal(pattern)}, filename = true, union_by_name = true{hive})"

    def _window(self, ts: str, ts_type: str, request: BarRequest) -> tuple[str, str, list[object]]:
        """The bar stamp as epoch microseconds, and the filter to the request's exchange days."""
        first = pd.Timestamp(request.sessions[0])
        end = pd.Timestamp(request.sessions[-1]) + pd.Timedelta(days=1)
        exchange = self.calendar.tz
        if ts_type in AWARE:
            lo, hi = (t.tz_localize(exchange).to_pydatetime() for t in (first, end))
            return f"epoch_us({ts})", f"{ts} >= ? AND {ts} < ?", [lo, hi]
        if ts_type != "DATE" and ts_type not in NAIVE:
            raise FileSourceError(
                f"{self.source.path}: column {ts} is {ts_type}, not a date or timestamp DuckDB can "
                "read (write ISO dates or timestamps, e.g. 2024-01-02 or 2024-01-02 14:30:00+00)"
            )
        if ts_type == "DATE" and not request.timeframe.is_daily:
            raise FileSourceError(
                f"{self.source.path}: column {ts} holds dates, which are daily bars, not "
                f"{request.timeframe.name} (set BACKFILL_TIMEFRAME=1Day)"
            )
        # A date, or a daily bar's wall-clock day, is the session; other wall-clock times are in
        # the files' zone, so the request's exchange days are converted to it.
        daily = ts_type == "DATE" or request.timeframe.is_daily
        zone = exchange if daily else (self.source.timezone or exchange)
        lo, hi = (
            t.tz_localize(exchange).tz_convert(zone).tz_localize(None).to_pydatetime() for t in (first, end)
        )
        wall = f"CAST({ts} AS TIMESTAMP)"
        return f"epoch_us({wall})", f"{wall} >= ? AND {wall} < ?", [lo, hi]

    def _read(self, pattern: str, request: BarRequest, tickers: Sequence[str] | None) -> pd.DataFrame:
        """Rows of `tickers` (None: the file is one ticker's) over the request's days, our columns
        plus `file`; ts as epoch microseconds and `aware` whether they were in UTC."""
        with duckdb.connect() as conn:
            relation = self._relation(pattern)
            described = conn.sql(f"DESCRIBE SELECT * FROM {relation}").fetchall()
            types = {str(row[0]): str(row[1]) for row in described}
            columns = self.source.resolve([name for name in types if name != "filename"])
            ts_type = types[columns["ts"]]
            stamp, where, params = self._window(_ident(columns["ts"]), ts_type, request)
            values = [
                f"CAST({_ident(columns[c])} AS {'BIGINT' if c == 'trade_count' else 'DOUBLE'}) AS {c}"
                if c in columns else f"CAST(NULL AS {'BIGINT' if c == 'trade_count' else 'DOUBLE'}) AS {c}"
                for c in PROVIDER_COLUMNS[2:]
            ]  # fmt: skip
            ticker = f"CAST({_ident(columns['ticker'])} AS VARCHAR)" if tickers is not None else "NULL"
            if tickers is not None:
                where += f" AND {ticker} IN ({', '.join('?' * len(tickers))})"
                params += list(tickers)
            sql = (
                f"SELECT {ticker} AS ticker, {stamp} AS ts_us, {', '.join(values)}, filename AS file, "
                f"{ts_type in AWARE} AS aware FROM {relation} WHERE {where}"
            )
            return conn.execute(sql, params).df()

    def _frame(self, raw: pd.DataFrame, request: BarRequest) -> tuple[pd.DataFrame, int]:
        """Our bar frame from what `_read` returned, and how many rows were left out on purpose."""
        if raw.empty:
            return empty_bars().assign(file=pd.Series([], dtype=object)), 0
        wall = pd.to_datetime(raw["ts_us"].to_numpy("int64"), unit="us")
        aware = bool(raw["aware"].iloc[0])
        if request.timeframe.is_daily:  # a session: the exchange day of the bar, stamped 00:00 there
            exchange = self.calendar.tz
            local = wall.tz_localize("UTC").tz_convert(exchange).tz_localize(None) if aware else wall
            ts = local.normalize().tz_localize(exchange).tz_convert("UTC")
        elif aware:
            ts = wall.tz_localize("UTC")
        else:
            zone = self.source.timezone or self.calendar.tz
            ts = wall.tz_localize(zone, ambiguous="NaT", nonexistent="NaT").tz_convert("UTC")
        frame = raw.drop(columns=["ts_us", "aware"]).assign(ts=pd.Series(ts.astype("datetime64[us, UTC]")))
        frame = frame[list(PROVIDER_COLUMNS) + ["file"]]
        frame["trade_count"] = frame["trade_count"].astype("Int64")  # NULL where files have none
        read = len(frame)
        frame = frame[frame["ts"].notna()]
        wanted = list(request.sessions)
        frame = frame[session_of(frame["ts"], self.calendar.tz).isin(wanted).to_numpy()]
        keep = hours_filter(self.hours)
        frame = keep(frame.reset_index(drop=True), self.calendar, request.timeframe)
        frame = frame.sort_values(["ticker", "ts"], ignore_index=True)
        return frame, read - len(frame)

    def fetch(self, request: BarRequest) -> FetchResult:
        request, failed = own_symbols(request, self.name)
        span = f"{request.sessions[0]}..{request.sessions[-1]}"
        parts: list[pd.DataFrame] = []
        try:
            if self.source.per_ticker:
                for ticker in request.tickers:
                    path = self.source.file_of(ticker)
                    if not glob.glob(path):
                        failed[ticker] = f"files: no file {path} for {ticker}"
                        continue
                    parts.append(self._read(path, request, None).assign(ticker=ticker))
            elif request.tickers:
                if not glob.glob(self.source.pattern(), recursive=True):
                    raise FileSourceError(f"files: nothing matches {self.source.path}")
                parts.append(self._read(self.source.pattern(), request, request.tickers))
        except FileSourceError as exc:
            raise ProviderError(str(exc), permanent=True) from None
        except duckdb.Error as exc:  # unreadable file, a price that is not a number, ...
            raise ProviderError(f"files: reading {self.source.path} failed: {exc}", permanent=True) from None
        frame, dropped = self._frame(
            pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(), request
        )
        for ticker in sorted(set(request.tickers) - set(frame["ticker"]) - failed.keys()):
            failed[ticker] = f"files: no rows for {ticker} in {self.source.path} over {span}"
        days = session_of(frame["ts"], self.calendar.tz)
        first = frame.assign(day=days).drop_duplicates(["ticker", "day"])
        sources = dict(zip(zip(first["ticker"], first["day"], strict=True), first["file"], strict=True))
        return FetchResult(frame.drop(columns=["file"]), failed, dropped=dropped, sources=sources)
