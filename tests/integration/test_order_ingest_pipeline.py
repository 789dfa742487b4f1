"""WeChat stand-in -> webhook -> Kafka -> ingest worker -> FerretDB -> orders topic, on the real stack."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from ops.dlq import read_dead_letters
from ops.stack import LocalStack, free_ports
from services.order_ingest.main import create_app
from services.order_ingest.reconcile import reconcile_shop
from services.order_ingest.worker import ORDERS_COLLECTION
from shared.db import Document
from shared.events.dead_letter import DeadLetterReason
from shared.events.orders import ORDER_EVENTS, OrderCompleted, OrderPaid
from shared.events.shop_events import WeChatPushReceived
from shared.kafka.producer import create_producer
from shared.kafka.topics import ORDERS, ORDERS_COMPLETED, WECHAT_SHOP_EVENTS
from shared.settings import KafkaSettings, MongoSettings, OrderIngestSettings, WeChatSettings
from shared.versioned import revision_id
from shared.wechat.client import AccessTokenManager, WeChatShopClient
from shared.wechat.shops import Shop, ShopRepository
from sim.wechat.app import create_app as create_wechat_stand_in
from sim.wechat.settings import WeChatSimSettings
from tests.integration.helpers import read_topic, serving

pytestmark = pytest.mark.integration

APPID = "wx5823bf96d3bd56c7"
TOKEN = "QDG6eK"
KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
SHOP_ID = "live-shop-1"


@dataclass
class Pipeline:
    stack: LocalStack
    wechat: httpx.AsyncClient
    db: AsyncDatabase[Document]
    settings: OrderIngestSettings

    async def sim(self, method: str, route: str, /, **body: Any) -> Any:
        reply = await self.wechat.request(method, f"/sim{route}", json=body or None)
        assert reply.status_code == 200, reply.text
        return reply.json()

    async def fault(self, **fault: Any) -> None:
        await self.sim("POST", "/faults", **fault)


@pytest.fixture(scope="module")
async def pipeline(stack: LocalStack) -> AsyncIterator[Pipeline]:
    database = f"t_{uuid.uuid4().hex[:10]}"
    wechat_port, ingest_port = free_ports(2)
    wechat_base = f"http://127.0.0.1:{wechat_port}"
    stand_in = create_wechat_stand_in(settings=WeChatSimSettings(http_port=wechat_port, time_scale=100))
    settings = OrderIngestSettings(
        http_port=ingest_port,
        kafka=KafkaSettings(bootstrap_servers=stack.kafka_bootstrap),
        mongo=MongoSettings(uri=stack.mongo_uri, database=database),
        wechat=WeChatSettings(api_base=wechat_base, api_backoff_initial_s=0.05),
        kafka_group=f"test-ingest-{uuid.uuid4().hex[:8]}",
        reconcile_interval_s=0,
        worker_max_attempts=3,
        worker_backoff_initial_s=0.05,
    )
    mongo: AsyncMongoClient[Document] = AsyncMongoClient(stack.mongo_uri, tz_aware=True)
    db = mongo[database]
    await ShopRepository(db).add(
        Shop(
            shop_id=SHOP_ID,
            appid=APPID,
            app_secret=SecretStr("s3cret"),
            token=SecretStr(TOKEN),
            encoding_aes_key=SecretStr(KEY),
        )
    )
    try:
        async with (
            serving(stand_in, wechat_port, ready_path="/sim/health"),
            serving(create_app(settings), ingest_port) as ingest_base,
            httpx.AsyncClient(base_url=wechat_base, timeout=10) as wechat,
        ):
            line = Pipeline(stack, wechat, db, settings)
            await line.sim(
                "POST",
                "/shops",
                appid=APPID,
                secret="s3cret",
                token=TOKEN,
                encoding_aes_key=KEY,
                callback_url=f"{ingest_base}/wechat/callback/{SHOP_ID}",
            )
            yield line
    finally:
        await mongo.drop_database(database)
        await mongo.close()


async def order_events(line: Pipeline, order_id: str, done: Callable[[list[Any]], bool]) -> list[Any]:
    events: list[Any] = []

    def collect(records: list[Any]) -> bool:
        events[:] = [ORDER_EVENTS.validate_json(r.value) for r in records if r.key == order_id.encode()]
        return done(events)

    await read_topic(line.stack.kafka_bootstrap, ORDERS.name, until=collect, timeout_s=60)
    return events


async def stored_order(
    line: Pipeline, order_id: str, status: int, *, paid_published: bool | None = None
) -> Document:
    """The stored order once it has `status` (and, if asked, once its paid event is recorded)."""

    def ready(doc: Document | None) -> bool:
        if doc is None or doc["order"]["status"] != status:
            return False
        return paid_published is None or doc["published"]["paid"] is paid_published

    async def newest() -> Document | None:
        """The newest of the order's insert-only version documents (`<order_id>#<revision>`)."""
        found: Document | None = None
        for revision in range(1, 1000):
            document = await line.db[ORDERS_COLLECTION].find_one({"_id": revision_id(order_id, revision)})
            if document is None:
                return found
            found = document["value"]
        return found

    async with asyncio.timeout(60):
        while not ready(doc := await newest()):
            await asyncio.sleep(0.1)
    assert doc is not None
    return doc


