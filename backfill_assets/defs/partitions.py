"""Partitions: trading session (exchange calendar) x ticker (dynamic, synced from the universe)."""

import datetime as dt

import dagster as dg

from backfill_assets.calendar import TradingCalendar, get_calendar
from backfill_assets.settings import TICKER_PARTITIONS, get_settings
from backfill_assets.storage.base import Slice
from backfill_assets.symbols import validate_ticker

DATE, TICKER = "date", "ticker"


def session_partitions_for(calendar: TradingCalendar, start: dt.date) -> dg.DailyPartitionsDefinition:
    """Daily partitions that are exactly the calendar's sessions: weekends and holidays excluded."""
    holidays = [dt.datetime.combine(day, dt.time()) for day in calendar.non_session_weekdays()]
    return dg.DailyPartitionsDefinition(
        start_date=start.isoformat(),
        timezone=calendar.tz,
        exclusions=["0 0 * * 6", "0 0 * * 0", *holidays],
    )


calendar = get_calendar(get_settings().calendar, get_settings().start_date)
session_partitions = session_partitions_for(calendar, get_settings().start_date)
ticker_partitions = dg.DynamicPartitionsDefinition(name=TICKER_PARTITIONS)
bars_partitions = dg.MultiPartitionsDefinition({DATE: session_partitions, TICKER: ticker_partitions})


def backfill_policy(per_run: int | None) -> dg.BackfillPolicy:
    """single_run by default: one run per ticker (or per date, whichever dimension the selection has
    fewer of), the memory budget chunking inside it; `dagster asset materialize --partition-range`
    needs it. BACKFILL_PARTITIONS_PER_RUN=N batches runs of at most N partitions instead."""
    if per_run is None:
        return dg.BackfillPolicy.single_run()
    return dg.BackfillPolicy.multi_run(max_partitions_per_run=per_run)


def slices_from_context(context: dg.AssetExecutionContext) -> list[Slice]:
    """The (ticker, session) pairs of a run, whatever its shape; tickers validated before any use."""
    slices = []
    for key in context.partition_keys:
        if not isinstance(key, dg.MultiPartitionKey):
            key = bars_partitions.get_partition_key_from_str(key)
        dims = key.keys_by_dimension
        slices.append((validate_ticker(dims[TICKER]), dt.date.fromisoformat(dims[DATE])))
    return slices
