"""Headless backfills: launch through the webserver's GraphQL API, follow them, and list gaps.

`backfill` is exactly what the UI's "Materialize > backfill" does (`launchPartitionBackfill`), so the
daemon runs it under every limit of dagster.yaml. `gaps` asks the instance which (ticker, session)
partitions of each asset are not materialized, against the exchange calendar.

The progress bar is drawn here, not by tqdm or rich (both come with Dagster): off a terminal (CI, a
pipe, `make`) it prints one plain line per change, which scripts and the tests read, and the figures
are Dagster's counts of a backfill, not an iteration it drives; either library would need the same
line and redraw logic around it.
"""

import datetime as dt
import sys
import time
from collections.abc import Sequence

from backfill_assets.calendar import TradingCalendar
from backfill_assets.settings import TICKER_PARTITIONS, SettingsError
from backfill_assets.webserver import BackfillProgress, backfill_progress, launch_backfill, run_status


def session_range(calendar: TradingCalendar, start: str, end: str | None) -> list[dt.date]:
    """Sessions in [start, end] (ISO dates, end defaults to start); a clear error for bad ranges."""
    try:
        first = dt.date.fromisoformat(start)
        last = dt.date.fromisoformat(end) if end else first
    except ValueError:
        raise SettingsError(f"dates must be ISO (YYYY-MM-DD), got --start {start!r} --end {end!r}") from None
    if last < first:
        raise SettingsError(f"--end {last} is before --start {first}")
    latest = calendar.last_partitioned()
    if first < calendar.first_session or last > latest:
        closed = calendar.last_completed()
        note = (
            f"; {closed} has closed, its partition appears at midnight {calendar.tz}"
            if closed > latest
            else ""
        )
        raise SettingsError(
            f"{first}..{last} is outside the partitions ({calendar.first_session}..{latest}{note})"
        )
    sessions = calendar.sessions_in(first, last)
    if not sessions:
        raise SettingsError(f"no trading session between {first} and {last}")
    return sessions


def asset_paths(assets: Sequence[str], known: Sequence[str]) -> list[str]:
    unknown = [a for a in assets if a not in known]
    if unknown:
        raise SettingsError(f"unknown asset {unknown[0]!r}; expected some of {', '.join(known)}")
    return list(assets)


def partition_ranges(
    tickers: Sequence[str], registered: Sequence[str], first: dt.date, last: dt.date
) -> list[tuple[str, str]]:
    """`first..last` x `tickers` as few boxes of partition keys as Dagster can express: its range over
    the tickers dimension follows the order tickers were registered in, so each run of consecutive
    registered tickers is one range."""
    position = {ticker: i for i, ticker in enumerate(registered)}
    missing = [t for t in tickers if t not in position]
    if missing:
        raise SettingsError(f"ticker {missing[0]!r} is not registered (backfill-assets tickers add)")
    ranges: list[tuple[str, str]] = []
    indices = sorted({position[t] for t in tickers})
    start = indices[0]
    for before, after in zip(indices, [*indices[1:], None], strict=True):
        if after != before + 1:
            ranges.append(
                (f"{first.isoformat()}|{registered[start]}", f"{last.isoformat()}|{registered[before]}")
            )
            start = after if after is not None else start
    return ranges


def launch(
    url: str,
    assets: list[str],
    ranges: list[tuple[str, str]],
    title: str,
    tags: dict[str, str],
    timeout: float = 600,
) -> tuple[str, bool]:
    """A backfill of `ranges` for `assets`, or the same launch's backfill if it is still running."""
    return launch_backfill(url, assets, ranges, title, tags, timeout)


def _bar(progress: BackfillProgress, started: float, width: int = 30) -> str:
    done = progress.materialized + progress.failed
    share = done / progress.targeted if progress.targeted else 0.0
    elapsed = time.monotonic() - started
    eta = f"ETA {elapsed / share - elapsed:4.0f} s" if 0 < share < 1 else " " * 10
    filled = int(share * width)
    return (
        f"[{'#' * filled}{'.' * (width - filled)}] {progress.materialized}/{progress.targeted} done, "
        f"{progress.in_progress} in progress, {progress.failed} failed  {progress.status:<18} {eta}"
    )


def follow(url: str, backfill_id: str, wait: bool, poll_s: float = 2.0) -> BackfillProgress:
    """Print a progress bar (redrawn on a terminal, one line per change otherwise) until the end."""
    started, last, tty = time.monotonic(), "", sys.stdout.isatty()
    while True:
        progress = backfill_progress(url, backfill_id)
        line = _bar(progress, started)
        if line != last:
            print(("\r" + line) if tty else line, end="" if tty else "\n", flush=True)
            last = line
        if progress.done or not wait:
            if tty:
                print()
            return progress
        time.sleep(poll_s)


def follow_run(url: str, run_id: str, poll_s: float = 0.5) -> str:
    """Print a queued run's status on each change until it ends; the final status."""
    last = ""
    while True:
        status = run_status(url, run_id)
        if status != last:
            print(f"run {run_id}: {status}", flush=True)
            last = status
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            return status
        time.sleep(poll_s)


def gaps(
    instance: object, assets: list[str], tickers: list[str] | None, sessions: list[dt.date]
) -> dict[str, list[tuple[str, dt.date]]]:
    """Per asset, the (ticker, session) pairs in range that are not materialized."""
    import dagster as dg

    assert isinstance(instance, dg.DagsterInstance)
    known = tickers or list(instance.get_dynamic_partitions(TICKER_PARTITIONS))
    missing: dict[str, list[tuple[str, dt.date]]] = {}
    for asset in assets:
        done = instance.get_materialized_partitions(dg.AssetKey.from_user_string(asset))
        missing[asset] = [
            (ticker, day) for ticker in known for day in sessions if f"{day.isoformat()}|{ticker}" not in done
        ]
    return missing