async def test_a_paid_order_becomes_one_order_paid_event(pipeline: Pipeline) -> None:
    order = await pipeline.sim(
        "POST",
        "/orders",
        appid=APPID,
        paid=True,
        products=[{"sku_cnt": 2, "sale_price": 1990}, {"sku_cnt": 1, "sale_price": 990}],
    )
    order_id = str(order["order_id"])
    assert int(order_id) > 2**53
    events = await order_events(pipeline, order_id, lambda e: any(isinstance(x, OrderPaid) for x in e))
    [paid] = [e for e in events if isinstance(e, OrderPaid)]
    assert paid.order_id == order_id and paid.shop_id == SHOP_ID
    assert [line.quantity for line in paid.lines] == [2, 1]
    assert paid.ship_by is not None and paid.receiver.name
    stored = await stored_order(pipeline, order_id, 20, paid_published=True)
    assert stored["order"]["order_id"] == order_id and stored["shop_id"] == SHOP_ID


async def test_the_same_push_three_times_takes_effect_once(pipeline: Pipeline) -> None:
    await pipeline.fault(fault="duplicate_pushes", times=2, count=2)  # new and pay, each ×3
    order = await pipeline.sim("POST", "/orders", appid=APPID, paid=True)
    order_id = str(order["order_id"])
    await stored_order(pipeline, order_id, 20)
    raw = await read_topic(
        pipeline.stack.kafka_bootstrap,
        WECHAT_SHOP_EVENTS.name,
        until=lambda rs: sum(r.key == order_id.encode() for r in rs) >= 6,
    )
    assert sum(r.key == order_id.encode() for r in raw) >= 6  # every copy was acknowledged and stored
    await asyncio.sleep(2)  # let every copy through the worker
    events = await order_events(pipeline, order_id, lambda e: len(e) >= 1)
    assert len({e.event_id for e in events}) == 1 and isinstance(events[0], OrderPaid)


async def test_a_cancellation_pushed_before_the_order_itself_publishes_nothing(pipeline: Pipeline) -> None:
    await pipeline.fault(fault="hold_pushes", count=2)  # new, cancel: sent newest first
    order = await pipeline.sim("POST", "/orders", appid=APPID)
    order_id = str(order["order_id"])
    await pipeline.sim("POST", f"/orders/{order_id}/cancel", cancel_type=2)  # unpaid, timed out
    cancelled = await stored_order(pipeline, order_id, 250)
    assert cancelled["published"]["paid"] is False and cancelled["published"]["cancelled"] is True
    await asyncio.sleep(2)
    raw = await read_topic(pipeline.stack.kafka_bootstrap, ORDERS.name, until=None, timeout_s=3)
    assert [r for r in raw if r.key == order_id.encode()] == []


