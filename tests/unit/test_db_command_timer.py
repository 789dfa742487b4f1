"""Database command timing: the listener's labels, and the bench's reading of them from /metrics."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from pymongo import monitoring

import shared.db as db
from ops.bench_e2e import db_command_figures

ADDRESS = ("127.0.0.1", 27017)


def _sample(metric: Histogram, suffix: str, **labels: str) -> float:
    for family in metric.collect():
        for sample in family.samples:
            if sample.name.endswith(suffix) and sample.labels == labels:
                return sample.value
    return 0.0


def _run(
    timer: db.CommandTimer, request_id: int, command: dict[str, object], reply: dict[str, object]
) -> None:
    name = next(iter(command))
    timer.started(monitoring.CommandStartedEvent(command, "lvyue", request_id, ADDRESS, None))
    timer.succeeded(
        monitoring.CommandSucceededEvent(timedelta(milliseconds=3), reply, name, request_id, ADDRESS, None)
    )


def test_a_find_that_matched_nothing_is_told_apart_from_one_that_found_a_document() -> None:
    timer = db.CommandTimer()
    labels = {"command": "find", "collection": "timer_test_orders"}
    empty_before = _sample(db.DB_COMMAND_SECONDS, "_count", **labels, result="empty")
    ok_before = _sample(db.DB_COMMAND_SECONDS, "_count", **labels, result="ok")

    _run(timer, 1, {"find": "timer_test_orders"}, {"ok": 1, "cursor": {"firstBatch": [], "id": 0}})
    _run(timer, 2, {"find": "timer_test_orders"}, {"ok": 1, "cursor": {"firstBatch": [{"_id": 1}], "id": 0}})

    assert _sample(db.DB_COMMAND_SECONDS, "_count", **labels, result="empty") == empty_before + 1
    assert _sample(db.DB_COMMAND_SECONDS, "_count", **labels, result="ok") == ok_before + 1


def test_a_failed_command_is_counted_as_failed_with_its_collection() -> None:
    timer = db.CommandTimer()
    labels = {"command": "insert", "collection": "timer_test_marks", "result": "failed"}
    before = _sample(db.DB_COMMAND_SECONDS, "_count", **labels)
    sum_before = _sample(db.DB_COMMAND_SECONDS, "_sum", **labels)

    timer.started(monitoring.CommandStartedEvent({"insert": "timer_test_marks"}, "lvyue", 7, ADDRESS, None))
    timer.failed(
        monitoring.CommandFailedEvent(timedelta(milliseconds=20), {"code": 11000}, "insert", 7, ADDRESS, None)
    )

    assert _sample(db.DB_COMMAND_SECONDS, "_count", **labels) == before + 1
    assert abs(_sample(db.DB_COMMAND_SECONDS, "_sum", **labels) - sum_before - 0.020) < 1e-9


def test_the_bench_lists_each_services_commands_most_time_first() -> None:
    registry = CollectorRegistry()
    seconds = Histogram(
        "lvyue_db_command_seconds", "", ["command", "collection", "result"], registry=registry
    )
    seconds.labels("insert", "orders", "ok").observe(0.002)
    seconds.labels("insert", "orders", "ok").observe(0.004)
    seconds.labels("find", "orders", "empty").observe(0.5)
    text = generate_latest(registry).decode()

    figures = db_command_figures({"order_ingest_worker": text, "dispatch": "# nothing timed yet\n"})

    assert [(f.service, f.command, f.collection, f.result, f.count) for f in figures] == [
        ("order_ingest_worker", "find", "orders", "empty", 1.0),
        ("order_ingest_worker", "insert", "orders", "ok", 2.0),
    ]
    assert abs(figures[1].seconds - 0.006) < 1e-9


def test_a_get_more_is_counted_against_its_collection_not_its_cursor() -> None:
    timer = db.CommandTimer()
    labels = {"command": "getMore", "collection": "timer_test_versions", "result": "ok"}
    before = _sample(db.DB_COMMAND_SECONDS, "_count", **labels)

    _run(
        timer,
        9,
        {"getMore": 8_123_456, "collection": "timer_test_versions"},
        {"ok": 1, "cursor": {"nextBatch": [{"_id": 2}], "id": 0}},
    )

    assert _sample(db.DB_COMMAND_SECONDS, "_count", **labels) == before + 1


def _written(command: str, collection: str) -> float:
    labels = {"command": command, "collection": collection}
    for family in db.DOCUMENTS_WRITTEN.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels == labels:
                return sample.value
    return 0.0


def test_documents_written_are_counted_from_each_write_commands_reply() -> None:
    timer = db.CommandTimer()
    collection = "timer_test_written"
    before = {c: _written(c, collection) for c in ("insert", "update", "delete", "findAndModify")}

    _run(timer, 11, {"insert": collection, "documents": [{}, {}, {}]}, {"ok": 1, "n": 3})
    _run(timer, 12, {"update": collection}, {"ok": 1, "n": 1, "nModified": 0, "upserted": [{"_id": 1}]})
    _run(timer, 13, {"delete": collection}, {"ok": 1, "n": 2})
    _run(timer, 14, {"findAndModify": collection}, {"ok": 1, "lastErrorObject": {"n": 1}, "value": {}})
    _run(timer, 15, {"find": collection}, {"ok": 1, "cursor": {"firstBatch": [{"_id": 1}], "id": 0}})

    assert {c: _written(c, collection) - before[c] for c in before} == {
        "insert": 3,
        "update": 1,
        "delete": 2,
        "findAndModify": 1,
    }
    assert _written("find", collection) == 0
