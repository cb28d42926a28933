"""Regenerate the README's Performance and Reliability sections from benchmarks/results/.

`make bench`, `make faults` and `make ui-check` write their tables there; this puts them, with the
words that say how to read them, between the README's `<!-- generated:NAME -->` markers. A missing
result says which command makes it.
Usage: python benchmarks/readme.py
"""

import re
from pathlib import Path

from report import RESULTS

README = Path(__file__).resolve().parent.parent / "README.md"

PERFORMANCE = [
    ("End to end through Dagster against Alpaca's rate limit", "daemon_alpaca", "make bench",
     "What a user gets: dagster-webserver + dagster-daemon on a fresh instance (the shipped dagster.yaml, "
     "or dagster.postgres.yaml), `backfill-assets backfill --wait` from a shell, timed from the command's "
     "start to COMPLETED_SUCCESS (registration, launch, the daemon's 30 s loop, run start-up, fetch, "
     "write, checks, events), against the seed-style per-symbol script (`bench_alpaca.py`) on the same "
     "local server: 20 requests per 6 s (Alpaca's 200/min, scaled), 10,000-bar pages. Share of limit: "
     "bars/minute against 20 x 10,000 per 6 s. (a) is the daily update of 500 tickers; the physical "
     "bound there is 20 requests against the script's 500. Paths: a daemon backfill; `--as-run`, the "
     "selection as one queued run (the after-close schedule's shape); and `--as-run` with webserver and "
     "daemon started with `DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS=true` (one planned event per "
     "run; see \"Opt-in: one planned event per run\")."),
    ("(c) 100 tickers x 250 sessions, end to end", "daemon_alpaca_full", "make bench BENCH_MODE=full",
     "The same setup as above for a history backfill of 9.70M one-minute bars, at Alpaca's own "
     "window of 200 requests / 60 s (at the 6 s window the script, which restarts a symbol's whole "
     "series after a 429 in mid-pagination, had not finished after 25 minutes). 970 pages at least: 4.9 "
     "minutes at the limit, the physical bound. Long, so it is only in the full mode; `--paths` and "
     "`--instances` choose which of our paths run. The local server writes each bar's JSON once, when "
     "it first builds the session (0.25 s of CPU per 10,000-bar page had made it, on the same 2 cores "
     "as our processes, the limit of both sides; now ~0.015 s). On the SQLite instance a run of this "
     "size yields each memory chunk's materializations as the chunk lands, while the next one is fetched."),
    ("Dagster's cost per partition", "partition_cost", "make bench",
     "One `bars` run (the project's asset job over a partition range, as `dagster asset materialize "
     "--partition-range` and each backfill run execute it; bars and its checks) of N partitions along "
     "each dimension, on the SQLite instance and the Postgres instance, synthetic provider, DuckDB. "
     "Dagster ms / partition: (run wall from creation to success - the asset's own work) / N. Event "
     "bytes / partition: every event of the run as stored, / N; a partition's own event bytes: its "
     "planned and materialization events only (the rest is the run's fixed events: start, step, checks, "
     "run facts, success). Planned events per partition: Dagster's default, one "
     "ASSET_MATERIALIZATION_PLANNED per partition, two events per partition in all (the floor: one "
     "event stored alone is the column next to it); per run: the same runs with Dagster's "
     "`DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS` switch, one planned event per run "
     "(see \"What Dagster costs per partition\" for what it trades away)."),
    ("Label backfills read their window, not the history", "label_reads", "make bench",
     "One label set backfilled over bars already stored, in the two run shapes a single_run backfill "
     "makes of the same work (one run per ticker, one run per session), each run the asset job over a "
     "partition range; bars read per label row written from the runs' facts."),
    ("Ingest against Alpaca's rate limit", "alpaca_full", "make bench BENCH_MODE=full",
     "100 tickers x 250 sessions of 1-minute bars from the local Alpaca server enforcing 200 "
     "requests/minute and 10,000-bar pages, through alpaca-py, once by the bars asset's ingest (validated "
     "and written to DuckDB) and once by a seed-style script (one request series per symbol, 4 threads, "
     "a fixed delay, sleep-and-retry; it counts the bars it gets and writes nothing), each in its own "
     "process with 4 connections. Share of limit: bars/minute against 200 x 10,000. Lower bound: "
     "ceil(bars / 10,000). Read the wall-clock columns with care: the server is Python on the same 2 "
     "cores; when these tables were measured it rendered the whole rest of a long range for every page "
     "(~0.12 s of CPU per 10,000-bar page), so both sides waited on the server more than on the limit, "
     "and the side that used less CPU got more of it. The server now builds only the bars a page takes; "
     "these two tables predate that. What the server cannot blur: requests against the lower bound, "
     "and 429s."),
    ("The same, short mode (20 requests per 6 s)", "alpaca_short", "make bench",
     "100 tickers x 50 sessions (1.95M bars); what `make bench` runs by default."),
    ("Batched runs against per-partition runs and a row-by-row script", "ingest", "make bench",
     "Synthetic provider, DuckDB, one process: bars/minute of one batched run, of one run per partition, "
     "and of a hand-written row-by-row script, measured in the same run."),
    ("Labels: compute and end to end, next to pandas", "labels", "make bench",
     "Synthetic 1-minute bars, the three default label sets (H=60, span 100), one process. The "
     "baseline is a pandas script written the way research code does it (`benchmarks/pandas_labels.py`: "
     "`Series.ewm` volatility, one slice of the forward path per event); the pure-Python oracle the "
     "tests hold the kernels to is shown too. End to end = read the bars from DuckDB, compute, replace "
     "the label slices."),
    ("Labels and bars on DuckDB and on Postgres", "store", "make bench",
     "The same writes, one label set's read + compute + write, and all sets from one read (as the label "
     "multi-asset runs them) on each store, same run, with the pandas baseline measured alongside."),
    ("Orchestration overhead and memory per run", "backfill", "make bench",
     "Real daemon backfills (dagster-webserver + dagster-daemon, the shipped dagster.yaml, "
     "`backfill-assets backfill`). Wall outside asset compute: the share of launch-to-COMPLETED in which "
     "no run was computing the asset (the daemon's 30 s backfill loop, the 1 s dequeue, run process "
     "start-up and the asset checks); the label sensor is stopped so the queue holds only this backfill. "
     "Peak RSS per run against the memory budget at 1x and 10x the partitions per run."),
    ("Partition space: 1,000 tickers x 5 years", "scale", "make bench",
     "1,000 tickers x 1,259 sessions (1.26M partitions) on a SQLite instance: loading the definitions, "
     "listing keys, the GraphQL query the UI's partitions page issues (copied from dagster-webserver's "
     "bundle) and the page itself in headless Chromium (Debian's package; it must show the "
     "materialized count; screenshot `benchmarks/results/ui_scale_partitions.png`), "
     "`backfill-assets backfill` from a shell of one group of 100 tickers (every session) and "
     "then of everything, and the daemon submitting each one's runs (held in the queue, so only "
     "submission is timed; the wait stops at --cap-s, then the backfill is cancelled); peak RSS of the "
     "webserver and the daemon. Read the last rows as a limit of Dagster's we have not lifted: for a "
     "multi-partitioned asset a backfill holds every target key explicitly, and each daemon iteration "
     "walks every partition of the definition and the whole target before it submits a run (see "
     "\"Very large histories: launch by ticker group\"). A 100-ticker group queues its first run in "
     "about two minutes (68 s before label partitions reached back W sessions: Dagster maps each "
     "target partition onto W + halo + 1 label sessions of every set, key by key, before the first "
     "run); then ~5 runs a minute, each run's creation storing 1,259 planned events. The whole "
     "universe as one backfill had queued none when the wait ended."),
    ("The same partition space, one planned event per run", "scale_planned_per_run",
     "python benchmarks/bench_scale.py --planned-per-run",
     "The same steps with webserver and daemon started with "
     "`DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS=true`: each run's 1,259 planned events become "
     "one, so after the first run the group's other 99 are queued within half a minute instead of at "
     "~5 a minute. What it trades away: \"Opt-in: one planned event per run\"."),
    ("The UI in a real browser", "ui_check", "make ui-check",
     "Headless Chromium (Debian's package) renders the bars partitions page and the backfills page after "
     "a real backfill; the check fails unless the partition matrix shows the materialized partitions "
     "and the backfill is listed as a success. Screenshots: `benchmarks/results/ui_*.png`."),
]  # fmt: skip

