"""The WeChat drop-ship mirror on the real stack: dispatch (its own consumer group) on the session's
Kafka and FerretDB, the WeChat stand-in on its own port. A shop with the mirror on has its dispatch
order assigned in WeChat (once, duplicates or not) and cancelled there with it; a shop without the
switch causes no drop-ship call at all."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr
from pymongo import AsyncMongoClient

from ops.stack import LocalStack, free_ports
from services.dispatch.catalog import Catalog, Supplier
from services.dispatch.domain.routing import Route
from services.dispatch.dropship import MIRRORS
from services.dispatch.main import create_app as create_dispatch
from shared.db import Document
from shared.events.dispatch import DISPATCH_EVENTS, DispatchMirrored, DispatchOffered
from shared.events.orders import OrderCancelled
from shared.kafka.admin import ensure_topics
from shared.kafka.producer import create_producer, publish
from shared.kafka.topics import ALL_TOPICS, DISPATCH_DROPSHIP, DISPATCH_PROGRESS, ORDERS
from shared.settings import DispatchSettings, KafkaSettings, MongoSettings, WeChatSettings
from shared.wechat.shops import Shop, ShopRepository
from sim.wechat.app import create_app as create_wechat_stand_in
from sim.wechat.settings import WeChatSimSettings
from tests.integration.dispatch_support import DispatchHarness, paid_order
from tests.integration.helpers import read_topic, serving

pytestmark = pytest.mark.integration

ASSIGN = "/channels/ec/order/dropship/assign"
CANCEL = "/channels/ec/order/dropship/cancel"
SUPPLIER_APPID = "wxsupplier7c3a9e01"
SECRET = "s3cret"
AES_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"


@dataclass
class MirrorLine:
    harness: DispatchHarness
    wechat: httpx.AsyncClient  # the stand-in: its control API under /sim
    bootstrap: str
    shop_on: str
    shop_off: str
    appid_on: str

    async def sim_order(self, skus: list[tuple[str, str, int]]) -> str:
        products = [{"product_id": p, "sku_id": s, "sku_cnt": n, "sale_price": 1000} for p, s, n in skus]
        body = {"appid": self.appid_on, "paid": True, "products": products}
        reply = await self.wechat.post("/sim/orders", json=body)
        assert reply.status_code == 200, reply.text
        return str(reply.json()["order_id"])

    async def calls(self, path: str, order_id: str) -> list[dict[str, Any]]:
        calls = (await self.wechat.get("/sim/calls", params={"path": path})).json()
        return [c for c in calls if str(c["request"].get("order_id")) == order_id]

    async def dropships(self, order_id: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = (
            await self.wechat.get("/sim/dropships", params={"order_id": order_id})
        ).json()
        return found


async def until(check: Callable[[], Any], *, timeout_s: float = 60, every_s: float = 0.2) -> Any:
    async with asyncio.timeout(timeout_s):
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result
            await asyncio.sleep(every_s)


@pytest.fixture(scope="module")
async def line(stack: LocalStack) -> AsyncIterator[MirrorLine]:
    group = uuid.uuid4().hex[:8]
    database = f"t_dropship_{group}"
    shop_on, shop_off = f"shop-ds-on-{group}", f"shop-ds-off-{group}"
    appid_on, appid_off = f"wx{group}00000001", f"wx{group}00000002"
    ports = dict(zip(("wechat", "dispatch"), free_ports(2), strict=True))
    wechat_url = f"http://127.0.0.1:{ports['wechat']}"
    # A fresh consumer group starting at the end: earlier tests' orders are not replayed.
    kafka = KafkaSettings(
        bootstrap_servers=stack.kafka_bootstrap, default_partitions=3, consumer_offset_reset="latest"
    )
    settings = DispatchSettings(
        http_port=ports["dispatch"],
        kafka=kafka,
        mongo=MongoSettings(uri=stack.mongo_uri, database=database),
        wechat=WeChatSettings(api_base=wechat_url, api_backoff_initial_s=0.05),
        kafka_group=f"test-dispatch-dropship-{group}",
        route_reload_interval_s=0.5,
    )
    await ensure_topics(kafka, ALL_TOPICS)
    mongo: AsyncMongoClient[Document] = AsyncMongoClient(stack.mongo_uri, tz_aware=True)
    db = mongo[database]
    shops = ShopRepository(db)
    for shop_id, appid in ((shop_on, appid_on), (shop_off, appid_off)):
        await shops.add(
            Shop(
                shop_id=shop_id,
                appid=appid,
                app_secret=SecretStr(SECRET),
                token=SecretStr("token"),
                encoding_aes_key=SecretStr(AES_KEY),
            )
        )
    assert (await shops.set_dropship_mirror(shop_on, on=True)).dropship_mirror
    catalog = Catalog(db)
    await catalog.add_supplier(Supplier(supplier_id="alpha", name="Alpha 供应链"))
    await catalog.set_wechat_supplier_appid("alpha", SUPPLIER_APPID)
    for shop_id in (shop_on, shop_off):
        await catalog.set_route(Route(shop_id=shop_id, supplier_id="alpha"))
    keys = {"alpha": (await catalog.create_key("alpha")).token}
    producer = create_producer(kafka, client_id="test-dropship")
    await producer.start()
    try:
        async with (
            serving(
                create_wechat_stand_in(settings=WeChatSimSettings(http_port=ports["wechat"])),
                ports["wechat"],
                ready_path="/sim/health",
            ),
            httpx.AsyncClient(base_url=wechat_url, timeout=10) as wechat,
        ):
            for appid in (appid_on, appid_off):
                body = {"appid": appid, "secret": SECRET, "token": "token", "encoding_aes_key": AES_KEY}
                assert (await wechat.post("/sim/shops", json=body)).status_code == 200
            async with serving(create_dispatch(settings), ports["dispatch"]) as base:
                harness = DispatchHarness(base, settings, catalog, producer, keys, shop_on, db)
                yield MirrorLine(harness, wechat, stack.kafka_bootstrap, shop_on, shop_off, appid_on)
    finally:
        await producer.stop()
        await mongo.drop_database(database)
        await mongo.close()


def _offered(order_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda change: (
        change["change"] == "dispatch_offered" and change["dispatch_order"]["order_id"] == order_id
    )


def _skipped_for_shop_off() -> float:
    return REGISTRY.get_sample_value("lvyue_dispatch_dropship_skipped_total", {"reason": "shop_off"}) or 0.0


async def test_a_mirrored_order_is_assigned_once_and_cancelled_in_wechat(line: MirrorLine) -> None:
    skus = [("p1", "s1", 2), ("p2", "s2", 1)]
    order_id = await line.sim_order(skus)
    paid = paid_order(line.shop_on, skus, order_id=order_id)
    await line.harness.publish(paid)
    await line.harness.publish(paid)  # WeChat pushes twice: one dispatch order all the same
    change, _ = await line.harness.wait_for("alpha", _offered(order_id))
    dispatch_id = change["dispatch_order"]["dispatch_id"]

    (assign,) = await until(lambda: line.calls(ASSIGN, order_id))
    assert assign["errcode"] == 0
    assert assign["request"]["supplier_appid"] == SUPPLIER_APPID
    assert sorted(
        (p["spu_id"], p["sku_id"], p["product_cnt"]) for p in assign["request"]["dropship_product_list"]
    ) == [("p1", "s1", 2), ("p2", "s2", 1)]
    (ds,) = await line.dropships(order_id)
    ds_order_id = ds["ds_order_id"]

    # Recorded: the supplier sees it, the record is in the database, the event is on the topic.
    async def shown() -> bool:
        async with line.harness.client("alpha") as alpha:
            view = (await alpha.get(f"/dispatch-orders/{dispatch_id}")).json()
        return bool(view.get("wechat_ds_order_id") == ds_order_id)

    await until(shown)
    stored = [d async for d in line.harness.db[MIRRORS].find({"key": dispatch_id})]
    assert max(stored, key=lambda d: d["revision"])["value"]["ds_orders"][0]["ds_order_id"] == ds_order_id

    def mirrored_event(records: list[Any]) -> DispatchMirrored | None:
        for record in records:
            if record.key == order_id.encode():
                event = DISPATCH_EVENTS.validate_json(record.value)
                if isinstance(event, DispatchMirrored):
                    return event
        return None

    records = await read_topic(
        line.bootstrap,
        (DISPATCH_DROPSHIP.name, DISPATCH_PROGRESS.name),
        until=lambda rs: mirrored_event(rs) is not None,
    )
    event = mirrored_event(records)
    assert event is not None and event.ds_order_id == ds_order_id and event.dispatch_id == dispatch_id

    # The offer delivered again (a redelivery after a crash, say) assigns nothing more.
    offered = next(
        r
        for r in records
        if r.topic == DISPATCH_DROPSHIP.name
        and r.key == order_id.encode()
        and isinstance(DISPATCH_EVENTS.validate_json(r.value), DispatchOffered)
    )
    await line.harness.producer.send_and_wait(
        DISPATCH_DROPSHIP.name, value=offered.value, key=offered.key, headers=list(offered.headers or ())
    )

    # The order is cancelled: dispatch cancels the dispatch order, the mirror cancels the ds order.
    cancelled = OrderCancelled(
        order_id=order_id, shop_id=line.shop_on, version=paid.version + 10, wechat_status=250
    )
    await publish(line.harness.producer, ORDERS, cancelled)
    (cancel,) = await until(lambda: line.calls(CANCEL, order_id))
    assert cancel["errcode"] == 0 and str(cancel["request"]["ds_order_id"]) == ds_order_id
    (ds,) = await line.dropships(order_id)
    assert ds["dropship_order_detail"]["product_infos"] == []  # every unit taken back
    assert len(await line.calls(ASSIGN, order_id)) == 1  # the duplicate offer, before the cancel: no call


async def test_a_shop_without_the_switch_makes_no_drop_ship_call(line: MirrorLine) -> None:
    skipped_before = _skipped_for_shop_off()
    order_id = await line.sim_order([("p1", "s1", 1)])
    await line.harness.publish(paid_order(line.shop_off, [("p1", "s1", 1)], order_id=order_id))
    await line.harness.wait_for("alpha", _offered(order_id))
    # The mirror saw the offer (and skipped it) once the counter moved: only then is "no call" a fact.
    await until(lambda: _skipped_for_shop_off() > skipped_before)
    assert await line.calls(ASSIGN, order_id) == []
    assert await line.dropships(order_id) == []
