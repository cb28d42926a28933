"""The Dagster UI in a real browser: headless Chromium loads the bars partitions and the backfills page.

A fresh DAGSTER_HOME, dagster-webserver and dagster-daemon on loopback, a real backfill of 3 tickers x
5 sessions through `backfill-assets backfill`; then Debian's Chromium (headless, no network beyond
loopback) renders each page. The check fails unless the bars asset's partition matrix shows the
materialized tickers and the backfills page lists the backfill. Screenshots go to benchmarks/results/.
Usage: python benchmarks/ui_check.py   (or `make ui-check`, which installs chromium first)
"""

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from dagster_procs import (  # run as a script: benchmarks/ is on sys.path
    cli_backfill,
    fresh_home,
    running_dagster,
)
from report import RESULTS, publish

from backfill_assets.calendar import get_calendar
from backfill_assets.settings import load_settings
from backfill_assets.webserver import graphql

TICKERS = ["AAPL", "MSFT", "NVDA"]
# Chromium as root in a container, with nothing that reaches beyond loopback.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--window-size=1600,900"]  # fmt: skip


class UICheckError(AssertionError):
    """A page did not render what it must; the message names the page and what was missing."""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise SystemExit("chromium not found: `make ui-check` installs Debian's chromium package")
    return found


def render(url: str, screenshot: Path, wait_ms: int = 20_000) -> str:
    """The page's DOM after its scripts ran (and a screenshot of it), in a throwaway profile."""
    base = [chromium(), *FLAGS, f"--virtual-time-budget={wait_ms}"]
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run([*base, f"--user-data-dir={profile}", "--dump-dom", url],
                             capture_output=True, text=True, timeout=180, check=True).stdout  # fmt: skip
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([*base, f"--user-data-dir={profile}", f"--screenshot={screenshot}", url],
                       capture_output=True, timeout=180, check=True)  # fmt: skip
    return dom


def require(page: str, dom: str, needles: list[str]) -> None:
    """Every needle in the page's text or markup; else the DOM is kept in the temp dir to look at."""
    text = re.sub(r"<[^>]+>", " ", dom)
    missing = [n for n in needles if n not in text and n not in dom]
    if missing:
        kept = Path(tempfile.gettempdir(), f"ui_{page.replace(' ', '_')}.html")
        kept.write_text(dom)
        shown = ", ".join(map(repr, missing))
        raise UICheckError(f"{page}: {shown} not rendered ({len(dom):,} bytes of DOM, kept in {kept})")


def main() -> None:
    home, env = fresh_home()
    calendar = get_calendar("XNYS", load_settings().start_date)
    sessions = calendar.sessions_in(calendar.first_session, calendar.last_completed())[:5]
    with running_dagster(env) as dagster:
        url = dagster.url
        started = time.monotonic()
        backfill_id = cli_backfill(env, url, TICKERS, sessions)
        backfilled = time.monotonic() - started
        graphql(url, "mutation { setNuxSeen }")  # the community pop-up, as its Skip button does
        done = f"Materialized ({len(TICKERS) * len(sessions)})"
        first = f"{sessions[0].isoformat()}%7C{TICKERS[0]}"
        pages = {
            "bars partitions": (f"{url}/assets/bars?view=partitions&partition={first}", [done, *TICKERS]),
            "backfills": (f"{url}/overview/backfills", [backfill_id, "Success"]),
        }
        lines = ["| page | URL path | DOM bytes | render s | screenshot |", "|---|---|---:|---:|---|"]
        for name, (page, needles) in pages.items():
            shot = RESULTS / f"ui_{name.replace(' ', '_')}.png"
            began = time.monotonic()
            dom = render(page, shot)
            require(name, dom, needles)
            path = page.removeprefix(url)
            lines.append(
                f"| {name} | `{path}` | {len(dom):,} | {time.monotonic() - began:.1f} | {shot.name} |"
            )
    title = (f"Headless Chromium against dagster-webserver ({len(TICKERS)} tickers x {len(sessions)} "
             f"sessions backfilled in {backfilled:.0f} s)")  # fmt: skip
    publish("ui_check", [title, "", *lines])


if __name__ == "__main__":
    main()
