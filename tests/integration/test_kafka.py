"""Produce and consume through the real broker: consumer groups, commits after the effect, restarts."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Literal, TypeAlias

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient

from shared.events import Event
from shared.events.dead_letter import DeadLetter, DeadLetterReason
from shared.kafka.admin import ensure_topics
from shared.kafka.consumer import DurableConsumer, InboundMessage, PermanentFailure, RetryPolicy
from shared.kafka.producer import create_producer, publish, publish_all
from shared.kafka.topics import ALL_TOPICS, TopicSpec, topics_to_create
from shared.settings import KafkaSettings

pytestmark = pytest.mark.integration

Record: TypeAlias = ConsumerRecord[bytes, bytes]


class OrderTouched(Event):
    event_type: Literal["order_touched"] = "order_touched"
    schema_version: int = 1
    seq: int


@pytest.fixture
async def topic(kafka_settings: KafkaSettings) -> TopicSpec:
    spec = TopicSpec(f"test.{uuid.uuid4().hex[:10]}", "integration test topic", partitions=3)
    await ensure_topics(kafka_settings, (spec,))
    return spec


@pytest.fixture
async def producer(kafka_settings: KafkaSettings) -> AsyncIterator[AIOKafkaProducer]:
    started = create_producer(kafka_settings, client_id="test")
    await started.start()
    yield started
    await started.stop()


def _consumer(
    settings: KafkaSettings,
    spec: TopicSpec,
    group: str,
    handler: Callable[[InboundMessage], Awaitable[None]],
    producer: AIOKafkaProducer,
) -> DurableConsumer:
    return DurableConsumer(
        topics=[spec.name],
        group_id=group,
        settings=settings,
        handler=handler,
        dead_letter_producer=producer,
        retry=RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.05),
    )


async def _run_until(consumer: DurableConsumer, done: Callable[[], bool], timeout_s: float = 60) -> None:
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    try:
        async with asyncio.timeout(timeout_s):
            while not done():
                await asyncio.sleep(0.05)
    finally:
        consumer.request_stop()
        await task  # the batch in hand finishes and is committed
        await consumer.stop()


async def _read_from_start(settings: KafkaSettings, topic_name: str, *, count: int) -> list[Record]:
    """The first `count` records of a topic, read without a consumer group."""
    consumer = AIOKafkaConsumer(
        topic_name,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[Record] = []
    try:
        async with asyncio.timeout(30):
            while len(records) < count:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    records.extend(batch)
    finally:
        await consumer.stop()
    return records


async def _committed_total(settings: KafkaSettings, spec: TopicSpec, group: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == spec.name)


async def test_registry_topics_exist_with_their_partitions(kafka_settings: KafkaSettings) -> None:
    await ensure_topics(kafka_settings)  # a second call (the service made the first) creates nothing
    assert await ensure_topics(kafka_settings) == []
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_settings.bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_topics([s.name for s in topics_to_create(ALL_TOPICS)])
    finally:
        await admin.close()
    assert {d["topic"] for d in described} == {s.name for s in topics_to_create(ALL_TOPICS)}
    assert all(len(d["partitions"]) >= kafka_settings.default_partitions for d in described)


async def test_consumer_restart_resumes_from_the_committed_offset(
    kafka_settings: KafkaSettings, topic: TopicSpec, producer: AIOKafkaProducer
) -> None:
    group = f"g-{uuid.uuid4().hex[:8]}"
    seen: list[int] = []

    async def handle(record: InboundMessage) -> None:
        seen.append(OrderTouched.model_validate_json(record.value or b"").seq)

    for seq in range(10):
        await publish(producer, topic, OrderTouched(order_id=1000 + seq % 4, seq=seq))
    await _run_until(_consumer(kafka_settings, topic, group, handle, producer), lambda: len(seen) >= 10)
    assert sorted(seen) == list(range(10))
    assert await _committed_total(kafka_settings, topic, group) == 10

    for seq in range(10, 15):
        await publish(producer, topic, OrderTouched(order_id=1000 + seq % 4, seq=seq))
    seen.clear()
    await _run_until(_consumer(kafka_settings, topic, group, handle, producer), lambda: len(seen) >= 5)
    await asyncio.sleep(0)
    assert sorted(seen) == [10, 11, 12, 13, 14]  # nothing from before the restart is redelivered
    assert await _committed_total(kafka_settings, topic, group) == 15


async def test_a_message_whose_effect_never_finished_is_redelivered(
    kafka_settings: KafkaSettings, topic: TopicSpec, producer: AIOKafkaProducer
) -> None:
    """A consumer that dies mid-handler has committed nothing for that message."""
    group = f"g-{uuid.uuid4().hex[:8]}"
    single = TopicSpec(f"test.{uuid.uuid4().hex[:10]}", "one partition", partitions=1)
    await ensure_topics(kafka_settings, (single,))
    for seq in range(3):
        await publish(producer, single, OrderTouched(order_id=7, seq=seq))

    handled: list[int] = []
    stuck = asyncio.Event()

    async def crash_on_second(record: InboundMessage) -> None:
        seq = OrderTouched.model_validate_json(record.value or b"").seq
        if seq == 1:
            stuck.set()
            await asyncio.Event().wait()  # the process "dies" here, before the effect is durable
        handled.append(seq)

    first = _consumer(kafka_settings, single, group, crash_on_second, producer)
    await first.start()
    task = asyncio.create_task(first.run())
    await asyncio.wait_for(stuck.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await first.stop()
    assert handled == [0]

    redelivered: list[int] = []

    async def record_all(record: InboundMessage) -> None:
        redelivered.append(OrderTouched.model_validate_json(record.value or b"").seq)

    await _run_until(
        _consumer(kafka_settings, single, group, record_all, producer), lambda: len(redelivered) >= 3
    )
    assert redelivered == [0, 1, 2]  # at-least-once: the batch was never committed, handlers are idempotent


async def test_transient_failures_are_retried_and_permanent_ones_dead_lettered(
    kafka_settings: KafkaSettings, topic: TopicSpec, producer: AIOKafkaProducer
) -> None:
    group = f"g-{uuid.uuid4().hex[:8]}"
    for seq, order_id in enumerate((11, 22, 33)):
        await publish(producer, topic, OrderTouched(order_id=order_id, seq=seq))

    attempts: dict[int, int] = {}
    done: list[int] = []

    async def handle(record: InboundMessage) -> None:
        event = OrderTouched.model_validate_json(record.value or b"")
        attempts[event.seq] = attempts.get(event.seq, 0) + 1
        if event.seq == 0 and attempts[0] < 2:
            raise ConnectionError("WeChat busy")  # transient: succeeds on the retry
        if event.seq == 1:
            raise PermanentFailure(DeadLetterReason.VALIDATION_FAILED, "line without a SKU")
        if event.seq == 2:
            raise TimeoutError("never recovers")  # transient until the budget runs out
        done.append(event.seq)

    await _run_until(
        _consumer(kafka_settings, topic, group, handle, producer),
        lambda: len(attempts) == 3 and attempts[2] >= 3 and 0 in done,
    )
    assert attempts[0] == 2 and attempts[1] == 1 and attempts[2] == 3
    assert done == [0]

    letters = [
        DeadLetter.model_validate_json(r.value or b"")
        for r in await _read_from_start(kafka_settings, topic.dead_letter_name, count=2)
    ]
    by_order = {letter.order_id: letter for letter in letters}
    assert by_order["22"].reason is DeadLetterReason.VALIDATION_FAILED and by_order["22"].attempts == 1
    assert by_order["33"].reason is DeadLetterReason.RETRIES_EXHAUSTED and by_order["33"].attempts == 3
    assert "never recovers" in by_order["33"].detail
    replayed = OrderTouched.model_validate_json(by_order["22"].original_value)
    assert replayed.seq == 1 and by_order["22"].source_topic == topic.name
    assert await _committed_total(kafka_settings, topic, group) == 3  # nothing stalls the partitions


async def test_keyed_events_of_one_order_stay_in_order_on_one_partition(
    kafka_settings: KafkaSettings, topic: TopicSpec, producer: AIOKafkaProducer
) -> None:
    for seq in range(20):
        await publish(producer, topic, OrderTouched(order_id="3705115058471208928", seq=seq))
    got: dict[int, list[int]] = {}
    for record in await _read_from_start(kafka_settings, topic.name, count=20):
        got.setdefault(record.partition, []).append(OrderTouched.model_validate_json(record.value or b"").seq)
    assert len(got) == 1 and next(iter(got.values())) == list(range(20))


async def test_messages_published_together_keep_their_order_per_key_across_topics(
    kafka_settings: KafkaSettings, topic: TopicSpec, producer: AIOKafkaProducer
) -> None:
    second = TopicSpec(f"test.{uuid.uuid4().hex[:10]}", "integration test topic", partitions=3)
    await ensure_topics(kafka_settings, (second,))
    orders = ["3705115058471208928", "3705115058471208929"]
    await publish_all(
        producer,
        [
            (topic if seq % 3 else second, OrderTouched(order_id=order_id, seq=seq))
            for seq in range(30)
            for order_id in orders
        ],
    )
    for spec, count in ((topic, 40), (second, 20)):
        seqs: dict[str, list[int]] = {}
        for record in await _read_from_start(kafka_settings, spec.name, count=count):
            event = OrderTouched.model_validate_json(record.value or b"")
            seqs.setdefault(event.order_id, []).append(event.seq)
        expected = [seq for seq in range(30) if bool(seq % 3) == (spec is topic)]
        assert seqs == {order_id: expected for order_id in orders}