async def test_pay_pushed_before_new_still_gives_one_order_paid(pipeline: Pipeline) -> None:
    await pipeline.fault(fault="hold_pushes", count=2)  # new, pay: sent newest first
    order = await pipeline.sim("POST", "/orders", appid=APPID, paid=True)
    order_id = str(order["order_id"])
    await stored_order(pipeline, order_id, 20)
    events = await order_events(pipeline, order_id, lambda e: len(e) >= 1)
    await asyncio.sleep(1)
    events = await order_events(pipeline, order_id, lambda e: len(e) >= 1)
    assert [type(e) for e in events] == [OrderPaid]


async def _publish_pushes(line: Pipeline, *pushes: WeChatPushReceived) -> None:
    """Straight onto the webhook's topic, in order (as the webhook would have stored them)."""
    producer = create_producer(KafkaSettings(bootstrap_servers=line.stack.kafka_bootstrap), client_id="t")
    await producer.start()
    try:
        for push in pushes:
            await producer.send_and_wait(
                WECHAT_SHOP_EVENTS.name, value=push.to_kafka_value(), key=push.kafka_key
            )
    finally:
        await producer.stop()


async def test_a_push_the_stored_detail_already_answers_asks_wechat_nothing(pipeline: Pipeline) -> None:
    order = await pipeline.sim("POST", "/orders", appid=APPID, paid=True)
    order_id = str(order["order_id"])
    await stored_order(pipeline, order_id, 20, paid_published=True)

    async def fetches() -> int:
        calls = await pipeline.sim("GET", "/calls?path=/channels/ec/order/get")
        return sum(str(c["request"].get("order_id")) == order_id for c in calls)

    async def fetches_become(count: int) -> None:
        async with asyncio.timeout(60):
            while await fetches() < count:
                await asyncio.sleep(0.2)
        await asyncio.sleep(1)  # nothing more is on its way: the pushes are taken in partition order
        assert await fetches() == count

    before = await fetches()
    assert 1 <= before <= 2  # new and pay: the pay push needs none when the new push's fetch shows it paid

    def push(event: str, received_s_ago: float) -> WeChatPushReceived:
        return WeChatPushReceived(
            occurred_at=datetime.now(UTC) - timedelta(seconds=received_s_ago),
            shop_id=SHOP_ID,
            event=event,
            create_time=int(order["create_time"]),
            dedupe_key=f"{event}-copy-{received_s_ago}:{order_id}",
            order_id=order_id,
            partition_key=order_id,
            payload={"order_info": {"order_id": int(order_id)}},
        )

    # By time: a push received a minute ago (before the worker fetched the order), then one received now.
    ext_info = "channels_ec_order_ext_info_update"  # not visible in the status: only time can answer it
    await _publish_pushes(pipeline, push(ext_info, received_s_ago=60), push(ext_info, received_s_ago=0))
    await fetches_become(before + 1)  # only the copy received after the fetch asked WeChat again
    # By content: a pay push received now, for an order stored as awaiting shipment, is a late copy;
    # so is a delivery push (our own shipment). The ext-info push behind them shows they were handled.
    await _publish_pushes(
        pipeline,
        push("channels_ec_order_pay", 0),
        push("channels_ec_order_deliver", 0),
        push(ext_info, received_s_ago=0),
    )
    await fetches_become(before + 2)  # the ext-info push's fetch, none for the pay and delivery pushes
    events = await order_events(pipeline, order_id, lambda e: len(e) >= 1)
    assert [type(e) for e in events] == [OrderPaid]

    # A confirmation completes the stored detail without asking WeChat: logistics hears of it.
    await _publish_pushes(pipeline, push("channels_ec_order_confirm", received_s_ago=0))
    completed = await read_topic(
        pipeline.stack.kafka_bootstrap,
        ORDERS_COMPLETED.name,
        until=lambda rs: any(r.key == order_id.encode() for r in rs),
        timeout_s=60,
    )
    (event,) = [ORDER_EVENTS.validate_json(r.value or b"") for r in completed if r.key == order_id.encode()]
    assert isinstance(event, OrderCompleted)
    await fetches_become(before + 2)


