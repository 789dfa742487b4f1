"""faust consumers: offsets are committed only up to the first message still being processed (agents take
batches concurrently, so acknowledgements arrive out of order), and fetches wait to batch."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka
from intervaltree import IntervalTree  # type: ignore[import-untyped]

from shared.kafka.faust_app import GaplessConsumer, head_is_missing

TP = ("orders", 0)


def _consumer(cls: type[Any], acked: list[int], committed: int | None) -> Any:
    consumer = object.__new__(cls)  # only the offset bookkeeping is exercised
    consumer._acked = defaultdict(list, {TP: list(acked)})
    consumer._acked_index = defaultdict(set, {TP: set(acked)})
    consumer._gap = defaultdict(IntervalTree)
    consumer._committed_offset = defaultdict(lambda: None, {TP: committed})
    return consumer


def test_faust_alone_commits_past_one_missing_message() -> None:
    # 31 is the next offset to read and still in flight; 32 and 33 are done.
    assert _consumer(faust_aiokafka.Consumer, [32, 33], 31)._new_offset(TP) == 34


def test_nothing_is_committed_while_the_head_is_missing() -> None:
    assert _consumer(GaplessConsumer, [32, 33], 31)._new_offset(TP) is None
    assert _consumer(GaplessConsumer, [33, 34], 31)._new_offset(TP) is None


def test_contiguous_acknowledgements_commit_up_to_the_first_gap() -> None:
    assert _consumer(GaplessConsumer, [31, 32, 34], 31)._new_offset(TP) == 33
    assert _consumer(GaplessConsumer, [0, 1, 2], None)._new_offset(TP) == 3


def test_head_is_missing() -> None:
    assert head_is_missing([5, 6], 4)
    assert not head_is_missing([4, 5], 4)
    assert not head_is_missing([], 4)
    assert not head_is_missing([5], None)


async def test_the_stream_consumers_batch_their_fetches() -> None:
    from shared.kafka.faust_app import BatchingConsumerThread, create_faust_app
    from shared.settings import DispatchSettings, KafkaSettings

    kafka = KafkaSettings(stream_fetch_min_bytes=4096, stream_fetch_max_wait_ms=30)
    app = create_faust_app(DispatchSettings(kafka=kafka))
    assert isinstance(app.consumer, GaplessConsumer)
    thread = app.consumer._thread
    assert isinstance(thread, BatchingConsumerThread)
    consumer = thread._create_worker_consumer(app.transport)  # created, not started: no broker needed
    assert (consumer._fetch_min_bytes, consumer._fetch_max_wait_ms) == (4096, 30)
    await consumer.stop()
