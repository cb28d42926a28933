"""`--fault-report PATH`: the fault suite's outcomes as a markdown table (what the README shows).

One row per fault test (parametrised cases apart): what it shows (its name, which says so), its
file, its outcome and its duration.
"""

import datetime as dt
from pathlib import Path

import pytest

_ROWS: dict[str, list[str]] = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fault-report", default=None, help="write the `faults` tests' outcomes here (markdown)"
    )


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "faults" not in report.keywords:
        return
    failed_outside_call = report.when != "call" and report.outcome != "passed"
    if report.when == "call" or failed_outside_call:
        path, name = report.nodeid.split("::")[0], report.nodeid.split("::")[-1]
        shows = name.removeprefix("test_").replace("_", " ").replace("|", "/")
        _ROWS[report.nodeid] = [shows, f"`{Path(path).name}`", report.outcome, f"{report.duration:.1f}"]


def pytest_terminal_summary(config: pytest.Config) -> None:
    path = config.getoption("--fault-report")
    if not path or not _ROWS:
        return
    passed = sum(row[2] == "passed" for row in _ROWS.values())
    lines = [
        f"Fault suite (`make faults`): {passed} of {len(_ROWS)} passed, "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        "| what the test shows | file | outcome | seconds |",
        "|---|---|---|---:|",
        *(f"| {' | '.join(row)} |" for row in _ROWS.values()),
    ]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines) + "\n")
