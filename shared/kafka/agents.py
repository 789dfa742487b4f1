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


async def process_by_order(
    messages: Sequence[InboundMessage], handler: Handler, processor: MessageProcessor
) -> None:
    by_key: dict[bytes | None, list[InboundMessage]] = defaultdict(list)
    for message in messages:
        by_key[message.key].append(message)

    async def one_order(queue: list[InboundMessage]) -> None:
        for message in queue:
            await processor.process(message, handler)

    await asyncio.gather(*(one_order(q) for q in by_key.values()))


class OrderedAgents:
    def __init__(self, faust_app: faust.App, settings: ServiceSettings, *, batch_size: int) -> None:
        self._app = faust_app
        self._settings = settings
        self._batch_size = batch_size
        self._bound: dict[str, tuple[Handler, MessageProcessor]] = {}

    def consume(self, name: str, spec: TopicSpec, *, within_s: float = 0.05) -> None:
        async def agent(stream: Any) -> None:
            async for events in stream.take_events(self._batch_size, within=within_s):
                handler, processor = self._bound[name]
                await process_by_order(
                    [InboundMessage.from_faust(e.message) for e in events], handler, processor
                )

        agent.__name__ = f"{self._settings.service_name}_{name}"
        self._app.agent(
            faust_topic(self._app, spec, self._settings), name=f"{self._settings.service_name}.{name}"
        )(agent)

    def bind(self, name: str, handler: Handler, processor: MessageProcessor) -> None:
        self._bound[name] = (handler, processor)
