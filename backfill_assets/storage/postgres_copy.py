"""Frames out of Postgres by COPY, exact for every value the store holds (in: postgres_binary.py).

Times travel as integer microseconds and days, and pandas parses the CSV floats exactly, so a frame
read back equals the one DuckDB returns. Columns that are never NULL (the bars a label run reads)
come out in binary COPY instead: every row then has the same width, and numpy reads the whole answer
as one structured array (no text at all).
"""

import io
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg import pq

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
SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # binary COPY header: signature, flags, extension
TRAILER = b"\xff\xff"


def pg_type(duckdb_type: str) -> str:
    try:
        return PG_TYPES[duckdb_type.upper()]
    except KeyError:
        raise ValueError(f"no Postgres type for column type {duckdb_type!r}") from None


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
    """Everything `COPY (query) TO STDOUT` sends, through libpq directly (psycopg.pq): the server
    sends one message per row, and psycopg's Copy iterator costs ~1 us of Python per message, a
    third of a label run's read. On an autocommit connection (every reader's), which it leaves idle."""
    if not conn.autocommit:
        raise ValueError("_copy_to_bytes needs an autocommit connection")
    # COPY takes no bind parameters: psycopg quotes them client-side, as its own copy() does.
    statement = psycopg.ClientCursor(conn).mogrify(f"COPY ({query}) TO STDOUT ({options})", params)
    pgconn = conn.pgconn
    pgconn.send_query(statement.encode())
    result, data = pgconn.get_result(), bytearray()
    if result is not None and result.status == pq.ExecStatus.COPY_OUT:
        while (block := pgconn.get_copy_data(0))[0] > 0:
            data += block[1]
    error = None
    while result is not None:  # the COPY's results, then None: the connection is idle again
        if result.status == pq.ExecStatus.FATAL_ERROR and error is None:
            state = (result.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode()
            message = (result.error_message or b"").decode().strip()
            error = psycopg.errors.lookup(state)(message) if state else psycopg.DatabaseError(message)
        result = pgconn.get_result()
    if error is not None:
        raise error
    return bytes(data)


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
PG_EPOCH_US = 946_684_800_000_000  # binary times count from 2000-01-01: Unix microseconds of it
PG_EPOCH_DAYS = 10_957


def copy_out_not_null(
    conn: psycopg.Connection[Any], query: str, params: Mapping[str, Any], types: Mapping[str, str]
) -> pd.DataFrame:
    """Rows of `query` (selecting the columns of `types` as they are: INTEGER, BIGINT, DOUBLE,
    TIMESTAMPTZ, DATE) that are never NULL, in binary COPY: no conversion on the server, one numpy
    view on the client. A NULL raises instead of shifting every later row."""
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
    columns = {}
    for column, kind in types.items():
        values = rows[column].astype(rows[column].dtype.newbyteorder("="))
        kind = kind.upper()
        if kind in ("TIMESTAMPTZ", "DATE"):  # as `_decode` takes them: Unix microseconds and days
            values = values.astype(np.int64) + (PG_EPOCH_US if kind == "TIMESTAMPTZ" else PG_EPOCH_DAYS)
        columns[column] = _decode(pd.Series(values), kind)
    return pd.DataFrame(columns)


def _decode(column: pd.Series, kind: str) -> pd.Series:
    if kind in ("TIMESTAMPTZ", "DATE"):
        # A NULL (NaN in CSV) becomes NaT, whose integer is int64's minimum.
        ints = column.astype("Int64").to_numpy(dtype=np.int64, na_value=np.iinfo(np.int64).min)
        if kind == "TIMESTAMPTZ":
            return pd.Series(ints.astype("datetime64[us]")).dt.tz_localize("UTC")
        return pd.Series(ints.astype("datetime64[D]").astype("datetime64[us]"))
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
