"""The benchmarks read services' /metrics texts through one parser: counters' totals and histograms'
counts, summed over the series a benchmark asks for."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from ops.metrics_text import MetricsText, order_gets


def _text() -> str:
    registry = CollectorRegistry()
    calls = Counter("lvyue_wechat_api_calls", "", ["endpoint", "errcode"], registry=registry)
    calls.labels("/channels/ec/order/get", "0").inc(8)
    calls.labels("/channels/ec/order/get", "40001").inc(1)
    calls.labels("/channels/ec/order/delivery/send", "0").inc(3)
    db = Histogram("lvyue_db_command_seconds", "", ["command"], registry=registry)
    for seconds in (0.001, 0.01, 1.0):
        db.labels("insert").observe(seconds)
    db.labels("find").observe(0.002)
    return generate_latest(registry).decode()


def test_a_counter_is_summed_over_the_series_asked_for_and_its_created_samples_are_not() -> None:
    metrics = MetricsText.parse(_text())

    assert metrics.total("lvyue_wechat_api_calls") == 12
    assert metrics.total("lvyue_wechat_api_calls", lambda labels: labels["errcode"] == "0") == 11


def test_a_histogram_counts_its_observations_not_its_buckets_or_sum() -> None:
    metrics = MetricsText.parse(_text())

    assert metrics.count("lvyue_db_command_seconds") == 4
    assert metrics.count("lvyue_db_command_seconds", lambda labels: labels["command"] == "insert") == 3
    assert metrics.total("lvyue_db_command_seconds") == 0


def test_order_gets_count_every_answer_of_wechats_order_get_and_no_other_endpoint() -> None:
    assert order_gets(MetricsText.parse(_text())) == 9


def test_a_family_the_service_does_not_export_counts_nothing() -> None:
    metrics = MetricsText.parse("")

    assert metrics.total("lvyue_wechat_api_calls") == 0 and order_gets(metrics) == 0
    assert metrics.count("lvyue_db_command_seconds") == 0
