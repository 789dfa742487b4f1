"""Entry point of the aftersale service: `uvicorn services.aftersale.main:create_app --factory`.

One process: WeChat after-sale pushes (forwarded by order_ingest), the dispatch and logistics
topics (where the goods are; the supplier's answers), and a clock for deferred refunds and
deadlines. Cases are projected in memory from insert-only documents, so it runs as one process.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from datetime import timedelta
from typing import Any

import httpx
from fastapi import FastAPI

from services.aftersale.domain.case import Policy
from services.aftersale.handlers import Aftersale, ShopPolicies
from services.aftersale.http import admin
from services.aftersale.store import open_state
from shared.events.dispatch import ShippingAddress
from shared.kafka.consumer import InboundMessage, MessageProcessor, RetryPolicy
from shared.kafka.faust_app import create_faust_app, faust_topic
from shared.kafka.topics import DISPATCH, LOGISTICS, WECHAT_AFTERSALE_EVENTS
from shared.service import ServiceRuntime, create_service_app
from shared.settings import AftersaleSettings
from shared.suppliers import return_addresses
from shared.wechat.client import AccessTokenManager, ShopApi, WeChatShopClient
from shared.wechat.shops import INDEXES as SHOP_INDEXES
from shared.wechat.shops import ShopCache, ShopRepository

log = logging.getLogger(__name__)

Handler = Callable[[InboundMessage], Awaitable[None]]


def create_app(settings: AftersaleSettings | None = None) -> FastAPI:
    settings = settings or AftersaleSettings()
    faust_app = create_faust_app(settings)
    running: dict[str, tuple[Handler, MessageProcessor]] = {}

    async def process_batch(name: str, messages: Sequence[InboundMessage]) -> None:
        """Orders in parallel; each order's messages in their partition order."""
        handler, processor = running[name]
        by_key: dict[bytes | None, list[InboundMessage]] = defaultdict(list)
        for message in messages:
            by_key[message.key].append(message)

        async def one_order(queue: list[InboundMessage]) -> None:
            for message in queue:
                await processor.process(message, handler)

        await asyncio.gather(*(one_order(q) for q in by_key.values()))

    def consume(name: str, topic: Any) -> None:
        async def agent(stream: Any) -> None:
            async for events in stream.take_events(settings.worker_batch_size, within=0.05):
                await process_batch(name, [InboundMessage.from_faust(e.message) for e in events])

        agent.__name__ = f"aftersale_{name}"
        faust_app.agent(topic, name=f"aftersale.{name}")(agent)

    consume("pushes", faust_topic(faust_app, WECHAT_AFTERSALE_EVENTS, settings))
    consume("dispatch", faust_topic(faust_app, DISPATCH, settings))
    consume("logistics", faust_topic(faust_app, LOGISTICS, settings))

    async def start_aftersale(runtime: ServiceRuntime, stack: AsyncExitStack) -> None:
        http = httpx.AsyncClient(timeout=settings.wechat.request_timeout_s)
        stack.push_async_callback(http.aclose)
        shops = ShopCache(ShopRepository(runtime.db), ttl_s=30.0)
        wechat = ShopApi(
            WeChatShopClient(http, AccessTokenManager(runtime.db, http, settings.wechat), settings.wechat),
            shops,
        )
        state = open_state(runtime.db)
        await state.load()
        addresses: dict[str, ShippingAddress] = await return_addresses(runtime.db)
        default = Policy(
            auto_refund_before_shipment=settings.auto_refund_before_shipment,
            auto_approve_under_fen=settings.auto_approve_under_fen,
            deadline_warning=timedelta(hours=settings.deadline_warning_hours),
        )
        aftersale = Aftersale(
            cases=state.cases,
            orders=state.orders,
            created={},
            policies=ShopPolicies(state.policies, default),
            wechat=wechat,
            producer=runtime.producer,
            return_addresses=addresses.get,
        )
        api.state.aftersale = aftersale

        def processor() -> MessageProcessor:
            return MessageProcessor(
                name=settings.service_name, producer=runtime.producer, retry=RetryPolicy()
            )

        running["pushes"] = (aftersale.handle_aftersale_push, processor())
        running["dispatch"] = (aftersale.handle_dispatch_event, processor())
        running["logistics"] = (aftersale.handle_logistics_event, processor())

        async def tick_forever() -> None:
            while True:
                await asyncio.sleep(settings.tick_interval_s)
                try:
                    addresses.update(await return_addresses(runtime.db))
                    await state.policies.load()
                    await aftersale.tick()
                except Exception:  # the next tick retries; the service keeps serving
                    log.exception("aftersale tick failed")

        ticker = asyncio.create_task(tick_forever())

        async def stop_ticking() -> None:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)

        stack.push_async_callback(stop_ticking)

    api = create_service_app(
        settings,
        title="Lüyue after-sales: refunds, returns, exchanges, interceptions, re-shipping",
        faust_app=faust_app,
        indexes=[*SHOP_INDEXES],
        routers=[admin],
        on_startup=[start_aftersale],
    )
    return api
