"""Data-quality queries over either store (pure: no Dagster): SQL returning counts.

Every function takes a SqlReader (from the store's `reader()`) and a Scope: the rows of a run's
(ticker, session) slices (what each run checks, so a check costs what the run wrote, never the whole
history) or the whole table (the scheduled sweep). A missing table reads as empty. The SQL is what
DuckDB and Postgres both speak. Rules are predicates that are TRUE for a good row: a NULL result
counts as a violation, so missing values never pass silently.
"""

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import pandas as pd

from backfill_assets.calendar import TradingCalendar
from backfill_assets.storage.base import Slice, valid_table
from backfill_assets.storage.outside_hours import OUTSIDE, bars_source
from backfill_assets.storage.sql import SqlReader
from backfill_assets.timeframes import Timeframe


def finite(x: str) -> str:
    """SQL: `x` is a finite number (NaN sorts above +Infinity in both engines; NULL stays NULL)."""
    return f"({x} > CAST('-Infinity' AS FLOAT8) AND {x} < CAST('Infinity' AS FLOAT8))"


# The ordering rules judge only complete rows: a missing price counts once, under its own rule.
PRICES_OK = f"coalesce({finite('open + high + low + close')}, FALSE)"
BAR_RULES: Mapping[str, str] = {
    "missing_or_non_positive_price": f"{PRICES_OK} AND least(open, high, low, close) > 0",
    "high_below_open_close": f"NOT {PRICES_OK} OR high >= greatest(open, close)",
    "low_above_open_close": f"NOT {PRICES_OK} OR low <= least(open, close)",
    "negative_or_missing_volume": f"{finite('volume')} AND volume >= 0",
}
NS_PER_MINUTE = 60_000_000_000
COVERAGE = ("sessions_checked", "short_sessions", "missing_bars", "excess_sessions", "excess_bars",
            "unjudged_sessions")  # fmt: skip
# Per label kind; {h} is the horizon. A pending row holds no value; mfe >= mae since high >= low.
LABEL_RULES: Mapping[str, Mapping[str, str]] = {
    "triple_barrier": {
        "label_outside_domain": "label IS NULL OR label IN (-1, 0, 1)",
        "bars_to_exit_out_of_range": "bars_to_exit IS NULL OR bars_to_exit BETWEEN 1 AND {h}",
        "amb_without_label": "amb IS NULL OR label IS NOT NULL",
        "partial_label": "(label IS NULL) = (bars_to_exit IS NULL) AND (label IS NULL) = (ret IS NULL)",
        "pending_with_value": "NOT pending OR label IS NULL",
    },
    "vol_scaled_return": {
        "vsr_not_finite": f"vsr IS NULL OR {finite('vsr')}",
        "pending_with_value": "NOT pending OR vsr IS NULL",
    },
    "mfe_mae": {
        "mfe_below_mae": "mfe IS NULL OR mae IS NULL OR mfe >= mae",
        "excursion_below_minus_one": "(mfe IS NULL OR mfe > -1) AND (mae IS NULL OR mae > -1)",
        "partial_label": "(mfe IS NULL) = (mae IS NULL)",
        "pending_with_value": "NOT pending OR mfe IS NULL",
    },
}
COMMON_LABEL_RULES = {"negative_trgt": "trgt IS NULL OR trgt >= 0", "missing_pending": "pending IS NOT NULL"}


@dataclass(frozen=True)
class Violations:
    """Rows scanned, rows breaking each rule, rows breaking any, and a few offending rows."""

    rows: int
    counts: dict[str, int]
    bad_rows: int
    examples: pd.DataFrame


@dataclass(frozen=True)
class Coverage:
    """Counts of stored (ticker, session) pairs short of or beyond the calendar's bar count (COVERAGE
    keys; `unjudged_sessions`: off the calendar's range or an unknown timeframe), and the worst pairs."""

    counts: dict[str, int]
    worst_short: pd.DataFrame
    worst_excess: pd.DataFrame


