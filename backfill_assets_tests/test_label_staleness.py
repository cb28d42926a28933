"""Labels stay right when bars change: Dagster's own automation evaluation requests exactly the label
partitions whose values a changed session feeds (its halo before, sigma's warm-up after), and once
they run the table equals a from-scratch computation over the stored bars, bit for bit."""

import datetime as dt
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from backfill_assets.calendar import TradingCalendar
from backfill_assets.defs.bars import bars
from backfill_assets.defs.labels import label_asset
from backfill_assets.defs.providers import SyntheticProviderResource
from backfill_assets.defs.resources import BarStoreResource
from backfill_assets.labels.compute import compute_labels
from backfill_assets.labels.config import LabelSet
from backfill_assets.labels.materialize import halo_sessions, warmup_sessions, window_anchors
from backfill_assets.storage.duckdb_labels import DuckDBLabelStore
from backfill_assets.storage.duckdb_store import DuckDBBarStore
from backfill_assets.timeframes import TIMEFRAMES, Timeframe

D = dt.date
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
MINUTE_SET = LabelSet("tb", "triple_barrier", horizon=30, span=20, min_trgt=1e-4)  # W = 2, halo 1
DAILY_SET = LabelSet("tb_daily", "triple_barrier", horizon=3, span=4, min_trgt=1e-4)  # W = 72, halo 3


class Labels:
    """The bars asset and one label set over a real instance and DuckDB file, at one timeframe."""

    def __init__(self, instance: dg.DagsterInstance, db_path: Path, label_set: LabelSet, tf: Timeframe):
        self.instance, self.label_set, self.timeframe = instance, label_set, tf
        self.asset = label_asset(label_set, tf)
        self.resources = {
            "bar_store": BarStoreResource(duckdb_path=str(db_path)),
            "bar_provider": SyntheticProviderResource(timeframe=tf.name),
        }
        self.defs = dg.Definitions(assets=[bars, self.asset], resources=self.resources)
        self.bars = DuckDBBarStore(db_path)
        self.store = DuckDBLabelStore(self.bars)
        self.cursor: dg.AutomationConditionEvaluationResult | None = None

    def run(self, assets: list, ticker: str, first: D, last: D) -> bool:
        tags = {RANGE_START: f"{first}|{ticker}", RANGE_END: f"{last}|{ticker}"}
        result = dg.materialize(
            assets, instance=self.instance, resources=self.resources, tags=tags, raise_on_error=False
        )
        return result.success

    def requested(self) -> set[str]:
        """Label partitions Dagster's automation evaluation requests since the last call."""
        cursor = self.cursor.cursor if self.cursor else None
        self.cursor = dg.evaluate_automation_conditions(defs=self.defs, instance=self.instance, cursor=cursor)
        return set(self.cursor.get_requested_partitions(self.asset.key))

    def correct(self, ticker: str, day: D) -> None:
        """A vendor correction of one session, re-fetched: new prices stored, bars re-materialized."""
        self.bars.replace_bars(corrected(self.bars, ticker, day), [(ticker, day)])
        self.instance.report_runless_asset_event(dg.AssetMaterialization("bars", partition=f"{day}|{ticker}"))

    def from_scratch(self, first: D, last: D, calendar: TradingCalendar) -> pd.DataFrame:
        return from_scratch(self.store, self.label_set, self.timeframe, first, last, calendar)

    def table(self, first: D) -> pd.DataFrame:
        frame = self.store.read_labels(self.label_set.table)
        return frame[frame["session_date"] >= first].reset_index(drop=True)


def corrected(store: DuckDBBarStore, ticker: str, day: D) -> pd.DataFrame:
    """`ticker`'s stored bars of `day` with every price moved by a different ~1%: a vendor correction."""
    frame = store.read_bars([ticker], day, day)
    for column in ("open", "high", "low", "close"):
        frame[column] = frame[column] * (1.01 + 0.004 * np.sin(np.arange(len(frame))))
    frame["high"] = frame[["open", "high", "low", "close"]].max(axis=1)
    frame["low"] = frame[["open", "high", "low", "close"]].min(axis=1)
    return frame


