"""Entry point of the order_ingest service: `uvicorn services.order_ingest.main:create_app --factory`.

One process: the WeChat webhook (FastAPI), the ingest worker (a faust agent) and reconciliation.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

from fastapi import FastAPI

from services.order_ingest import worker as ingest
from services.order_ingest.reconcile import reconcile_forever
from services.order_ingest.webhook import PushEndpoint, WebhookDependencies
from services.order_ingest.webhook import router as webhook_router
from shared.kafka.agents import OrderedAgents
from shared.kafka.consumer import MessageProcessor, RetryPolicy
from shared.kafka.faust_app import create_faust_app
from shared.kafka.topics import WECHAT_SHOP_EVENTS
from shared.service import ServiceRuntime, create_service_app
from shared.settings import OrderIngestSettings
from shared.versioned import prune_history_in_background
from shared.wechat import shops as shop_store
from shared.wechat.client import AccessTokenManager, WeChatShopClient, wechat_http_client


def create_app(settings: OrderIngestSettings | None = None) -> FastAPI:
    settings = settings or OrderIngestSettings()
    runs_worker = settings.role in ("all", "worker")
    runs_webhook = settings.role in ("all", "web")
    faust_app = create_faust_app(settings) if runs_worker else None
    agents = (
        OrderedAgents(
            faust_app,
            settings,
            batch_size=settings.worker_batch_size,
            batches_in_flight=settings.worker_batches_in_flight,
        )
        if faust_app is not None
        else None
    )
    if agents is not None:
        agents.consume("pushes", WECHAT_SHOP_EVENTS)

    async def start_ingest(runtime: ServiceRuntime, stack: AsyncExitStack) -> None:
        http = wechat_http_client(settings.wechat)
        stack.push_async_callback(http.aclose)
        repository = shop_store.ShopRepository(runtime.db)
        shops = shop_store.ShopCache(repository, settings.shop_cache_ttl_s)
        client = WeChatShopClient(
            http, AccessTokenManager(runtime.db, http, settings.wechat), settings.wechat
        )
        api.state.webhook = WebhookDependencies(settings, shops, runtime.producer)
        processor = MessageProcessor(
            name=settings.service_name, producer=runtime.producer, retry=RetryPolicy()
        )
        worker = ingest.IngestWorker(
            db=runtime.db,
            producer=runtime.producer,
            shops=shops,
            client=client,
            processor=processor,
            breaker_patience_s=settings.breaker_patience_s,
        )
        if agents is not None:
            await worker.load()
            prune_history_in_background(stack, [worker.orders])
            agents.bind("pushes", worker.handle, processor)
        if agents is not None and settings.reconcile_interval_s > 0:  # beside the projection it asks
            task = asyncio.create_task(
                reconcile_forever(
                    shops=repository,
                    client=client,
                    db=runtime.db,
                    producer=runtime.producer,
                    interval_s=settings.reconcile_interval_s,
                    window_s=settings.reconcile_window_s,
                    known=worker.knows,
                )
            )

            async def stop_reconciling() -> None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

            stack.push_async_callback(stop_reconciling)

    api = create_service_app(
        settings,
        title="Lüyue order ingest",
        faust_app=faust_app,
        indexes=[*shop_store.INDEXES, *(ingest.INDEXES if runs_worker else [])],
        routers=[webhook_router] if runs_webhook else [],
        on_startup=[start_ingest],
    )
    if runs_webhook:
        # Outermost of the service's middleware: pushes skip the rest (it records RED metrics itself).
        api.add_middleware(PushEndpoint, service=settings.service_name)
    return api
