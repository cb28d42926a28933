"""Read-only SQL over either store, for the data-quality checks: one small interface, two dialects.

Queries are written once in the SQL both engines speak (`count(*) FILTER (WHERE ...)`, CTEs,
correlated subqueries) with `$name` parameters; the rare dialect-only fragment is chosen by `dialect`.
"""

import re
from collections.abc import Mapping
from typing import Any, Protocol

import duckdb
import pandas as pd

PARAM = re.compile(r"\$([a-z_]+)")


class SqlReader(Protocol):
    dialect: str  # "duckdb" | "postgres"

    def frame(self, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame: ...

    def row(self, sql: str, params: Mapping[str, Any] | None = None) -> tuple[Any, ...]: ...

    def execute(self, sql: str) -> None:
        """A statement without a result, e.g. CREATE TEMP TABLE ... AS (temporary objects only)."""
        ...

    def table_exists(self, table: str) -> bool: ...

    def enforces_unique_key(self, table: str) -> bool:
        """Whether the engine itself keeps (ticker, ts) unique: a PRIMARY KEY or UNIQUE on exactly it."""
        ...

    def load(self, name: str, frame: pd.DataFrame, types: Mapping[str, str]) -> None:
        """`frame` as a temporary table `name` with SQL `types`, for this connection only."""
        ...


def table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    return bool(con.execute("SELECT 1 FROM duckdb_tables() WHERE table_name = ?", [table]).fetchall())


def pg_params(sql: str) -> str:
    """`$name` placeholders as psycopg's `%(name)s`."""
    return PARAM.sub(r"%(\1)s", sql)


class DuckDBReader:
    dialect = "duckdb"

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def frame(self, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        return self.con.execute(sql, dict(params or {})).df()

    def row(self, sql: str, params: Mapping[str, Any] | None = None) -> tuple[Any, ...]:
        return tuple(self.con.execute(sql, dict(params or {})).fetchall()[0])

    def execute(self, sql: str) -> None:
        self.con.execute(sql)

    def table_exists(self, table: str) -> bool:
        return table_exists(self.con, table)

    def enforces_unique_key(self, table: str) -> bool:
        query = (
            "SELECT 1 FROM duckdb_constraints() WHERE table_name = ? AND constraint_type IN "
            "('PRIMARY KEY', 'UNIQUE') AND list_sort(constraint_column_names) = ['ticker', 'ts']"
        )
        return bool(self.con.execute(query, [table]).fetchall())

    def load(self, name: str, frame: pd.DataFrame, types: Mapping[str, str]) -> None:
        select = ", ".join(f"CAST({c} AS {t}) AS {c}" for c, t in types.items())
        self.con.register(f"{name}_frame", frame)
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT {select} FROM {name}_frame")
        self.con.unregister(f"{name}_frame")
