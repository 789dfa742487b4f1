from prometheus_client import CollectorRegistry, Histogram, generate_latest

from ops.bench_dispatch import (
    GcPauses,
    PollStats,
    bucket_latencies,
    gc_pauses,
    gc_pauses_between,
    plan_orders,
    sku_routes,
    speedscope_inclusive,
    speedscope_top,
    supplier_name,
)
from ops.stack import REPO_ROOT


def test_planned_orders_have_one_to_three_distinct_skus_and_one_dispatch_order_per_supplier() -> None:
    orders = plan_orders(2000, suppliers=10, skus_per_supplier=5, first_order_id=10**18, seed=1)
    assert [o.order_id for o in orders[:2]] == [str(10**18), str(10**18 + 1)]
    assert {len(o.skus) for o in orders} == {1, 2, 3}
    for order in orders:
        assert len(set(order.skus)) == len(order.skus)
        assert order.suppliers == {supplier_name(k % 10) for k in order.skus}
    assert any(len(o.suppliers) < len(o.skus) for o in orders)  # two lines of one supplier: one order
    again = plan_orders(2000, suppliers=10, skus_per_supplier=5, first_order_id=10**18, seed=1)
    assert again == orders  # seeded: the same mix every run


def test_every_sku_has_a_route_to_the_supplier_the_plan_expects() -> None:
    routes = sku_routes(3, 2)
    assert [(r.product_id, r.sku_id, r.supplier_id) for r in routes] == [
        ("p0", "s0", "bench-s000"),
        ("p1", "s1", "bench-s001"),
        ("p2", "s2", "bench-s002"),
        ("p3", "s3", "bench-s000"),
        ("p4", "s4", "bench-s001"),
        ("p5", "s5", "bench-s002"),
    ]


def test_latencies_are_bucketed_by_when_they_were_seen_with_empty_windows_listed() -> None:
    buckets = bucket_latencies([(0.2, 1000), (0.9, 3000), (2.5, 500_000)], width_s=1)
    assert [(b.start_s, b.count) for b in buckets] == [(0, 2), (1, 0), (2, 1)]
    assert 2.99 < buckets[0].max_ms < 3.01 and 499 < buckets[2].p99_ms < 501
    assert bucket_latencies([]) == []


def test_poll_figures_are_differences_over_the_window() -> None:
    stats = PollStats()
    before = stats.copy()
    stats.polls, stats.with_changes, stats.empty, stats.changes = 30, 20, 10, 50
    stats.per_supplier.update({"a": 20, "b": 10})
    figures = stats.since(before, 10.0, suppliers=2)
    assert figures["polls_per_s"] == 3.0 and figures["polls_per_s_per_supplier"] == 1.5
    assert figures["busiest_supplier_polls_per_s"] == 2.0
    assert figures["mean_changes_per_poll"] == round(50 / 30, 2)
    assert figures["mean_changes_per_nonempty_poll"] == 2.5
    assert before.polls == 0 and before.per_supplier == {}


def test_speedscope_profiles_are_ranked_by_self_and_inclusive_time() -> None:
    profile = {
        "shared": {
            "frames": [
                {"name": "run", "file": "/x/site-packages/uvicorn/main.py", "line": 1},
                {"name": "allocated", "file": f"{REPO_ROOT}/services/dispatch/store.py", "line": 9},
                {"name": "loads", "file": "/usr/lib/json.py", "line": 3},
            ]
        },
        "profiles": [
            {"type": "sampled", "samples": [[0, 1], [0, 1], [0, 2], [0]], "weights": [1, 1, 1, 1]},
            {"type": "evented"},
        ],
    }
    rows, samples = speedscope_top(profile)
    assert samples == 4
    assert rows[0] == ("allocated (services/dispatch/store.py:9)", 0.5, 0.5)
    assert ("run (uvicorn/main.py:1)", 0.25, 1.0) in rows
    assert speedscope_inclusive(profile) == [("allocated (services/dispatch/store.py)", 0.5)]


def test_gc_pauses_are_read_from_a_services_metrics_and_differenced() -> None:
    registry = CollectorRegistry()
    pauses = Histogram(
        "lvyue_gc_pause_seconds", "", ["service", "generation"], buckets=(0.01, 0.1, 1), registry=registry
    )
    pauses.labels("dispatch", "0").observe(0.002)
    before = gc_pauses(generate_latest(registry).decode())
    for seconds in (0.003, 0.3, 0.6):
        pauses.labels("dispatch", "2").observe(seconds)
    pauses.labels("dispatch", "0").observe(0.004)
    after = gc_pauses(generate_latest(registry).decode())
    assert after["2"] == GcPauses(count=3, total_s=after["2"].total_s, over_100ms=2)
    assert round(after["2"].total_s, 6) == 0.903
    during = gc_pauses_between(before, after)
    assert during["0"].count == 1 and round(during["0"].total_s, 6) == 0.004
    assert during["2"].over_100ms == 2
