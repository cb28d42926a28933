"""Which errors a retry cannot heal: a step retry of those only repeats the failure, minutes later.

A full disk, a DuckDB database invalidated by a fatal error, bars breaking a rule, a memory budget
overrun and a provider's permanent answer (bad key, bad request) stay as they are; a timeout, a 5xx
or a lock held a little too long may pass.
"""

import errno
from collections.abc import Iterator

import duckdb
import psycopg

from backfill_assets.memory import MemoryBudgetError
from backfill_assets.schemas import BarValidationError

# Disk full, quota exceeded, a file over its size limit, a read-only file system.
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
# How DuckDB and Postgres word the same, inside their own exception types.
NO_SPACE_TEXT = ("no space left", "disk quota", "file too large", "read-only file system", "could not extend")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what caused it (`raise ... from`, or raised while handling), each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def why_permanent(exc: BaseException) -> str | None:
    """Why `exc` cannot heal on a retry, or None if it might."""
    for error in _chain(exc):
        if isinstance(error, OSError) and error.errno in NO_SPACE:
            return "the disk is full or read-only"
        if isinstance(error, (duckdb.Error, psycopg.Error, OSError)) and any(
            text in str(error).lower() for text in NO_SPACE_TEXT
        ):
            return "the disk is full or read-only"
        if isinstance(error, psycopg.errors.DiskFull):
            return "the database server's disk is full"
        if isinstance(error, duckdb.FatalException):
            return "DuckDB hit a fatal error and invalidated the database"
        if isinstance(error, (BarValidationError, MemoryBudgetError)):
            return type(error).__name__
        if getattr(error, "permanent", False):
            return "a permanent error"
    return None