RELIABILITY_INTRO = (
    "Every fault below is a test marked `faults` (`make faults`, which writes this table; CI runs them "
    "with the rest of the suite, Postgres included). Kill -9 of a writer mid-write on DuckDB and "
    "mid-COPY on Postgres leaves the previous rows and the re-run completes with no duplicates; the "
    "daemon killed with -9 mid-backfill and restarted completes every partition exactly once; provider "
    "faults (30% 429s, 5xx bursts, responses slower than the timeout, malformed or truncated JSON, an "
    "unknown symbol, bad credentials) each end in their documented outcome; bad input "
    "(SQL-injection-shaped and unicode tickers, inverted or out-of-calendar ranges, negative budgets, "
    "unknown label kinds, bad schema names and partition keys) is refused by name while a SHA-256 of "
    "every stored row stays the same; the UI started by our commands listens on loopback only, and API "
    "keys never reach logs or metadata.\n\n"
    "Faults fail alone, and once:\n\n"
    "- **A bad print** (NaN price, negative volume, high below open, a duplicate ts, a bar on the wrong "
    "day) fails its own (ticker, session) partition with the rule named; the run's other partitions "
    "land and show materialized, and the step is not retried.\n"
    "- **What no retry can heal** (a full disk, a DuckDB fatal error, bad bars, the memory budget, a "
    "provider's permanent answer) fails the step once; a full disk is reported as itself, not as the "
    "ROLLBACK that failed after it, and the stored rows stay as they were.\n"
    "- **A day-long Retry-After** fails the request at once past `max_retry_after_s` (300 s) instead of "
    "holding the run's slots; every wait of 5 s or more is logged in the run.\n"
    "- **Runs with different budgets share one**: one log per provider whatever each run's "
    "`requests_per_minute`; no sliding window holds more than the highest limit, a run's config never "
    "exceeds the instance's `BACKFILL_REQUESTS_PER_MINUTE`, and requests are stamped when sent.\n"
    "- **A notebook's open DuckDB connection**: a write waits it out, logging its PID every 10 s, and the "
    "project's readers are not queued behind the waiting write.\n"
    "- **Slow run starts**: run monitoring waits 15 minutes for a run to start (Dagster's 180 s failed "
    "every run of a large backfill under load); the demo leaves no run failed or queued, and `serve` "
    "stops dagster dev with its code servers within seconds of Ctrl-C or SIGTERM (tested, not "
    "`faults`)."
)


