"""The ticker universe versus the tickers Dagster already knows (pure)."""

from collections.abc import Iterable, Sequence

from backfill_assets.symbols import validate_ticker


def missing_tickers(universe: Iterable[str], known: Sequence[str]) -> list[str]:
    """Universe tickers not yet known, in universe order, each validated."""
    known_set = set(known)
    return [validate_ticker(t) for t in universe if t not in known_set]
