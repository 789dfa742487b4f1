"""Entry point of the aftersale service: `uvicorn services.aftersale.main:create_app --factory`.

One process: WeChat after-sale pushes (routed here by order_ingest's webhook), the dispatch changes
of the orders with an open case (`dispatch.aftersale`: dispatch follows an order once a case asks)
and parcels' stages from logistics (where the goods are; the supplier's answers), and a clock for
deferred refunds and deadlines. Cases are projected in memory from insert-only documents, so it
runs as one process.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from datetime import timedelta

from fastapi import FastAPI

from services.aftersale.domain.case import Policy
from services.aftersale.handlers import Aftersale, ShopPolicies
from services.aftersale.http import admin
from services.aftersale.store import open_state
from shared.events.dispatch import ShippingAddress
from shared.kafka.agents import OrderedAgents
from shared.kafka.consumer import MessageProcessor, RetryPolicy
from shared.kafka.faust_app import create_faust_app
from shared.kafka.topics import DISPATCH_AFTERSALE, LOGISTICS_PARCEL_STAGES, WECHAT_AFTERSALE_EVENTS
from shared.service import ServiceRuntime, create_service_app
from shared.settings import AftersaleSettings
from shared.suppliers import return_addresses
from shared.versioned import prune_history_in_background
from shared.wechat.client import AccessTokenManager, ShopApi, WeChatShopClient, wechat_http_client
from shared.wechat.shops import INDEXES as SHOP_INDEXES
from shared.wechat.shops import ShopCache, ShopRepository

log = logging.getLogger(__name__)


def create_app(settings: AftersaleSettings | None = None) -> FastAPI:
    settings = settings or AftersaleSettings()
    faust_app = create_faust_app(settings)
    agents = OrderedAgents(faust_app, settings, batch_size=settings.worker_batch_size)
    agents.consume("pushes", WECHAT_AFTERSALE_EVENTS)
    agents.consume("dispatch", DISPATCH_AFTERSALE)
    agents.consume("parcel_stages", LOGISTICS_PARCEL_STAGES)

    async def start_aftersale(runtime: ServiceRuntime, stack: AsyncExitStack) -> None:
        http = wechat_http_client(settings.wechat)
        stack.push_async_callback(http.aclose)
        shops = ShopCache(ShopRepository(runtime.db), ttl_s=30.0)
        wechat = ShopApi(
            WeChatShopClient(http, AccessTokenManager(runtime.db, http, settings.wechat), settings.wechat),
            shops,
        )
        state = open_state(runtime.db)
        await state.load()
        prune_history_in_background(stack, state.projections())
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
        aftersale.index()  # the first tick asks dispatch to follow the open cases' orders not followed
        api.state.aftersale = aftersale

        def processor() -> MessageProcessor:
            return MessageProcessor(
                name=settings.service_name, producer=runtime.producer, retry=RetryPolicy()
            )

        agents.bind("pushes", aftersale.handle_aftersale_push, processor())
        agents.bind("dispatch", aftersale.handle_dispatch_event, processor())
        agents.bind("parcel_stages", aftersale.handle_logistics_event, processor())

        async def tick_forever() -> None:
            while True:
                await asyncio.sleep(settings.tick_interval_s)
                try:
                    known = dict(addresses)
                    addresses.update(await return_addresses(runtime.db))
                    if addresses != known:  # a return held for want of an address can go now
                        await aftersale.reconsider_shop(None, cause="return_addresses")
                    for shop_id in await aftersale.policies.reload():  # written around this process
                        await aftersale.reconsider_shop(shop_id, cause=f"policy:{shop_id}")
                except Exception:  # the next tick retries; the service keeps serving
                    log.exception("aftersale: reading return addresses or policies failed")
                try:
                    await aftersale.tick()
                except Exception:
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
