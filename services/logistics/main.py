"""Entry point of the logistics service: `uvicorn services.logistics.main:create_app --factory`.

One process: consumers of the dispatch topic (shipments -> WeChat, ship-by watches, waybills of
cancelled orders), WeChat e-waybill tracking pushes and completed orders; the carrier callbacks; the
internal waybill and label API; and the deadline scanner. State is projected in memory from
insert-only documents (shared/versioned.py), so the service runs as one process.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack

from fastapi import FastAPI

from services.logistics.aggregator import AggregatorClient, CarrierSubscriber
from services.logistics.handlers import Logistics, deadline_policy
from services.logistics.http import CALLBACKS_PREFIX, LogisticsApi, callbacks, internal
from services.logistics.store import open_state
from services.logistics.tracking_pushes import handle_ewaybill_push
from services.logistics.waybills import EWAYBILL_ACCOUNTS, EwaybillAccount, WaybillIssuer, WaybillRecord
from shared.kafka.agents import OrderedAgents
from shared.kafka.consumer import InboundMessage, MessageProcessor, RetryPolicy
from shared.kafka.faust_app import create_faust_app
from shared.kafka.topics import DISPATCH, ORDERS_COMPLETED, WECHAT_EWAYBILL_EVENTS
from shared.service import ServiceRuntime, create_service_app
from shared.settings import LogisticsSettings
from shared.versioned import VersionedProjection, prune_history_in_background
from shared.wechat.client import AccessTokenManager, ShopApi, WeChatShopClient, wechat_http_client
from shared.wechat.shops import INDEXES as SHOP_INDEXES
from shared.wechat.shops import ShopCache, ShopRepository

log = logging.getLogger(__name__)


def create_app(settings: LogisticsSettings | None = None) -> FastAPI:
    settings = settings or LogisticsSettings()
    faust_app = create_faust_app(settings)
    agents = OrderedAgents(faust_app, settings, batch_size=settings.worker_batch_size)
    agents.consume("dispatch", DISPATCH)
    agents.consume("ewaybill", WECHAT_EWAYBILL_EVENTS)
    agents.consume("completed", ORDERS_COMPLETED)

    async def start_logistics(runtime: ServiceRuntime, stack: AsyncExitStack) -> None:
        http = wechat_http_client(settings.wechat)
        stack.push_async_callback(http.aclose)
        shops = ShopCache(ShopRepository(runtime.db), ttl_s=30.0)
        wechat = ShopApi(
            WeChatShopClient(http, AccessTokenManager(runtime.db, http, settings.wechat), settings.wechat),
            shops,
        )
        state = open_state(runtime.db)
        await state.load()
        aggregator = AggregatorClient(http, settings)
        logistics = Logistics(
            **state.__dict__,
            producer=runtime.producer,
            wechat=wechat,
            subscriber=CarrierSubscriber(http, settings),
            policy=deadline_policy(settings),
        )
        logistics.index()
        records: VersionedProjection[WaybillRecord] = VersionedProjection(
            runtime.db, "logistics_waybills", WaybillRecord
        )
        accounts: VersionedProjection[EwaybillAccount] = VersionedProjection(
            runtime.db, EWAYBILL_ACCOUNTS, EwaybillAccount
        )
        await records.load()
        await accounts.load()
        prune_history_in_background(stack, [*state.projections(), records, accounts])
        issuer = WaybillIssuer(
            records=records,
            accounts=accounts,
            wechat=wechat,
            aggregator=aggregator,
            producer=runtime.producer,
        )
        issuer.index()
        logistics.on_dispatch_closed = issuer.cancel_for_dispatch
        api.state.logistics_api = LogisticsApi(settings=settings, logistics=logistics, issuer=issuer)

        def processor() -> MessageProcessor:
            return MessageProcessor(
                name=settings.service_name, producer=runtime.producer, retry=RetryPolicy()
            )

        async def ewaybill(message: InboundMessage) -> None:
            await handle_ewaybill_push(logistics, message)

        agents.bind("dispatch", logistics.handle_dispatch_event, processor())
        agents.bind("ewaybill", ewaybill, processor())
        agents.bind("completed", logistics.handle_order_event, processor())

        async def scan_deadlines() -> None:
            while True:
                try:
                    await accounts.load()  # accounts added with `lvyue ewaybill-account set`
                    await logistics.raise_due_alerts()
                    await logistics.retry_held_shipments()
                except Exception:  # the next round retries; the service keeps serving
                    log.exception("deadline scan failed")
                await asyncio.sleep(settings.deadline_scan_interval_s)

        scanner = asyncio.create_task(scan_deadlines())

        async def stop_scanning() -> None:
            scanner.cancel()
            await asyncio.gather(scanner, return_exceptions=True)

        stack.push_async_callback(stop_scanning)

    api = create_service_app(
        settings,
        title="Lüyue logistics: waybills, labels, tracking, deadlines",
        faust_app=faust_app,
        indexes=[*SHOP_INDEXES],
        routers=[callbacks, internal],
        on_startup=[start_logistics],
        public_prefixes=[CALLBACKS_PREFIX],  # the internal API answers on the private port only
    )
    api.state.service_credential = settings.internal_api_token
    return api
