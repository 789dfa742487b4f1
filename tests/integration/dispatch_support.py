"""A dispatch service on the test stack with its own database and consumer group, suppliers with
keys and routes, and paid orders published on the real `orders` topic."""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from ops.stack import LocalStack, free_port
from services.dispatch.catalog import Catalog, Supplier
from services.dispatch.domain.routing import Route
from services.dispatch.main import create_app
from shared.api.supplier import API_PREFIX
from shared.db import Document
from shared.events.base import Event
from shared.events.orders import OrderLine, OrderPaid, Receiver
from shared.kafka.admin import ensure_topics
from shared.kafka.producer import create_producer, publish
from shared.kafka.topics import ALL_TOPICS, ORDERS
from shared.settings import DispatchSettings, KafkaSettings, MongoSettings
from tests.integration.helpers import serving

_order_ids = itertools.count(random.randrange(10**17, 9 * 10**17))  # above 2^53, unique per run


def new_order_id() -> str:
    return str(next(_order_ids) * 10)


def paid_order(shop_id: str, skus: list[tuple[str, str, int]], *, order_id: str | None = None) -> OrderPaid:
    now = datetime.now(UTC)
    return OrderPaid(
        order_id=order_id or new_order_id(),
        shop_id=shop_id,
        version=int(now.timestamp()),
        paid_at=now,
        ship_by=now + timedelta(hours=48),
        lines=[
            OrderLine(
                product_id=p,
                sku_id=s,
                quantity=q,
                unit_sale_price_fen=1000,
                unit_paid_price_fen=900,
                title=f"商品 {p}",
            )
            for p, s, q in skus
        ],
        receiver=Receiver(
            name="张三",
            phone="13800000000",
            virtual_phone="13900001111-1234",
            province="广东省",
            city="广州市",
            county="天河区",
            detail="天河路 1 号",
        ),
        order_price_fen=900,
    )


@dataclass
class DispatchHarness:
    base_url: str
    settings: DispatchSettings
    catalog: Catalog
    producer: AIOKafkaProducer
    keys: dict[str, str]
    shop_id: str
    db: AsyncDatabase[Document]

    def client(self, supplier_id: str | None, **headers: str) -> httpx.AsyncClient:
        auth = {"Authorization": f"Bearer {self.keys[supplier_id]}"} if supplier_id else {}
        return httpx.AsyncClient(base_url=self.base_url + API_PREFIX, headers={**auth, **headers}, timeout=30)

    async def publish(self, event: Event) -> None:
        await publish(self.producer, ORDERS, event)

    async def add_supplier(self, supplier_id: str) -> None:
        await self.catalog.add_supplier(Supplier(supplier_id=supplier_id, name=supplier_id.upper()))
        self.keys[supplier_id] = (await self.catalog.create_key(supplier_id)).token

    async def wait_for(
        self, supplier_id: str, predicate: Any, *, after: int = 0, timeout_s: float = 30
    ) -> Any:
        """Long-poll the supplier's feed until a change matches; returns (change, cursor)."""
        deadline = datetime.now(UTC) + timedelta(seconds=timeout_s)
        async with self.client(supplier_id) as client:
            while datetime.now(UTC) < deadline:
                page = (await client.get("/feed", params={"after": after, "wait_s": 2})).json()
                for change in page["changes"]:
                    if predicate(change):
                        return change, change["cursor"]
                after = page["next_cursor"]
        raise TimeoutError(f"no matching change in {supplier_id}'s feed")


@asynccontextmanager
async def dispatch_service(
    stack: LocalStack,
    *,
    suppliers: list[str],
    routes: list[Route] | None = None,
    database: str | None = None,
    shop_id: str | None = None,
    **overrides: Any,
) -> AsyncIterator[DispatchHarness]:
    database = database or f"t_{uuid.uuid4().hex[:10]}"
    shop_id = shop_id or f"shop-{uuid.uuid4().hex[:6]}"
    port = free_port()
    settings = DispatchSettings(
        http_port=port,
        kafka=KafkaSettings(bootstrap_servers=stack.kafka_bootstrap, default_partitions=3),
        mongo=MongoSettings(uri=stack.mongo_uri, database=database),
        kafka_group=f"test-dispatch-{uuid.uuid4().hex[:8]}",
        route_reload_interval_s=0.5,
        **overrides,
    )
    await ensure_topics(settings.kafka, ALL_TOPICS)
    mongo: AsyncMongoClient[Document] = AsyncMongoClient(stack.mongo_uri, tz_aware=True)
    catalog = Catalog(mongo[database])
    producer = create_producer(settings.kafka, client_id="test-orders")
    await producer.start()
    harness = DispatchHarness("", settings, catalog, producer, {}, shop_id, mongo[database])
    try:
        for supplier in suppliers:
            await harness.add_supplier(supplier)
        for route in routes or []:
            await catalog.set_route(route)
        async with serving(create_app(settings), port) as base:
            harness.base_url = base
            yield harness
    finally:
        await harness.producer.stop()
        await mongo.close()