def from_scratch(
    store: DuckDBLabelStore, label_set: LabelSet, tf: Timeframe, first: D, last: D, calendar: TradingCalendar
) -> pd.DataFrame:
    """The labels of first..last of the table's tickers computed now from every stored bar, in the
    table's types."""
    table = store.read_labels(label_set.table)
    history = store.read_history(set(table["ticker"]), calendar.first_session, last, 0)
    frame = compute_labels(
        label_set, history, window_anchors(history, calendar, warmup_sessions(label_set, tf))
    )
    frame["session_date"] = frame["session_date"].dt.date
    frame = frame[frame["session_date"] >= first].reset_index(drop=True)
    table = table[table["session_date"] >= first].reset_index(drop=True)
    return frame.astype(table.dtypes.to_dict())


def window(sessions: list[D], day: D, before: int, after: int, ticker: str) -> set[str]:
    i = sessions.index(day)
    return {f"{d}|{ticker}" for d in sessions[max(i - before, 0) : i + after + 1]}


@pytest.mark.parametrize("tf", ["1Min", "1Day"])
def test_a_corrected_session_requests_the_labels_it_feeds_and_they_end_as_from_scratch(
    instance: dg.DagsterInstance, db_path: Path, calendar: TradingCalendar, tf: str
) -> None:
    timeframe = TIMEFRAMES[tf]
    label_set = MINUTE_SET if tf == "1Min" else DAILY_SET
    sessions = calendar.sessions_in(D(2024, 1, 2), D(2024, 1, 19) if tf == "1Min" else D(2024, 6, 28))
    labels = Labels(instance, db_path, label_set, timeframe)
    warmup, halo = warmup_sessions(label_set, timeframe), halo_sessions(label_set, timeframe)
    assert (warmup, halo) == ((2, 1) if tf == "1Min" else (72, 3))
    for ticker in ("AAPL", "MSFT"):
        assert labels.run([bars, labels.asset], ticker, sessions[0], sessions[-1])
    labels.requested()  # the cursor: what is stored now is current
    day = sessions[5]
    labels.correct("AAPL", day)
    # the halo's sessions before it (their horizons reach into it) and W after (its sigma feeds them)
    requested = labels.requested()
    assert requested == window(sessions, day, halo, warmup, "AAPL")
    stale = labels.table(sessions[0]).compare(labels.from_scratch(sessions[0], sessions[-1], calendar))
    assert not stale.empty  # later sessions' labels were computed from the old prices
    days = sorted(D.fromisoformat(key.split("|")[0]) for key in requested)
    assert labels.run([labels.asset], "AAPL", days[0], days[-1])
    pd.testing.assert_frame_equal(
        labels.table(sessions[0]), labels.from_scratch(sessions[0], sessions[-1], calendar), check_exact=True
    )


def test_filled_missing_sessions_request_the_labels_they_feed(
    instance: dg.DagsterInstance, db_path: Path, calendar: TradingCalendar
) -> None:
    sessions = calendar.sessions_in(D(2024, 1, 2), D(2024, 1, 24))
    labels = Labels(instance, db_path, MINUTE_SET, TIMEFRAMES["1Min"])
    assert labels.run([bars], "AAPL", sessions[0], sessions[-1])
    assert labels.run([bars], "MSFT", sessions[0], sessions[2])
    assert labels.run([bars], "MSFT", sessions[6], sessions[-1])
    assert labels.run([labels.asset], "AAPL", sessions[0], sessions[-1])
    # MSFT's three sessions without bars fail by name; the others materialize
    assert not labels.run([labels.asset], "MSFT", sessions[0], sessions[-1])
    materialized = instance.get_materialized_partitions(labels.asset.key)
    assert {f"{d}|MSFT" for d in sessions[3:6]}.isdisjoint(materialized)
    assert {f"{d}|MSFT" for d in sessions[:3] + sessions[6:]} <= materialized
    labels.requested()
    assert labels.run([bars], "MSFT", sessions[3], sessions[5])  # the gap filled
    requested = labels.requested()
    assert requested == {f"{d}|MSFT" for d in sessions[2:8]}  # 3..5 filled: halo 1 before, W = 2 after
    assert labels.run([labels.asset], "MSFT", sessions[2], sessions[7])
    pd.testing.assert_frame_equal(
        labels.table(sessions[0]), labels.from_scratch(sessions[0], sessions[-1], calendar), check_exact=True
    )