@dataclass(frozen=True)
class Pending:
    """Pending label rows; `stale`: H or more bars follow them; `beyond_reach`: in a session followed
    by as many stored sessions as H bars can span."""

    pending: int
    stale: int
    beyond_reach: int
    examples: pd.DataFrame


SLICE_TYPES = {"ticker": "VARCHAR", "session_date": "DATE", "lo": "TIMESTAMPTZ", "hi": "TIMESTAMPTZ"}


@dataclass(frozen=True)
class Scope:
    """What a check reads: `slices` of `table` (a run's), or all of it when `slices` is None."""

    table: str
    slices: frozenset[Slice] | None = None
    # Readers that hold this scope's `_slices` already: one check pass asks for the relation three
    # or four times on one connection; the run's slices are loaded once. One scope per reader.
    loaded_into: list[SqlReader] = field(default_factory=list, compare=False, repr=False)

    def relation(self, reader: SqlReader) -> str:
        """SQL for the scope's rows. A slice's bars lie within a day either side of its session date
        whatever the exchange's time zone, so each slice is an index range on (ticker, ts)."""
        name = valid_table(self.table)
        if self.slices is None:
            return name
        if not any(r is reader for r in self.loaded_into):
            self._load(reader)
            self.loaded_into.append(reader)
        return (
            f"(SELECT t.* FROM _slices s JOIN {name} t ON t.ticker = s.ticker AND t.ts >= s.lo "
            "AND t.ts < s.hi AND t.session_date = s.session_date) AS scoped"
        )

    def _load(self, reader: SqlReader) -> None:
        assert self.slices is not None
        days = pd.to_datetime(pd.Series([d for _, d in self.slices], dtype="datetime64[s]"), utc=True)
        frame = pd.DataFrame({
            "ticker": [t for t, _ in self.slices], "session_date": [d for _, d in self.slices],
            "lo": days - pd.Timedelta(days=1), "hi": days + pd.Timedelta(days=2),
        })  # fmt: skip
        reader.load("_slices", frame, SLICE_TYPES)


def rule_violations(
    reader: SqlReader, scope: Scope, rules: Mapping[str, str], examples: int = 5
) -> Violations:
    """Count rows of the scope breaking each rule (a predicate TRUE for a good row) in one scan."""
    if not reader.table_exists(scope.table):
        return Violations(0, dict.fromkeys(rules, 0), 0, pd.DataFrame())
    bad = {name: f"NOT coalesce({sql}, FALSE)" for name, sql in rules.items()}
    any_bad = " OR ".join(f"({b})" for b in bad.values())
    counts = ", ".join(f'count(*) FILTER (WHERE {b}) AS "{name}"' for name, b in bad.items())
    name = scope.relation(reader)
    row = reader.row(f"SELECT count(*), count(*) FILTER (WHERE {any_bad}), {counts} FROM {name}")
    flags = ", ".join(f'{b} AS "{rule}"' for rule, b in bad.items())
    sample = reader.frame(
        f"SELECT ticker, ts, {flags} FROM {name} WHERE {any_bad} ORDER BY ticker, ts LIMIT {int(examples)}"
    )
    return Violations(int(row[0]), dict(zip(rules, map(int, row[2:]), strict=True)), int(row[1]), sample)


def duplicate_keys(reader: SqlReader, scope: Scope, examples: int = 5) -> Violations:
    """(ticker, ts) keys stored more than once; `counts` has the keys and the surplus rows."""
    if not reader.table_exists(scope.table):
        return Violations(0, {"duplicated_keys": 0, "surplus_rows": 0}, 0, pd.DataFrame())
    name = scope.relation(reader)
    dups = f"SELECT ticker, ts, count(*) AS n FROM {name} GROUP BY ticker, ts HAVING count(*) > 1"
    row = reader.row(
        f"SELECT (SELECT count(*) FROM {name}), count(*), coalesce(sum(n - 1), 0) FROM ({dups}) d"
    )
    sample = reader.frame(f"{dups} ORDER BY ticker, ts LIMIT {int(examples)}")
    counts = {"duplicated_keys": int(row[1]), "surplus_rows": int(row[2])}
    return Violations(int(row[0]), counts, int(row[2]), sample)


