"""Asset checks through real Dagster runs on real DuckDB files: clean data passes, corruption fails.

A run checks the slices it wrote; the weekly `table_sweep_job` checks whole tables (corruption made
by hand between runs is what it finds)."""

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from backfill_assets import quality
from backfill_assets.calendar import TradingCalendar
from backfill_assets.definitions import defs
from backfill_assets.defs.bars import bars
from backfill_assets.defs.labels import label_asset
from backfill_assets.defs.providers import SyntheticProviderResource
from backfill_assets.defs.resources import BarStoreResource
from backfill_assets.defs.table_sweep import table_sweep_job
from backfill_assets.labels.config import DEFAULT_FILE, load_label_sets
from backfill_assets.storage.duckdb_store import DuckDBBarStore
from backfill_assets.storage.postgres_store import PostgresStore
from backfill_assets.storage.sql import DuckDBReader, SqlReader
from backfill_assets.timeframes import TIMEFRAMES

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
FIRST, LAST = "2024-07-01", "2024-07-05"  # 3 Jul is a 210-minute half day, 4 Jul a holiday
SETS = {s.kind: s for s in load_label_sets(DEFAULT_FILE)}  # the project's own label sets (H=60)
LABELS = [label_asset(s) for s in SETS.values()]
Results = dict[str, dg.AssetCheckEvaluation]


def run(
    instance: dg.DagsterInstance, db_path: Path, selection: Any, timeframe: str = "1Min", **kwargs: Any
) -> Results:
    """One real run of `selection` (assets and/or checks); check evaluations by 'asset:check'."""
    resources = {
        "bar_store": BarStoreResource(duckdb_path=str(db_path)),
        "bar_provider": SyntheticProviderResource(timeframe=timeframe),
    }
    result = dg.materialize(
        [bars, *LABELS], instance=instance, resources=resources, selection=selection, **kwargs
    )
    assert result.success
    return {f"{e.asset_key.to_user_string()}:{e.check_name}": e for e in result.get_asset_check_evaluations()}


def sweep(instance: dg.DagsterInstance, db_path: Path) -> Results:
    """The whole-table sweep job, run for real; its check evaluations by 'asset:check'."""
    result = table_sweep_job.execute_in_process(
        instance=instance, resources={"bar_store": BarStoreResource(duckdb_path=str(db_path))}
    )
    assert result.success
    return {f"{e.asset_key.to_user_string()}:{e.check_name}": e for e in result.get_asset_check_evaluations()}


def load(instance: dg.DagsterInstance, db_path: Path, tickers: tuple[str, ...], first: str, last: str,
         selection: Any = "bars", timeframe: str = "1Min") -> Results:  # fmt: skip
    """Materialize `selection` over sessions [first, last], one ranged run per ticker."""
    results: Results = {}
    for ticker in tickers:
        tags = {RANGE_START: f"{first}|{ticker}", RANGE_END: f"{last}|{ticker}"}
        results |= run(instance, db_path, selection, timeframe, tags=tags)
    return results


def values(evaluation: dg.AssetCheckEvaluation, *keys: str) -> dict[str, Any]:
    return {k: evaluation.metadata[k].value for k in keys}


def sql(db_path: Path, *statements: str) -> None:
    with DuckDBBarStore(db_path).connect(read_only=False) as con:
        for statement in statements:
            con.execute(statement)


BAR_SELECTION = dg.AssetSelection.assets(bars)
BAR_CHECKS = (
    "bars:ohlc_consistency",
    "bars:unique_ticker_ts",
    "bars:session_shortfall",
    "bars:session_excess",
)


