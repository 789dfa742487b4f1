"""faust co-hosted in FastAPI (the service factory) against the real broker and FerretDB:
an HTTP route publishes, a faust agent consumes and writes a versioned document, offsets follow."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AsyncExitStack
from typing import Any, Literal

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from fastapi import APIRouter
from pymongo import AsyncMongoClient

from ops.stack import LocalStack, free_port
from shared.db import Document, UpsertOutcome, versioned_upsert
from shared.events import Event
from shared.kafka.admin import ensure_topics
from shared.kafka.agents import OrderedAgents
from shared.kafka.consumer import InboundMessage, MessageProcessor
from shared.kafka.faust_app import DurableProducer, create_faust_app, faust_topic
from shared.kafka.producer import publish
from shared.kafka.topics import TopicSpec
from shared.service import Runtime, ServiceRuntime, create_service_app
from shared.settings import DispatchSettings, KafkaSettings, MongoSettings
from tests.integration.helpers import serving

pytestmark = pytest.mark.integration


class StatusChanged(Event):
    event_type: Literal["status_changed"] = "status_changed"
    schema_version: int = 1
    status: int
    update_time: int


async def test_http_to_kafka_to_faust_agent_to_ferretdb(stack: LocalStack) -> None:
    database = f"t_{uuid.uuid4().hex[:10]}"
    port = free_port()
    settings = DispatchSettings(
        http_port=port,
        kafka=KafkaSettings(bootstrap_servers=stack.kafka_bootstrap, default_partitions=3),
        mongo=MongoSettings(uri=stack.mongo_uri, database=database),
    )
    spec = TopicSpec(f"test.faust.{uuid.uuid4().hex[:8]}", "faust co-hosting test", partitions=3)
    await ensure_topics(settings.kafka, (spec,))

    faust_app = create_faust_app(settings, app_id=f"test-{uuid.uuid4().hex[:8]}")
    topic = faust_topic(faust_app, spec, settings)
    outcomes: list[UpsertOutcome] = []
    mongo: AsyncMongoClient[Document] = AsyncMongoClient(stack.mongo_uri, tz_aware=True)

    @faust_app.agent(topic)
    async def store_status(stream: Any) -> None:
        async for raw in stream:
            event = StatusChanged.model_validate_json(raw)
            outcome = await versioned_upsert(
                mongo[database].orders,
                event.order_id,
                version=event.update_time,
                fields={"status": event.status},
            )
            outcomes.append(outcome)

    router = APIRouter()

    @router.post("/orders/{order_id}/status/{status}/{update_time}")
    async def change_status(order_id: str, status: int, update_time: int, runtime: Runtime) -> dict[str, str]:
        await publish(
            runtime.producer, spec, StatusChanged(order_id=order_id, status=status, update_time=update_time)
        )
        return {"published": order_id}

    api = create_service_app(settings, title="test", faust_app=faust_app, routers=[router])
    try:
        async with serving(api, port) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
            ready = await client.get("/readyz")
            assert {c["name"]: c["ok"] for c in ready.json()["checks"]} == {
                "mongo": True,
                "kafka": True,
                "faust": True,
            }
            # Newest first, then an older detail and a duplicate: only the newest may stick.
            for status, update_time in ((30, 300), (20, 200), (30, 300)):
                reply = await client.post(f"/orders/3705115058471208928/status/{status}/{update_time}")
                assert reply.status_code == 200
            async with asyncio.timeout(60):
                while len(outcomes) < 3:
                    await asyncio.sleep(0.1)
            assert outcomes == [UpsertOutcome.INSERTED, UpsertOutcome.NOT_NEWER, UpsertOutcome.NOT_NEWER]
            stored = await mongo[database].orders.find_one({"_id": "3705115058471208928"})
            assert stored == {"_id": "3705115058471208928", "status": 30, "version": 300}
            assert isinstance(faust_app.producer, DurableProducer)
            await _wait_for_committed(stack, faust_app.conf.id, spec.name, 3)
    finally:
        await mongo.drop_database(database)
        await mongo.close()


async def test_a_stopping_worker_leaves_what_it_could_not_finish_for_the_next_one(stack: LocalStack) -> None:
    """A handler stuck past the stop grace (say, waiting out a WeChat outage) does not hold the
    shutdown: the worker stops, and the stuck message is not committed, so the next worker gets it."""
    settings = DispatchSettings(
        http_port=free_port(),
        kafka=KafkaSettings(bootstrap_servers=stack.kafka_bootstrap, default_partitions=1, stop_grace_s=1),
        mongo=MongoSettings(uri=stack.mongo_uri, database=f"t_{uuid.uuid4().hex[:10]}"),
    )
    spec = TopicSpec(f"test.faust-stop.{uuid.uuid4().hex[:8]}", "faust stop-grace test", partitions=1)
    await ensure_topics(settings.kafka, (spec,))
    group = f"test-{uuid.uuid4().hex[:8]}"
    never = asyncio.Event()

    def worker(seen: list[bytes], *, stuck_on: bytes | None) -> Any:
        faust_app = create_faust_app(settings, app_id=group)
        agents = OrderedAgents(faust_app, settings, batch_size=10)
        agents.consume("test", spec)

        async def handle(message: InboundMessage) -> None:
            seen.append(message.value)
            if message.value == stuck_on:
                await never.wait()

        async def bind(runtime: ServiceRuntime, stack: AsyncExitStack) -> None:
            agents.bind("test", handle, MessageProcessor(name="test", producer=runtime.producer))

        return create_service_app(settings, title="test", faust_app=faust_app, on_startup=[bind])

    first: list[bytes] = []
    async with serving(worker(first, stuck_on=b"stuck"), settings.http_port):
        producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for value in (b"one", b"two"):
                await producer.send_and_wait(spec.name, value, key=b"3705115058471208928")
            await _wait_for_committed(stack, group, spec.name, 2)
            await producer.send_and_wait(spec.name, b"stuck", key=b"3705115058471208928")
        finally:
            await producer.stop()
        async with asyncio.timeout(60):
            while len(first) < 3:
                await asyncio.sleep(0.1)
    # The block ended: the worker stopped although its handler never returned.
    assert first == [b"one", b"two", b"stuck"] and not never.is_set()
    assert await _committed_offsets(stack, group, spec.name) == 2
    second: list[bytes] = []
    async with serving(worker(second, stuck_on=None), settings.http_port):
        await _wait_for_committed(stack, group, spec.name, 3)
    assert second == [b"stuck"]


async def _committed_offsets(stack: LocalStack, group: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return sum(m.offset for tp, m in offsets.items() if tp.topic == topic)
    finally:
        await admin.close()


async def _wait_for_committed(stack: LocalStack, group: str, topic: str, total: int) -> None:
    async with asyncio.timeout(30):
        while await _committed_offsets(stack, group, topic) != total:
            await asyncio.sleep(0.3)
