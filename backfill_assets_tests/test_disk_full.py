"""A full disk: the run fails once (no step retry can free space), says so, and the stored bars stay
as they were. The disk fills for real: the run's process may not grow any file past a size limit
(RLIMIT_FSIZE), so DuckDB's write fails inside its commit as on a full disk."""

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from backfill_assets.storage.duckdb_store import DuckDBBarStore

pytestmark = pytest.mark.faults

RUN = textwrap.dedent(
    """
    import resource, signal, sys
    import dagster as dg
    from backfill_assets.defs.bars import bars
    from backfill_assets.defs.providers import SyntheticProviderResource
    from backfill_assets.defs.resources import BarStoreResource

    db = sys.argv[1]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tickers", ["AAPL", "MSFT", "NVDA", "TSLA"])
        store = BarStoreResource(duckdb_path=db)
        resources = {"bar_provider": SyntheticProviderResource(), "bar_store": store}

        def run(start: str, end: str) -> dg.ExecuteInProcessResult:
            tags = {"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end}
            return dg.materialize(
                [bars], instance=instance, resources=resources, tags=tags, raise_on_error=False
            )

        assert run("2024-03-05|AAPL", "2024-03-05|AAPL").success
        print("STORED", flush=True)
        sys.stdin.readline()  # the test takes its checksum, then the disk fills
        limit = 2 * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        result = run("2024-03-04|AAPL", "2024-03-28|TSLA")
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
        error = result.get_step_failure_events()[0].step_failure_data.error
        print("SUCCESS", result.success, "RETRIES", len(retries))
        print("ERROR", error.to_string() if error else None)
    """
)


def checksum(store: DuckDBBarStore) -> str:
    bars = store.read_bars()
    return f"{len(bars)}:{hashlib.sha256(bars.to_csv(index=False).encode()).hexdigest()}"


def test_a_full_disk_fails_the_run_once_by_name_and_keeps_the_stored_bars(tmp_path: Path) -> None:
    db = tmp_path / "bars.duckdb"
    with subprocess.Popen(
        [sys.executable, "-c", RUN, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        assert proc.stdout.readline().strip() == "STORED"
        before = checksum(DuckDBBarStore(db))
        proc.stdin.write("\n")
        proc.stdin.flush()
        out = proc.stdout.read()
    assert proc.returncode == 0, out[-3000:]
    assert "SUCCESS False RETRIES 0" in out
    error = out.split("ERROR ", 1)[1].split("\n")[0]  # the cause, not the ROLLBACK's own error
    assert "File too large" in error and "cannot rollback" not in error, error
    assert checksum(DuckDBBarStore(db)) == before == f"390:{before.split(':')[1]}"
