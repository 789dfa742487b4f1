"""faust agents that hand each batch to a handler: orders in parallel, each order's messages in
their partition order, through a MessageProcessor (retries, then a dead letter). Handlers are bound
at start-up, once the service's projections are loaded."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Sequence
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


Link = tuple[bytes | None, list[InboundMessage], "asyncio.Future[None] | None", "asyncio.Future[None]"]


def link_batch(messages: Sequence[InboundMessage], chains: KeyChains) -> list[Link]:
    """Group a batch by order and chain each order behind its earlier batches. Synchronous: call it
    in the batches' order, before the next batch is linked."""
    by_key: dict[bytes | None, list[InboundMessage]] = defaultdict(list)
    for message in messages:
        by_key[message.key].append(message)
    return [(key, queue, *chains.link(key)) for key, queue in by_key.items()]


async def run_linked(
    links: Sequence[Link], handler: Handler, processor: MessageProcessor, chains: KeyChains
) -> None:
    """Orders in parallel, each order's messages in order (after its messages in earlier batches)."""

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

    try:
        await asyncio.gather(*(one_order(*link) for link in links))
    finally:  # cancelled before some of them started: later batches must not wait on them forever
        for key, _, _, done in links:
            if not done.done():
                chains.release(key, done)


async def process_by_order(
    messages: Sequence[InboundMessage],
    handler: Handler,
    processor: MessageProcessor,
    chains: KeyChains | None = None,
) -> None:
    """Orders in parallel, each order's messages in order. With `chains`, batches may overlap: an
    order's messages in a later batch start only once its messages in earlier batches are done."""
    chains = chains if chains is not None else KeyChains()
    await run_linked(link_batch(messages, chains), handler, processor, chains)


class BatchPipeline:
    """Up to `limit` batches in flight: `submit` waits for a free slot. A batch that fails (only a
    bug or a lost broker: the processor dead-letters what it cannot handle) fails the next
    `submit` or `drain`, so the agent stops rather than commit past it."""

    def __init__(self, limit: int) -> None:
        self._slots = asyncio.Semaphore(limit)
        self._running: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None

    async def submit(self, batch: Coroutine[Any, Any, None]) -> None:
        try:
            self._raise_failure()
            await self._slots.acquire()
        except BaseException:
            batch.close()  # never started: its messages stay unacknowledged
            raise
        if self._failure is not None:
            self._slots.release()
            batch.close()
            self._raise_failure()
        task = asyncio.ensure_future(batch)
        self._running.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def drain(self) -> None:
        if self._running:
            await asyncio.wait(set(self._running))
        self._raise_failure()

    async def cancel(self) -> None:
        for task in self._running:
            task.cancel()
        if self._running:
            await asyncio.wait(set(self._running))

    def __len__(self) -> int:
        return len(self._running)


class OrderedAgents:
    """One faust agent per topic, taking batches in stream order and running up to
    `batches_in_flight` of them at once (a batch's writes overlap the next one's work).

    Not faust's `concurrency`: its agent instances fill their batches from one shared stream, so an
    order's messages would interleave across batches (tried: a sale left refund cases waiting).
    Here one agent links every batch's orders (`KeyChains`) before taking the next, so an order's
    messages keep their partition order. A message is acknowledged only when its batch is done (it
    holds a second reference that `take_events` does not release), and offsets are committed only
    up to the first message still in flight (`GaplessConsumer`)."""

    def __init__(
        self, faust_app: faust.App, settings: ServiceSettings, *, batch_size: int, batches_in_flight: int = 1
    ) -> None:
        self._app = faust_app
        self._settings = settings
        self._batch_size = batch_size
        self._batches_in_flight = batches_in_flight
        self._bound: dict[str, tuple[Handler, MessageProcessor]] = {}
        self._chains: dict[str, KeyChains] = defaultdict(KeyChains)

    def consume(self, name: str, spec: TopicSpec, *, within_s: float = 0.05) -> None:
        chains = self._chains[name]

        async def agent(stream: Any) -> None:
            pipeline = BatchPipeline(self._batches_in_flight)

            async def run(
                events: list[Any], links: list[Link], handler: Handler, processor: MessageProcessor
            ) -> None:
                await run_linked(links, handler, processor, chains)
                for event in events:
                    await stream.ack(event)  # the last reference: the offset may be committed

            try:
                async for events in stream.take_events(self._batch_size, within=within_s):
                    handler, processor = self._bound[name]
                    for event in events:
                        event.message.incref()  # take_events acks on its next turn: not the last ack
                    links = link_batch([InboundMessage.from_faust(e.message) for e in events], chains)
                    await pipeline.submit(run(list(events), links, handler, processor))
                await pipeline.drain()
            finally:
                await pipeline.cancel()

        agent.__name__ = f"{self._settings.service_name}_{name}"
        self._app.agent(
            faust_topic(self._app, spec, self._settings),
            name=f"{self._settings.service_name}.{name}",
        )(agent)

    def bind(self, name: str, handler: Handler, processor: MessageProcessor) -> None:
        self._bound[name] = (handler, processor)
