"""bench e2e's work per order: counted from the services' own /metrics texts, differenced over the run."""

import math
from dataclasses import astuple

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from ops.bench_e2e import (
    BENCH_PROCESS,
    FLEET_PROCESS,
    WorkCounts,
    cpu_ms_per_order,
    line_and_stand_ins_ms,
    reference_gate,
    reference_work,
    work_between,
    work_counts,
    work_gates,
)


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
        self.written = Counter(
            "lvyue_db_documents_written_total", "", ["command", "collection"], registry=self.registry
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
    m.wechat.labels("/channels/ec/order/get", "0").inc(4)
    m.wechat.labels("/channels/ec/order/delivery/send", "0").inc(2)
    m.carrier.labels("subscribe", "0").inc(3)
    m.written.labels("insert", "dispatch_versions").inc(12)
    m.written.labels("update", "shops").inc(1)
    m.written.labels("delete", "dispatch_versions").inc(30)  # pruning superseded revisions: not written

    assert work_counts(m.text()) == WorkCounts(
        http_answered=9, kafka_handled=6, db_commands=4, outside_calls=9, documents_written=13, order_gets=4
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

    assert work_between(before, after) == {"dispatch": WorkCounts(30, 10, 1, 0, 0, 0)}


def test_work_per_order_divides_every_count() -> None:
    assert WorkCounts(300, 50, 1000, 20, 600, 100).per(100) == WorkCounts(3, 0.5, 10, 0.2, 6, 1)
    assert WorkCounts(3, 0, 0, 0).per(0) == WorkCounts(3, 0, 0, 0)


def test_the_lines_work_per_order_is_judged_by_its_gates() -> None:
    lean = WorkCounts(http_answered=7, kafka_handled=8, outside_calls=4, documents_written=8, order_gets=1)
    assert {gate.name: gate.met for gate in work_gates(lean)} == {
        "Kafka messages consumed": True,
        "documents written": True,
        "order/get": True,
        "HTTP exchanges": True,  # 7 answered + 4 calls out + the order's creation
    }
    heavy = WorkCounts(
        http_answered=8, kafka_handled=10.5, outside_calls=4, documents_written=9, order_gets=2.5
    )
    gates = {gate.name: gate for gate in work_gates(heavy)}
    assert not any(gate.met for gate in gates.values())
    assert (
        gates["Kafka messages consumed"].verdict == "Kafka messages consumed: 10.50 per order, MISSED (≤ 8)"
    )
    assert gates["order/get"].verdict == "order/get: 2.50 per order, MISSED (= 1)"
    assert gates["HTTP exchanges"].value == 13
    fewer = {gate.name: gate for gate in work_gates(WorkCounts(order_gets=0.5))}
    assert not fewer["order/get"].met  # an order not fetched is no saving


def test_cpu_per_order_sums_the_line_and_leaves_the_named_processes_out() -> None:
    cpu_s = {"dispatch": 30.0, "kafka": 10.0, "bench process (order driver)": 25.0}

    assert cpu_ms_per_order(cpu_s, 2000, leave_out=("bench process (order driver)",)) == pytest.approx(20.0)
    assert cpu_ms_per_order(cpu_s, 2000) == pytest.approx(32.5)


def test_the_lines_work_is_the_sum_over_its_services_and_no_service_did_nothing() -> None:
    assert WorkCounts.total([WorkCounts(1, 2, 3, 4), WorkCounts(10, 20, 30, 40)]) == WorkCounts(
        11, 22, 33, 44
    )
    assert WorkCounts.total([]) == WorkCounts()


def test_the_reference_chain_copies_the_lines_http_exchanges_kafka_messages_and_documents_per_order() -> None:
    line = WorkCounts(
        http_answered=8.76, kafka_handled=10.43, db_commands=4, outside_calls=3.97, documents_written=18.38
    )

    copied = reference_work(line)

    assert astuple(copied) == pytest.approx((13.73, 10.43, 18.38))
    http = next(gate for gate in work_gates(line) if gate.name == "HTTP exchanges")
    assert http.value == copied.http_exchanges  # the gate and the reference count the same exchanges


def test_the_line_may_spend_at_most_twice_the_reference_chains_cpu_per_order() -> None:
    within = reference_gate(line_ms=30.0, reference_ms=16.0)
    assert within.met and within.value == 1.875
    assert within.verdict == "CPU per order, the line ÷ the reference chain: 1.88×, met (≤ 2)"
    over = reference_gate(line_ms=73.5, reference_ms=14.7)
    assert not over.met
    assert over.verdict == "CPU per order, the line ÷ the reference chain: 5.00×, MISSED (≤ 2)"
    nothing = reference_gate(line_ms=73.5, reference_ms=0.0)
    assert not nothing.met and math.isinf(nothing.value)


def test_the_lines_cpu_is_its_services_kafka_and_ferretdb_the_stand_ins_and_bots_apart() -> None:
    cpu_s = {
        "order_ingest": 1.0,
        "order_ingest_worker": 2.0,
        "dispatch": 3.0,
        "logistics": 4.0,
        "aftersale": 0.5,
        "kafka": 2.5,
        "ferretdb": 1.0,
        "wechat_sim": 1.5,
        "carrier_sim": 0.5,
        FLEET_PROCESS: 2.0,
        "prometheus": 9.0,  # neither: not ours to run, nor the world's
        BENCH_PROCESS: 9.0,
    }
    line_ms, outside_ms = line_and_stand_ins_ms(cpu_s, orders=1000)
    assert line_ms == 14.0
    assert outside_ms == 4.0
