"""What a run records: each partition's own facts on its materialization, run-wide figures once.

A run of N partitions writes N materialization events; whatever rides on each of them is paid N
times and shown on every partition. So a partition's event carries only its own row count and
first/last bar, and the run's totals (requests, 429s, waits, chunks, RSS, duration) go into one
`AssetObservation` of the asset per run (no partition), shown in the asset's events and the run.
"""

import hashlib
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg
import pandas as pd

from backfill_assets.defs.partitions import DATE, TICKER
from backfill_assets.storage.base import Slice

RUN_FACTS = "backfill_assets/run_facts"  # tag on the observation, to find it among the run's events
EXAMPLES = 20  # partitions named in a run's metadata or failure; the counts say how many in all


def partition_key(key: Slice) -> str:
    ticker, day = key
    return f"{day.isoformat()}|{ticker}"


def partition_facts(
    rows: int, span: tuple[pd.Timestamp, pd.Timestamp] | None, source: str | None = None
) -> dict[str, Any]:
    """One partition's metadata: its row count (Dagster's own key, so the UI shows it), bar span
    and, for bars read from files, the file."""
    first, last = span if span is not None else (None, None)
    facts: dict[str, Any] = {
        "dagster/row_count": rows,
        "first_ts": first.isoformat() if first is not None else "none",
        "last_ts": last.isoformat() if last is not None else "none",
    }
    if source is not None:
        facts["source_file"] = source
    return facts


def add_partition_facts(
    context: dg.AssetExecutionContext,
    facts: Mapping[Slice, dict[str, Any]],
    asset_key: dg.AssetKey | None = None,
) -> None:
    """Attach each partition's facts to its own materialization event (of `asset_key`, default the
    asset's own key: a multi-asset names the one).

    The public `context.add_asset_metadata(..., partition_key=k)` lists the run's whole partition
    range, reading the dynamic partitions from the instance, on every call: O(run) per partition,
    ~25 ms each at 300 partitions. The keys are checked against the run's once here, then added to
    the same accumulator that method fills (no public way to add many at once; 1.13.27 is pinned and
    the tests read the metadata back, so a change in Dagster fails them, not a user's run).
    """
    asset_key = asset_key or context.asset_key
    keys = {partition_key(key): metadata for key, metadata in facts.items()}
    unknown = keys.keys() - set(context.partition_keys)
    if unknown:
        raise ValueError(f"partitions not in this run: {sorted(unknown)[:5]}")
    step = getattr(context, "_step_execution_context", None)
    accumulator = getattr(step, "_metadata_accumulator", None)
    if accumulator is None:  # a Dagster without the accumulator: the slow public way
        for key, metadata in keys.items():
            context.add_asset_metadata(metadata, asset_key=asset_key, partition_key=key)
        return
    for key, metadata in keys.items():
        accumulator = accumulator.with_additional_asset_metadata(
            asset_key=asset_key, partition_key=key, metadata=metadata
        )
    step._metadata_accumulator = accumulator  # type: ignore[union-attr]


def partition_materializations(
    context: dg.AssetExecutionContext,
    facts: Mapping[Slice, dict[str, Any]],
    asset_key: dg.AssetKey | None = None,
) -> Iterator[dg.AssetMaterialization]:
    """One materialization per partition that landed, yielded by the asset itself (a streamed
    chunk, or what landed before a run failed).

    Tagged as Dagster tags a root asset's Output: its code version (the run's id when it has none),
    the data version Dagster derives from it, the backfill and each partition dimension, so lineage,
    staleness and per-dimension queries read them alike.
    """
    asset_key = asset_key or context.asset_key
    code_version = context.assets_def.code_versions_by_key.get(asset_key) or context.run.run_id
    tags = {
        "dagster/code_version": code_version,
        "dagster/data_version": hashlib.sha256(code_version.encode()).hexdigest(),
    }
    if backfill := context.run.tags.get("dagster/backfill"):
        tags["dagster/backfill"] = backfill
    for (ticker, day), metadata in facts.items():
        yield dg.AssetMaterialization(
            asset_key,
            partition=partition_key((ticker, day)),
            metadata=metadata,
            tags=tags | {f"dagster/partition/{DATE}": day.isoformat(), f"dagster/partition/{TICKER}": ticker},
        )


def streams_materializations(context: dg.AssetExecutionContext, chunks: int) -> bool:
    """Whether a run yields its partitions' materializations chunk by chunk as they land.

    Dagster stores the events an asset yields before it resumes the asset, while the next chunk is
    being fetched; one Output at the end stores them all after the last fetch (on SQLite ~8 ms each:
    25,000 partitions wait ~200 s after the data is in). Without an Output, Dagster skips any asset
    downstream in the same run, so only runs without this asset's children stream (the job's asset
    graph is the run's subset); runs of one chunk gain nothing and keep the Output.
    """
    layer = context.job_def.asset_layer
    children = layer.asset_graph.get(context.asset_key).child_keys & layer.executable_asset_keys
    return chunks > 1 and not children and _stores_one_by_one(context.instance)


def _stores_one_by_one(instance: dg.DagsterInstance) -> bool:
    """SQLite event storage writes a batch event by event, so streaming costs nothing there;
    dagster-postgres writes an Output's batch in one INSERT, and streamed one by one the events of
    (c) 100 x 250 made the run 525 s against 404 s on SQLite. No public attribute says which; the
    storage's module does."""
    return "sqlite" in type(instance.event_log_storage).__module__


def hold_instance_connection(context: dg.AssetExecutionContext) -> None:
    """Keep one database connection open for the run's events instead of one per event.

    dagster-postgres opens a new connection for every event it stores outside the webserver (~5 ms
    each here, two or three per event); the instance's own switch to a pooled engine, which the
    webserver uses, brings a partition's events from ~25 to ~12 ms. SQLite storages ignore it.
    """
    context.instance.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=2)


def record_run_facts(
    context: dg.AssetExecutionContext, metadata: Mapping[str, Any], asset_key: dg.AssetKey | None = None
) -> None:
    """The run's figures, once: one observation of the asset, whatever the number of partitions."""
    key = asset_key or context.asset_key
    context.log_event(dg.AssetObservation(key, metadata=dict(metadata), tags={RUN_FACTS: context.run.run_id}))


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