def result(name: str, command: str) -> str:
    path = RESULTS / f"{name}.md"
    if not path.exists():
        return f"_Not measured yet: run `{command}`._\n"
    return path.read_text()


def performance() -> str:
    parts = [
        "Measured on a 2-core, 24 GiB machine (figures move with the machine; ratios are measured within "
        "one run). Each table is the file its command writes in `benchmarks/results/`.\n"
    ]
    for title, name, command, words in PERFORMANCE:
        parts.append(f"### {title}\n\n`{command}`: {words}\n\n{result(name, command)}")
    if (RESULTS / "ui_bars_partitions.png").exists():
        parts.append("![bars partitions page](benchmarks/results/ui_bars_partitions.png)\n")
    return "\n".join(parts)


def reliability() -> str:
    return f"{RELIABILITY_INTRO}\n\n{result('faults', 'make faults')}"


def replace(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- generated:{name} -->\n).*?(<!-- end:{name} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no <!-- generated:{name} --> ... <!-- end:{name} --> markers")
    return pattern.sub(lambda m: m.group(1) + body.rstrip() + "\n" + m.group(2), text)


def main() -> None:
    text = README.read_text()
    text = replace(text, "performance", performance())
    text = replace(text, "reliability", reliability())
    README.write_text(text)
    print(f"{README.name}: Performance and Reliability regenerated from {RESULTS.name}/")


if __name__ == "__main__":
    main()
