"""The project CLI: `backfill-assets demo | tickers | backfill | status | gaps | labels | setup | serve`."""

import argparse
import datetime as dt
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from backfill_assets.home import ensure_dagster_home
from backfill_assets.labels.config import LabelConfigError
from backfill_assets.settings import TICKER_PARTITIONS, SettingsError, load_settings
from backfill_assets.supervise import POOL_LIMITS
from backfill_assets.symbols import InvalidTickerError, parse_tickers
from backfill_assets.universe import missing_tickers
from backfill_assets.webserver import WebserverError, WebserverUnreachable

if TYPE_CHECKING:
    from backfill_assets.calendar import TradingCalendar


def _tickers(args: argparse.Namespace) -> int:
    import dagster as dg

    home = ensure_dagster_home()
    with dg.DagsterInstance.get() as instance:
        known = instance.get_dynamic_partitions(TICKER_PARTITIONS)
        if args.action == "list":
            print("\n".join(known))
            return 0
        settings = load_settings()
        wanted = (
            settings.universe
            if args.action == "sync"
            else parse_tickers(" ".join(args.symbols), settings.provider)
        )
        new = missing_tickers(wanted, known)
        instance.add_dynamic_partitions(TICKER_PARTITIONS, new)
    print(
        f"added {len(new)} ticker(s){': ' + ', '.join(new) if new else ''}; {len(known) + len(new)} known "
        f"(DAGSTER_HOME={home})"
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from backfill_assets.demo import run_demo

    settings = load_settings()
    tickers = parse_tickers(args.tickers, settings.provider) if args.tickers else list(settings.universe[:5])
    if args.sessions < 1:
        raise SettingsError(f"--sessions must be at least 1, got {args.sessions}")
    return run_demo(settings, tickers, args.sessions, ensure_dagster_home(), args.timeout)


def _calendar_and_assets() -> tuple["TradingCalendar", list[str]]:
    from backfill_assets.calendar import get_calendar
    from backfill_assets.labels.config import load_label_sets

    settings = load_settings()
    assets = ["bars", *(f"labels/{s.name}" for s in load_label_sets())]
    return get_calendar(settings.calendar, settings.start_date), assets


def _tags(pairs: list[str]) -> dict[str, str]:
    tags = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SettingsError(f"--tag expects key=value, got {pair!r}")
        tags[key] = value
    return tags


def _backfill(args: argparse.Namespace) -> int:
    import dagster as dg

    from backfill_assets import headless

    calendar, known = _calendar_and_assets()
    assets = headless.asset_paths(args.assets.split(","), known)
    settings = load_settings()
    tickers = parse_tickers(args.tickers, settings.provider) if args.tickers else list(settings.universe)
    sessions = headless.session_range(calendar, args.start, args.end)
    tags = {"provider": settings.provider, **_tags(args.tag)}
    home = ensure_dagster_home()
    with dg.DagsterInstance.get() as instance:
        new = missing_tickers(tickers, instance.get_dynamic_partitions(TICKER_PARTITIONS))
        instance.add_dynamic_partitions(TICKER_PARTITIONS, new)
        registered = instance.get_dynamic_partitions(TICKER_PARTITIONS)
    if new:
        print(f"registered {len(new)} new ticker(s) in DAGSTER_HOME={home}: {', '.join(new)}")
    title = args.title or f"{','.join(assets)}: {len(tickers)} tickers x {len(sessions)} sessions"
    ranges = headless.partition_ranges(tickers, registered, sessions[0], sessions[-1])
    if args.as_run:
        return _one_run(args, assets, ranges, tags)
    backfill_id, running = headless.launch(args.url, assets, ranges, title, tags, args.timeout)
    partitions = f"{len(set(tickers)) * len(sessions)} partitions per asset"
    if running:
        print(f"backfill {backfill_id} of this launch is already running ({partitions}): following it")
    else:
        print(f"launched backfill {backfill_id}: {partitions}")
    print(f"{args.url}/runs/b/{backfill_id}")
    if not args.wait:
        return 0
    with _following(args.url, f"backfill {backfill_id}", f"backfill-assets status {backfill_id}"):
        return 0 if headless.follow(args.url, backfill_id, wait=True).status == "COMPLETED_SUCCESS" else 1


def _one_run(
    args: argparse.Namespace, assets: list[str], ranges: list[tuple[str, str]], tags: dict[str, str]
) -> int:
    """The selection as one queued run (what a schedule's RunRequest is): no backfill-daemon loop."""
    from backfill_assets import headless
    from backfill_assets.webserver import launch_run

    if len(ranges) != 1:
        raise SettingsError(
            f"--as-run needs tickers registered one after another (one range); these make {len(ranges)}"
        )
    start, end = ranges[0]
    range_tags = {"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end}
    run_id, running = launch_run(args.url, assets, {**tags, **range_tags})
    what = "run of this launch is already queued or running:" if running else "launched run"
    print(f"{what} {run_id}: {start}..{end}")
    print(f"{args.url}/runs/{run_id}")
    if not args.wait:
        return 0
    with _following(args.url, f"run {run_id}", f"open {args.url}/runs/{run_id}"):
        return 0 if headless.follow_run(args.url, run_id) == "SUCCESS" else 1


@contextmanager
def _following(url: str, what: str, how: str) -> Iterator[None]:
    """Ctrl-C stops following, not the work: the daemon carries on with it."""
    try:
        yield
    except KeyboardInterrupt:
        print(
            f"\nstopped following; {what} goes on in the daemon: {how}, or cancel it at {url}",
            file=sys.stderr,
        )
        raise SystemExit(130) from None


def _status(args: argparse.Namespace) -> int:
    from backfill_assets import headless

    with _following(args.url, f"backfill {args.backfill_id}", f"backfill-assets status {args.backfill_id}"):
        progress = headless.follow(args.url, args.backfill_id, wait=not args.no_wait)
    return 0 if not progress.done or progress.status == "COMPLETED_SUCCESS" else 1


def _gaps(args: argparse.Namespace) -> int:
    import dagster as dg

    from backfill_assets import headless

    calendar, known = _calendar_and_assets()
    assets = headless.asset_paths(args.assets.split(",") if args.assets else known, known)
    sessions = headless.session_range(
        calendar,
        args.start or calendar.first_session.isoformat(),
        args.end or calendar.last_partitioned().isoformat(),
    )
    tickers = parse_tickers(args.tickers) if args.tickers else None  # stored symbols: any provider's
    home = ensure_dagster_home()
    print(f"materializations of DAGSTER_HOME={home}", file=sys.stderr)
    with dg.DagsterInstance.get() as instance:
        missing = headless.gaps(instance, assets, tickers, sessions)
    for asset, pairs in missing.items():
        print(f"{asset}: {len(pairs)} missing (ticker, session) pair(s) in {sessions[0]}..{sessions[-1]}")
        by_ticker: dict[str, list[dt.date]] = {}
        for ticker, day in pairs:
            by_ticker.setdefault(ticker, []).append(day)
        for ticker, days in list(by_ticker.items())[: args.limit]:
            runs = calendar.contiguous_runs(days)  # consecutive sessions as one range
            shown = ", ".join(f"{r[0]}..{r[-1]} ({len(r)})" if len(r) > 1 else str(r[0]) for r in runs)
            print(f"  {ticker} {shown}")
        if len(by_ticker) > args.limit:
            print(f"  ... and {len(by_ticker) - args.limit} more ticker(s)")
        if pairs:
            first, last = min(d for _, d in pairs), max(d for _, d in pairs)
            print(
                f"  fill: backfill-assets backfill --assets {asset} --tickers {','.join(by_ticker)} "
                f"--start {first} --end {last}  (stored sessions in the box are fetched again, same rows)"
            )
    return 0


def _labels(args: argparse.Namespace) -> int:
    """`labels reset NAME --yes`: drop a label set's table and version stamp (after its parameters
    changed), so the next backfill writes it afresh."""
    from backfill_assets.labels.config import load_label_sets
    from backfill_assets.storage.base import StoreError
    from backfill_assets.storage.open import label_store, open_store

    sets = {s.name: s for s in load_label_sets()}
    if args.name not in sets:
        raise SettingsError(f"unknown label set {args.name!r}; configured: {', '.join(sorted(sets))}")
    table = sets[args.name].table
    if not args.yes:
        raise SettingsError(f"`labels reset {args.name}` drops table {table} and every row in it: add --yes")
    store = open_store(load_settings())
    try:
        dropped = label_store(store).drop_labels(table)
    except StoreError as exc:  # nothing was dropped
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"dropped {table} ({dropped} rows) in {store.describe()}; now backfill labels/{args.name}, e.g. "
        f"`backfill-assets backfill --assets labels/{args.name} --start <first session>`"
    )
    return 0


def _setup(args: argparse.Namespace) -> int:
    import subprocess
    from pathlib import Path

    limits = dict(POOL_LIMITS)
    for pool, value in _tags(args.limit).items():
        if not value.isdigit():
            raise SettingsError(f"--limit {pool}={value!r}: the limit must be a whole number")
        limits[pool] = int(value)
    home = ensure_dagster_home()
    dagster = str(Path(sys.executable).with_name("dagster"))
    for pool, limit in limits.items():
        # The public way to set a pool's limit: dagster.yaml only takes a default for all pools.
        subprocess.run([dagster, "instance", "concurrency", "set", pool, str(limit)], check=True)
    print(f"pool limits set in {home}: " + ", ".join(f"{p}={n}" for p, n in limits.items()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backfill-assets", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run a real daemon backfill on the embedded defaults")
    demo.add_argument("--tickers", help="comma-separated tickers (default: first 5 of the universe)")
    demo.add_argument("--sessions", type=int, default=20, help="sessions from the start date (default 20)")
    demo.add_argument("--timeout", type=float, default=900, help="seconds to wait for the backfill")
    demo.set_defaults(func=_demo)
    tickers = commands.add_parser("tickers", help="the `tickers` dynamic partitions")
    tickers.add_argument("action", choices=["sync", "add", "list"])
    tickers.add_argument("symbols", nargs="*", help="tickers to add (with `add`)")
    tickers.set_defaults(func=_tickers)

    backfill = commands.add_parser("backfill", help="launch a daemon backfill through the webserver")
    backfill.add_argument(
        "--assets", default="bars", help="comma-separated: bars, labels/<name> (default bars)"
    )
    backfill.add_argument(
        "--tickers", help="comma-separated (default: the universe); new ones are registered"
    )
    backfill.add_argument("--start", required=True, help="first session, YYYY-MM-DD")
    backfill.add_argument("--end", help="last session, YYYY-MM-DD (default: --start)")
    backfill.add_argument("--tag", action="append", default=[], help="run tag key=value (repeatable)")
    backfill.add_argument("--title", help="backfill title shown in the UI")
    backfill.add_argument("--wait", action="store_true", help="follow it until it ends")
    backfill.add_argument(
        "--as-run",
        action="store_true",
        help="one queued run instead of a backfill (a box of consecutively registered tickers x "
        "sessions; no backfill-daemon loop, as the after-close schedule runs)",
    )
    backfill.add_argument(
        "--timeout",
        type=float,
        default=600,
        help="seconds to wait for the webserver's answer (default 600); on a timeout, as long again "
        "looking for the backfill by its launch key",
    )
    backfill.set_defaults(func=_backfill)
    status = commands.add_parser("status", help="progress of a backfill, with a progress bar until done")
    status.add_argument("backfill_id")
    status.add_argument("--no-wait", action="store_true", help="print once and return")
    status.set_defaults(func=_status)
    gaps = commands.add_parser("gaps", help="missing (ticker, session) pairs per asset")
    gaps.add_argument("--assets", help="comma-separated (default: bars and every label set)")
    gaps.add_argument("--tickers", help="comma-separated (default: every registered ticker)")
    gaps.add_argument("--start", help="first session (default: the partitions' start)")
    gaps.add_argument("--end", help="last session (default: the last completed session)")
    gaps.add_argument("--limit", type=int, default=20, help="tickers listed per asset (default 20)")
    gaps.set_defaults(func=_gaps)
    for command in (backfill, status):
        command.add_argument(
            "--url", default=headless_url(), help="dagster-webserver (DAGSTER_WEBSERVER_URL)"
        )
    labels = commands.add_parser("labels", help="label tables: `reset NAME --yes` drops one to rebuild it")
    labels.add_argument("action", choices=["reset"])
    labels.add_argument("name", help="the label set's name (label_sets.yaml)")
    labels.add_argument("--yes", action="store_true", help="confirm: the table's rows are dropped")
    labels.set_defaults(func=_labels)
    setup = commands.add_parser("setup", help="set the provider pools' limits on the instance")
    setup.add_argument("--limit", action="append", default=[], help=f"pool=N (defaults {POOL_LIMITS})")
    setup.set_defaults(func=_setup)
    serve = commands.add_parser(
        "serve",
        help="the Dagster UI and daemon on the project's instance (BACKFILL_INSTANCE: sqlite|postgres)",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)"
    )
    serve.add_argument("--port", type=int, default=3000)
    serve.set_defaults(func=_serve)
    return parser


def _serve(args: argparse.Namespace) -> int:
    from backfill_assets.supervise import serve

    return serve(args.host, args.port)


def headless_url() -> str:
    import os

    return os.environ.get("DAGSTER_WEBSERVER_URL", "http://127.0.0.1:3000")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (SettingsError, InvalidTickerError, LabelConfigError, WebserverUnreachable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except WebserverError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
