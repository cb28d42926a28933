"""What a run records: each partition's own facts on its materialization, run-wide figures once.

A run of N partitions writes N materialization events; whatever rides on each of them is paid N
times and shown on every partition. So a partition's event carries only its own row count and
first/last bar, and the run's totals (requests, 429s, waits, chunks, RSS, duration) go into one
`AssetObservation` of the asset per run (no partition), shown in the asset's events and the run.
"""

from collections.abc import Mapping
from typing import Any

import dagster as dg
import pandas as pd

from backfill_assets.storage.base import Slice

RUN_FACTS = "backfill_assets/run_facts"  # tag on the observation, to find it among the run's events


def partition_key(key: Slice) -> str:
    ticker, day = key
    return f"{day.isoformat()}|{ticker}"


def partition_facts(rows: int, span: tuple[pd.Timestamp, pd.Timestamp] | None) -> dict[str, Any]:
    """One partition's metadata: its row count (Dagster's own key, so the UI shows it) and bar span."""
    first, last = span if span is not None else (None, None)
    return {
        "dagster/row_count": rows,
        "first_ts": first.isoformat() if first is not None else "none",
        "last_ts": last.isoformat() if last is not None else "none",
    }


def add_partition_facts(context: dg.AssetExecutionContext, facts: Mapping[Slice, dict[str, Any]]) -> None:
    """Attach each partition's facts to its own materialization event.

    The public `context.add_asset_metadata(..., partition_key=k)` lists the run's whole partition
    range, reading the dynamic partitions from the instance, on every call: O(run) per partition,
    ~25 ms each at 300 partitions. The keys are checked against the run's once here, then added to
    the same accumulator that method fills (no public way to add many at once; 1.13.27 is pinned and
    the tests read the metadata back, so a change in Dagster fails them, not a user's run).
    """
    keys = {partition_key(key): metadata for key, metadata in facts.items()}
    unknown = keys.keys() - set(context.partition_keys)
    if unknown:
        raise ValueError(f"partitions not in this run: {sorted(unknown)[:5]}")
    step = getattr(context, "_step_execution_context", None)
    accumulator = getattr(step, "_metadata_accumulator", None)
    if accumulator is None:  # a Dagster without the accumulator: the slow public way
        for key, metadata in keys.items():
            context.add_asset_metadata(metadata, partition_key=key)
        return
    for key, metadata in keys.items():
        accumulator = accumulator.with_additional_asset_metadata(
            asset_key=context.asset_key, partition_key=key, metadata=metadata
        )
    step._metadata_accumulator = accumulator  # type: ignore[union-attr]


def log_partition_materializations(
    context: dg.AssetExecutionContext, facts: Mapping[Slice, dict[str, Any]]
) -> None:
    """Materializations for partitions that landed in a run that then fails (the backfill sees them)."""
    for key, metadata in facts.items():
        context.log_event(
            dg.AssetMaterialization(context.asset_key, partition=partition_key(key), metadata=metadata)
        )


def hold_instance_connection(context: dg.AssetExecutionContext) -> None:
    """Keep one database connection open for the run's events instead of one per event.

    dagster-postgres opens a new connection for every event it stores outside the webserver (~5 ms
    each here, two or three per event); the instance's own switch to a pooled engine, which the
    webserver uses, brings a partition's events from ~25 to ~12 ms. SQLite storages ignore it.
    """
    context.instance.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=2)


def record_run_facts(context: dg.AssetExecutionContext, metadata: Mapping[str, Any]) -> None:
    """The run's figures, once: one observation of the asset, whatever the number of partitions."""
    context.log_event(
        dg.AssetObservation(context.asset_key, metadata=dict(metadata), tags={RUN_FACTS: context.run.run_id})
    )


def run_facts(instance: dg.DagsterInstance, run_id: str, asset_key: dg.AssetKey) -> dict[str, Any]:
    """The run-wide figures a run recorded for `asset_key` (values unwrapped), or {}."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_OBSERVATION, limit=1_000
    ).records
    for record in records:
        observation = record.asset_observation
        if observation is not None and observation.asset_key == asset_key and RUN_FACTS in observation.tags:
            return {k: v.value for k, v in observation.metadata.items()}
    return {}
