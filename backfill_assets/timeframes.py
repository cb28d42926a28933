"""Bar timeframes supported across providers, in Alpaca's spelling."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Timeframe:
    """A bar size: `name` as users write it, `minutes` per bar (1Day is one bar per session)."""

    name: str
    minutes: int

    @property
    def is_daily(self) -> bool:
        return self.name == "1Day"

    @property
    def bars_per_session(self) -> int:
        """At most this many bars in one regular session (390 minutes; a partial last bucket counts)."""
        return 1 if self.is_daily else -(-390 // self.minutes) + 1

    @property
    def pandas_freq(self) -> str:
        return f"{self.minutes}min"


TIMEFRAMES: dict[str, Timeframe] = {
    tf.name: tf
    for tf in (
        Timeframe("1Min", 1),
        Timeframe("5Min", 5),
        Timeframe("15Min", 15),
        Timeframe("30Min", 30),
        Timeframe("1Hour", 60),
        Timeframe("1Day", 390),
    )
}


def minutes_timeframe(minutes: int) -> Timeframe:
    """The intraday timeframe of `minutes` per bar (a provider's source for a coarser one)."""
    known = {tf.minutes: tf for tf in TIMEFRAMES.values() if not tf.is_daily}
    return known.get(minutes) or Timeframe(f"{minutes}Min", minutes)


class UnknownTimeframeError(ValueError):
    """A timeframe name outside TIMEFRAMES."""


def parse_timeframe(name: str) -> Timeframe:
    """Look up a timeframe by name, raising UnknownTimeframeError that lists the valid ones."""
    try:
        return TIMEFRAMES[name]
    except KeyError:
        raise UnknownTimeframeError(
            f"unknown timeframe {name!r}: expected one of {', '.join(TIMEFRAMES)}"
        ) from None
