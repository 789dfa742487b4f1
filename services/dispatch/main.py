"""Entry point of the dispatch service: `uvicorn services.dispatch.main:create_app --factory`.

One process: the order-event consumer (a faust agent) that routes paid orders to suppliers, and the
supplier API. Dispatch state is projected in this process's memory (see `store.py`), so the service
runs as one process; the API and the consumer share that projection and its per-order locks.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import httpx
from fastapi import FastAPI

from services.dispatch import catalog as supplier_catalog
from services.dispatch import store as dispatch_store
from services.dispatch.aftersale_follows import AftersaleFollows, MongoFollowRecords
from services.dispatch.command_endpoint import CommandEndpoint
from services.dispatch.dropship import open_dropship_mirrors
from services.dispatch.feed_endpoint import FeedEndpoint
from services.dispatch.handlers import Dispatcher, RouteBook
from services.dispatch.idempotency import IdempotencyStore
from services.dispatch.in_flight import InFlightPerKey
from services.dispatch.supplier_api import KeyCache, SupplierApi, TokenBucket, install
from shared.http import kept_alive_transport
from shared.kafka.agents import OrderedAgents
from shared.kafka.consumer import MessageProcessor, RetryPolicy
from shared.kafka.faust_app import create_faust_app
from shared.kafka.topics import AFTERSALE_INSTRUCTIONS, DISPATCH_DROPSHIP, ORDERS
from shared.service import ServiceRuntime, create_service_app
from shared.settings import DispatchSettings
from shared.wechat.shops import ShopCache, ShopRepository


def create_app(settings: DispatchSettings | None = None) -> FastAPI:
    settings = settings or DispatchSettings()
    faust_app = create_faust_app(settings)
    # Agents start after the start-up hooks (shared/service.py): handlers are bound by then.
    agents = OrderedAgents(
        faust_app,
        settings,
        batch_size=settings.worker_batch_size,
        batches_in_flight=settings.worker_batches_in_flight,
    )
    agents.consume("orders", ORDERS, within_s=0.02)
    agents.consume("aftersale", AFTERSALE_INSTRUCTIONS, within_s=0.02)
    # The WeChat drop-ship mirror (dropship.py) follows the copies of dispatch's own events that the
    # store publishes for shops that turn it on: nothing to read while none does.
    agents.consume("dropship", DISPATCH_DROPSHIP)

    async def start_dispatch(runtime: ServiceRuntime, stack: AsyncExitStack) -> None:
        catalog = supplier_catalog.Catalog(runtime.db)
        mirrors = await open_dropship_mirrors(runtime, settings, catalog, stack)
        # Read before the store publishes what a crash left unpublished: those changes are copied too.
        follows = AftersaleFollows(
            MongoFollowRecords(runtime.db),
            runtime.producer,
            ShopCache(ShopRepository(runtime.db), ttl_s=30.0),
        )
        await follows.load()
        store = dispatch_store.DispatchStore(
            runtime.db,
            runtime.producer,
            feed_cached_changes=settings.feed_cached_changes,
            read_backs_at_once=settings.read_backs_at_once,
            mirror_follows=mirrors.follows,
            aftersale_follows=follows.copies,
        )
        idempotency = IdempotencyStore(
            runtime.db,
            store,
            cache_size=settings.idempotency_cache_size,
            retention_s=settings.idempotency_retention_s,
        )
        store.requests = idempotency  # the version documents that answer requests, as load() reads them
        await store.load()
        await idempotency.load()
        await idempotency.sweep()
        stack.push_async_callback(store.close)
        routes = RouteBook(catalog)
        await routes.reload()
        dispatcher = Dispatcher(store, routes, follows)
        await dispatcher.retry_holds()
        processor = MessageProcessor(
            name=settings.service_name, producer=runtime.producer, retry=RetryPolicy()
        )
        agents.bind("orders", dispatcher.handle_order_event, processor)
        agents.bind("aftersale", dispatcher.handle_aftersale_event, processor)
        agents.bind(
            "dropship",
            mirrors.handle_dispatch_event,
            MessageProcessor(
                name=f"{settings.service_name}.dropship", producer=runtime.producer, retry=RetryPolicy()
            ),
        )
        logistics = httpx.AsyncClient(
            base_url=settings.logistics_url,
            timeout=10.0,
            transport=kept_alive_transport(16),
            headers={"Authorization": f"Bearer {settings.logistics_api_token.get_secret_value()}"},
        )
        stack.push_async_callback(logistics.aclose)
        api.state.supplier_api = SupplierApi(
            settings=settings,
            dispatcher=dispatcher,
            keys=KeyCache(catalog, settings.api_key_cache_ttl_s, settings.api_key_stale_s),
            limiter=TokenBucket(settings.supplier_rate_per_s, settings.supplier_burst),
            idempotency=idempotency,
            logistics=logistics,
            catalog=catalog,
            dropship=mirrors,
        )
        watchers = [
            asyncio.create_task(dispatcher.watch_routes(settings.route_reload_interval_s)),
            asyncio.create_task(idempotency.sweep_forever(settings.idempotency_sweep_interval_s)),
        ]

        async def stop_watching() -> None:
            for watcher in watchers:
                watcher.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)

        stack.push_async_callback(stop_watching)

    api = create_service_app(
        settings,
        title="Lüyue dispatch and supplier API",
        faust_app=faust_app,
        indexes=[*supplier_catalog.INDEXES, *dispatch_store.INDEXES],
        on_startup=[start_dispatch],
    )
    install(api)
    api.add_middleware(FeedEndpoint, service=settings.service_name)
    api.add_middleware(CommandEndpoint, service=settings.service_name)
    api.add_middleware(InFlightPerKey, limit=settings.supplier_max_in_flight)  # outermost: added last
    return api
