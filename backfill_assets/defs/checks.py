"""Asset checks over the store (DuckDB or Postgres): `bars` (OHLC, unique keys, session coverage)
and each label set.

Checks judge the whole stored table, not only the partitions a run wrote (one SQL scan each, under
the store's shared lock), so a result describes the table as it is when the check runs. They are
not blocking: a failure is reported and downstream runs still go ahead.
"""

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import dagster as dg
import pandas as pd

from backfill_assets import quality
from backfill_assets.defs.partitions import calendar
from backfill_assets.defs.resources import BarStoreResource
from backfill_assets.labels.config import LabelSet, load_label_sets
from backfill_assets.labels.materialize import halo_bars, halo_sessions
from backfill_assets.settings import get_settings
from backfill_assets.storage.sql import SqlReader
from backfill_assets.timeframes import TIMEFRAMES

T = TypeVar("T")
BARS = dg.AssetKey("bars")
ERROR, WARN = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN
SHORTFALL_DOC = (
    "(ticker, session) pairs with fewer bars than the session holds (half days included). "
    "WARN: IEX feeds legitimately skip minutes without trades."
)
EXCESS_DOC = (
    "(ticker, day) pairs with more bars than the session holds, or bars on a weekend or holiday. "
    "ERROR: no feed produces these; they are an ingest bug."
)
PENDING_DOC = (
    "Pending rows wait only while fewer than H bars follow them in `bars`. ERROR if H or more do (a "
    "recompute is due); WARN if pending rows sit in sessions the horizon should have spanned."
)


def _query(bar_store: BarStoreResource, read: Callable[[SqlReader], T]) -> T:
    """`read` on a read-only connection (under the DuckDB file's shared lock); no table reads as empty."""
    with bar_store.build().reader() as reader:
        return read(reader)


def _table(frame: pd.DataFrame) -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.to_markdown(index=False) if not frame.empty else "none")


def _violations(
    found: quality.Violations, what: str, info: dict[str, Any] | None = None, **extra: int
) -> dg.AssetCheckResult:
    """ERROR when any row breaks a rule or an `extra` count is non-zero; every count as metadata."""
    failed = found.bad_rows + sum(extra.values())
    return dg.AssetCheckResult(
        passed=failed == 0,
        severity=ERROR,
        description=f"{found.bad_rows} of {found.rows} rows break {what}" if failed else None,
        metadata={"rows_checked": found.rows, "violating_rows": found.bad_rows, **found.counts, **extra}
        | (info or {})
        | {"examples": _table(found.examples)},
    )


@dg.asset_check(asset=BARS, description="Whole table: prices finite and > 0, high >= max(open, close), "
                "low <= min(open, close), volume >= 0. ERROR on any violating row.")  # fmt: skip
def ohlc_consistency(bar_store: BarStoreResource) -> dg.AssetCheckResult:
    """The OHLC rules of schemas.validate_bars, re-checked on what is stored."""

    def read(reader: SqlReader) -> quality.Violations:
        return quality.rule_violations(reader, "bars", quality.BAR_RULES)

    return _violations(_query(bar_store, read), "the OHLC rules")


@dg.asset_check(asset=BARS, description="Whole table: (ticker, ts) unique. ERROR on duplicates.")
def unique_ticker_ts(bar_store: BarStoreResource) -> dg.AssetCheckResult:
    """Scans for duplicates only where no constraint enforces the key (an older or hand-made file):
    the scan is the costliest check (~0.7 s per 4M rows) and runs with every bars run."""

    def read(reader: SqlReader) -> quality.Violations | None:
        return None if reader.enforces_unique_key("bars") else quality.duplicate_keys(reader, "bars")

    found = _query(bar_store, read)
    if found is None:
        return dg.AssetCheckResult(passed=True, metadata={"enforced_by_constraint": True})
    return _violations(found, "(ticker, ts) uniqueness", {"enforced_by_constraint": False})


@dg.multi_asset_check(
    name="bars_session_coverage",
    specs=[
        dg.AssetCheckSpec("session_shortfall", asset=BARS, description=SHORTFALL_DOC),
        dg.AssetCheckSpec("session_excess", asset=BARS, description=EXCESS_DOC),
    ],
)
def bars_session_coverage(bar_store: BarStoreResource) -> Iterator[dg.AssetCheckResult]:
    """Bars per stored (ticker, session) against the calendar and each row's timeframe, one query."""
    expected = quality.expected_bars(calendar, TIMEFRAMES.values())

    def read(reader: SqlReader) -> quality.Coverage:
        return quality.session_coverage(reader, expected)

    found = _query(bar_store, read)
    counts = found.counts
    common = {k: counts[k] for k in ("sessions_checked", "unjudged_sessions")}
    yield dg.AssetCheckResult(
        check_name="session_shortfall",
        passed=counts["short_sessions"] == 0,
        severity=WARN,
        metadata=common
        | {k: counts[k] for k in ("short_sessions", "missing_bars")}
        | {"worst_shortfalls": _table(found.worst_short)},
    )
    yield dg.AssetCheckResult(
        check_name="session_excess",
        passed=counts["excess_sessions"] == 0,
        severity=ERROR,
        metadata=common
        | {k: counts[k] for k in ("excess_sessions", "excess_bars")}
        | {"worst_excess": _table(found.worst_excess)},
    )


def label_checks(label_set: LabelSet) -> list[dg.AssetChecksDefinition]:
    """`value_domains` and `pending_resolved` on asset `labels/<name>`, over its whole table."""
    key = dg.AssetKey(["labels", label_set.name])
    rules = quality.label_rules(label_set.kind, label_set.horizon)
    horizon, reach = halo_bars(label_set), halo_sessions(label_set, get_settings().timeframe)

    @dg.asset_check(asset=key, name="value_domains", description=f"Whole table: {', '.join(rules)} "
                    "and duplicate (ticker, ts) keys. ERROR on any violation.")  # fmt: skip
    def value_domains(bar_store: BarStoreResource) -> dg.AssetCheckResult:
        def read(reader: SqlReader) -> tuple[quality.Violations, quality.Violations]:
            table = label_set.table
            return quality.rule_violations(reader, table, rules), quality.duplicate_keys(reader, table)

        found, dups = _query(bar_store, read)
        return _violations(found, "label domains", duplicate_keys=dups.counts.get("duplicated_keys", 0))

    @dg.asset_check(asset=key, name="pending_resolved", description=PENDING_DOC)
    def pending_resolved(bar_store: BarStoreResource) -> dg.AssetCheckResult:
        def read(reader: SqlReader) -> quality.Pending:
            return quality.pending_rows(reader, label_set.table, horizon, reach)

        found = _query(bar_store, read)
        metadata: dict[str, Any] = {
            "pending_rows": found.pending,
            "stale_pending_rows": found.stale,
            "pending_beyond_reach": found.beyond_reach,
            "horizon_bars": horizon,
            "reach_sessions": reach,
            "examples": _table(found.examples),
        }
        return dg.AssetCheckResult(
            passed=found.stale == 0 and found.beyond_reach == 0,
            severity=ERROR if found.stale else WARN,
            metadata=metadata,
        )

    return [value_domains, pending_resolved]


@dg.definitions
def checks() -> dg.Definitions:
    """Every check (a module with a @dg.definitions function is loaded only through it)."""
    labels = [check for label_set in load_label_sets() for check in label_checks(label_set)]
    return dg.Definitions(asset_checks=[ohlc_consistency, unique_ticker_ts, bars_session_coverage, *labels])
