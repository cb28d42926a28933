"""Frames into Postgres' binary COPY format with each column in its own type, for a COPY straight
into the target table.

Rows are encoded by one numba pass (a row is a field count, then per field a length, -1 for NULL,
and the value): no staging table and no INSERT ... SELECT decoding every value on the server, which
was most of a write's time. Values as the store keeps them: NaN and NA become NULL (as DuckDB stores
pandas NaN), times are microseconds and days since 2000-01-01, text is UTF-8.
"""

from collections.abc import Iterator, Mapping

import numba
import numpy as np
import pandas as pd

from backfill_assets.storage.postgres_copy import PG_EPOCH_DAYS, PG_EPOCH_US, SIGNATURE, TRAILER

ROWS_PER_CHUNK = 100_000  # rows encoded at once: bounds the bytes held in memory
FIXED = {"TIMESTAMPTZ": ">i8", "DATE": ">i4", "DOUBLE": ">f8", "BIGINT": ">i8", "INTEGER": ">i4"}
FIXED |= {"SMALLINT": ">i2", "TINYINT": ">i2", "BOOLEAN": "u1"}


@numba.njit(cache=True, nogil=True)
def _encode(
    fixed: np.ndarray,
    widths: np.ndarray,
    offsets: np.ndarray,
    present: np.ndarray,
    texts: np.ndarray,
    slots: np.ndarray,
    pool: np.ndarray,
    bounds: np.ndarray,
) -> np.ndarray:
    """Column j's value is bytes offsets[j]:offsets[j]+widths[j] of `fixed`'s row or, for a text
    column (slots[j] >= 0), the pool bytes of the id texts[row, slots[j]]."""
    n, columns = present.shape
    size = 0
    for r in range(n):
        size += 2 + 4 * columns
        for j in range(columns):
            if present[r, j]:
                if slots[j] >= 0:
                    t = texts[r, slots[j]]
                    size += bounds[t + 1] - bounds[t]
                else:
                    size += widths[j]
    out = np.empty(size, dtype=np.uint8)
    p = 0
    for r in range(n):
        out[p], out[p + 1] = columns >> 8, columns & 255
        p += 2
        for j in range(columns):
            if not present[r, j]:
                out[p : p + 4] = 255  # length -1: NULL
                p += 4
                continue
            if slots[j] >= 0:
                t = texts[r, slots[j]]
                value = pool[bounds[t] : bounds[t + 1]]
            else:
                value = fixed[r, offsets[j] : offsets[j] + widths[j]]
            length = value.shape[0]
            for k in range(4):
                out[p + k] = (length >> (24 - 8 * k)) & 255
            out[p + 4 : p + 4 + length] = value
            p += 4 + length
    return out


def _values(column: pd.Series, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(values in the binary field's dtype, present mask) of a non-text column."""
    if kind in ("TIMESTAMPTZ", "DATE"):
        times = pd.DatetimeIndex(pd.to_datetime(column, utc=kind == "TIMESTAMPTZ")).as_unit("us")
        micros = times.asi8
        values = micros - PG_EPOCH_US if kind == "TIMESTAMPTZ" else micros // 86_400_000_000 - PG_EPOCH_DAYS
        return values.astype(FIXED[kind]), ~np.asarray(times.isna())
    if kind == "DOUBLE":
        floats = pd.to_numeric(column).astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
        return floats.astype(">f8"), ~np.isnan(floats)
    nullable = pd.Series(column).astype("Int64") if kind != "BOOLEAN" else pd.Series(column).astype("boolean")
    present = ~nullable.isna().to_numpy()
    numbers = nullable.to_numpy(dtype=np.int64, na_value=0)
    return numbers.astype(FIXED[kind]), present


def binary_rows(frame: pd.DataFrame, types: Mapping[str, str]) -> Iterator[bytes]:
    """`frame`'s columns `types` (DuckDB spelling) as binary COPY data: header, rows, trailer."""
    kinds = {c: t.upper() for c, t in types.items()}
    text_columns = [c for c, k in kinds.items() if k == "VARCHAR"]
    pool_parts: list[bytes] = []
    ids: list[np.ndarray] = []
    for column in text_columns:
        codes, uniques = pd.factorize(frame[column])
        ids.append(np.where(codes < 0, -1, codes + len(pool_parts)).astype(np.int64))
        pool_parts += [str(u).encode() for u in uniques]
    bounds = np.concatenate(([0], np.cumsum([len(b) for b in pool_parts], dtype=np.int64))).astype(np.int64)
    pool = np.frombuffer(b"".join(pool_parts) or b"\0", dtype=np.uint8)
    n = len(frame)
    texts = np.stack(ids, axis=1) if ids else np.zeros((n, 0), dtype=np.int64)
    widths = np.zeros(len(kinds), dtype=np.int64)
    offsets = np.zeros(len(kinds), dtype=np.int64)
    slots = np.full(len(kinds), -1, dtype=np.int64)
    fixed_parts, present_parts, at = [], [], 0
    for j, (column, kind) in enumerate(kinds.items()):
        if kind == "VARCHAR":
            slots[j] = text_columns.index(column)
            present_parts.append(texts[:, slots[j]] >= 0)
            continue
        values, present = _values(frame[column], kind)
        widths[j], offsets[j] = values.dtype.itemsize, at
        at += values.dtype.itemsize
        fixed_parts.append(values.view(np.uint8).reshape(n, values.dtype.itemsize))
        present_parts.append(present)
    yield SIGNATURE
    for start in range(0, n, ROWS_PER_CHUNK):
        rows = slice(start, start + ROWS_PER_CHUNK)
        fixed = np.ascontiguousarray(np.hstack([p[rows] for p in fixed_parts])) if fixed_parts else None
        present = np.ascontiguousarray(np.stack([p[rows] for p in present_parts], axis=1))
        chunk = np.zeros((present.shape[0], 0), dtype=np.uint8) if fixed is None else fixed
        yield _encode(chunk, widths, offsets, present, texts[rows], slots, pool, bounds).tobytes()
    yield TRAILER
