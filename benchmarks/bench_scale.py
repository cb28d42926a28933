"""The partition space at scale: a bars asset of 1,000 tickers x 5 years (1,258 sessions, 1.26M partitions).

A fresh DAGSTER_HOME (SQLite, the shipped dagster.yaml) whose partitions start N sessions before
the last closed one, with the tickers registered. Timed:
- loading the definitions; listing every partition key (the MultiPartitionsDefinition against the
  instance);
- the query the UI's partitions page issues (PartitionHealthQuery, from dagster-webserver's own
  bundle) over HTTP: with nothing materialized and with a few tickers' history materialized;
- `backfill-assets backfill` from a shell, as a user launches it, of one group of tickers (--group,
  every session) and then of every partition; each time, the time until the daemon has queued its
  first run and how many runs it queues per minute. The queue is
  held (max_concurrent_runs: 0) so only submission is timed (waiting at most --cap-s), then the
  backfill is cancelled. The label sensor is stopped: labels would follow with backfills of their own.
- the partitions page itself in headless Chromium (Debian's package, as `make ui-check`), which must show
  the materialized count;
- peak RSS of the webserver and the daemon (and their code servers).
With --planned-per-run, Dagster's one-planned-event-per-run switch is set in every process.
Usage: python benchmarks/bench_scale.py [--tickers 1000] [--sessions 1258] [--planned-per-run]
"""

import argparse
import datetime as dt
import os
import statistics
import time

import dagster as dg

# run as a script: benchmarks/ is on sys.path
from dagster_procs import cli_backfill, fresh_home, running_dagster, stop_sensor
from report import RESULTS, publish, timed
from ui_check import render, require

from backfill_assets.calendar import get_calendar
from backfill_assets.settings import PROJECT_ROOT, TICKER_PARTITIONS
from backfill_assets.webserver import graphql

# Verbatim from dagster-webserver 1.13.27's UI (the asset's Partitions tab).
PARTITION_HEALTH = """
query PartitionHealthQuery($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode {
      id
      partitionKeysByDimension { name type partitionKeys }
      assetPartitionStatuses {
        ... on TimePartitionStatuses { ranges { status startTime endTime startKey endKey } }
        ... on DefaultPartitionStatuses { materializedPartitions materializingPartitions failedPartitions }
        ... on MultiPartitionStatuses {
          primaryDimensionName
          ranges {
            primaryDimStartKey primaryDimEndKey primaryDimStartTime primaryDimEndTime
            secondaryDim {
              ... on TimePartitionStatuses { ranges { status startTime endTime startKey endKey } }
              ... on DefaultPartitionStatuses {
                materializedPartitions materializingPartitions failedPartitions
              }
            }
          }
        }
      }
    }
  }
}
"""
CANCEL = """
mutation($id: String!) { cancelPartitionBackfill(backfillId: $id) { __typename } }
"""


def page_load(url: str, repeat: int = 3) -> float:
    """Median seconds of the partitions page's query (the first call warms the status cache)."""
    graphql(url, PARTITION_HEALTH, {"assetKey": {"path": ["bars"]}}, timeout=600)
    return statistics.median(
        timed(graphql, url, PARTITION_HEALTH, {"assetKey": {"path": ["bars"]}}, timeout=600)[1]
        for _ in range(repeat)
    )


def browser_page(url: str, first: str, materialized: int) -> float:
    """Seconds for Chromium to render the bars partitions page, which must show `materialized`."""
    page = f"{url}/assets/bars?view=partitions&partition={first}"
    graphql(url, "mutation { setNuxSeen }")  # the community pop-up, as its Skip button does
    began = time.monotonic()
    dom = render(page, RESULTS / "ui_scale_partitions.png", wait_ms=60_000)
    require("bars partitions at scale", dom, [f"Materialized ({materialized})"])
    return time.monotonic() - began


def materialize(instance: dg.DagsterInstance, tickers: list[str], sessions: list[dt.date]) -> None:
    for ticker in tickers:
        for day in sessions:
            key = dg.MultiPartitionKey({"date": day.isoformat(), "ticker": ticker})
            instance.report_runless_asset_event(dg.AssetMaterialization("bars", partition=key))


