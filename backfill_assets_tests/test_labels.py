"""Label assets through real Dagster runs on real DuckDB files: partition invariance, pending rows."""

import datetime as dt
import random
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from backfill_assets.calendar import TradingCalendar
from backfill_assets.defs.bars import bars
from backfill_assets.defs.labels import label_asset
from backfill_assets.defs.providers import SyntheticProviderResource
from backfill_assets.defs.resources import BarStoreResource
from backfill_assets.defs.run_facts import run_facts
from backfill_assets.labels.compute import compute_labels
from backfill_assets.labels.config import LabelSet
from backfill_assets.labels.materialize import warmup_sessions, window_anchors
from backfill_assets.storage.duckdb_labels import DuckDBLabelStore
from backfill_assets.storage.duckdb_store import DuckDBBarStore
from backfill_assets.timeframes import TIMEFRAMES

D = dt.date
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
SETS = [
    LabelSet("tb", "triple_barrier", horizon=30, pt=1.0, sl=1.0, span=20, min_trgt=1e-4),
    LabelSet("tb_session", "triple_barrier", horizon=30, pt=2.0, sl=0.0, span=20, cross_session=False),
    LabelSet("vsr", "vol_scaled_return", horizon=45, span=20, min_trgt=1e-4),
    LabelSet("excursion", "mfe_mae", horizon=400, span=20, scale_by_trgt=True),  # crosses a session
]
TICKERS = ("AAPL", "MSFT")


def run(instance: dg.DagsterInstance, db_path: Path, assets: list, **kwargs: Any) -> None:
    resources = {
        "bar_store": BarStoreResource(duckdb_path=str(db_path)),
        "bar_provider": SyntheticProviderResource(),
    }
    result = dg.materialize(assets, instance=instance, resources=resources, **kwargs)
    assert result.success


def load_bars(instance: dg.DagsterInstance, db_path: Path, first: D, last: D) -> None:
    for ticker in TICKERS:
        tags = {RANGE_START: f"{first}|{ticker}", RANGE_END: f"{last}|{ticker}"}
        run(instance, db_path, [bars], tags=tags)


def stored(computed: pd.DataFrame, like: pd.DataFrame) -> pd.DataFrame:
    computed["session_date"] = computed["session_date"].dt.date  # the table gives dates
    return computed.astype(like.dtypes.to_dict())


@pytest.fixture
def sessions(calendar: TradingCalendar) -> list[D]:
    return calendar.sessions_in(D(2024, 7, 1), D(2024, 7, 10))  # includes the 3 Jul half day, 4 Jul holiday


@pytest.mark.parametrize("label_set", SETS, ids=[s.name for s in SETS])
def test_session_by_session_equals_one_range_equals_full_history(
    instance: dg.DagsterInstance,
    db_path: Path,
    sessions: list[D],
    label_set: LabelSet,
    calendar: TradingCalendar,
) -> None:
    load_bars(instance, db_path, sessions[0], sessions[-1])
    asset = label_asset(label_set)
    store = DuckDBLabelStore(DuckDBBarStore(db_path))
    order = [(t, d) for t in TICKERS for d in sessions]
    random.Random(3).shuffle(order)
    for ticker, day in order:  # one session at a time, in random order
        run(instance, db_path, [asset], partition_key=f"{day}|{ticker}")
    one_by_one = store.read_labels(label_set.table)
    for ticker in TICKERS:  # one run per ticker over the whole range
        run(
            instance,
            db_path,
            [asset],
            tags={RANGE_START: f"{sessions[0]}|{ticker}", RANGE_END: f"{sessions[-1]}|{ticker}"},
        )
    ranged = store.read_labels(label_set.table)
    history = store.read_history(TICKERS, sessions[0], sessions[-1], 0)
    warmup = warmup_sessions(label_set, TIMEFRAMES["1Min"])
    windowed = compute_labels(label_set, history, window_anchors(history, calendar, warmup))
    pd.testing.assert_frame_equal(one_by_one, ranged, check_exact=True)
    pd.testing.assert_frame_equal(ranged, stored(windowed, ranged), check_exact=True, check_dtype=False)
    # the bounded window agrees with sigma over the whole history to double precision
    full = stored(compute_labels(label_set, history), ranged)
    pd.testing.assert_frame_equal(ranged, full, check_exact=False, rtol=1e-12, atol=0, check_dtype=False)
    assert len(ranged) == 2 * sum(map(lambda d: 390 if d != D(2024, 7, 3) else 210, sessions))
    assert ranged["pending"].any() == label_set.cross_session  # the last bars wait for later sessions


def test_pending_rows_resolve_when_later_bars_arrive(
    instance: dg.DagsterInstance, db_path: Path, sessions: list[D]
) -> None:
    label_set = SETS[0]
    asset = label_asset(label_set)
    load_bars(instance, db_path, sessions[0], sessions[2])
    run(instance, db_path, [asset], partition_key=f"{sessions[2]}|AAPL")
    store = DuckDBLabelStore(DuckDBBarStore(db_path))
    before = store.read_labels(label_set.table)
    assert before["pending"].sum() > 0 and before.loc[before["pending"], "label"].isna().all()
    # only rows within H bars of the data end can wait; a touch inside the available bars is final
    assert not before["pending"].to_numpy()[: -label_set.horizon].any()
    load_bars(instance, db_path, sessions[3], sessions[3])
    run(instance, db_path, [asset], partition_key=f"{sessions[2]}|AAPL")
    after = store.read_labels(label_set.table)
    assert not after["pending"].any() and len(after) == len(before)


def test_new_bars_request_the_label_partitions_that_read_them(
    instance: dg.DagsterInstance, db_path: Path, sessions: list[D]
) -> None:
    asset = label_asset(SETS[0])
    resources = {
        "bar_store": BarStoreResource(duckdb_path=str(db_path)),
        "bar_provider": SyntheticProviderResource(),
    }
    defs = dg.Definitions(assets=[bars, asset], resources=resources)
    load_bars(instance, db_path, sessions[0], sessions[1])
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    load_bars(instance, db_path, sessions[2], sessions[2])
    second = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    requested = second.get_requested_partitions(asset.key)
    # bars of session 2 feed label partitions of sessions 1 (its forward halo) and 2, per ticker
    assert {
        f"{sessions[1]}|AAPL",
        f"{sessions[2]}|AAPL",
        f"{sessions[1]}|MSFT",
        f"{sessions[2]}|MSFT",
    } <= requested
    assert f"{sessions[0]}|AAPL" not in requested


def test_a_label_run_reads_its_sessions_the_warm_up_and_the_halo_not_the_history(
    instance: dg.DagsterInstance, db_path: Path, calendar: TradingCalendar
) -> None:
    """20 sessions stored; labelling one session in the middle reads W sessions before it, the session
    itself and H bars after it, whatever the history before."""
    days = calendar.sessions_in(D(2024, 1, 2), D(2024, 1, 31))[:20]
    load_bars(instance, db_path, days[0], days[-1])
    label_set = SETS[0]  # span 20: W = 2 sessions; H = 30
    warmup = warmup_sessions(label_set, TIMEFRAMES["1Min"])
    assert warmup == 2
    resources = {"bar_store": BarStoreResource(duckdb_path=str(db_path))}
    result = dg.materialize([label_asset(label_set)], instance=instance, resources=resources,
                            partition_key=f"{days[12]}|AAPL")  # fmt: skip
    assert result.success
    facts = run_facts(instance, result.run_id, dg.AssetKey(["labels", label_set.name]))
    assert facts["bars_read"] == (warmup + 1) * 390 + label_set.horizon
    assert facts["rows_total"] == 390
