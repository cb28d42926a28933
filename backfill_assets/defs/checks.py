"""Asset checks over the store (DuckDB or Postgres): `bars` (OHLC, unique keys, session coverage)
and each label set.

Each run checks the slices it wrote (check specs on the assets themselves, evaluated after the
write under the store's shared lock), so a check costs what the run wrote and never enumerates the
partition space or scans the history. The whole tables are swept by `table_sweep_job` on a weekly
schedule, which reports under the same check names. Checks are not blocking: a failure is reported
and downstream runs still go ahead.
"""

import datetime as dt
from collections.abc import Callable, Collection
from typing import Any, TypeVar

import dagster as dg
import pandas as pd

from backfill_assets import quality
from backfill_assets.defs.partitions import calendar
from backfill_assets.defs.resources import BarStoreResource
from backfill_assets.labels.config import LabelSet
from backfill_assets.labels.materialize import halo_bars, halo_sessions
from backfill_assets.settings import get_settings
from backfill_assets.storage.base import Slice
from backfill_assets.storage.sql import SqlReader
from backfill_assets.timeframes import TIMEFRAMES, Timeframe

T = TypeVar("T")
BARS = dg.AssetKey("bars")
ERROR, WARN = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN
SCOPE_DOC = " A run checks the slices it wrote; the weekly table sweep checks the whole table."
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
BAR_CHECKS = [
    dg.AssetCheckSpec("ohlc_consistency", asset=BARS, description="Prices finite and > 0, high >= "
                      "max(open, close), low <= min(open, close), volume >= 0. ERROR." + SCOPE_DOC),
    dg.AssetCheckSpec("unique_ticker_ts", asset=BARS, description="(ticker, ts) unique. ERROR." + SCOPE_DOC),
    dg.AssetCheckSpec("session_shortfall", asset=BARS, description=SHORTFALL_DOC + SCOPE_DOC),
    dg.AssetCheckSpec("session_excess", asset=BARS, description=EXCESS_DOC + SCOPE_DOC),
]  # fmt: skip


def label_check_specs(label_set: LabelSet) -> list[dg.AssetCheckSpec]:
    key = dg.AssetKey(["labels", label_set.name])
    rules = quality.label_rules(label_set.kind, label_set.horizon)
    domains = f"{', '.join(rules)} and duplicate (ticker, ts) keys. ERROR on any violation."
    return [
        dg.AssetCheckSpec("value_domains", asset=key, description=domains + SCOPE_DOC),
        dg.AssetCheckSpec("pending_resolved", asset=key, description=PENDING_DOC + SCOPE_DOC),
    ]


def _query(bar_store: BarStoreResource, read: Callable[[SqlReader], T]) -> T:
    """`read` on a read-only connection (under the DuckDB file's shared lock); no table reads as empty."""
    with bar_store.build().reader() as reader:
        return read(reader)


def _table(frame: pd.DataFrame) -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.to_markdown(index=False) if not frame.empty else "none")


def _scope(table: str, slices: Collection[Slice] | None) -> quality.Scope:
    return quality.Scope(table, None if slices is None else frozenset(slices))


def _violations(
    name: str,
    found: quality.Violations,
    what: str,
    info: dict[str, Any] | None = None,
    asset_key: dg.AssetKey | None = None,
    **extra: int,
) -> dg.AssetCheckResult:
    """ERROR when any row breaks a rule or an `extra` count is non-zero; every count as metadata."""
    failed = found.bad_rows + sum(extra.values())
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=name,
        passed=failed == 0,
        severity=ERROR,
        description=f"{found.bad_rows} of {found.rows} rows break {what}" if failed else None,
        metadata={"rows_checked": found.rows, "violating_rows": found.bad_rows, **found.counts, **extra}
        | (info or {})
        | {"examples": _table(found.examples)},
    )


