"""Batches taken while earlier ones are still running keep each order's messages in order, and
still run different orders side by side."""

from __future__ import annotations

import asyncio
import random

from shared.kafka.agents import KeyChains, process_by_order
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
