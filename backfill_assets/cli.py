"""The project CLI: `backfill-assets demo | tickers {sync,add,list}`."""

import argparse
import sys

from backfill_assets.home import ensure_dagster_home
from backfill_assets.settings import TICKER_PARTITIONS, SettingsError, load_settings
from backfill_assets.symbols import InvalidTickerError, parse_tickers
from backfill_assets.universe import missing_tickers


def _tickers(args: argparse.Namespace) -> int:
    import dagster as dg

    ensure_dagster_home()
    with dg.DagsterInstance.get() as instance:
        known = instance.get_dynamic_partitions(TICKER_PARTITIONS)
        if args.action == "list":
            print("\n".join(known))
            return 0
        wanted = load_settings().universe if args.action == "sync" else parse_tickers(" ".join(args.symbols))
        new = missing_tickers(wanted, known)
        instance.add_dynamic_partitions(TICKER_PARTITIONS, new)
    print(f"added {len(new)} ticker(s){': ' + ', '.join(new) if new else ''}; {len(known) + len(new)} known")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from backfill_assets.demo import run_demo

    settings = load_settings()
    tickers = parse_tickers(args.tickers) if args.tickers else list(settings.universe[:5])
    if args.sessions < 1:
        raise SettingsError(f"--sessions must be at least 1, got {args.sessions}")
    return run_demo(settings, tickers, args.sessions, ensure_dagster_home(), args.timeout)


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (SettingsError, InvalidTickerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
