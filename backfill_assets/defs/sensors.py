"""Keep the `tickers` dynamic partitions in step with the universe file / BACKFILL_TICKERS."""

import dagster as dg

from backfill_assets.defs.partitions import ticker_partitions
from backfill_assets.settings import TICKER_PARTITIONS, load_settings
from backfill_assets.universe import missing_tickers


@dg.sensor(minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def ticker_universe_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    """Add universe tickers missing from the `tickers` partitions; never removes (stored data stays).

    Re-reads the universe file on every tick, so editing it needs no reload.
    """
    new = missing_tickers(
        load_settings().universe, context.instance.get_dynamic_partitions(TICKER_PARTITIONS)
    )
    if not new:
        return dg.SkipReason("every universe ticker is already a partition")
    context.log.info(f"adding tickers: {', '.join(new)}")
    return dg.SensorResult(dynamic_partitions_requests=[ticker_partitions.build_add_request(new)])
