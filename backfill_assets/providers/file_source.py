"""Where the `files` provider reads bars: a path in one of three layouts, a column mapping, a timezone.

Layouts, told apart by the path:
- one file or a glob whose rows name their ticker: `stocks.csv.gz`, `exports/*.parquet`;
- one file per ticker: a path holding `{ticker}` (or `{ticker_lower}`): `exports/{ticker}.csv`;
- a hive-partitioned directory: `bars/` holding `ticker=AAPL/part-0.parquet` (the key is a column).
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from backfill_assets.schemas import PROVIDER_COLUMNS

FORMATS = ("csv", "parquet")
ADJUSTMENTS = ("raw", "split", "dividend", "all")
REQUIRED = ("ts", "open", "high", "low", "close", "volume")
# A file column stands for ours when its name, in any case, is one of these (unless mapped).
ALIASES: Mapping[str, tuple[str, ...]] = {
    "ticker": ("ticker", "symbol"),
    "ts": ("ts", "timestamp", "datetime", "date", "time"),
    "open": ("open",),
    "high": ("high",),
    "low": ("low",),
    "close": ("close",),
    "volume": ("volume",),
    "trade_count": ("trade_count", "trades"),
    "vwap": ("vwap",),
}
TEMPLATE = re.compile(r"\{ticker(_lower)?\}")


class FileSourceError(ValueError):
    """A files setting the provider cannot use; the message names the value, `setting` the field."""

    def __init__(self, message: str, setting: str = "path") -> None:
        super().__init__(message)
        self.setting = setting


def parse_columns(text: str) -> dict[str, str]:
    """`ts=Date,ticker=Symbol` as {our column: file column}; an unknown or repeated key is refused."""
    columns: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        ours, sep, theirs = (side.strip() for side in item.partition("="))
        if not sep or not ours or not theirs:
            raise FileSourceError(
                f"column mapping {item!r}: expected our_column=file_column, e.g. ts=Date", "columns"
            )
        if ours not in PROVIDER_COLUMNS:
            raise FileSourceError(
                f"column mapping {item!r}: {ours!r} is not one of {', '.join(PROVIDER_COLUMNS)}", "columns"
            )
        if ours in columns:
            raise FileSourceError(f"column mapping {item!r}: {ours!r} is mapped twice", "columns")
        columns[ours] = theirs
    return columns


@dataclass(frozen=True)
class FileSource:
    """What the files provider reads. `timezone` applies to timestamps without one (None: the
    exchange's); `adjustment` is what the files hold, recorded on every row."""

    path: str
    format: str | None = None
    columns: Mapping[str, str] = field(default_factory=dict)
    timezone: str | None = None
    adjustment: str = "raw"

    def __post_init__(self) -> None:
        if not self.path.strip():
            raise FileSourceError("the files provider needs a path (BACKFILL_FILES_PATH)")
        if self.format is not None and self.format not in FORMATS:
            raise FileSourceError(
                f"files format {self.format!r}: expected one of {', '.join(FORMATS)}", "format"
            )
        if self.adjustment not in ADJUSTMENTS:
            raise FileSourceError(
                f"files adjustment {self.adjustment!r}: expected one of {', '.join(ADJUSTMENTS)}",
                "adjustment",
            )
        unknown = sorted(set(self.columns) - set(PROVIDER_COLUMNS))
        if unknown:
            raise FileSourceError(
                f"files columns: {unknown[0]!r} is not one of {', '.join(PROVIDER_COLUMNS)}", "columns"
            )
        if self.timezone is not None:
            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise FileSourceError(
                    f"files timezone {self.timezone!r} is not an IANA zone (e.g. UTC)", "timezone"
                ) from None
        if self.per_ticker and "ticker" in self.columns:
            raise FileSourceError(
                f"files path {self.path!r} names the ticker: map no ticker column", "columns"
            )

    @property
    def per_ticker(self) -> bool:
        return TEMPLATE.search(self.path) is not None

    @property
    def hive(self) -> bool:
        return not self.per_ticker and Path(self.path).is_dir()

    def file_of(self, ticker: str) -> str:
        """The per-ticker layout's file of `ticker`."""
        return TEMPLATE.sub(lambda m: ticker.lower() if m.group(1) else ticker, self.path)

    def pattern(self) -> str:
        """What DuckDB reads (a directory becomes a glob of its files of the format)."""
        if self.hive:
            return str(
                Path(self.path) / "**" / ("*.parquet" if self.file_format() == "parquet" else "*.csv*")
            )
        return self.path

    def file_format(self) -> str:
        """The given format, else the path's extension, else (a directory) what it holds."""
        if self.format:
            return self.format
        if Path(self.path).is_dir():
            return "parquet" if next(Path(self.path).rglob("*.parquet"), None) else "csv"
        name = self.path.lower()
        return "parquet" if name.endswith((".parquet", ".pq")) else "csv"

    def resolve(self, available: list[str]) -> dict[str, str]:
        """{our column: file column} over a file's `available` columns: the mapping, else the aliases.
        A missing required column is refused with what the file has and how to map it."""
        by_lower = {name.lower(): name for name in available}
        resolved: dict[str, str] = {}
        for ours in PROVIDER_COLUMNS:
            if ours in self.columns:
                if self.columns[ours] not in available:
                    raise FileSourceError(
                        f"files column {self.columns[ours]!r} (mapped to {ours}) is not in {self.path}; "
                        f"it has {', '.join(available)}"
                    )
                resolved[ours] = self.columns[ours]
            elif found := next((by_lower[a] for a in ALIASES[ours] if a in by_lower), None):
                resolved[ours] = found
        needed = [*REQUIRED, *([] if self.per_ticker else ["ticker"])]
        if missing := [c for c in needed if c not in resolved]:
            raise FileSourceError(
                f"{self.path} has no column for {', '.join(missing)} (it has {', '.join(available)}): "
                f"map them, e.g. BACKFILL_FILES_COLUMNS={missing[0]}=<file column>"
            )
        if self.per_ticker:
            resolved.pop("ticker", None)
        return resolved
