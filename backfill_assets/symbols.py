"""Ticker symbols: each provider's grammar, and the one gate every symbol passes before a provider or
SQL sees it.

Stored symbols (partition keys, table rows) are canonical: upper case, in the grammar of some
provider. Input (settings, the CLI, universe files) is normalized to upper case first, then checked
against the configured provider's grammar, so `aapl` becomes AAPL and `^GSPC` is refused for Alpaca
by name. Symbols reach SQL only as parameters either way.
"""

import re

GRAMMARS: dict[str, tuple[re.Pattern[str], str]] = {
    # Alpaca: a letter first, then letters, digits, '.' (class shares: BRK.B) or '-'.
    "alpaca": (re.compile(r"^[A-Z][A-Z0-9.\-]{0,14}$"), "a letter, then letters, digits, '.' or '-' (BRK.B)"),
    # Yahoo: an optional '^' (indices: ^GSPC), a letter or digit (0700.HK), letters, digits, '.' or
    # '-' (BRK-B, BTC-USD), and an optional '=' suffix (currencies EURUSD=X, futures ES=F).
    "yfinance": (
        re.compile(r"^\^?[A-Z0-9][A-Z0-9.\-]{0,19}(=[A-Z]{1,2})?$"),
        "an optional '^', a letter or digit, letters, digits, '.' or '-', an optional =X or =F suffix "
        "(^GSPC, 0700.HK, EURUSD=X, BRK-B)",
    ),
}
GRAMMARS["synthetic"] = GRAMMARS["yfinance"]  # offline: any symbol a real provider could name
GRAMMARS["files"] = GRAMMARS["yfinance"]  # exports of either provider (BRK.B and BRK-B both fit)
CANONICAL = [pattern for pattern, _ in GRAMMARS.values()]


class InvalidTickerError(ValueError):
    """A symbol outside the grammar of its provider (or of every provider)."""


def _expected(symbol: object, provider: str | None) -> str | None:
    """What `symbol` should look like, or None if it is canonical for `provider` (or for some one)."""
    if provider is not None and provider not in GRAMMARS:
        raise InvalidTickerError(f"no symbol grammar for provider {provider!r}")
    patterns = [GRAMMARS[provider][0]] if provider else CANONICAL
    if isinstance(symbol, str) and any(p.fullmatch(symbol) for p in patterns):
        return None
    if provider is None:
        return "expected an upper-case symbol a provider can name, e.g. AAPL, BRK.B, ^GSPC, 0700.HK, EURUSD=X"
    return f"expected {GRAMMARS[provider][1]}"


def _refuse(symbol: object, provider: str | None, expected: str) -> InvalidTickerError:
    where = f" for {provider}" if provider else ""
    return InvalidTickerError(f"invalid ticker {symbol!r}{where}: {expected}")


def refusal(symbol: str, provider: str) -> str | None:
    """Why `provider` cannot be asked for `symbol` (the InvalidTickerError message), or None."""
    expected = _expected(symbol, provider)
    return None if expected is None else str(_refuse(symbol, provider, expected))


def validate_ticker(symbol: str, provider: str | None = None) -> str:
    """Return `symbol` unchanged if it is canonical (in `provider`'s grammar, or some provider's),
    else raise InvalidTickerError naming it. Partition keys and stored rows pass here: no case folding."""
    if (expected := _expected(symbol, provider)) is not None:
        raise _refuse(symbol, provider, expected)
    return symbol


def normalize_ticker(symbol: str, provider: str | None = None) -> str:
    """User input to its canonical symbol: trimmed and upper-cased, then validated; an error names the
    symbol as it was typed."""
    canonical = symbol.strip().upper() if isinstance(symbol, str) else symbol
    if (expected := _expected(canonical, provider)) is not None:
        raise _refuse(symbol, provider, expected)
    return canonical


def parse_tickers(text: str, provider: str | None = None) -> list[str]:
    """Parse a comma/whitespace separated list (or a universe file's text) into unique valid tickers.

    Lines starting with '#' are comments. Order is kept, duplicates dropped; any invalid symbol
    fails the whole list so a typo never silently shrinks the universe.
    """
    tickers: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        for token in re.split(r"[,\s]+", line.strip()):
            if token and (symbol := normalize_ticker(token, provider)) not in tickers:
                tickers.append(symbol)
    return tickers
