"""The service app factory: FastAPI co-hosting faust, with topics, indexes, health and metrics wired.

Start-up order matters: topics exist before any faust agent subscribes, indexes exist before any
handler writes, and the producer is connected before the first request is accepted.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Annotated

import faust
from aiokafka import AIOKafkaProducer
from fastapi import APIRouter, Depends, FastAPI, Request
from faust.contrib.asgi import faust_app_running
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from shared.db import Document, IndexSpec, create_mongo_client, database, ensure_indexes, ping
from shared.gc_policy import GcPolicy
from shared.health import HealthChecks
from shared.kafka.admin import ensure_topics
from shared.kafka.producer import create_producer
from shared.listeners import InternalListener, ListenerGate
from shared.logs import configure_logging
from shared.metrics import SERVICE_INFO, REDMetricsMiddleware, metrics_endpoint
from shared.operators import INDEXES as OPERATOR_INDEXES
from shared.operators import AuditTrail, OperatorAuth, OperatorTokens
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)

VERSION = "0.1.0"


@dataclass
class ServiceRuntime:
    """What handlers and routes of a running service use; built in the lifespan, torn down after it."""

    settings: ServiceSettings
    mongo: AsyncMongoClient[Document]
    db: AsyncDatabase[Document]
    producer: AIOKafkaProducer
    faust_app: faust.App | None
    health: HealthChecks


StartupHook = Callable[["ServiceRuntime", AsyncExitStack], Awaitable[None]]


async def get_runtime(request: Request) -> ServiceRuntime:  # async: no thread hop per request
    runtime: ServiceRuntime = request.app.state.runtime
    return runtime


Runtime = Annotated[ServiceRuntime, Depends(get_runtime)]


async def faust_worker_ready(app: faust.App) -> None:
    """The worker runs, is not rebalancing, and none of its parts crashed (a crashed conductor
    leaves the app itself looking started while nothing is consumed)."""
    if not app.started:
        raise RuntimeError("faust worker not started")
    for part in (app, app.topics, app.consumer):  # app.topics is the conductor
        if part.crashed:
            raise RuntimeError(f"faust {type(part).__name__} crashed: {part.crash_reason!r}")
    if app.rebalancing:
        raise RuntimeError("faust worker is rebalancing")
    if not app.consumer.assignment():  # not yet joined its group: nothing would be consumed
        raise RuntimeError("faust worker has no partitions assigned yet")


def create_service_app(
    settings: ServiceSettings,
    *,
    title: str,
    faust_app: faust.App | None = None,
    indexes: Sequence[IndexSpec] = (),
    routers: Sequence[APIRouter] = (),
    on_startup: Sequence[StartupHook] = (),
    public_prefixes: Sequence[str] = (),
) -> FastAPI:
    """`on_startup` hooks run once topics, indexes, the database and the producer are ready; they may
    register cleanups on the exit stack (closed in reverse order at shutdown). With
    `settings.internal_http_port`, the app is also served on that private port, and its public port
    answers only `public_prefixes` and the health checks (shared/listeners.py)."""
    if faust_app is not None and not faust_app.agents:
        # faust's conductor crashes when it has nothing to subscribe to.
        raise ValueError("a faust app without agents: pass faust_app=None until the service has agents")
    configure_logging(settings.service_name, settings.log_level)
    health = HealthChecks(settings.service_name)

    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        SERVICE_INFO.labels(settings.service_name, VERSION).set(1)
        async with AsyncExitStack() as stack:
            await ensure_topics(settings.kafka)

            mongo = create_mongo_client(settings.mongo, app_name=settings.service_name)
            stack.push_async_callback(mongo.close)
            db = database(mongo, settings.mongo)
            await ensure_indexes(db, [*indexes, *OPERATOR_INDEXES])

            producer = create_producer(settings.kafka, client_id=settings.service_name)
            await producer.start()
            stack.push_async_callback(producer.stop)

            runtime = ServiceRuntime(settings, mongo, db, producer, faust_app, health)
            api.state.runtime = runtime
            api.state.operator_auth = OperatorAuth(OperatorTokens(db), ttl_s=settings.operator_token_ttl_s)
            api.state.audit = AuditTrail(db)
            for hook in on_startup:
                await hook(runtime, stack)  # before faust starts: agents may rely on what hooks set up

            if faust_app is not None:
                await stack.enter_async_context(faust_app_running(faust_app, stop_timeout=30))

            async def mongo_ready() -> None:
                await ping(mongo)

            async def kafka_ready() -> None:
                await producer.client.fetch_all_metadata()

            health.add("mongo", mongo_ready)
            health.add("kafka", kafka_ready)
            if faust_app is not None:
                health.add("faust", partial(faust_worker_ready, faust_app))

            # Everything built at start-up lives for the process's lifetime: keep it out of the
            # collector's full passes, which otherwise show up as latency spikes under load.
            gc.freeze()
            gc_policy = GcPolicy(settings.service_name, settings.gc)
            if gc_policy.install():
                stack.callback(gc_policy.uninstall)
                sweeper = asyncio.create_task(gc_policy.sweep_forever())
                stack.callback(sweeper.cancel)
            if settings.internal_http_port is not None:
                private = InternalListener(api, settings.http_host, settings.internal_http_port)
                await private.start()
                stack.push_async_callback(private.stop)
            log.info(
                "service started",
                extra={"port": settings.http_port, "internal_port": settings.internal_http_port},
            )
            yield
            log.info("service stopping")

    # Metrics go to Prometheus; FastAPI's own OpenTelemetry hooks would only cost time per request.
    api = FastAPI(
        title=title,
        version=VERSION,
        lifespan=lifespan,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    api.add_middleware(REDMetricsMiddleware, service=settings.service_name)
    api.include_router(health.router())
    api.add_route("/metrics", metrics_endpoint(settings.prometheus_multiproc_dir), include_in_schema=False)
    for router in routers:
        api.include_router(router)
    if settings.internal_http_port is not None:
        api.add_middleware(
            ListenerGate, internal_port=settings.internal_http_port, public_prefixes=public_prefixes
        )
    return api
