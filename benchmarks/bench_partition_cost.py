"""Dagster's cost per partition: one `bars` run of N partitions along each dimension, on a real instance.

A run is what `dagster asset materialize --partition-range` (and each backfill run) executes: the
project's asset job over a partition range, bars and every check it carries, in one process
(synthetic provider, DuckDB). Per run size and dimension it reports the run's wall time from
creation (planned events included) to success, the asset's own work (its ingest and checks), the wall
per partition beyond that work, and the event-log bytes per partition (every event of the run, as
stored, and a partition's own: its planned and materialization events), each with Dagster's default
of one planned event per partition and with its DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS
switch (one planned event per asset and run). SQLite is the shipped instance; `--postgres URL` adds
the dagster-postgres instance.
Usage: python benchmarks/bench_partition_cost.py [--sizes 10,100,1000] [--postgres URL]
"""

import argparse
import json
import os
import subprocess
import sys
import time

# Settings are read when definitions load: a start date early enough for 1,000 sessions.
START = "2020-01-02"
os.environ.setdefault("BACKFILL_START_DATE", START)
os.environ["BACKFILL_FRESHNESS"] = "off"

from dagster_procs import fresh_home, fresh_pg_database  # noqa: E402  (benchmarks/ on sys.path)
from report import publish  # noqa: E402

from backfill_assets.settings import PROJECT_ROOT  # noqa: E402


def run_once(tickers: int, sessions: int) -> dict[str, float]:
    """In the child process (DAGSTER_HOME set): one run over the range; its wall, work and events."""
    import datetime as dt

    import dagster as dg

    from backfill_assets.calendar import get_calendar
    from backfill_assets.definitions import defs

    names = [f"T{i:04d}" for i in range(tickers)]
    first = dt.date.fromisoformat(START)
    days = get_calendar("XNYS", first).sessions_in(first, first + dt.timedelta(days=2000))[:sessions]
    tags = {
        "dagster/asset_partition_range_start": f"{days[0]}|{names[0]}",
        "dagster/asset_partition_range_end": f"{days[-1]}|{names[-1]}",
    }
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("tickers", names)
        job = defs().resolve_implicit_global_asset_job_def()
        started = time.perf_counter()
        result = job.execute_in_process(instance=instance, tags=tags, asset_selection=[dg.AssetKey("bars")])
        wall = time.perf_counter() - started
        assert result.success
        records = instance.get_records_for_run(result.run_id, limit=10_000_000).records
        # Dagster's floor: what one event costs this instance's storage, stored on its own
        started = time.perf_counter()
        for i in range(100):
            key = dg.MultiPartitionKey({"date": str(days[0]), "ticker": names[i % len(names)]})
            instance.report_runless_asset_event(dg.AssetObservation("bars", partition=key))
        event_ms = (time.perf_counter() - started) * 10
    nbytes = sum(len(dg.serialize_value(r.event_log_entry)) for r in records)
    # A partition's own events (planned and materialized with its key) against the run's fixed ones
    entries = [r.event_log_entry for r in records]
    own_bytes = sum(
        len(dg.serialize_value(e))
        for e in entries
        if e.dagster_event and e.dagster_event.partition is not None
    )
    asset_s = 0.0
    for record in records:
        event = record.event_log_entry.dagster_event
        data = event.event_specific_data if event else None
        found = getattr(data, "materialization", None) or getattr(data, "asset_observation", None)
        if found is not None and "duration_s" in found.metadata:  # the run's facts: ingest + checks
            asset_s = sum(float(found.metadata[k].value) for k in ("duration_s", "checks_s"))  # type: ignore[arg-type]
    return {
        "wall": wall,
        "asset_s": asset_s,
        "events": len(records),
        "bytes": nbytes,
        "own_bytes": own_bytes,
        "event_ms": event_ms,
    }


def measure(
    instance: str, planned: str, tickers: int, sessions: int, pg_server: str | None
) -> dict[str, float]:
    shipped = "dagster.postgres.yaml" if instance == "postgres" else "dagster.yaml"
    _, env = fresh_home((PROJECT_ROOT / shipped).read_text(), planned_per_run=planned == "per run")
    if instance == "postgres":
        assert pg_server, "--postgres URL is needed for the Postgres instance"
        env["DAGSTER_PG_URL"] = fresh_pg_database(pg_server, "bench_cost")
    command = [sys.executable, __file__, "--worker", str(tickers), str(sessions)]
    out = subprocess.run(command, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"run of {tickers} x {sessions} failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--postgres", default=os.environ.get("BACKFILL_TEST_POSTGRES_URL"))
    parser.add_argument("--worker", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_once(*args.worker)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    instances = ["sqlite", "postgres"] if args.postgres else ["sqlite"]
    lines = [
        "| instance | planned events | run shape | partitions | wall s | asset work s "
        "| Dagster ms / partition | one event stored alone, ms | events | event bytes / partition "
        "| a partition's own event bytes |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for instance in instances:
        for planned in ("per partition", "per run"):
            for shape in ("tickers", "sessions"):
                for n in sizes:
                    tickers, sessions = (n, 1) if shape == "tickers" else (1, n)
                    r = measure(instance, planned, tickers, sessions, args.postgres)
                    extra_ms = (r["wall"] - (r["asset_s"] or 0.0)) / n * 1000
                    label = f"1 session x {n} tickers" if shape == "tickers" else f"1 ticker x {n} sessions"
                    lines.append(
                        f"| {instance} | {planned} | {label} | {n} | {r['wall']:.1f} "
                        f"| {r['asset_s'] or 0:.2f} | {extra_ms:.1f} | {r['event_ms']:.1f} "
                        f"| {r['events']:.0f} | {r['bytes'] / n:,.0f} "
                        f"| {r['own_bytes'] / n:,.0f} |"
                    )
                    print(lines[-1], flush=True)
    publish("partition_cost", lines)


if __name__ == "__main__":
    main()
