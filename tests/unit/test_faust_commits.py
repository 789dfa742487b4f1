"""faust consumers: offsets are committed only up to the first message still being processed (agents take
batches concurrently, so acknowledgements arrive out of order); fetches wait to batch while records
arrive and long for the first one while none do."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
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


async def test_the_stream_consumers_start_idle_and_quiet() -> None:
    from shared.kafka.faust_app import BatchingConsumerThread, FetchWaits, QuietStream, create_faust_app
    from shared.settings import DispatchSettings, KafkaSettings

    kafka = KafkaSettings(
        stream_fetch_min_bytes=4096, stream_fetch_max_wait_ms=30, stream_idle_fetch_wait_ms=700
    )
    app = create_faust_app(DispatchSettings(kafka=kafka))
    assert getattr(app, "lvyue_fetch", None) == FetchWaits(4096, 30, 700)
    assert isinstance(app.stream(app.channel()), QuietStream)
    assert isinstance(app.consumer, GaplessConsumer)
    thread = app.consumer._thread
    assert isinstance(thread, BatchingConsumerThread)
    consumer = thread._create_worker_consumer(app.transport)  # created, not started: no broker needed
    # the first fetch waits long for any byte; aiokafka's fetch loop polls as seldom
    assert (consumer._fetch_min_bytes, consumer._fetch_max_wait_ms) == (1, 700)
    assert consumer._consumer_timeout == 0.7
    await consumer.stop()


def test_a_fetch_that_got_records_waits_to_batch_and_one_that_got_none_waits_long_for_any() -> None:
    from shared.kafka.faust_app import FetchWaits

    waits = FetchWaits(min_bytes=16_384, max_wait_ms=25, idle_wait_ms=500)
    assert waits.after(got_records=True) == (16_384, 25)
    assert waits.after(got_records=False) == (1, 500)


async def test_each_next_fetch_follows_what_the_last_one_returned() -> None:
    from shared.kafka.faust_app import FetchWaits, follow_activity

    class Fetcher:  # aiokafka's Fetcher as far as the fetch loop reads and calls it
        def __init__(self) -> None:
            self._fetch_min_bytes, self._fetch_max_wait_ms = 1, 500
            self.answers = [True, True, False]
            self.requests: list[tuple[int, int]] = []

        async def _proc_fetch_request(self, assignment: Any, node_id: int, request: Any) -> bool:
            self.requests.append((self._fetch_min_bytes, self._fetch_max_wait_ms))
            return self.answers.pop(0)

    fetcher = Fetcher()
    follow_activity(fetcher, FetchWaits(16_384, 25, 500))
    assert [await fetcher._proc_fetch_request(None, 1, None) for _ in range(3)] == [True, True, False]
    assert fetcher.requests == [(1, 500), (16_384, 25), (16_384, 25)]
    assert (fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms) == (1, 500)


def test_a_batch_after_an_idle_wait_goes_out_when_fausts_tick_would_have_sent_it() -> None:
    from shared.kafka.faust_app import idle_wait_s

    assert idle_wait_s(0.0, 0.02) == pytest.approx(0.02)
    assert idle_wait_s(0.005, 0.02) == pytest.approx(0.015)
    assert idle_wait_s(12.345, 0.05) == pytest.approx(0.005)
