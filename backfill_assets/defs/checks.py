"""Asset checks over the DuckDB store: `bars` (OHLC, unique keys, session coverage) and each label set.

Checks judge the whole stored table, not only the partitions a run wrote: one SQL scan each, under
the store's shared lock (seconds on tens of millions of rows), so a result always describes the
table as it is. They are not blocking: a failure is reported, downstream runs still go ahead.
"""

from collections.abc import Callable, Iterator
from typing import TypeVar

import dagster as dg
import duckdb
import pandas as pd

from backfill_assets import quality
from backfill_assets.defs.partitions import calendar
from backfill_assets.defs.resources import BarStoreResource
from backfill_assets.labels.config import LabelSet, load_label_sets
from backfill_assets.labels.materialize import halo_bars, halo_sessions
from backfill_assets.settings import get_settings
from backfill_assets.timeframes import TIMEFRAMES

BARS = dg.AssetKey("bars")
ERROR, WARN = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN
T = TypeVar("T")


def _query(bar_store: BarStoreResource, read: Callable[[duckdb.DuckDBPyConnection], T], empty: T) -> T:
    """Run `read` on a read-only connection; `empty` when the DuckDB file does not exist yet."""
    store = bar_store.build()
    if not store.path.exists():
        return empty
    with store.connect(read_only=True) as con:
        return read(con)


def _table(frame: pd.DataFrame) -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.to_markdown(index=False) if not frame.empty else "none")


def _violations_result(found: quality.Violations, what: str, **extra: int) -> dg.AssetCheckResult:
    bad = found.bad_rows + sum(extra.values())
    return dg.AssetCheckResult(
        passed=bad == 0,
        severity=ERROR,
        description=f"{found.bad_rows} of {found.rows} rows break {what}" if bad else None,
        metadata={
            "rows_checked": found.rows,
            "violating_rows": found.bad_rows,
            **found.counts,
            **extra,
            "examples": _table(found.examples),
        },
    )


@dg.asset_check(asset=BARS, description="Prices finite and > 0, high >= max(open, close), "
                "low <= min(open, close), volume >= 0 (whole table). ERROR on any violating row.")  # fmt: skip
def ohlc_consistency(bar_store: BarStoreResource) -> dg.AssetCheckResult:
    def read(con: duckdb.DuckDBPyConnection) -> quality.Violations:
        return quality.rule_violations(con, "bars", quality.BAR_RULES)

    return _violations_result(
        _query(bar_store, read, quality.Violations(0, {}, 0, pd.DataFrame())), "OHLC rules"
    )


@dg.asset_check(asset=BARS, description="(ticker, ts) unique across the whole table. ERROR on duplicates.")
def unique_ticker_ts(bar_store: BarStoreResource) -> dg.AssetCheckResult:
    def read(con: duckdb.DuckDBPyConnection) -> quality.Violations:
        return quality.duplicate_keys(con, "bars")

    found = _query(bar_store, read, quality.Violations(0, {}, 0, pd.DataFrame()))
    return _violations_result(found, "(ticker, ts) uniqueness")


@dg.multi_asset_check(
    name="bars_session_coverage",
    specs=[
        dg.AssetCheckSpec(
            "session_shortfall",
            asset=BARS,
            description="Stored (ticker, session) pairs with fewer bars than the session's length "
            "(half days included) allows. WARN: IEX feeds legitimately skip minutes with no trade.",
        ),
        dg.AssetCheckSpec(
            "session_excess",
            asset=BARS,
            description="(ticker, day) pairs with more bars than the session holds, or bars on a "
            "weekend or holiday. ERROR: no feed produces these; they are an ingest bug.",
        ),
    ],
)
def bars_session_coverage(bar_store: BarStoreResource) -> Iterator[dg.AssetCheckResult]:
    """Bars per (ticker, session) against the calendar, one aggregate for both checks."""
    expected = quality.expected_bars(calendar, TIMEFRAMES.values())

    def read(con: duckdb.DuckDBPyConnection) -> quality.Coverage:
        return quality.session_coverage(con, expected)

    empty = quality.Coverage(0, 0, 0, 0, 0, 0, pd.DataFrame(), pd.DataFrame())
    found = _query(bar_store, read, empty)
    common = {"sessions_checked": found.sessions, "unjudged_sessions": found.unjudged_sessions}
    yield dg.AssetCheckResult(
        check_name="session_shortfall",
        passed=found.short_sessions == 0,
        severity=WARN,
        metadata=common
        | {
            "short_sessions": found.short_sessions,
            "missing_bars": found.missing_bars,
            "worst_shortfalls": _table(found.worst_short),
        },
    )
    yield dg.AssetCheckResult(
        check_name="session_excess",
        passed=found.excess_sessions == 0,
        severity=ERROR,
        metadata=common
        | {
            "excess_sessions": found.excess_sessions,
            "excess_bars": found.excess_bars,
            "worst_excess": _table(found.worst_excess),
        },
    )


def label_checks(label_set: LabelSet) -> list[dg.AssetChecksDefinition]:
    """`value_domains` and `pending_resolved` on asset `labels/<name>`, over its whole table."""
    key = dg.AssetKey(["labels", label_set.name])
    rules = quality.label_rules(label_set.kind, label_set.horizon)
    none = quality.Violations(0, {}, 0, pd.DataFrame())

    @dg.asset_check(asset=key, name="value_domains", description=f"Label values in their domains "
                    f"({', '.join(rules)}); (ticker, ts) unique. ERROR on any violation.")  # fmt: skip
    def value_domains(bar_store: BarStoreResource) -> dg.AssetCheckResult:
        def read(con: duckdb.DuckDBPyConnection) -> tuple[quality.Violations, quality.Violations]:
            return quality.rule_violations(con, label_set.table, rules), quality.duplicate_keys(
                con, label_set.table
            )

        found, dups = _query(bar_store, read, (none, none))
        return _violations_result(
            found, "label domains", duplicate_keys=dups.counts.get("duplicated_keys", 0)
        )

    @dg.asset_check(asset=key, name="pending_resolved", description="Pending rows wait only while fewer "
                    "than H bars follow them. ERROR if H or more do (a recompute is due); WARN if pending "
                    "rows sit in sessions the horizon should have spanned (later sessions short of bars).")  # fmt: skip
    def pending_resolved(bar_store: BarStoreResource) -> dg.AssetCheckResult:
        reach = halo_sessions(label_set, get_settings().timeframe)

        def read(con: duckdb.DuckDBPyConnection) -> quality.Pending:
            return quality.pending_rows(con, label_set.table, halo_bars(label_set), reach)

        found = _query(bar_store, read, quality.Pending(0, 0, 0, pd.DataFrame()))
        return dg.AssetCheckResult(
            passed=found.stale == 0 and found.beyond_reach == 0,
            severity=ERROR if found.stale else WARN,
            metadata={
                "pending_rows": found.pending,
                "stale_pending_rows": found.stale,
                "pending_beyond_reach": found.beyond_reach,
                "horizon_bars": halo_bars(label_set),
                "reach_sessions": reach,
                "examples": _table(found.examples),
            },
        )

    return [value_domains, pending_resolved]


@dg.definitions
def checks() -> dg.Definitions:
    """Bars checks and two checks per configured label set (a @dg.definitions module: objects here
    are only loaded through this function)."""
    label = [check for label_set in load_label_sets() for check in label_checks(label_set)]
    return dg.Definitions(asset_checks=[ohlc_consistency, unique_ticker_ts, bars_session_coverage, *label])