def bars_per_session(calendar: TradingCalendar, day: dt.date, timeframe: Timeframe) -> int:
    """Bars in a complete session: buckets anchored at each trading span's start (anchored.py), the
    last one partial (a 1Hour day is 09:30, 10:30, ... 15:30: 7 bars on 390 minutes, 4 on a
    210-minute half day; an XHKG day trades 09:30-12:00 and 13:00-16:00: 3 + 3 hourly bars)."""
    if timeframe.is_daily:
        return 1
    width = timeframe.minutes * NS_PER_MINUTE
    return sum(-(-(end.value - start.value) // width) for start, end in calendar.trading_spans(day))


def expected_bars(
    calendar: TradingCalendar, timeframes: Iterable[Timeframe], days: Iterable[dt.date] | None = None
) -> pd.DataFrame:
    """Expected bars per (day, timeframe) for `days` (default: every calendar day from the first to the
    last session); 0 on weekends and holidays, so any bar stored on them counts as an excess."""
    if days is None:
        days = pd.date_range(calendar.first_session, calendar.last_session, freq="D").date
    rows = [
        (d, tf.name, bars_per_session(calendar, d, tf) if calendar.is_session(d) else 0)
        for tf in timeframes
        for d in days
    ]
    return pd.DataFrame(rows, columns=["session_date", "timeframe", "expected"])


EXPECTED_TYPES = {"session_date": "DATE", "timeframe": "VARCHAR", "expected": "INTEGER"}


def session_coverage(reader: SqlReader, expected: pd.DataFrame, scope: Scope, worst: int = 10) -> Coverage:
    """Stored bars per (ticker, session) against `expected` (from expected_bars): one aggregate into
    a temporary table (the reader's connection is fresh), then the totals and the worst pairs."""
    empty = pd.DataFrame(columns=["ticker", "session_date", "bars", "expected"])
    if not reader.table_exists(scope.table):
        return Coverage(dict.fromkeys(COVERAGE, 0), empty, empty)
    reader.load("_expected", expected, EXPECTED_TYPES)
    reader.execute(
        f"""
        CREATE TEMP TABLE _judged AS
        WITH counts AS (SELECT ticker, session_date, timeframe, count(*) AS bars FROM {scope.relation(reader)}
                        GROUP BY ticker, session_date, timeframe)
        SELECT c.ticker, c.session_date, c.bars, e.expected FROM counts c LEFT JOIN _expected e
        ON c.session_date = e.session_date AND c.timeframe = e.timeframe
        """
    )
    row = reader.row(
        """
        SELECT count(*),
            count(*) FILTER (WHERE bars < expected),
            coalesce(sum(expected - bars) FILTER (WHERE bars < expected), 0),
            count(*) FILTER (WHERE bars > expected),
            coalesce(sum(bars - expected) FILTER (WHERE bars > expected), 0),
            count(*) FILTER (WHERE expected IS NULL)
        FROM _judged
        """
    )
    worst_short, worst_excess = (
        reader.frame(
            f"SELECT ticker, session_date, bars, expected FROM _judged WHERE {cond} "
            f"ORDER BY {gap} DESC, session_date, ticker LIMIT {int(worst)}"
        )
        for cond, gap in (("bars < expected", "expected - bars"), ("bars > expected", "bars - expected"))
    )
    for frame in (worst_short, worst_excess):  # plain dates in both engines' results
        frame["session_date"] = pd.to_datetime(frame["session_date"]).dt.date
    return Coverage(dict(zip(COVERAGE, map(int, row[:6]), strict=True)), worst_short, worst_excess)


# The h-th latest bar of each ticker with pending rows (NULL with fewer bars): a top-k in DuckDB, a
# backward walk of the primary key's index in Postgres; neither sorts the ticker's history.
# Bars are read from the first pending row of each ticker up to `until` (the end of the sessions H
# bars can reach after the scope), never a ticker's whole history.
KTH_LATEST = {
    "duckdb": "SELECT b.ticker, max(b.ts, greatest($h, 1))[greatest($h, 1)] AS kth_ts FROM bars b "
    "JOIN first_pend f ON f.ticker = b.ticker AND b.ts >= f.ts WHERE b.ts < $until GROUP BY b.ticker",
    "postgres": "SELECT f.ticker, (SELECT b.ts FROM bars b WHERE b.ticker = f.ticker AND b.ts >= f.ts "
    "AND b.ts < $until ORDER BY b.ts DESC OFFSET greatest($h, 1) - 1 LIMIT 1) AS kth_ts FROM first_pend f",
}


def pending_rows(
    reader: SqlReader,
    scope: Scope,
    horizon: int,
    reach_sessions: int,
    until: dt.date | None = None,
    examples: int = 10,
    extended: bool = False,
) -> Pending:
    """Pending rows of the label scope against `bars`: a row may wait only while fewer than `horizon`
    bars follow it (0: never); with `reach_sessions` (the most sessions H bars span) later sessions
    stored, those sessions are short of bars. Bars are read up to the end of `until` (None: all)."""
    columns = ["ticker", "session_date", "pending", "stale", "later_sessions"]
    if not reader.table_exists(scope.table) or not reader.table_exists("bars"):
        return Pending(0, 0, 0, pd.DataFrame(columns=columns))
    end = pd.Timestamp(until or dt.date(9999, 1, 1), tz="UTC") + pd.Timedelta(days=2)
    # A label set on extended hours counts its horizon over bars_all (outside_hours.py).
    bars = bars_source(extended, reader.table_exists(OUTSIDE))
    groups = reader.frame(
        f"""
        WITH pend AS (SELECT ticker, ts, session_date FROM {scope.relation(reader)} WHERE pending),
        first_pend AS (SELECT ticker, min(ts) AS ts FROM pend GROUP BY ticker),
        tail AS ({KTH_LATEST[reader.dialect].replace("FROM bars b", f"FROM {bars} b")}),
        days AS (SELECT DISTINCT b.ticker, b.session_date FROM {bars} b JOIN first_pend f
                 ON f.ticker = b.ticker AND b.ts >= f.ts WHERE b.ts < $until),
        flagged AS (SELECT p.ticker, p.session_date, $h = 0 OR coalesce(p.ts < t.kth_ts, FALSE) AS stale
                    FROM pend p LEFT JOIN tail t ON t.ticker = p.ticker)
        SELECT f.ticker, f.session_date, count(*) AS pending, count(*) FILTER (WHERE f.stale) AS stale,
               (SELECT count(*) FROM days d WHERE d.ticker = f.ticker AND d.session_date > f.session_date)
               AS later_sessions
        FROM flagged f GROUP BY f.ticker, f.session_date ORDER BY f.session_date, f.ticker
        """,
        {"h": int(horizon), "until": end.to_pydatetime()},
    )
    beyond = groups["later_sessions"] >= max(reach_sessions, 1)
    flagged = groups[(groups["stale"] > 0) | beyond].head(examples).reset_index(drop=True)
    total, stale = int(groups["pending"].sum()), int(groups["stale"].sum())
    return Pending(total, stale, int(groups.loc[beyond, "pending"].sum()), flagged[columns])


def label_rules(kind: str, horizon: int) -> dict[str, str]:
    """Value-domain rules of a label table of `kind` (labels/compute.py output_types), with `horizon`."""
    return {name: sql.format(h=int(horizon)) for name, sql in LABEL_RULES[kind].items()} | COMMON_LABEL_RULES
