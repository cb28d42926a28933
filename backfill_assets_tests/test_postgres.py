"""The Postgres store through real Dagster runs: the same rows, labels and check results as DuckDB."""

import datetime as dt
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import psycopg
import pytest

from backfill_assets.calendar import TradingCalendar
from backfill_assets.defs.bars import bars
from backfill_assets.defs.labels import label_asset
from backfill_assets.defs.providers import SyntheticProviderResource
from backfill_assets.defs.resources import BarStoreResource, store_resource
from backfill_assets.settings import SettingsError, load_settings
from backfill_assets.storage.base import StoreError
from backfill_assets.storage.duckdb_labels import DuckDBLabelStore
from backfill_assets.storage.duckdb_store import DuckDBBarStore
from backfill_assets.storage.postgres_labels import PostgresLabelStore
from backfill_assets.storage.postgres_store import PostgresStore
from backfill_assets_tests.store_writers import tagged_bars
from backfill_assets_tests.test_labels import SETS, TICKERS

pytestmark = pytest.mark.postgres
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
FIRST, LAST = "2024-07-01", "2024-07-10"  # a half day, a holiday, and a week after it
LABELS = [label_asset(s) for s in SETS]


def materialize_all(instance: dg.DagsterInstance, store: BarStoreResource) -> dict[str, dict[str, Any]]:
    """Bars, four label sets and every check, one ranged run per ticker; check metadata by name."""
    results: dict[str, dict[str, Any]] = {}
    resources = {"bar_store": store, "bar_provider": SyntheticProviderResource()}
    for ticker in TICKERS:
        tags = {RANGE_START: f"{FIRST}|{ticker}", RANGE_END: f"{LAST}|{ticker}"}
        result = dg.materialize([bars, *LABELS], instance=instance, resources=resources, tags=tags)
        assert result.success
        for e in result.get_asset_check_evaluations():
            meta = {k: v.value for k, v in e.metadata.items() if not isinstance(v, dg.MarkdownMetadataValue)}
            results[f"{e.asset_key.to_user_string()}:{e.check_name}"] = {"passed": e.passed} | meta
    return results


def test_postgres_runs_store_what_duckdb_stores_and_checks_agree(
    instance: dg.DagsterInstance, db_path: Path, pg_store: PostgresStore, calendar: TradingCalendar
) -> None:
    on_duckdb = materialize_all(instance, BarStoreResource(duckdb_path=str(db_path)))
    postgres = BarStoreResource(
        backend="postgres", postgres_url=pg_store.url, postgres_schema=pg_store.schema
    )
    on_postgres = materialize_all(instance, postgres)

    duck = DuckDBBarStore(db_path)
    value_columns = ["ticker", "ts", "session_date", "open", "high", "low", "close", "volume", "vwap"]
    pd.testing.assert_frame_equal(duck.read_bars()[value_columns], pg_store.read_bars()[value_columns])
    sessions = calendar.sessions_in(dt.date.fromisoformat(FIRST), dt.date.fromisoformat(LAST))
    assert len(pg_store.read_bars()) == len(TICKERS) * sum(map(calendar.session_minutes, sessions))
    for label_set in SETS:  # bit for bit, NULLs in the same places; only integer widths differ
        expected = DuckDBLabelStore(duck).read_labels(label_set.table)
        found = PostgresLabelStore(pg_store).read_labels(label_set.table)
        assert len(found) == len(expected) > 0
        pd.testing.assert_frame_equal(found, expected, check_dtype=False)
    assert on_postgres == on_duckdb
    assert on_postgres["bars:unique_ticker_ts"]["enforced_by_constraint"] is True
    assert all(result["passed"] for name, result in on_postgres.items() if "session_shortfall" not in name)


def test_rematerializing_on_postgres_gives_the_same_rows(
    instance: dg.DagsterInstance, pg_store: PostgresStore
) -> None:
    store = BarStoreResource(backend="postgres", postgres_url=pg_store.url, postgres_schema=pg_store.schema)
    materialize_all(instance, store)
    first = PostgresLabelStore(pg_store).read_labels(SETS[0].table)
    materialize_all(instance, store)
    pd.testing.assert_frame_equal(first, PostgresLabelStore(pg_store).read_labels(SETS[0].table))


def test_a_table_of_another_schema_version_or_layout_is_refused(pg_store: PostgresStore) -> None:
    labels = PostgresLabelStore(pg_store)
    frame = pd.DataFrame(columns=["ticker", "ts", "session_date", "vsr"])
    labels.replace_labels("labels_x", {"vsr": "DOUBLE"}, frame, [])
    fresh = PostgresLabelStore(PostgresStore(pg_store.url, pg_store.schema))
    with pytest.raises(StoreError, match=r"labels_x has columns .* expected .*'mfe'"):
        fresh.replace_labels("labels_x", {"mfe": "DOUBLE"}, frame.rename(columns={"vsr": "mfe"}), [])
    with pg_store.connect() as conn:
        conn.execute("UPDATE backfill_schema SET version = 99 WHERE table_name = 'labels_x'")
    with pytest.raises(StoreError, match="labels_x has schema version 99, this code writes version 1"):
        PostgresLabelStore(PostgresStore(pg_store.url, pg_store.schema)).replace_labels(
            "labels_x", {"vsr": "DOUBLE"}, frame, []
        )


def test_unreachable_server_is_a_clear_error_without_the_password() -> None:
    store = PostgresStore("postgresql://trader:s3cret@127.0.0.1:1/market", lock_timeout_s=1)
    with pytest.raises(
        StoreError, match=r"cannot connect to Postgres at postgresql://trader@127.0.0.1:1/market"
    ) as err:
        store.read_bars()
    assert "s3cret" not in str(err.value) and "s3cret" not in store.describe()


