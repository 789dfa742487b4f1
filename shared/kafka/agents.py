"""faust agents that hand each batch to a handler: orders in parallel, each order's messages in
their partition order, through a MessageProcessor (retries, then a dead letter). Handlers are bound
at start-up, once the service's projections are loaded."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import faust

from shared.kafka.consumer import InboundMessage, MessageProcessor
from shared.kafka.faust_app import faust_topic
from shared.kafka.topics import TopicSpec
from shared.settings import ServiceSettings

Handler = Callable[[InboundMessage], Awaitable[None]]


class KeyChains:
    """Per key, the completion of the last message handed out: a batch taken while an earlier one is
    still running waits, key by key, for the earlier batch's messages of the same order."""

    def __init__(self) -> None:
        self._tails: dict[bytes | None, asyncio.Future[None]] = {}

    def link(self, key: bytes | None) -> tuple[asyncio.Future[None] | None, asyncio.Future[None]]:
        """(what to wait for, what to resolve when done): call in the batches' order, without awaiting."""
        previous = self._tails.get(key)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tails[key] = done
        return previous, done

    def release(self, key: bytes | None, done: asyncio.Future[None]) -> None:
        done.set_result(None)
        if self._tails.get(key) is done:
            del self._tails[key]

    def __len__(self) -> int:
        return len(self._tails)


async def process_by_order(
    messages: Sequence[InboundMessage],
    handler: Handler,
    processor: MessageProcessor,
    chains: KeyChains | None = None,
) -> None:
    """Orders in parallel, each order's messages in order. With `chains`, batches may overlap: an
    order's messages in a later batch start only once its messages in earlier batches are done."""
    by_key: dict[bytes | None, list[InboundMessage]] = defaultdict(list)
    for message in messages:
        by_key[message.key].append(message)
    chains = chains if chains is not None else KeyChains()

    async def one_order(
        key: bytes | None,
        queue: list[InboundMessage],
        previous: asyncio.Future[None] | None,
        done: asyncio.Future[None],
    ) -> None:
        try:
            if previous is not None:
                await previous
            for message in queue:
                await processor.process(message, handler)
        finally:
            chains.release(key, done)

    # Linked here, synchronously and in batch order, before any of them runs.
    links = [(key, queue, *chains.link(key)) for key, queue in by_key.items()]
    try:
        await asyncio.gather(*(one_order(*link) for link in links))
    finally:  # cancelled before some of them started: later batches must not wait on them forever
        for key, _, _, done in links:
            if not done.done():
                chains.release(key, done)


class OrderedAgents:
    """One faust agent per topic, one batch at a time. Not faust's `concurrency`: its agent instances
    fill their batches from one shared stream, so an order's messages would interleave across
    batches (tried: a sale left refund cases waiting). Offsets are committed only up to the first
    message still in flight (`GaplessConsumer`); `KeyChains` keeps each order's messages in order if
    batches ever overlap."""

    def __init__(self, faust_app: faust.App, settings: ServiceSettings, *, batch_size: int) -> None:
        self._app = faust_app
        self._settings = settings
        self._batch_size = batch_size
        self._bound: dict[str, tuple[Handler, MessageProcessor]] = {}
        self._chains: dict[str, KeyChains] = defaultdict(KeyChains)

    def consume(self, name: str, spec: TopicSpec, *, within_s: float = 0.05) -> None:
        chains = self._chains[name]

        async def agent(stream: Any) -> None:
            async for events in stream.take_events(self._batch_size, within=within_s):
                handler, processor = self._bound[name]
                await process_by_order(
                    [InboundMessage.from_faust(e.message) for e in events], handler, processor, chains
                )

        agent.__name__ = f"{self._settings.service_name}_{name}"
        self._app.agent(
            faust_topic(self._app, spec, self._settings),
            name=f"{self._settings.service_name}.{name}",
        )(agent)

    def bind(self, name: str, handler: Handler, processor: MessageProcessor) -> None:
        self._bound[name] = (handler, processor)