@pytest.mark.parametrize("timeframe, full, half", [("1Min", 390, 210), ("1Hour", 7, 4)])
def test_bars_checks_pass_on_clean_bars_including_the_half_day(
    instance: dg.DagsterInstance, db_path: Path, timeframe: str, full: int, half: int
) -> None:
    results = load(instance, db_path, ("AAPL", "MSFT"), FIRST, LAST, BAR_SELECTION, timeframe)
    assert {k for k, e in results.items() if e.passed} == set(BAR_CHECKS)
    # each run checks its own ticker's slices: the last run's four sessions
    assert values(results["bars:ohlc_consistency"], "rows_checked")["rows_checked"] == 3 * full + half
    assert values(results["bars:unique_ticker_ts"], "enforced_by_constraint") == {
        "enforced_by_constraint": True
    }
    coverage = values(results["bars:session_shortfall"], "sessions_checked", "unjudged_sessions")
    assert coverage == {"sessions_checked": 4, "unjudged_sessions": 0}


def test_bars_checks_catch_a_bad_high_a_missing_minute_and_an_extra_bar(
    instance: dg.DagsterInstance, db_path: Path
) -> None:
    load(instance, db_path, ("AAPL", "MSFT"), FIRST, LAST)
    sql(
        db_path,
        "UPDATE bars SET high = least(open, close) - 0.01 WHERE ticker = 'AAPL' "
        "AND ts = (SELECT min(ts) FROM bars WHERE ticker = 'AAPL')",
        "DELETE FROM bars WHERE ticker = 'AAPL' AND ts = TIMESTAMPTZ '2024-07-03 15:00:00+00'",  # 11:00 ET
        # a bar stamped at the 16:00 close: one more than the session holds
        "INSERT INTO bars SELECT * REPLACE (ts + INTERVAL 1 MINUTE AS ts) FROM bars WHERE ticker = 'MSFT' "
        "AND ts = (SELECT max(ts) FROM bars WHERE ticker = 'MSFT' AND session_date = DATE '2024-07-02')",
    )
    results = sweep(instance, db_path)
    ohlc = results["bars:ohlc_consistency"]
    assert not ohlc.passed and ohlc.severity == dg.AssetCheckSeverity.ERROR
    assert values(ohlc, "violating_rows", "high_below_open_close", "low_above_open_close") == {
        "violating_rows": 1, "high_below_open_close": 1, "low_above_open_close": 0
    }  # fmt: skip
    short = results["bars:session_shortfall"]
    print({k: v.value for k, v in short.metadata.items()})
    assert not short.passed and short.severity == dg.AssetCheckSeverity.WARN
    assert values(short, "short_sessions", "missing_bars") == {"short_sessions": 1, "missing_bars": 1}
    assert "| AAPL     | 2024-07-03     |    209 |        210 |" in str(
        short.metadata["worst_shortfalls"].value
    )
    excess = results["bars:session_excess"]
    assert not excess.passed and excess.severity == dg.AssetCheckSeverity.ERROR
    assert values(excess, "excess_sessions", "excess_bars") == {"excess_sessions": 1, "excess_bars": 1}
    assert "MSFT" in str(excess.metadata["worst_excess"].value)
    assert results["bars:unique_ticker_ts"].passed


def test_duplicates_fail_where_the_table_has_no_primary_key(
    instance: dg.DagsterInstance, db_path: Path
) -> None:
    """DuckDB's PRIMARY KEY refuses duplicates, so the check is exercised on a key-less `bars` (as a
    file written by other tools could have): the same SQL, the same Dagster check."""
    load(instance, db_path, ("AAPL",), FIRST, FIRST)
    sql(
        db_path,
        "CREATE TABLE bars_copy AS SELECT * FROM bars",
        "DROP TABLE bars",
        "ALTER TABLE bars_copy RENAME TO bars",
        "INSERT INTO bars SELECT * FROM bars ORDER BY ts LIMIT 2",
    )
    results = sweep(instance, db_path)
    unique = results["bars:unique_ticker_ts"]
    assert not unique.passed and unique.severity == dg.AssetCheckSeverity.ERROR
    assert values(unique, "duplicated_keys", "surplus_rows", "enforced_by_constraint") == {
        "duplicated_keys": 2, "surplus_rows": 2, "enforced_by_constraint": False
    }  # fmt: skip
    assert values(results["bars:session_excess"], "excess_bars")["excess_bars"] == 2