async def test_a_token_expiring_mid_run_is_refreshed_once_and_the_order_goes_through(
    pipeline: Pipeline,
) -> None:
    first = await pipeline.sim("POST", "/orders", appid=APPID, paid=True)
    await stored_order(pipeline, str(first["order_id"]), 20)
    await pipeline.fault(fault="expire_tokens", appid=APPID)
    second = await pipeline.sim("POST", "/orders", appid=APPID, paid=True)
    await stored_order(pipeline, str(second["order_id"]), 20)
    calls = await pipeline.sim("GET", "/calls")
    rejected = [c for c in calls if c["path"] == "/channels/ec/order/get" and c["errcode"] in (40001, 42001)]
    assert rejected, "the expired token was used once and refused"
    assert any(c["path"] == "/cgi-bin/stable_token" and c["at"] > rejected[0]["at"] for c in calls)


async def test_busy_wechat_is_retried_and_a_missing_order_is_dead_lettered(pipeline: Pipeline) -> None:
    await pipeline.fault(fault="busy", count=2, path="/channels/ec/order/get")
    busy = await pipeline.sim("POST", "/orders", appid=APPID, paid=True)
    await stored_order(pipeline, str(busy["order_id"]), 20)

    # A push for an order WeChat does not know: retried, then parked with its reason.
    ghost = "3705115058471299999"
    push = WeChatPushReceived(
        shop_id=SHOP_ID,
        event="channels_ec_order_pay",
        create_time=1,
        dedupe_key=f"pay:{ghost}",
        order_id=ghost,
        partition_key=ghost,
        payload={"order_info": {"order_id": int(ghost)}},
    )
    await _publish_pushes(pipeline, push)
    async with asyncio.timeout(60):
        while True:
            letters = await read_dead_letters(
                KafkaSettings(bootstrap_servers=pipeline.stack.kafka_bootstrap),
                [WECHAT_SHOP_EVENTS.dead_letter_name],
            )
            mine = [letter for _, letter in letters if letter.order_id == ghost]
            if mine:
                break
            await asyncio.sleep(0.5)
    assert mine[0].reason is DeadLetterReason.RETRIES_EXHAUSTED and "100002" in mine[0].detail
    assert mine[0].consumer == "order_ingest"


async def test_reconciliation_ingests_an_order_whose_pushes_never_arrived(pipeline: Pipeline) -> None:
    await pipeline.fault(fault="hold_pushes")  # held until released: the webhook never hears of it
    order = await pipeline.sim("POST", "/orders", appid=APPID, paid=True)
    order_id = str(order["order_id"])
    shop = await ShopRepository(pipeline.db).get(SHOP_ID)
    assert shop is not None
    settings = pipeline.settings
    producer = create_producer(settings.kafka, client_id="test-reconcile")
    await producer.start()
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            client = WeChatShopClient(
                http, AccessTokenManager(pipeline.db, http, settings.wechat), settings.wechat
            )
            trusted = await reconcile_shop(  # what the worker's projection holds is not looked up
                shop, client=client, db=pipeline.db, producer=producer, window_s=3600, known=lambda _: True
            )
            assert trusted == []
            queued = await reconcile_shop(
                shop, client=client, db=pipeline.db, producer=producer, window_s=3600
            )
            assert order_id in queued
            stored = await stored_order(pipeline, order_id, 20, paid_published=True)
            assert stored["order"]["order_id"] == order_id
            # A second pass finds nothing new to queue for it.
            again = await reconcile_shop(
                shop, client=client, db=pipeline.db, producer=producer, window_s=3600
            )
            assert order_id not in again
    finally:
        await producer.stop()
        await pipeline.fault(fault="clear")
    calls = await pipeline.sim("GET", "/calls")
    assert any(c["path"] == "/channels/ec/order/list/get" and c["errcode"] == 0 for c in calls)
