"""The universe sensor adds missing tickers to the dynamic partitions, and only those."""

import dagster as dg
import pytest

from backfill_assets.defs.sensors import ticker_universe_sensor


def test_sensor_adds_missing_universe_tickers(
    instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKFILL_TICKERS", "AAPL,MSFT,BRK.B,TSLA")
    result = ticker_universe_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.SensorResult)
    (request,) = result.dynamic_partitions_requests or []
    assert isinstance(request, dg.AddDynamicPartitionsRequest)
    assert list(request.partition_keys) == ["BRK.B", "TSLA"]


def test_sensor_skips_when_universe_is_known(
    instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKFILL_TICKERS", "NVDA,AAPL")
    assert isinstance(ticker_universe_sensor(dg.build_sensor_context(instance=instance)), dg.SkipReason)


def test_sensor_reports_a_bad_universe_by_name(
    instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKFILL_TICKERS", "AAPL,no$ good")
    with pytest.raises(Exception, match=r"invalid ticker 'no\$'"):
        ticker_universe_sensor(dg.build_sensor_context(instance=instance))
    assert instance.get_dynamic_partitions("tickers") == ["AAPL", "MSFT", "NVDA"]