def bar_checks(bar_store: BarStoreResource, slices: Collection[Slice] | None) -> list[dg.AssetCheckResult]:
    """Every `bars` check over `slices` (None: the whole table), in one read-only connection."""
    scope = _scope("bars", slices)
    days = None if slices is None else sorted({day for _, day in slices})
    expected = quality.expected_bars(calendar, TIMEFRAMES.values(), days)

    def read(reader: SqlReader) -> tuple[quality.Violations, quality.Violations | None, quality.Coverage]:
        rules = quality.rule_violations(reader, scope, quality.BAR_RULES)
        # The duplicate scan is skipped where a constraint enforces the key (every store we create).
        dups = None if reader.enforces_unique_key("bars") else quality.duplicate_keys(reader, scope)
        return rules, dups, quality.session_coverage(reader, expected, scope)

    rules, dups, coverage = _query(bar_store, read)
    counts = coverage.counts
    common = {k: counts[k] for k in ("sessions_checked", "unjudged_sessions")}
    name = "unique_ticker_ts"
    unique = (
        dg.AssetCheckResult(check_name=name, passed=True, metadata={"enforced_by_constraint": True})
        if dups is None
        else _violations(name, dups, "(ticker, ts) uniqueness", {"enforced_by_constraint": False})
    )

    def coverage_result(
        name: str, severity: dg.AssetCheckSeverity, kind: str, worst: str
    ) -> dg.AssetCheckResult:
        frame = coverage.worst_short if kind == "short" else coverage.worst_excess
        keys = ("short_sessions", "missing_bars") if kind == "short" else ("excess_sessions", "excess_bars")
        return dg.AssetCheckResult(
            check_name=name,
            passed=counts[keys[0]] == 0,
            severity=severity,
            metadata=common | {k: counts[k] for k in keys} | {worst: _table(frame)},
        )

    return [
        _violations("ohlc_consistency", rules, "the OHLC rules"),
        unique,
        coverage_result("session_shortfall", WARN, "short", "worst_shortfalls"),
        coverage_result("session_excess", ERROR, "excess", "worst_excess"),
    ]


def label_checks(
    label_set: LabelSet,
    bar_store: BarStoreResource,
    slices: Collection[Slice] | None,
    timeframe: Timeframe | None = None,
) -> list[dg.AssetCheckResult]:
    """`value_domains` and `pending_resolved` of one label set over `slices` (None: the whole table),
    for bars of `timeframe` (default: the settings')."""
    scope = _scope(label_set.table, slices)
    rules = quality.label_rules(label_set.kind, label_set.horizon)
    horizon, reach = halo_bars(label_set), halo_sessions(label_set, timeframe or get_settings().timeframe)
    until: dt.date | None = None
    if slices is not None:  # bars the run's last rows can still reach: H bars span at most `reach` sessions
        until = calendar.offset(max(day for _, day in slices), reach + 1)

    def read(reader: SqlReader) -> tuple[quality.Violations, quality.Violations, quality.Pending]:
        found = quality.rule_violations(reader, scope, rules)
        return (
            found,
            quality.duplicate_keys(reader, scope),
            quality.pending_rows(
                reader, scope, horizon, reach, until, extended=label_set.trading_hours == "extended"
            ),
        )

    found, dups, pending = _query(bar_store, read)
    metadata: dict[str, Any] = {
        "pending_rows": pending.pending,
        "stale_pending_rows": pending.stale,
        "pending_beyond_reach": pending.beyond_reach,
        "horizon_bars": horizon,
        "reach_sessions": reach,
        "examples": _table(pending.examples),
    }
    duplicated = dups.counts.get("duplicated_keys", 0)
    # Named with their asset: one multi-asset holds every label set's checks under the same names.
    key = dg.AssetKey(["labels", label_set.name])
    return [
        _violations("value_domains", found, "label domains", asset_key=key, duplicate_keys=duplicated),
        dg.AssetCheckResult(
            asset_key=key,
            check_name="pending_resolved",
            passed=pending.stale == 0 and pending.beyond_reach == 0,
            severity=ERROR if pending.stale else WARN,
            metadata=metadata,
        ),
    ]  # fmt: skip


def as_evaluation(asset_key: dg.AssetKey, result: dg.AssetCheckResult) -> dg.AssetCheckEvaluation:
    """A check result reported from outside the asset's own run (the table sweep)."""
    assert result.check_name is not None
    return dg.AssetCheckEvaluation(
        asset_key=asset_key,
        check_name=result.check_name,
        passed=result.passed,
        metadata=dict(result.metadata) | {"scope": "whole table"},
        severity=result.severity,
        description=result.description,
    )