@pytest.fixture(params=["duckdb", "postgres"])
def reader(request: pytest.FixtureRequest) -> Iterator[SqlReader]:
    """The quality SQL on both engines: an in-memory DuckDB, or an empty schema on the test server."""
    if request.param == "duckdb":
        yield DuckDBReader(duckdb.connect())
        return
    store: PostgresStore = request.getfixturevalue("pg_store")
    with store.connect(autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {store.schema}")
    with store.reader() as found:
        yield found


def test_duplicate_keys_counts_keys_and_surplus_rows(reader: SqlReader) -> None:
    rows = "('A', 1), ('A', 1), ('A', 1), ('A', 2), ('B', 1)"
    reader.execute(f"CREATE TABLE t AS SELECT * FROM (VALUES {rows}) v(ticker, ts)")
    found = quality.duplicate_keys(reader, quality.Scope("t"))
    assert (found.rows, found.counts) == (5, {"duplicated_keys": 1, "surplus_rows": 2})
    assert quality.duplicate_keys(reader, quality.Scope("missing")).counts == {
        "duplicated_keys": 0,
        "surplus_rows": 0,
    }


@pytest.mark.parametrize(
    "name, full, half",
    [("1Min", 390, 210), ("5Min", 78, 42), ("15Min", 26, 14), ("1Hour", 7, 4), ("1Day", 1, 1)],
)
def test_bars_per_session_counts_session_anchored_bars(
    calendar: TradingCalendar, name: str, full: int, half: int
) -> None:
    timeframe = TIMEFRAMES[name]
    assert quality.bars_per_session(calendar, dt.date(2024, 7, 2), timeframe) == full
    assert quality.bars_per_session(calendar, dt.date(2024, 7, 3), timeframe) == half
    expected = quality.expected_bars(calendar, [timeframe]).set_index("session_date")["expected"]
    assert expected[dt.date(2024, 7, 4)] == 0 and expected[dt.date(2024, 7, 6)] == 0  # holiday, Saturday


def test_label_domains_pass_on_computed_labels_and_fail_on_corrupt_values(
    instance: dg.DagsterInstance, db_path: Path
) -> None:
    results = load(instance, db_path, ("AAPL",), FIRST, LAST, selection=None)
    assert all(e.passed for e in results.values()) and len(results) == 4 + 2 * len(SETS)
    tb, mfe = SETS["triple_barrier"], SETS["mfe_mae"]
    first_labelled = f"(SELECT min(ts) FROM labels_{tb.name} WHERE label IS NOT NULL)"
    sql(
        db_path,
        f"UPDATE labels_{tb.name} SET label = 2 WHERE ts = {first_labelled}",
        f"UPDATE labels_{tb.name} SET bars_to_exit = {tb.horizon + 1} WHERE ts = (SELECT max(ts) FROM "
        f"labels_{tb.name} WHERE label IS NOT NULL)",
        f"UPDATE labels_{mfe.name} SET mfe = mae - 0.01 WHERE ts = (SELECT min(ts) FROM labels_{mfe.name} "
        "WHERE mfe IS NOT NULL)",
    )
    results = sweep(instance, db_path)
    domains = results[f"labels/{tb.name}:value_domains"]
    assert not domains.passed and domains.severity == dg.AssetCheckSeverity.ERROR
    assert values(domains, "violating_rows", "label_outside_domain", "bars_to_exit_out_of_range") == {
        "violating_rows": 2, "label_outside_domain": 1, "bars_to_exit_out_of_range": 1
    }  # fmt: skip
    excursions = results[f"labels/{mfe.name}:value_domains"]
    assert not excursions.passed and values(excursions, "mfe_below_mae") == {"mfe_below_mae": 1}
    assert results[f"labels/{SETS['vol_scaled_return'].name}:value_domains"].passed


def test_pending_rows_fail_when_enough_bars_follow_and_warn_when_later_sessions_are_short(
    instance: dg.DagsterInstance, db_path: Path
) -> None:
    """MFE/MAE has no barrier to stop early: exactly the rows followed by fewer than H bars wait."""
    excursions = SETS["mfe_mae"]
    check, horizon = f"labels/{excursions.name}:pending_resolved", excursions.horizon
    asset = LABELS[list(SETS).index("mfe_mae")]
    labels = dg.AssetSelection.assets(asset)
    load(instance, db_path, ("AAPL",), FIRST, "2024-07-02")
    waiting = load(instance, db_path, ("AAPL",), FIRST, "2024-07-02", labels)[check]
    assert waiting.passed and values(waiting, "pending_rows") == {"pending_rows": horizon}

    load(instance, db_path, ("AAPL",), "2024-07-03", "2024-07-03")  # 210 bars follow: labels are due
    stale = sweep(instance, db_path)[check]
    assert not stale.passed and stale.severity == dg.AssetCheckSeverity.ERROR
    assert values(stale, "pending_rows", "stale_pending_rows") == {
        "pending_rows": horizon,
        "stale_pending_rows": horizon,
    }

    resolved = load(instance, db_path, ("AAPL",), "2024-07-02", "2024-07-02", labels)[check]
    assert resolved.passed and values(resolved, "pending_rows") == {"pending_rows": 0}

    # 3 Jul keeps its first 10 bars: the last H - 10 rows of 2 Jul wait legitimately, yet a whole
    # later session is stored, short of the bars that would have resolved them
    sql(db_path, "DELETE FROM bars WHERE ts >= TIMESTAMPTZ '2024-07-03 13:40:00+00'")  # 9:40 ET
    short = load(instance, db_path, ("AAPL",), "2024-07-02", "2024-07-02", labels)[check]
    assert not short.passed and short.severity == dg.AssetCheckSeverity.WARN
    assert values(short, "pending_rows", "stale_pending_rows", "pending_beyond_reach") == {
        "pending_rows": horizon - 10,
        "stale_pending_rows": 0,
        "pending_beyond_reach": horizon - 10,
    }


def test_code_location_has_every_check() -> None:
    keys = {k.to_user_string() for k in defs().resolve_asset_graph().asset_check_keys}
    labels = {f"labels/{name}:{check}" for name in ("enhanced_triple_barrier", "vol_scaled_return", "mfe_mae")
              for check in ("value_domains", "pending_resolved")}  # fmt: skip
    assert keys == set(BAR_CHECKS) | labels


@pytest.mark.parametrize(
    "row, rule",
    [
        ("(10, 9.5, 9, 10, 100)", "high_below_open_close"),
        ("(10, 11, 10.5, 10.2, 100)", "low_above_open_close"),
        ("(0, 11, 0, 10, 100)", "missing_or_non_positive_price"),
        ("(NULL, 11, 9, 10, 100)", "missing_or_non_positive_price"),
        ("(10, 11, 9, 'nan'::FLOAT8, 100)", "missing_or_non_positive_price"),
        ("(10, 11, 9, 10, 'infinity'::FLOAT8)", "negative_or_missing_volume"),
        ("(10, 11, 9, 10, -1)", "negative_or_missing_volume"),
    ],
)
def test_bar_rules_flag_each_kind_of_bad_bar(reader: SqlReader, row: str, rule: str) -> None:
    reader.execute(
        "CREATE TABLE bars AS SELECT 'AAPL' AS ticker, TIMESTAMPTZ '2024-07-01 13:30:00+00' AS ts, "
        "open::FLOAT8 AS open, high::FLOAT8 AS high, low::FLOAT8 AS low, close::FLOAT8 AS close, "
        f"volume::FLOAT8 AS volume FROM (VALUES (10, 11, 9, 10, 0), {row}) v(open, high, low, close, volume)"
    )
    found = quality.rule_violations(reader, quality.Scope("bars"), quality.BAR_RULES)
    assert (found.rows, found.bad_rows) == (2, 1)
    assert {name for name, n in found.counts.items() if n} == {rule}
    assert len(found.examples) == 1 and bool(found.examples.loc[0, rule])


def test_session_bounded_labels_never_wait(reader: SqlReader) -> None:
    """With no forward halo (cross_session: false) any pending row is stale, whatever follows it."""
    reader.execute(
        "CREATE TABLE bars AS SELECT 'AAPL' AS ticker, "
        "TIMESTAMPTZ '2024-07-01 13:30:00+00' AS ts, DATE '2024-07-01' AS session_date"
    )
    reader.execute("CREATE TABLE labels_x AS SELECT *, TRUE AS pending FROM bars")
    labels = quality.Scope("labels_x")
    assert quality.pending_rows(reader, labels, horizon=0, reach_sessions=0).stale == 1
    assert quality.pending_rows(reader, labels, horizon=60, reach_sessions=1).stale == 0


def test_pending_rows_with_h_bars_after_them_are_stale(reader: SqlReader) -> None:
    """Three bars follow the first row: pending is fine for H=4, stale from H=3 (both engines agree)."""
    reader.execute(
        "CREATE TABLE bars AS SELECT 'AAPL' AS ticker, TIMESTAMPTZ '2024-07-01 13:30:00+00' "
        "+ i * INTERVAL '1 minute' AS ts, DATE '2024-07-01' AS session_date "
        "FROM (VALUES (0), (1), (2), (3)) v(i)"
    )
    reader.execute("CREATE TABLE labels_x AS SELECT *, ts = (SELECT min(ts) FROM bars) AS pending FROM bars")
    labels = quality.Scope("labels_x")
    assert quality.pending_rows(reader, labels, horizon=4, reach_sessions=1).stale == 0
    assert quality.pending_rows(reader, labels, horizon=3, reach_sessions=1).stale == 1


def test_a_run_checks_only_its_own_slices_and_the_sweep_checks_the_table(
    instance: dg.DagsterInstance, db_path: Path
) -> None:
    """Corruption outside a run's slices is not that run's to judge (nor to pay for); the sweep finds it."""
    load(instance, db_path, ("AAPL", "MSFT"), FIRST, LAST)
    first_aapl = "(SELECT min(ts) FROM bars WHERE ticker = 'AAPL')"
    sql(
        db_path,
        f"UPDATE bars SET high = least(open, close) - 0.01 WHERE ticker = 'AAPL' AND ts = {first_aapl}",
    )
    one_session = {RANGE_START: "2024-07-02|MSFT", RANGE_END: "2024-07-02|MSFT"}
    results = run(instance, db_path, BAR_SELECTION, tags=one_session)
    assert results["bars:ohlc_consistency"].passed
    assert values(results["bars:ohlc_consistency"], "rows_checked") == {"rows_checked": 390}
    assert values(results["bars:session_shortfall"], "sessions_checked") == {"sessions_checked": 1}
    swept = sweep(instance, db_path)
    assert not swept["bars:ohlc_consistency"].passed
    assert values(swept["bars:ohlc_consistency"], "rows_checked", "violating_rows", "scope") == {
        "rows_checked": 2 * (3 * 390 + 210), "violating_rows": 1, "scope": "whole table"
    }  # fmt: skip


def test_scoped_checks_read_rows_of_the_scope_only(reader: SqlReader) -> None:
    """A slice is (ticker, session): rows of the same ticker on other days, or other tickers, are out."""
    reader.execute(
        "CREATE TABLE bars AS SELECT ticker, CAST(day AS TIMESTAMPTZ) + INTERVAL '13 hours' AS ts, "
        "CAST(day AS DATE) AS session_date FROM (VALUES ('A', '2024-07-01'), ('A', '2024-07-02'), "
        "('B', '2024-07-01')) v(ticker, day)"
    )
    scope = quality.Scope("bars", frozenset({("A", dt.date(2024, 7, 1))}))
    assert quality.duplicate_keys(reader, scope).rows == 1
    assert quality.duplicate_keys(reader, quality.Scope("bars")).rows == 3
