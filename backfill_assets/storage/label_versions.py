"""Which parameters made a label table's rows: one stamp per table, claimed before every write.

A label set's parameters (horizon, barriers, span, timeframe, the definitions' version) hash to its
version, which is also the asset's code_version. The first write of a table records the version;
a write with another version is refused before any row changes, so a table never holds rows of two
parameter sets, on DuckDB and on Postgres alike. `backfill-assets labels reset NAME` drops the table
and its stamp, after which the set's partitions are backfilled again.
"""

import json
from typing import Any

from backfill_assets.storage.base import StoreError

VERSIONS_DDL = (
    "CREATE TABLE IF NOT EXISTS label_versions "
    "(table_name VARCHAR PRIMARY KEY, version VARCHAR NOT NULL, parameters VARCHAR NOT NULL)"
)
SELECT_STAMP = "SELECT version, parameters FROM label_versions WHERE table_name = ?"
INSERT_STAMP = "INSERT INTO label_versions VALUES (?, ?, ?)"
DELETE_STAMP = "DELETE FROM label_versions WHERE table_name = ?"


class LabelVersionError(StoreError):
    """A write of labels made with other parameters than the table's rows: never retried."""

    permanent = True


def _reset_hint(table: str) -> str:
    name = table.removeprefix("labels_")
    return (
        f"run `backfill-assets labels reset {name} --yes` to drop {table}, then backfill labels/{name} "
        "again (Dagster shows its partitions stale: the code version changed)"
    )


def check_stamp(
    table: str, stamp: tuple[str, str] | None, has_rows: bool, version: str, parameters: dict[str, Any]
) -> bool:
    """Whether the caller must record the stamp (a new or empty table); raises on a mismatch."""
    if stamp is None:
        if has_rows:
            raise LabelVersionError(
                f"{table} holds rows whose parameters are unknown (written before label sets were "
                f"versioned); this label set is version {version}: {_reset_hint(table)}"
            )
        return True
    stored_version, stored = stamp
    if stored_version == version:
        return False
    was = json.loads(stored)
    changed = {k: (was.get(k), v) for k, v in parameters.items() if was.get(k) != v}
    shown = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in sorted(changed.items()))
    raise LabelVersionError(
        f"{table} holds labels of version {stored_version}; this label set is version {version} "
        f"({shown or 'same parameters, other definitions'}). Rows of two parameter sets never share "
        f"a table: {_reset_hint(table)}"
    )


def encode(parameters: dict[str, Any]) -> str:
    return json.dumps(parameters, sort_keys=True)
