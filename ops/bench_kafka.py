"""Reading what a benchmark run left on Kafka: the end offsets before it, and afterwards every record
since, with its own timestamp (the producing client's clock when it sent it). Group-less consumers:
reading commits nothing and costs the line nothing while it is measured."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

KEPT_VALUES = frozenset({"order_paid"})  # the reference chain sends the run's own order_paid messages


@dataclass(frozen=True)
class KafkaRecord:
    topic: str
    key: str
    event_type: str
    timestamp_s: float
    value: bytes = b""  # kept for the event types of KEPT_VALUES only
    headers: tuple[tuple[str, bytes], ...] = ()

    def header(self, name: str) -> bytes | None:
        return next((value for key, value in self.headers if key == name), None)


async def assigned_consumer(bootstrap: str, topics: Sequence[str], **options: Any) -> AIOKafkaConsumer:
    """A started consumer without a group holding every partition of `topics`."""
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, **options
    )
    await consumer.start()
    deadline = time.monotonic() + 60
    while {tp.topic for tp in consumer.assignment()} != set(topics):  # follows the first metadata answer
        if time.monotonic() > deadline:
            await stop_consumer(consumer)
            raise RuntimeError(f"no partitions of {topics} assigned within 60 s")
        await asyncio.sleep(0.1)
    return consumer


async def end_offsets(bootstrap: str, topics: Sequence[str]) -> dict[TopicPartition, int]:
    consumer = await assigned_consumer(bootstrap, topics)
    try:
        return dict(await consumer.end_offsets(list(consumer.assignment())))
    finally:
        await stop_consumer(consumer)


async def read_records(
    bootstrap: str, start: dict[TopicPartition, int], *, timeout_s: float = 120
) -> list[KafkaRecord]:
    """Every record from `start` to the current end of each partition (no group, no commits)."""
    consumer = await assigned_consumer(
        bootstrap, sorted({tp.topic for tp in start}), max_partition_fetch_bytes=4 << 20
    )
    records: list[KafkaRecord] = []
    try:
        end = await consumer.end_offsets(list(consumer.assignment()))
        wanted = [tp for tp in end if end[tp] > start.get(tp, 0)]
        for tp in consumer.assignment():
            consumer.seek(tp, start.get(tp, 0))
        deadline = time.monotonic() + timeout_s
        left = set(wanted)
        while left and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            for tp, messages in batches.items():
                for m in messages:
                    if m.offset >= end[tp]:
                        continue
                    event_type = next((v.decode() for k, v in m.headers if k == "event_type"), "")
                    key = m.key.decode() if m.key else ""
                    records.append(
                        KafkaRecord(
                            tp.topic,
                            key,
                            event_type,
                            m.timestamp / 1000,
                            (m.value or b"") if event_type in KEPT_VALUES else b"",
                            tuple(m.headers),
                        )
                    )
            for tp in list(left):
                if await consumer.position(tp) >= end[tp]:
                    left.discard(tp)
    finally:
        await stop_consumer(consumer)
    return records


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """aiokafka's group-less consumer can raise CancelledError from its own cancelled helper task on
    stop(); swallowed unless this task itself is being cancelled."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