def launch_and_watch(
    env: dict[str, str],
    url: str,
    instance: dg.DagsterInstance,
    tickers: list[str],
    sessions: list[dt.date],
    cap_s: float,
) -> list[tuple[str, float]]:
    """`backfill-assets backfill` of `tickers` x `sessions` from a shell, then the wait until the daemon
    has queued its first run and its runs per minute (at most `cap_s`); the backfill is then cancelled."""
    partitions = len(tickers) * len(sessions)
    what = f"{len(tickers)} tickers x {len(sessions)} sessions ({partitions:,} partitions)"
    started = time.monotonic()
    backfill_id = cli_backfill(env, url, tickers, sessions, wait=False)
    rows = [(f"`backfill-assets backfill` of {what}", time.monotonic() - started)]
    expected = min(len(tickers), len(sessions))  # single_run: one run per smaller-dimension value
    filters = dg.RunsFilter(tags={"dagster/backfill": backfill_id})
    first = None
    while (created := instance.get_runs_count(filters)) < expected:
        if created and first is None:
            first = time.monotonic() - started
            rows.append(("... until the daemon has queued the first run", first))
        if time.monotonic() - started > cap_s:
            break
        time.sleep(1)
    waited = time.monotonic() - started
    rows.append((f"... until it has queued {created} of the {expected} runs", waited))
    per_minute = (created - 1) / max(waited - (first or 0.0), 1e-9) * 60 if created > 1 else 0.0
    rows.append(("runs queued per minute after the first (count)", per_minute))
    graphql(url, CANCEL, {"id": backfill_id}, timeout=600)
    # The cancelled backfill's runs leave the queue before the next launch is timed.
    while instance.get_runs_count(dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED])) and (
        time.monotonic() - started < cap_s + 300
    ):
        time.sleep(2)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tickers", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=1258)
    parser.add_argument("--materialized", type=int, default=4, help="tickers whose history is recorded")
    parser.add_argument("--cap-s", type=float, default=900, help="stop waiting for runs after this")
    parser.add_argument(
        "--group", type=int, default=100, help="first launch one group of N tickers (0: skip)"
    )
    parser.add_argument(
        "--planned-per-run", action="store_true", help="Dagster's one planned event per run and asset"
    )
    args = parser.parse_args()
    shipped = (PROJECT_ROOT / "dagster.yaml").read_text()
    held = shipped.replace("max_concurrent_runs: 4", "max_concurrent_runs: 0")
    home, env = fresh_home(held, planned_per_run=args.planned_per_run)
    every = get_calendar("XNYS", dt.date(2020, 1, 2))
    # Dagster adds a session's partition at midnight New York, hours after the close: count back
    # from the last one it has.
    last = every.sessions_in(every.first_session, every.last_completed())[-2:]
    env["BACKFILL_START_DATE"] = every.sessions_in(every.first_session, last[0])[-args.sessions].isoformat()
    os.environ.update(env)  # the definitions below read the start date when imported
    started = time.monotonic()
    from backfill_assets.definitions import defs
    from backfill_assets.defs.partitions import bars_partitions, session_partitions

    defs()
    load_s = time.monotonic() - started

    sessions = [dt.date.fromisoformat(key) for key in session_partitions.get_partition_keys()]

    tickers = [f"T{i:03d}" for i in range(args.tickers)]
    partitions = len(tickers) * len(sessions)
    rows: list[tuple[str, float]] = [("load the definitions (import + Definitions)", load_s)]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        rows.append(("register the tickers (dynamic partitions)",
                     timed(instance.add_dynamic_partitions, TICKER_PARTITIONS, tickers)[1]))  # fmt: skip
        keys, seconds = timed(bars_partitions.get_partition_keys, dynamic_partitions_store=instance)
        assert len(keys) == partitions, (len(keys), partitions)
        rows.append((f"list every partition key ({partitions:,})", seconds))
        # Labels would follow the recorded materializations with backfills of their own.
        stop_sensor(env, "label_recompute_sensor")
        with running_dagster(env) as dagster:
            url = dagster.url
            rows.append(("UI partitions page query, nothing materialized", page_load(url)))
            done = tickers[: args.materialized]
            rows.append((f"record {len(done) * len(sessions):,} materializations (runless events)",
                         timed(materialize, instance, done, sessions)[1]))  # fmt: skip
            recorded = len(done) * len(sessions)
            rows.append((f"UI partitions page query, {recorded:,} materialized", page_load(url)))
            first = f"{sessions[0].isoformat()}%7C{done[0]}"
            rows.append(("the partitions page in Chromium (render + screenshot)",
                         browser_page(url, first, recorded)))  # fmt: skip
            if args.group:
                rows += launch_and_watch(env, url, instance, tickers[: args.group], sessions, args.cap_s)
            rows += launch_and_watch(env, url, instance, tickers, sessions, args.cap_s)
            rss = dagster.peak_rss_mb()
    rows += [(f"peak RSS, {name} (MB, count)", mb) for name, mb in rss.items()]
    lines = [
        f"Partition space: bars over {len(tickers)} tickers x {len(sessions)} sessions = {partitions:,} "
        f"partitions, SQLite instance{', planned events per run' if args.planned_per_run else ''}, "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        "| step | seconds |",
        "|---|---:|",
        *(f"| {name} | {seconds:.2f} |" for name, seconds in rows),
    ]
    publish("scale_planned_per_run" if args.planned_per_run else "scale", lines)


if __name__ == "__main__":
    main()
