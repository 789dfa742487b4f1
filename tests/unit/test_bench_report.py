"""The benchmark report's computation (ops/bench_report.py) and bench e2e's pure helpers."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ops.bench_e2e import (
    ALL_OFFERED,
    CREATED,
    DELIVERY_SEND,
    STAGES,
    TARGET_STAGE,
    OrderTimes,
    collect_times,
    e2e_routes,
    order_body,
    per_second_counts,
    plan_e2e_orders,
    product_of,
    stage_figures,
    supplier_id,
    target_verdict,
    timeline,
)
from ops.bench_kafka import KafkaRecord
from ops.bench_report import (
    ProcessRow,
    Row,
    Target,
    dispatch_rows,
    e2e_rows,
    ingest_rows,
    judge,
    latest_results,
    machine_note,
    process_rows,
    processes_table,
    ratio,
    render,
    results_table,
    sustained_rate,
    timelines,
)

INGEST: dict[str, Any] = {
    "bare": {
        "target_rate_per_s": 1000.0,
        "duration_s": 60.0,
        "failed": 0,
        "over_deadline": 0,
        "achieved_rate_per_s": 1000.0,
        "drain_s": 0.0,
        "p50_ms": 1.0,
        "p99_ms": 50.0,
        "p999_ms": 80.0,
        "max_ms": 90.0,
    },
    "ingest": {
        "target_rate_per_s": 1000.0,
        "duration_s": 60.0,
        "failed": 0,
        "over_deadline": 0,
        "achieved_rate_per_s": 999.0,
        "drain_s": 0.5,
        "p50_ms": 10.0,
        "p99_ms": 400.0,
        "p999_ms": 900.0,
        "max_ms": 1300.0,
    },
    "processes": {
        "order_ingest": {"cpu_s_bare_run": 0.3, "cpu_s_webhook_run": 30.25, "peak_rss_mib": 110.0},
        "kafka": {"cpu_s_bare_run": 2.0, "cpu_s_webhook_run": 12.0, "peak_rss_mib": 450.0},
    },
    "timeline": {"bare": [[0, 1000, 20.0], [1, 0, 0.0]], "ingest": [[0, 990, 300.0], [1, 1005, 45.5]]},
}

DISPATCH: dict[str, Any] = {
    "config": {"rate_per_s": 200.0, "duration_s": 60.0, "suppliers": 100},
    "dispatch_orders": {"missing": 0, "drain_s": 0.4},
    "feed_latency": {"p50_ms": 200.0, "p99_ms": 800.0, "max_ms": 1200.0},
    "ceiling_one_hop": {"p50_ms": 10.0, "p99_ms": 100.0, "max_ms": 150.0, "missed": 0},
    "processes": {"dispatch": {"cpu_s_load_and_drain": 20.0, "peak_rss_mib": 230.0}},
    "timeline_per_s": [{"start_s": 0, "count": 300, "p50_ms": 100.0, "p99_ms": 500.0, "max_ms": 600.0}],
    "publish_timeline_per_s": [[0, 200, 12.0]],
    "machine": {
        "no_other_benchmark": False,
        "other_benchmark_pids": [42],
        "other_processes_cpu_s": 30.0,
        "window_s": 60.4,
        "load_average_at_end": [3.5, 2.0, 1.0],
    },
}


# ---- verdicts ---------------------------------------------------------------------------------------


def test_a_ceiling_maximum_met_says_what_is_left_and_a_miss_says_by_how_much() -> None:
    assert judge(80.0, Target(100, "max", "ms")) == (True, "met, 20 ms to spare")
    assert judge(0.0, Target(0, "max")) == (True, "met")
    assert judge(400.0, Target(100, "max", "ms")) == (False, "missed by 300 ms (4.0×)")
    assert judge(None, Target(100, "max", "ms")) == (False, "no figure: missed")


def test_a_floor_missed_says_how_far_short() -> None:
    assert judge(923.0, Target(1000, "min", "/s")) == (False, "missed by 77 /s (8% short)")
    assert judge(1000.0, Target(1000, "min", "/s")) == (True, "met, 0 /s above")


def test_a_target_met_at_a_lower_load_than_it_is_set_for_is_not_met() -> None:
    met, verdict = judge(500.0, Target(1000, "max", "ms", at_rate=200), rate=100)
    assert not met
    assert "at 100/s, but the target is at 200/s" in verdict
    assert judge(500.0, Target(1000, "max", "ms", at_rate=200), rate=200)[0]


def test_ratio_to_the_ceiling() -> None:
    assert ratio(400.0, 50.0) == 8.0
    assert ratio(999.0, 1000.0) == 0.999
    assert ratio(None, 1.0) is None
    assert ratio(1.0, 0.0) is None
    assert ratio(math.inf, 1.0) is None


# ---- rows from each scenario's JSON ------------------------------------------------------------------------


def test_ingest_rows_pair_each_figure_with_the_bare_endpoint() -> None:
    rows = {r.figure: r for r in ingest_rows(INGEST)}
    p99 = rows["p99 ack ms"]
    assert (p99.value, p99.ceiling, p99.rate) == (400.0, 50.0, 1000.0)
    assert p99.target == Target(100.0, "max", "ms", 1000.0)
    assert not judge(p99.value, p99.target, p99.rate)[0]
    throughput = rows["webhooks acked OK per s (of the schedule if all answered in time, else run + drain)"]
    assert (throughput.value, throughput.ceiling) == (999.0, 1000.0)
    assert throughput.note == "1000/s for 60 s"


def test_a_run_answered_in_full_within_a_second_of_its_schedule_sustained_the_scheduled_rate() -> None:
    in_time = {
        "target_rate_per_s": 1000.0,
        "duration_s": 60.0,
        "sent": 60_000,
        "ok": 60_000,
        "failed": 0,
        "drain_s": 0.006,
        "achieved_rate_per_s": 999.9,
    }
    assert sustained_rate(in_time) == 1000.0
    assert sustained_rate(in_time | {"failed": 3}) == 999.9
    assert sustained_rate(in_time | {"drain_s": 2.5}) == 999.9
    assert sustained_rate({"achieved_rate_per_s": 950.0}) == 950.0


def test_dispatch_rows_use_the_one_hop_consumer_as_ceiling() -> None:
    rows = {r.figure: r for r in dispatch_rows(DISPATCH)}
    p99 = rows["paid event → feed p99 ms"]
    assert (p99.value, p99.ceiling) == (800.0, 100.0)
    assert p99.target is not None and judge(p99.value, p99.target, p99.rate) == (True, "met, 200 ms to spare")
    assert rows["dispatch orders missing"].value == 0


def _e2e_result() -> dict[str, Any]:
    stages = {name: {"count": 10, "p50_ms": 100.0, "p99_ms": 900.0, "missing": 0} for name, _, _ in STAGES}
    stages[TARGET_STAGE] = {"count": 9, "p50_ms": 300.0, "p99_ms": 1500.0, "missing": 1}
    return {
        "config": {"rate_per_s": 100.0, "duration_s": 60.0, "shops": 5, "suppliers": 20},
        "stages": stages,
        "target_stage": TARGET_STAGE,
        "ceiling": {"p50_ms": 20.0, "p99_ms": 150.0},
        "orders": {"drain_s": 3.0, "not_told_at_end": 0},
        "throughput": {"created_per_s": 100.0, "told_per_s_over_window": 95.0},
        "timeline_per_s": [
            {
                "second": 0,
                "created": 100,
                "offered": 90,
                "offered_p50_ms": 100.0,
                "offered_p99_ms": 700.0,
                "told": 0,
                "told_p50_ms": 0.0,
                "told_p99_ms": 0.0,
            }
        ],
        "ceiling_timeline_per_s": [
            {"start_s": 0, "count": 100, "p50_ms": 5.0, "p99_ms": 30.0, "max_ms": 40.0}
        ],
        "processes": {"logistics": {"cpu_s_load_and_drain": 6.0, "peak_rss_mib": 150.0}},
        "machine": {"no_other_benchmark": True, "other_processes_cpu_s": 1.5, "window_s": 63.0},
    }


def test_e2e_rows_put_the_ceiling_beside_the_target_stage_only_and_count_missing_orders() -> None:
    rows = e2e_rows(_e2e_result())
    target = next(r for r in rows if r.figure == f"{TARGET_STAGE} p99 ms")
    assert (target.value, target.ceiling, target.rate) == (1500.0, 150.0, 100.0)
    assert ratio(target.value, target.ceiling) == 10.0
    assert target.target is not None
    assert judge(target.value, target.target, target.rate) == (False, "missed by 500 ms (1.5×)")
    others = [r for r in rows if r.figure.endswith(" ms") and not r.figure.startswith(TARGET_STAGE)]
    assert others and all(r.ceiling is None and r.target is None for r in others)
    missing = next(r for r in rows if r.figure == f"{TARGET_STAGE}: orders missing")
    assert missing.value == 1.0


def test_e2e_rows_show_the_lines_cpu_per_order_beside_what_two_cores_give_at_the_target_rate() -> None:
    result = _e2e_result() | {
        "work_per_order": {"cpu_ms_all_processes": 56.8, "cpu_ms_budget_at_target": 10.0, "by_service": {}}
    }
    row = next(r for r in e2e_rows(result) if r.figure == "CPU ms per order, every process of the line")
    assert (row.value, row.target, row.rate) == (56.8, None, 100.0)
    assert row.note == "two cores at 200 orders/s give 10 ms"
    older = [r.figure for r in e2e_rows(_e2e_result())]
    assert "CPU ms per order, every process of the line" not in older


def test_e2e_rows_judge_the_line_at_rest_against_five_percent_and_show_cpu_net_of_it() -> None:
    result = _e2e_result() | {
        "work_per_order": {"cpu_ms_all_processes": 56.8, "cpu_ms_all_processes_net_of_idle": 51.2},
        "idle": {"seconds": 30, "line_pct_of_one_core": 7.5, "target_pct": 5.0},
    }
    rows = e2e_rows(result)
    at_rest = next(r for r in rows if r.figure.startswith("the line at rest"))
    assert at_rest.value == 7.5
    assert at_rest.target is not None
    assert judge(at_rest.value, at_rest.target, at_rest.rate) == (False, "missed by 2.5 % (1.5×)")
    assert at_rest.note == "30 s with the stack up and nothing moving, before the load"
    net = next(r for r in rows if r.figure == "CPU ms per order, net of the line at rest")
    assert (net.value, net.target) == (51.2, None)
    older = [r.figure for r in e2e_rows(_e2e_result())]
    assert not [f for f in older if "at rest" in f]


def test_e2e_rows_judge_the_lines_work_per_order_by_the_benchs_gates() -> None:
    gates = [
        {"name": "Kafka messages consumed", "value": 10.5, "bound": 8.0, "exact": False},
        {"name": "order/get", "value": 1.0, "bound": 1.0, "exact": True},
    ]
    rows = {r.figure: r for r in e2e_rows(_e2e_result() | {"work_per_order": {"gates": gates}})}
    kafka, fetches = rows["Kafka messages consumed per order"], rows["order/get per order"]
    assert kafka.target is not None and fetches.target is not None
    assert judge(kafka.value, kafka.target, kafka.rate)[0] is False
    assert judge(fetches.value, fetches.target, fetches.rate)[0] is True
    assert fetches.note == "exactly this many on the happy path"


def test_e2e_rows_judge_the_lines_cpu_per_order_against_twice_the_reference_chains() -> None:
    reference = {
        "work_per_order": {
            "done": {"http_exchanges": 13.73, "kafka_consumed": 10.43, "documents_written": 18.38}
        },
        "chain_latency": {"p50_ms": 180.0, "p99_ms": 420.0},
        "cpu_ms_per_order": 14.7,
        "line_cpu_ms_per_order": 73.5,
        "ratio_line_to_reference": 5.0,
        "gate": {"name": "CPU per order, the line ÷ the reference chain", "value": 5.0, "bound": 2.0},
    }
    result = _e2e_result() | {"work_per_order": {"cpu_ms_all_processes": 73.5}, "reference": reference}
    rows = {r.figure: r for r in e2e_rows(result)}

    line = rows["CPU ms per order, every process of the line"]
    assert (line.value, line.ceiling) == (73.5, 14.7) and ratio(line.value, line.ceiling) == 5.0
    bare = rows["CPU ms per order, the reference chain (the line's work per order, bare)"]
    assert bare.value == 14.7
    assert bare.note == (
        "per order: 13.73 HTTP exchanges, 10.43 Kafka messages consumed, 18.38 documents inserted"
    )
    gate = rows["CPU per order, the line ÷ the reference chain"]
    assert gate.target is not None
    assert judge(gate.value, gate.target, gate.rate) == (False, "missed by 3 (2.5×)")
    assert gate.note == "73.5 ms ÷ 14.7 ms = 5.00×"
    assert rows["the reference chain: send → its last relay p99 ms"].value == 420.0
    text = render({"e2e": (Path("e2e-20261207T230000.json"), result)}, {}, [])
    assert "- e2e: CPU per order, the line ÷ the reference chain: missed by 3 (2.5×)" in text


def test_an_older_e2e_result_without_a_reference_chain_has_no_reference_rows() -> None:
    figures = [r.figure for r in e2e_rows(_e2e_result())]
    assert not [f for f in figures if "reference" in f]


def test_process_rows_flag_services_against_the_200_mb_target() -> None:
    rows = process_rows("ingest", INGEST)
    assert [(p.process, p.cpu_s, p.service) for p in rows] == [
        ("kafka", 12.0, False),
        ("order_ingest", 30.25, True),
    ]
    assert rows[0].window_s == 60.5
    dispatch = process_rows("dispatch", DISPATCH)
    assert dispatch == [ProcessRow("dispatch", "dispatch", 20.0, 60.4, 230.0, True)]
    table = "\n".join(processes_table(dispatch))
    assert "≤ 200 MB (190.7 MiB): **MISSED** (missed by 39.3 MiB (1.2×))" in table
    assert "| kafka |" not in table


def test_the_200_mb_target_is_read_in_megabytes_not_mebibytes() -> None:
    """198 MiB is 207.6 MB: over the target, though under 200 MiB."""
    just_over = ProcessRow("dispatch", "dispatch", 20.0, 60.4, 198.0, True)
    just_under = ProcessRow("dispatch", "dispatch", 20.0, 60.4, 190.0, True)
    assert "**MISSED**" in "\n".join(processes_table([just_over]))
    assert "**met**" in "\n".join(processes_table([just_under]))


def test_machine_note_tells_whether_the_machine_was_quiet() -> None:
    assert "**not quiet**" in machine_note("dispatch", DISPATCH)
    assert "[42]" in machine_note("dispatch", DISPATCH)
    assert machine_note("e2e", _e2e_result()).startswith("no other benchmark")
    assert "not recorded" in machine_note("ingest", INGEST)


def test_latest_results_takes_the_newest_file_of_each_scenario(tmp_path: Path) -> None:
    for name in (
        "ingest-20261122T000713.json",
        "ingest-20261122T021837.json",
        "dispatch-20261122T012513.json",
        "dispatch-profile-20261122T013716.speedscope.json",
        "e2e-profile-dispatch-20261123T000000.speedscope.json",
        "other-20261130T000000.json",
    ):
        (tmp_path / name).write_text("{}")
    found = latest_results(tmp_path)
    assert {s: p.name for s, p in found.items()} == {
        "ingest": "ingest-20261122T021837.json",
        "dispatch": "dispatch-20261122T012513.json",
    }


def test_timelines_read_each_scenarios_per_second_data() -> None:
    bare, webhook = timelines("ingest", INGEST)
    assert webhook.seconds == [0, 1] and webhook.per_second == [990.0, 1005.0]
    assert webhook.p99_ms == [300.0, 45.5]
    assert bare.p99_ms == [20.0, None]  # nothing answered in that second: no latency point
    published, seen = timelines("dispatch", DISPATCH)
    assert (published.per_second, seen.per_second, seen.p99_ms) == ([200.0], [300.0], [500.0])
    created, offered, told, ceiling = timelines("e2e", _e2e_result())
    assert created.p99_ms == [None] and offered.p99_ms == [700.0] and told.p99_ms == [None]
    assert ceiling.per_second == [100.0]


def test_the_markdown_report_has_the_table_the_misses_and_the_plots() -> None:
    results = {
        "ingest": (Path("ingest-20261122T021837.json"), INGEST),
        "e2e": (Path("e2e-20261122T030000.json"), _e2e_result()),
    }
    text = render(results, {"ingest": "ingest.png"}, [])
    assert (
        "| ingest | p99 ack ms | 400 | 50 | 8.00 | ≤ 100 ms at 1000/s | **MISSED**: missed by 300 ms (4.0×) |"
        in text
    )
    assert "- ingest: p99 ack ms: missed by 300 ms (4.0×)" in text
    assert "no result (run `lvyue bench dispatch`)" in text
    assert "![ingest](ingest.png)" in text
    lines = results_table([Row("e2e", "x", 5000.0, 5.0)])
    assert lines[-1].startswith("| e2e | x | 5,000 | 5 | 1,000× | – | – |")


# ---- bench e2e's pure helpers ---------------------------------------------------------------------


def test_planned_e2e_orders_rotate_shops_and_split_by_supplier() -> None:
    orders = plan_e2e_orders(1000, shops=3, suppliers=4, skus_per_supplier=2, first_order_id=10**18, seed=5)
    assert [o.shop for o in orders[:4]] == [0, 1, 2, 0]
    assert {len(o.skus) for o in orders} == {1, 2}
    assert all(o.suppliers == {supplier_id(k % 4) for k in o.skus} for o in orders)
    assert orders == plan_e2e_orders(
        1000, shops=3, suppliers=4, skus_per_supplier=2, first_order_id=10**18, seed=5
    )
    body = order_body(orders[0])
    assert body["paid"] is True and body["order_id"] == str(10**18)
    assert [(p["product_id"], p["sku_id"]) for p in body["products"]] == [
        product_of(k) for k in orders[0].skus
    ]
    routes = e2e_routes(2, 4, 2)
    assert len(routes) == 16
    assert {(r.product_id, r.supplier_id) for r in routes if r.shop_id == "e2e-shop01"} == {
        (product_of(k)[0], supplier_id(k % 4)) for k in range(8)
    }


def test_collect_times_keeps_the_first_of_each_event_and_successful_delivery_calls_only() -> None:
    orders = plan_e2e_orders(2, shops=1, suppliers=2, skus_per_supplier=1, first_order_id=100, seed=1)
    a, b = (o.order_id for o in orders)
    records = [
        KafkaRecord("orders", a, "order_paid", 10.5),
        KafkaRecord("orders", a, "order_paid", 10.2),  # a replay's earlier timestamp wins
        KafkaRecord("orders", a, "order_cancelled", 10.1),
        KafkaRecord("dispatch", a, "dispatch_offered", 10.8),
        KafkaRecord("dispatch", a, "dispatch_shipped", 11.5),
        KafkaRecord("dispatch", "999", "dispatch_offered", 10.0),  # not one of ours
    ]
    calls = [
        {"path": DELIVERY_SEND, "errcode": 0, "at": 12.0, "request": {"order_id": int(a)}},
        {"path": DELIVERY_SEND, "errcode": 10020006, "at": 11.9, "request": {"order_id": int(b)}},
        {"path": "/channels/ec/order/get", "errcode": 0, "at": 11.0, "request": {"order_id": int(b)}},
    ]
    times = collect_times(orders, [10.0, 10.01], records, calls)
    assert times[a] == OrderTimes(10.0, 10.2, [10.8], [11.5], [12.0])
    assert times[b] == OrderTimes(10.01)


def test_stage_figures_count_missing_and_wait_for_every_dispatch_order_of_a_split_order() -> None:
    orders = plan_e2e_orders(40, shops=1, suppliers=2, skus_per_supplier=1, first_order_id=100, seed=3)
    split = next(o for o in orders if len(o.suppliers) == 2)
    single = next(o for o in orders if len(o.suppliers) == 1)
    times = {
        split.order_id: OrderTimes(0.0, 0.1, [0.3, 0.5], [1.0], [1.2]),
        single.order_id: OrderTimes(0.0, 0.2, [0.4], [], []),
    }
    assert times[split.order_id].at(ALL_OFFERED, 2) == 0.5
    assert OrderTimes(0.0, 0.1, [0.3]).at(ALL_OFFERED, 2) is None  # the second supplier's offer missing
    assert times[single.order_id].at(CREATED, 1) == 0.0
    figures = stage_figures([split, single], times, 0.0)
    target = figures[TARGET_STAGE]
    assert target.histogram.get_total_count() == 2 and target.missing == 0
    assert target.histogram.get_max_value() == target.histogram.get_highest_equivalent_value(500_000)
    end_to_end = figures[STAGES[-1][0]]
    assert end_to_end.histogram.get_total_count() == 1 and end_to_end.missing == 1
    rows = timeline(figures, {0: 2}, 2)
    assert [r["second"] for r in rows] == [0, 1]
    assert rows[0]["created"] == 2 and rows[0]["offered"] == 2 and rows[1]["told"] == 1


def test_per_second_counts_and_the_target_verdict() -> None:
    assert per_second_counts([10.2, 10.9, 11.0, 9.0], 10.0) == {0: 3, 1: 1}
    assert target_verdict(800, 200) == (True, "p99 800 ms ≤ 1000 ms: met with 200 ms to spare")
    met, verdict = target_verdict(800, 100)
    assert not met and verdict.endswith("(at 100/s; the target is at 200/s)")
    met, verdict = target_verdict(2500, 200)
    assert not met and verdict == "p99 2500 ms > 1000 ms: MISSED by 1500 ms (2.5× the target)"
    assert target_verdict(math.inf, 200)[0] is False