def test_a_bad_schema_name_is_refused_before_any_sql() -> None:
    with pytest.raises(StoreError, match="invalid Postgres schema name 'x\"; DROP TABLE bars; --'"):
        PostgresStore("postgresql://h/db", 'x"; DROP TABLE bars; --')


def test_store_settings_name_the_bad_value(tmp_path: Path) -> None:
    env = {"BACKFILL_TICKERS": "AAPL"}
    with pytest.raises(SettingsError, match="BACKFILL_STORE='sqlite': expected one of duckdb, postgres"):
        load_settings(env | {"BACKFILL_STORE": "sqlite"})
    with pytest.raises(SettingsError, match="BACKFILL_STORE='postgres' needs BACKFILL_POSTGRES_URL"):
        load_settings(env | {"BACKFILL_STORE": "postgres"})
    with pytest.raises(SettingsError, match="BACKFILL_POSTGRES_SCHEMA='x; DROP TABLE bars'"):
        load_settings(env | {"BACKFILL_STORE": "postgres", "BACKFILL_POSTGRES_URL": "postgresql://h/db",
                             "BACKFILL_POSTGRES_SCHEMA": "x; DROP TABLE bars"})  # fmt: skip
    settings = load_settings(
        env | {"BACKFILL_STORE": "postgres", "BACKFILL_POSTGRES_URL": "postgresql://h/db"}
    )
    resource = store_resource(settings)
    assert resource.backend == "postgres" and resource.postgres_schema == "public"


def test_concurrent_first_writers_create_the_schema_once(pg_database: str) -> None:
    """Eight stores on a fresh schema write at once: the DDL is serialized, every write lands."""
    from concurrent.futures import ThreadPoolExecutor

    schema = "first_use"
    stores = [PostgresStore(pg_database, schema) for _ in range(8)]
    frame = pd.DataFrame(columns=["ticker", "ts", "session_date", "vsr"])

    def write(store: PostgresStore) -> int:
        return PostgresLabelStore(store).replace_labels("labels_x", {"vsr": "DOUBLE"}, frame, [])

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(write, stores)) == [0] * 8
    with psycopg.connect(pg_database) as conn:
        rows = conn.execute(f"SELECT table_name, version FROM {schema}.backfill_schema").fetchall()
    assert rows == [("labels_x", 1)]


def test_the_bars_a_label_run_reads_are_the_same_on_both_stores(
    pg_store: PostgresStore, store: DuckDBBarStore
) -> None:
    days = (dt.date(2024, 1, 2), dt.date(2024, 1, 3), dt.date(2024, 1, 4))
    frame = tagged_bars(("AAPL", "MSFT"), days, "synthetic")
    for target in (pg_store, store):
        target.replace_bars(frame, {(t, d) for t in ("AAPL", "MSFT") for d in days})
    read = [
        labels.read_history({"MSFT", "AAPL", "NVDA"}, days[0], days[1], 45)
        for labels in (PostgresLabelStore(pg_store), DuckDBLabelStore(store))
    ]
    assert len(read[0]) == 2 * (2 * 390 + 45)
    pd.testing.assert_frame_equal(read[0], read[1], check_exact=True)  # binary COPY, bit for bit


def test_every_column_type_and_null_lands_as_duckdb_stores_it(
    pg_store: PostgresStore, store: DuckDBBarStore
) -> None:
    """Writes COPY typed binary rows straight into the table: each type, NULL in each nullable one,
    text of several lengths (a row's width varies), the extremes of each integer width."""
    types = {
        "note": "VARCHAR", "x": "DOUBLE", "small": "TINYINT", "mid": "SMALLINT", "i": "INTEGER",
        "big": "BIGINT", "flag": "BOOLEAN", "seen": "TIMESTAMPTZ", "day": "DATE",
    }  # fmt: skip
    instants = ["2024-01-02 14:30:00", "2024-01-02 14:31:00", "1999-12-31 23:59:59.999999"]
    ts = pd.to_datetime(instants, utc=True, format="ISO8601")
    frame = pd.DataFrame(
        {
            "ticker": ["AAPL", "AAPL", "BRK.B"],
            "ts": ts,
            "session_date": [dt.date(2024, 1, 2), dt.date(2024, 1, 2), dt.date(1999, 12, 31)],
            "note": ["a", None, "überlang-text"],
            "x": [float("nan"), -0.0, 1e-308],
            "small": pd.array([-128, None, 127], dtype="Int8"),
            "mid": pd.array([None, -32768, 32767], dtype="Int16"),
            "i": pd.array([-(2**31), 2**31 - 1, None], dtype="Int32"),
            "big": pd.array([2**62, None, -(2**63)], dtype="Int64"),
            "flag": pd.array([True, None, False], dtype="boolean"),
            "seen": [ts[2], pd.NaT, ts[0]],
            "day": [dt.date(1970, 1, 1), None, dt.date(2099, 12, 31)],
        }
    )
    slices = {("AAPL", dt.date(2024, 1, 2)), ("BRK.B", dt.date(1999, 12, 31))}
    PostgresLabelStore(pg_store).replace_labels("labels_types", types, frame, slices)
    DuckDBLabelStore(store).replace_labels("labels_types", types, frame, slices)
    found = PostgresLabelStore(pg_store).read_labels("labels_types")
    expected = DuckDBLabelStore(store).read_labels("labels_types")
    pd.testing.assert_frame_equal(found, expected, check_dtype=False, check_exact=True)
    assert found["x"].isna().tolist() == [True, False, False] and str(found["x"][1]) == "-0.0"
    assert found["note"].tolist()[0] == "a" and pd.isna(found["note"][1])
