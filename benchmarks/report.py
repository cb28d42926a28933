"""What every benchmark shares: a stopwatch, and where tables go (printed, and written to
benchmarks/results/<name>.md)."""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def timed(fn: Callable[..., Any], *args: object, **kwargs: object) -> tuple[Any, float]:
    """`fn`'s result and the seconds it took."""
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - started


def publish(name: str, lines: list[str]) -> None:
    text = "\n".join(lines) + "\n"
    print(text, end="")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text)
