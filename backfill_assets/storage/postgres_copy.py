"""Frames in and out of Postgres by COPY, exact for every value the store holds.

In: every column travels as float8 in binary COPY, built with numpy in one pass (text as codes into
an array of its distinct values, times as microseconds, days, 0/1), into a staging table; one
INSERT ... SELECT decodes it. Rendering CSV in pandas cost ~17 s per million bars, this ~0.3 s. NaN
and NA arrive as NULL, as DuckDB stores pandas NaN. Out: times travel as integer microseconds and
days, and pandas parses the CSV floats exactly, so a frame read back equals the one DuckDB returns.
Columns that are never NULL (the bars a label run reads) come out in binary COPY instead: every row
then has the same width, and numpy reads the whole answer as one structured array (no text at all).
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
ROWS_PER_CHUNK = 100_000  # rows encoded at once: bounds the bytes held in memory
SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # binary COPY header: signature, flags, extension
TRAILER = b"\xff\xff"


def pg_type(duckdb_type: str) -> str:
    try:
        return PG_TYPES[duckdb_type.upper()]
    except KeyError:
        raise ValueError(f"no Postgres type for column type {duckdb_type!r}") from None


def _floats(column: pd.Series, kind: str) -> tuple[np.ndarray, list[str] | None]:
    """`column` as float64 (NaN for missing) and, for text, the distinct values its codes index."""
    if kind == "VARCHAR":
        codes, uniques = pd.factorize(column)
        return np.where(codes < 0, np.nan, codes.astype(np.float64)), [str(u) for u in uniques]
    if kind in ("TIMESTAMPTZ", "DATE"):
        times = pd.DatetimeIndex(pd.to_datetime(column, utc=kind == "TIMESTAMPTZ")).as_unit("us")
        values = times.asi8.astype(np.float64)  # exact: microseconds stay below 2**53 until 2255
        if kind == "DATE":
            values = np.floor(values / 86_400_000_000)
        return np.where(times.isna(), np.nan, values), None
    # Nullable booleans and integers (pandas NA) become NaN like the floats' own NaN.
    numbers = (
        pd.Series(column).astype("Float64") if kind == "BOOLEAN" else pd.to_numeric(column).astype("Float64")
    )
    return numbers.to_numpy(dtype=np.float64, na_value=np.nan), None


def _decoder(column: str, kind: str, param: str) -> str:
    x = f"NULLIF(\"{column}\", 'NaN')"
    if kind == "VARCHAR":
        return f"(%({param})s::text[])[{x}::int + 1]"
    if kind == "TIMESTAMPTZ":
        return f"TIMESTAMPTZ 'epoch' + {x} * INTERVAL '1 microsecond'"
    if kind == "DATE":
        return f"DATE '1970-01-01' + {x}::int"
    if kind == "BOOLEAN":
        return f"{x} <> 0"
    return f"CAST({x} AS {pg_type(kind)})"


def _binary(values: list[np.ndarray]) -> Iterator[bytes]:
    """Rows of float8 fields in COPY's binary format: per row a field count, per field length + value."""
    layout = [("n", ">i2")] + [f for i in range(len(values)) for f in ((f"l{i}", ">i4"), (f"v{i}", ">f8"))]
    n = len(values[0]) if values else 0
    yield SIGNATURE
    for start in range(0, n, ROWS_PER_CHUNK):
        rows = np.empty(min(ROWS_PER_CHUNK, n - start), dtype=np.dtype(layout))
        rows["n"] = len(values)
        for i, column in enumerate(values):
            rows[f"l{i}"] = 8
            rows[f"v{i}"] = column[start : start + len(rows)]
        yield rows.tobytes()
    yield TRAILER


def stage(
    cur: psycopg.Cursor[Any],
    name: str,
    frame: pd.DataFrame,
    types: Mapping[str, str],
    *,
    drop_on_commit: bool,
) -> tuple[str, dict[str, list[str]]]:
    """COPY `frame` into a new temporary table `name`; the SELECT (and its parameters) decoding it
    into columns of `types`."""
    encoded = {c: _floats(frame[c], t.upper()) for c, t in types.items()}
    staged = ", ".join(f'"{c}" double precision' for c in types)
    cur.execute(f"CREATE TEMP TABLE {name} ({staged}){' ON COMMIT DROP' if drop_on_commit else ''}")
    if len(frame):
        with cur.copy(f"COPY {name} FROM STDIN (FORMAT BINARY)") as copy:
            for block in _binary([values for values, _ in encoded.values()]):
                copy.write(block)
    params = {f"p{i}": uniques for i, (_, uniques) in enumerate(encoded.values()) if uniques is not None}
    decoders = ", ".join(_decoder(c, t.upper(), f"p{i}") for i, (c, t) in enumerate(types.items()))
    return f"SELECT {decoders} FROM {name}", params


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


def _copy_to_bytes(
    conn: psycopg.Connection[Any], query: str, params: Mapping[str, Any], options: str
) -> bytes:
    with conn.cursor() as cur, cur.copy(f"COPY ({query}) TO STDOUT ({options})", params) as copy:
        return b"".join(bytes(block) for block in copy)


def copy_out(
    conn: psycopg.Connection[Any], query: str, params: Mapping[str, Any], types: Mapping[str, str]
) -> pd.DataFrame:
    """Rows of `query` (selecting `select_list(types)`) as a frame with DuckDB's dtypes for `types`."""
    text = io.BytesIO(_copy_to_bytes(conn, query, params, "FORMAT CSV, HEADER"))
    strings = {c: str for c, t in types.items() if t.upper() == "VARCHAR"}
    # pandas 3 parses floats exactly by default (tested bit for bit in test_storage_postgres).
    raw = pd.read_csv(text, dtype=strings, keep_default_na=False, na_values=[""])
    return pd.DataFrame({c: _decode(raw[c], types[c].upper()) for c in types})


BINARY_FIELDS = {"INTEGER": ">i4", "BIGINT": ">i8", "DOUBLE": ">f8", "TIMESTAMPTZ": ">i8", "DATE": ">i4"}


def copy_out_not_null(
    conn: psycopg.Connection[Any], query: str, params: Mapping[str, Any], types: Mapping[str, str]
) -> pd.DataFrame:
    """`copy_out` for columns that are never NULL, in binary COPY (INTEGER, BIGINT, DOUBLE, and times
    as `select_list` encodes them); a NULL raises instead of shifting every later row."""
    layout = [("n", ">i2")]
    for i, (column, kind) in enumerate(types.items()):
        layout += [(f"l{i}", ">i4"), (column, BINARY_FIELDS[kind.upper()])]
    row = np.dtype(layout)
    data = _copy_to_bytes(conn, query, params, "FORMAT BINARY")
    # header: 11-byte signature, 4 bytes of flags, the header extension's length, the extension
    start = len(SIGNATURE) + int.from_bytes(data[len(SIGNATURE) - 4 : len(SIGNATURE)], "big")
    body = len(data) - start - len(TRAILER)
    if body % row.itemsize or data[-len(TRAILER) :] != TRAILER:
        raise ValueError(f"binary COPY of {list(types)}: rows are not {row.itemsize} bytes (a NULL?)")
    rows = np.frombuffer(data, dtype=row, offset=start, count=body // row.itemsize)
    for i, column in enumerate(types):
        if len(rows) and not (rows[f"l{i}"] == row[column].itemsize).all():
            raise ValueError(f"binary COPY: column {column} holds NULLs")
    return pd.DataFrame(
        {
            c: _decode(pd.Series(rows[c].astype(rows[c].dtype.newbyteorder("="))), t.upper())
            for c, t in types.items()
        }
    )


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
