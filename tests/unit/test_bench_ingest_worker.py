"""bench-ingest follows the ingest worker through its /metrics: pushes finished, WeChat fetches."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest

from ops.bench import PUSHED_EVENT, WorkerDrain, worker_progress


def test_the_worker_s_progress_counts_the_pushed_event_and_its_order_gets() -> None:
    registry = CollectorRegistry()
    pushes = Counter("lvyue_ingest_pushes", "", ["event", "result"], registry=registry)
    calls = Counter("lvyue_wechat_api_calls", "", ["endpoint", "errcode"], registry=registry)
    pushes.labels(PUSHED_EVENT, "ok").inc(7)
    pushes.labels(PUSHED_EVENT, "already_settled").inc(2)
    pushes.labels("channels_ec_order_new", "ok").inc(100)
    calls.labels("/channels/ec/order/get", "0").inc(8)
    calls.labels("/channels/ec/order/get", "40001").inc(1)
    calls.labels("/cgi-bin/stable_token", "0").inc(3)

    assert worker_progress(generate_latest(registry).decode()) == (9.0, 9.0)


def test_the_fetch_rate_is_over_the_load_and_the_wait_after_it() -> None:
    drained = WorkerDrain(
        pushes=3000, done_during_load=1000, fetched=3000, finished=3000, load_s=10, waited_s=20
    )
    assert drained.drain_s == 20 and drained.fetch_rate == 100
    stuck = WorkerDrain(
        pushes=3000, done_during_load=1000, fetched=1500, finished=1500, load_s=10, waited_s=50
    )
    assert stuck.drain_s is None and stuck.fetch_rate == 25
