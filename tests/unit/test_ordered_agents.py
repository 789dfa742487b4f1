"""Batches taken while earlier ones are still running keep each order's messages in order, and
still run different orders side by side."""

from __future__ import annotations

import asyncio
import random

import pytest

from shared.kafka.agents import BatchPipeline, KeyChains, Link, link_batch, process_by_order, run_linked
from shared.kafka.consumer import InboundMessage, MessageProcessor


class _NoProducer:
    async def send_and_wait(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("nothing here is dead-lettered")


def _message(key: str, n: int) -> InboundMessage:
    return InboundMessage(
        topic="orders",
        partition=0,
        offset=n,
        key=key.encode(),
        value=str(n).encode(),
        headers=(),
        timestamp_ms=0,
    )


async def test_overlapping_batches_keep_each_orders_messages_in_order() -> None:
    rng = random.Random(7)
    handled: dict[bytes | None, list[int]] = {}
    running = 0
    most_at_once = 0

    async def handler(message: InboundMessage) -> None:
        nonlocal running, most_at_once
        running += 1
        most_at_once = max(most_at_once, running)
        await asyncio.sleep(rng.uniform(0, 0.01))  # the database, Kafka: later batches overtake
        handled.setdefault(message.key, []).append(int(message.value))
        running -= 1

    processor = MessageProcessor(name="test", producer=_NoProducer())
    chains = KeyChains()
    keys = ["1", "2", "3", "4"]
    sent = [_message(rng.choice(keys), n) for n in range(400)]
    batches = [sent[i : i + 20] for i in range(0, len(sent), 20)]
    await asyncio.gather(*(process_by_order(batch, handler, processor, chains) for batch in batches))

    for key in keys:
        expected = [int(m.value) for m in sent if m.key == key.encode()]
        assert handled[key.encode()] == expected
    assert most_at_once == len(keys)  # orders ran side by side, each one at a time
    assert len(chains) == 0  # nothing left waiting


async def test_a_cancelled_batch_does_not_block_the_next() -> None:
    processor = MessageProcessor(name="test", producer=_NoProducer())
    chains = KeyChains()
    gate = asyncio.Event()
    handled: list[int] = []

    async def handler(message: InboundMessage) -> None:
        await gate.wait()
        handled.append(int(message.value))

    first = asyncio.create_task(process_by_order([_message("1", 1)], handler, processor, chains))
    await asyncio.sleep(0)
    first.cancel()
    gate.set()
    await asyncio.gather(first, return_exceptions=True)
    await asyncio.wait_for(process_by_order([_message("1", 2)], handler, processor, chains), timeout=2)
    assert handled == [2]


async def test_a_pipeline_of_linked_batches_keeps_order_and_its_limit() -> None:
    """The agent's pattern: link each batch as it is taken, run up to `limit` batches at once."""
    rng = random.Random(11)
    handled: dict[bytes | None, list[int]] = {}
    batches_running = 0
    most_batches = 0

    async def handler(message: InboundMessage) -> None:
        await asyncio.sleep(rng.uniform(0, 0.005))
        handled.setdefault(message.key, []).append(int(message.value))

    async def batch(links: list[Link]) -> None:
        nonlocal batches_running, most_batches
        batches_running += 1
        most_batches = max(most_batches, batches_running)
        try:
            await run_linked(links, handler, processor, chains)
        finally:
            batches_running -= 1

    processor = MessageProcessor(name="test", producer=_NoProducer())
    chains = KeyChains()
    pipeline = BatchPipeline(3)
    sent = [_message(rng.choice("12345"), n) for n in range(300)]
    for start in range(0, len(sent), 10):
        await pipeline.submit(batch(link_batch(sent[start : start + 10], chains)))
        assert len(pipeline) <= 3
    await pipeline.drain()
    for key in "12345":
        assert handled[key.encode()] == [int(m.value) for m in sent if m.key == key.encode()]
    assert most_batches == 3
    assert len(chains) == 0


async def test_a_failed_batch_stops_the_pipeline_and_a_waiting_batch_never_starts() -> None:
    pipeline = BatchPipeline(1)
    started: list[str] = []

    async def failing() -> None:
        started.append("failing")
        raise RuntimeError("broker gone")

    async def next_batch() -> None:
        started.append("next")

    await pipeline.submit(failing())
    with pytest.raises(RuntimeError, match="broker gone"):
        await pipeline.submit(next_batch())
    with pytest.raises(RuntimeError, match="broker gone"):
        await pipeline.drain()
    assert started == ["failing"]


async def test_cancelling_the_pipeline_cancels_its_batches() -> None:
    pipeline = BatchPipeline(2)
    never = asyncio.Event()

    async def stuck() -> None:
        await never.wait()

    await pipeline.submit(stuck())
    await pipeline.submit(stuck())
    await pipeline.cancel()
    assert len(pipeline) == 0
