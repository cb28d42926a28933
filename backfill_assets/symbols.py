"""Ticker symbol validation: the one gate every symbol passes before a provider or SQL sees it."""

import re

# Upper-case letter first, then letters, digits, '.' or '-' (BRK.B, BF-B); 15 characters at most.
TICKER_PATTERN = re.compile(r"^[A-Z][A-Z0-9.\-]{0,14}$")


class InvalidTickerError(ValueError):
    """A ticker symbol that does not match TICKER_PATTERN."""


def validate_ticker(symbol: str) -> str:
    """Return `symbol` unchanged if it is a valid ticker, else raise InvalidTickerError naming it."""
    if not isinstance(symbol, str) or not TICKER_PATTERN.fullmatch(symbol):
        raise InvalidTickerError(
            f"invalid ticker {symbol!r}: expected 1-15 characters, an upper-case letter first, "
            "then upper-case letters, digits, '.' or '-' (e.g. AAPL, BRK.B)"
        )
    return symbol


def parse_tickers(text: str) -> list[str]:
    """Parse a comma/whitespace separated list (or a universe file's text) into unique valid tickers.

    Lines starting with '#' are comments. Order is kept, duplicates dropped; any invalid symbol
    fails the whole list so a typo never silently shrinks the universe.
    """
    tickers: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        for token in re.split(r"[,\s]+", line.strip()):
            if token and token not in tickers:
                tickers.append(validate_ticker(token))
    return tickers
