"""bench e2e's reference chain: the line's work per order planned bare, timed and charged its CPU."""

from __future__ import annotations

from dataclasses import astuple

import pytest

from ops.bench_kafka import KafkaRecord
from ops.bench_reference import (
    HOP_HEADER,
    Hop,
    ReferenceWork,
    chain_latencies,
    charged_cpu_s,
    decode_plan,
    encode_plan,
    hop_times,
    plan_chain,
    planned_work,
    share,
    spread,
)


def test_a_fraction_per_order_is_spread_so_the_total_matches_and_no_two_orders_differ_by_more_than_one() -> (
    None
):
    counts = spread(10.43, 1000)

    assert sum(counts) == 10_430
    assert set(counts) == {10, 11}
    assert spread(2.0, 3) == [2, 2, 2]
    assert spread(0.5, 4) == [1, 0, 1, 0]
    assert spread(3.0, 0) == []


def test_a_count_is_shared_over_the_relays_as_evenly_as_whole_numbers_allow_the_first_taking_more() -> None:
    assert [share(7, 3, j) for j in range(3)] == [3, 2, 2]
    assert [share(2, 4, j) for j in range(4)] == [1, 1, 0, 0]
    assert [share(0, 2, j) for j in range(2)] == [0, 0]


def test_the_plan_asks_for_the_lines_work_per_order_in_total() -> None:
    line = ReferenceWork(http_exchanges=13.73, kafka_consumed=10.43, documents_written=18.38)

    plans = plan_chain(line, 1200)

    assert planned_work(plans) == ReferenceWork(16_476, 12_516, 22_056)
    assert astuple(planned_work(plans).per(1200)) == pytest.approx(astuple(line), abs=0.001)
    assert {len(p) for p in plans} == {10, 11}
    first = plans[0]
    assert sum(h.http for h in first) in (13, 14) and max(h.http for h in first) <= 2


def test_every_order_passes_at_least_one_relay_even_if_the_line_consumed_less() -> None:
    plans = plan_chain(ReferenceWork(http_exchanges=3, kafka_consumed=0, documents_written=2), 2)

    assert plans == [(Hop(3, 2),), (Hop(3, 2),)]


def test_a_plan_travels_in_a_header_and_comes_back_the_same() -> None:
    hops = [Hop(2, 1), Hop(1, 3), Hop(0, 0)]

    assert encode_plan(hops) == b"2.1,1.3,0.0"
    assert decode_plan(encode_plan(hops)) == hops
    assert decode_plan(b"") == []


def _record(key: str, hop: int, at: float) -> KafkaRecord:
    return KafkaRecord("bench.e2e.reference.x.ring0", key, "", at, headers=((HOP_HEADER, str(hop).encode()),))


def test_each_messages_relays_are_timed_by_their_records_and_the_first_record_of_a_hop_counts() -> None:
    records = [_record("a", 0, 10.0), _record("a", 1, 10.2), _record("a", 1, 10.1), _record("b", 0, 11.0)]
    records.append(KafkaRecord("orders", "a", "order_paid", 9.0))  # not the reference's: no hop

    assert hop_times(records) == {"a": {0: 10.0, 1: 10.1}, "b": {0: 11.0}}


def test_the_ceiling_is_timed_to_the_second_relay_and_the_chain_to_each_orders_last() -> None:
    plans = [(Hop(1, 1),) * 3, (Hop(1, 1),), (Hop(1, 1),) * 2]
    records = [
        _record("a", 2, 100.05),
        _record("a", 3, 100.08),
        _record("b", 1, 100.54),  # one relay only: its ceiling is its last
        # "c" never left its last relay
    ]

    ceiling, whole = chain_latencies(["a", "b", "c"], plans, records, 100.0, 2.0, ceiling_relays=2)

    assert ceiling.histogram.get_total_count() == 2 and ceiling.missing == 1
    assert ceiling.histogram.get_max_value() == pytest.approx(50_000, rel=0.01)
    assert whole.missing == 1
    assert sorted(us for _, us in whole.samples) == pytest.approx([40_000, 80_000], rel=0.01)
    assert [round(at, 2) for at, _ in whole.samples] == [0.08, 0.54]


def test_the_reference_is_charged_its_own_processes_in_full_and_kafka_and_ferretdb_above_their_rest() -> None:
    cpu_s = {"reference relay 0": 3.0, "echo": 1.5, "kafka": 4.0, "ferretdb": 0.5, "dispatch": 2.0}
    idle_pct = {"kafka": 5.0, "ferretdb": 2.0, "dispatch": 3.0}

    charged = charged_cpu_s(cpu_s, ("reference relay 0", "echo"), idle_pct, window_s=40.0)

    assert charged == pytest.approx({"reference relay 0": 3.0, "echo": 1.5, "kafka": 2.0, "ferretdb": 0.0})
    without_baseline = charged_cpu_s(cpu_s, ("echo",), {}, window_s=40.0)
    assert without_baseline == {"echo": 1.5, "kafka": 4.0, "ferretdb": 0.5}
