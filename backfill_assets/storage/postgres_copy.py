"""Frames in and out of Postgres by COPY (CSV), exact for every value the store holds.

In: pandas writes floats in their shortest round-trip form and NaN/NA as an empty field (NULL, as
DuckDB stores pandas NaN). Out: times travel as integer microseconds and days, floats are parsed
exactly, so a frame read back from Postgres equals the one DuckDB returns.
"""

import io
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd
import psycopg

# The store's column types (DuckDB spelling, as in schemas.py and labels/compute.py) in Postgres.
PG_TYPES: Mapping[str, str] = {
    "VARCHAR": "text",
    "TIMESTAMPTZ": "timestamptz",
    "DATE": "date",
    "DOUBLE": "double precision",
    "BIGINT": "bigint",
    "INTEGER": "integer",
    "SMALLINT": "smallint",
    "TINYINT": "smallint",
    "BOOLEAN": "boolean",
}
INTEGERS = {"BIGINT": "Int64", "INTEGER": "Int32", "SMALLINT": "Int16", "TINYINT": "Int8"}
CSV_ROWS = 200_000  # rows rendered per COPY chunk: bounds the text held in memory at once


def pg_type(duckdb_type: str) -> str:
    try:
        return PG_TYPES[duckdb_type.upper()]
    except KeyError:
        raise ValueError(f"no Postgres type for column type {duckdb_type!r}") from None


def staged_type(duckdb_type: str) -> str:
    """Staging column type: integers arrive as `1.0` when pandas holds them as floats."""
    return "double precision" if duckdb_type.upper() in INTEGERS else pg_type(duckdb_type)


def csv_chunks(frame: pd.DataFrame) -> Iterator[str]:
    for start in range(0, len(frame), CSV_ROWS):
        yield frame.iloc[start : start + CSV_ROWS].to_csv(index=False, header=False, na_rep="")


def copy_in(cur: psycopg.Cursor[Any], table: str, frame: pd.DataFrame) -> None:
    columns = ", ".join(f'"{c}"' for c in frame.columns)
    with cur.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT CSV)") as copy:
        for chunk in csv_chunks(frame):
            copy.write(chunk)


def select_list(types: Mapping[str, str]) -> str:
    """Columns encoded for `copy_out`: times as integers, booleans as 0/1."""
    parts = []
    for column, kind in types.items():
        quoted, kind = f'"{column}"', kind.upper()
        if kind == "TIMESTAMPTZ":
            parts.append(f"(extract(epoch FROM {quoted}) * 1000000)::bigint AS {quoted}")
        elif kind == "DATE":
            parts.append(f"({quoted} - DATE '1970-01-01') AS {quoted}")
        elif kind == "BOOLEAN":
            parts.append(f"{quoted}::int AS {quoted}")
        else:
            parts.append(quoted)
    return ", ".join(parts)


def copy_out(
    conn: psycopg.Connection[Any], query: str, params: Mapping[str, Any], types: Mapping[str, str]
) -> pd.DataFrame:
    """Rows of `query` (selecting `select_list(types)`) as a frame with DuckDB's dtypes for `types`."""
    chunks: list[bytes] = []
    with conn.cursor() as cur, cur.copy(f"COPY ({query}) TO STDOUT (FORMAT CSV, HEADER)", params) as copy:
        for data in copy:
            chunks.append(bytes(data))
    if not chunks:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in types})
    text = io.BytesIO(b"".join(chunks))
    strings = {c: str for c, t in types.items() if t.upper() == "VARCHAR"}
    # pandas 3 parses floats exactly by default (tested bit for bit in test_storage_postgres).
    raw = pd.read_csv(text, dtype=strings, keep_default_na=False, na_values=[""])
    return pd.DataFrame({c: _decode(raw[c], types[c].upper()) for c in types})


def _decode(column: pd.Series, kind: str) -> pd.Series:
    if kind == "TIMESTAMPTZ":
        return pd.Series(column.to_numpy(dtype=np.int64).astype("datetime64[us]")).dt.tz_localize("UTC")
    if kind == "DATE":
        return pd.Series(column.to_numpy(dtype=np.int64).astype("datetime64[D]").astype("datetime64[us]"))
    if kind in INTEGERS or kind == "BOOLEAN":
        # DuckDB's choice: numpy dtypes when a column has no NULL, pandas' nullable ones otherwise.
        nullable: pd.Series = column.astype(pd.api.types.pandas_dtype(INTEGERS.get(kind, "Int8")))
        if kind == "BOOLEAN":
            nullable = nullable.astype("boolean")
        if nullable.hasnans:
            return nullable
        return nullable.astype(pd.api.types.pandas_dtype(INTEGERS.get(kind, "bool").lower()))
    if kind == "DOUBLE":
        return column.astype(np.float64)
    return column  # text: pandas' default string dtype, as DuckDB returns it
