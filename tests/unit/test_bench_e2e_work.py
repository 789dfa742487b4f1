"""bench e2e's work per order: counted from the services' own /metrics texts, differenced over the run."""

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from ops.bench_e2e import WorkCounts, cpu_ms_per_order, work_between, work_counts


class ServiceMetrics:
    """The metric families bench e2e reads, in a registry of their own, as one service exports them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http = Counter(
            "lvyue_http_requests_total",
            "",
            ["service", "method", "route", "status"],
            registry=self.registry,
        )
        self.kafka = Counter(
            "lvyue_kafka_messages_processed_total",
            "",
            ["consumer", "topic", "outcome"],
            registry=self.registry,
        )
        self.db = Histogram(
            "lvyue_db_command_seconds", "", ["command", "collection", "result"], registry=self.registry
        )
        self.wechat = Counter(
            "lvyue_wechat_api_calls_total", "", ["endpoint", "errcode"], registry=self.registry
        )
        self.carrier = Counter(
            "lvyue_logistics_aggregator_calls_total", "", ["method", "code"], registry=self.registry
        )

    def text(self) -> str:
        return generate_latest(self.registry).decode()


def test_every_kind_of_work_is_counted_and_housekeeping_requests_are_not() -> None:
    m = ServiceMetrics()
    m.http.labels("dispatch", "GET", "/supplier/v1/feed", "200").inc(7)
    m.http.labels("dispatch", "POST", "/supplier/v1/jobs/{job_id}/accept", "409").inc(2)
    m.http.labels("dispatch", "GET", "/metrics", "200").inc(50)
    m.http.labels("dispatch", "GET", "/healthz", "200").inc(30)
    m.http.labels("dispatch", "GET", "/readyz", "200").inc(30)
    m.kafka.labels("dispatch", "orders", "ok").inc(5)
    m.kafka.labels("dispatch", "orders", "dead_lettered").inc(1)
    for seconds in (0.001, 0.002, 0.5):
        m.db.labels("insert", "dispatch_versions", "ok").observe(seconds)
    m.db.labels("find", "dispatch_versions", "empty").observe(0.001)
    m.wechat.labels("order/get", "0").inc(4)
    m.carrier.labels("subscribe", "0").inc(3)

    assert work_counts(m.text()) == WorkCounts(
        http_answered=9, kafka_handled=6, db_commands=4, outside_calls=7
    )


def test_a_service_with_none_of_the_families_did_no_work() -> None:
    assert work_counts("") == WorkCounts()


def test_work_is_what_changed_between_two_scrapes_and_a_service_missing_from_one_is_left_out() -> None:
    dispatch, logistics = ServiceMetrics(), ServiceMetrics()
    dispatch.http.labels("dispatch", "GET", "/supplier/v1/feed", "200").inc(100)
    dispatch.kafka.labels("dispatch", "orders", "ok").inc(40)
    before = {"dispatch": dispatch.text()}
    dispatch.http.labels("dispatch", "GET", "/supplier/v1/feed", "200").inc(30)
    dispatch.kafka.labels("dispatch", "orders", "ok").inc(10)
    dispatch.db.labels("insert", "dispatch_versions", "ok").observe(0.01)
    logistics.wechat.labels("delivery/send", "0").inc(8)
    after = {"dispatch": dispatch.text(), "logistics": logistics.text()}

    assert work_between(before, after) == {"dispatch": WorkCounts(30, 10, 1, 0)}


def test_work_per_order_divides_every_count() -> None:
    assert WorkCounts(300, 50, 1000, 20).per(100) == WorkCounts(3, 0.5, 10, 0.2)
    assert WorkCounts(3, 0, 0, 0).per(0) == WorkCounts(3, 0, 0, 0)


def test_cpu_per_order_sums_the_line_and_leaves_the_named_processes_out() -> None:
    cpu_s = {"dispatch": 30.0, "kafka": 10.0, "bench process (order driver)": 25.0}

    assert cpu_ms_per_order(cpu_s, 2000, leave_out=("bench process (order driver)",)) == pytest.approx(20.0)
    assert cpu_ms_per_order(cpu_s, 2000) == pytest.approx(32.5)


def test_the_lines_work_is_the_sum_over_its_services_and_no_service_did_nothing() -> None:
    assert WorkCounts.total([WorkCounts(1, 2, 3, 4), WorkCounts(10, 20, 30, 40)]) == WorkCounts(
        11, 22, 33, 44
    )
    assert WorkCounts.total([]) == WorkCounts()
