"""Memory budget of a run: chunk sizes derived from it, and a guard that pauses, then fails clearly.

A run's process already holds Dagster and the libraries (its baseline RSS); what is left of the
budget decides how many bars one chunk may hold. Between chunks the guard compares RSS with the
budget: above it, it collects garbage and waits for memory to come back a few times, then raises
instead of letting the kernel's OOM killer end the run without a word.
"""

import gc
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

MB = 1024 * 1024
# Measured: a fetched, validated bar in pandas plus its DuckDB insert copy; labels use less.
BYTES_PER_BAR = 600


class MemoryBudgetError(MemoryError):
    """RSS stayed above the run's memory budget; the message gives both figures."""


def rss_mb() -> float:
    """Resident set size of this process now (Linux /proc; falls back to the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize() / MB
    except OSError:
        return peak_rss_mb()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


@dataclass
class MemoryBudget:
    budget_mb: float
    bytes_per_bar: int = BYTES_PER_BAR
    pauses: int = 3
    pause_s: float = 2.0
    measure: Callable[[], float] = rss_mb
    waited_s: float = field(default=0.0, init=False)

    def bars_per_chunk(self) -> int:
        """Bars one chunk may hold: the budget left above the current RSS, with a 25% margin."""
        free_mb = self.budget_mb - self.measure()
        if free_mb <= 0:
            raise MemoryBudgetError(
                f"memory budget {self.budget_mb:.0f} MB is below this run's baseline RSS "
                f"{self.measure():.0f} MB; raise memory_budget_mb"
            )
        return max(1, int(free_mb * 0.75 * MB / self.bytes_per_bar))

    def guard(self) -> None:
        """Between chunks: RSS above the budget -> collect and wait, then fail clearly."""
        for _ in range(self.pauses):
            if self.measure() <= self.budget_mb:
                return
            gc.collect()
            time.sleep(self.pause_s)
            self.waited_s += self.pause_s
        if (now := self.measure()) > self.budget_mb:
            raise MemoryBudgetError(
                f"RSS {now:.0f} MB stays above the run's memory budget {self.budget_mb:.0f} MB after "
                f"{self.waited_s:.0f} s of pauses; lower the partitions per run or raise memory_budget_mb"
            )


def chunk_by_size(items: Sequence[tuple[object, int]], limit: int) -> list[list[object]]:
    """Consecutive groups of items whose sizes add up to at most `limit` (an oversized item alone)."""
    chunks: list[list[object]] = []
    current: list[object] = []
    total = 0
    for item, size in items:
        if current and total + size > limit:
            chunks.append(current)
            current, total = [], 0
        current.append(item)
        total += size
    if current:
        chunks.append(current)
    return chunks
