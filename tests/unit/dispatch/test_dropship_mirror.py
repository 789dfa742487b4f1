"""The drop-ship mirror's consumer against the WeChat stand-in in-process (real client, no network,
records in memory): the switch, duplicates, a lost answer reconciled instead of a second assign,
refusals recorded, set-up refusals dead-lettered."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from services.dispatch.domain import dispatch_order as dispatch
from services.dispatch.domain.dispatch_order import DispatchOrder
from services.dispatch.domain.dropship import DropshipMirror
from services.dispatch.dropship import DropshipMirrors, OutcomeUnclear
from shared.events.base import Event
from shared.events.dead_letter import DeadLetterReason
from shared.events.dispatch import (
    DispatchEvent,
    DispatchLine,
    DispatchMirrorCancelled,
    DispatchMirrored,
    DispatchMirrorFailed,
    MirrorFailureReason,
    RejectReason,
)
from shared.kafka.consumer import InboundMessage, PermanentFailure
from shared.kafka.producer import event_headers
from shared.kafka.topics import DISPATCH_DROPSHIP
from shared.settings import WeChatSettings
from shared.wechat.client import WeChatShopClient
from shared.wechat.shops import Shop
from sim.wechat.app import create_app
from sim.wechat.state import Shop as SimShop
from sim.wechat.state import SimState
from sim.wechat.testing import SimClient
from tests.unit.dispatch.builders import ADDRESS, PAID_AT, SHIP_BY, T0, at
from tests.unit.dispatch.test_dropship import offer_event

APPID = "wx5823bf96d3bd56c7"
SECRET = "s3cret"
SUPPLIER_APPID = "wxsupplier0001"
ASSIGN = "/channels/ec/order/dropship/assign"
CANCEL = "/channels/ec/order/dropship/cancel"


def shop(shop_id: str, *, mirror: bool) -> Shop:
    return Shop(
        shop_id=shop_id,
        appid=APPID,
        app_secret=SecretStr(SECRET),
        token=SecretStr("t"),
        encoding_aes_key=SecretStr("A" * 43),
        dropship_mirror=mirror,
    )


SHOPS = {"on": shop("on", mirror=True), "off": shop("off", mirror=False)}


class Records:
    """VersionedProjection's behaviour, in memory: the newest record per key, every revision kept."""

    def __init__(self) -> None:
        self.current: dict[str, DropshipMirror] = {}
        self.history: list[DropshipMirror] = []
        self._locks: dict[str, asyncio.Lock] = {}

    def get(self, key: str) -> DropshipMirror | None:
        return self.current.get(key)

    def __iter__(self) -> Iterator[DropshipMirror]:
        return iter(list(self.current.values()))

    def lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def save(
        self, key: str, value: DropshipMirror, *, cause: str, extra: dict[str, Any] | None = None
    ) -> DropshipMirror:
        self.current[key] = value
        self.history.append(value)
        return value


class Shops:
    async def get(self, shop_id: str) -> Shop | None:
        return SHOPS.get(shop_id)


@dataclass
class Suppliers:
    appids: dict[str, str] = field(default_factory=lambda: {"sup-a": SUPPLIER_APPID})

    async def wechat_supplier_appid(self, supplier_id: str) -> str | None:
        return self.appids.get(supplier_id)


class LosingAnswers(httpx.AsyncBaseTransport):
    """Delivers requests to the stand-in; for the paths in `lose`, WeChat acts but the answer is lost."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.lose: list[str] = []
        self.as_documented = False  # assign answers errcode/errmsg only, as the docs show it

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path in self.lose:
            self.lose.remove(request.url.path)
            await response.aread()
            raise httpx.ReadTimeout("the answer was lost", request=request)
        if self.as_documented and request.url.path == ASSIGN:
            answer = json.loads(await response.aread())
            answer.pop("ds_order_id", None)
            return httpx.Response(200, json=answer)
        return response


@dataclass
class World:
    state: SimState
    sim: SimClient
    transport: LosingAnswers
    records: Records
    published: list[Event]
    mirrors: DropshipMirrors

    def calls(self, path: str) -> list[dict[str, Any]]:
        return [c.request for c in self.state.calls.calls(path=path)]

    async def paid_order(self, *, paid: bool = True) -> str:
        products = [
            {"product_id": "p-sku-0", "sku_id": "sku-0", "sku_cnt": 2, "sale_price": 5000},
            {"product_id": "p-sku-1", "sku_id": "sku-1", "sku_cnt": 1, "sale_price": 3000},
        ]
        order = await self.sim.control("/sim/orders", {"appid": APPID, "paid": paid, "products": products})
        return str(order["order_id"])


class ByShopId:
    """ShopApi's face over a client: the shop by our id."""

    def __init__(self, client: WeChatShopClient) -> None:
        self._client = client

    async def call(
        self, shop_id: str, path: str, body: dict[str, Any], *, idempotent: bool = True
    ) -> dict[str, Any]:
        return await self._client.call(SHOPS[shop_id], path, body, idempotent=idempotent)


class SimTokens:
    def __init__(self, sim: SimClient) -> None:
        self._sim = sim

    async def token(self, shop: Shop, *, rejected: str | None = None) -> str:
        return await self._sim.token(shop.appid)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    state = SimState(seed=3)  # the real clock: list lookups compare create_time with ours
    state.register_shop(SimShop(appid=APPID, secret=SECRET, token="AAAAA", encoding_aes_key="A" * 43))
    transport = LosingAnswers(httpx.ASGITransport(app=create_app(state)))
    async with httpx.AsyncClient(transport=transport, base_url="http://api.weixin.test") as http:
        sim = SimClient(http, {APPID: SECRET})
        settings = WeChatSettings(api_base="http://api.weixin.test", api_backoff_initial_s=0.001)
        records, published = Records(), []

        async def publish(event: Event) -> None:
            published.append(event)

        mirrors = DropshipMirrors(
            records=records,
            wechat=ByShopId(WeChatShopClient(http, SimTokens(sim), settings)),
            shops=Shops(),
            suppliers=Suppliers(),
            publish=publish,
        )
        yield World(state, sim, transport, records, published, mirrors)


def offer(order_id: str, *, shop_id: str = "on", supplier_id: str = "sup-a") -> DispatchOrder:
    return dispatch.offer(
        dispatch_id=f"{order_id}-1",
        order_id=order_id,
        shop_id=shop_id,
        supplier_id=supplier_id,
        lines=[
            DispatchLine(line_no=0, product_id="p-sku-0", sku_id="sku-0", quantity=2),
            DispatchLine(line_no=1, product_id="p-sku-1", sku_id="sku-1", quantity=1),
        ],
        receiver=ADDRESS,
        ship_by=SHIP_BY,
        paid_at=PAID_AT,
        now=T0,
    ).order


def message(event: DispatchEvent) -> InboundMessage:
    return InboundMessage(
        topic="dispatch",
        partition=0,
        offset=0,
        key=event.kafka_key,
        value=event.to_kafka_value(),
        headers=tuple(event_headers(event)),
    )


def offered_message(order: DispatchOrder) -> InboundMessage:
    return message(offer_event(order))


def rejected_message(order: DispatchOrder) -> InboundMessage:
    (event,) = dispatch.reject(order, reason=RejectReason.OUT_OF_STOCK, text="", now=at(1)).events
    return message(event)


async def test_a_mirrored_offer_is_assigned_once_and_cancelled_when_rejected(world: World) -> None:
    order = offer(await world.paid_order())
    await world.mirrors.handle_dispatch_event(offered_message(order))
    await world.mirrors.handle_dispatch_event(offered_message(order))  # redelivered
    (assign,) = world.calls(ASSIGN)
    assert assign["supplier_appid"] == SUPPLIER_APPID and assign["order_id"] == order.order_id
    assert assign["dropship_product_list"] == [
        {"spu_id": "p-sku-0", "sku_id": "sku-0", "product_cnt": 2},
        {"spu_id": "p-sku-1", "sku_id": "sku-1", "product_cnt": 1},
    ]
    ds_order_id = world.mirrors.ds_order_id(order.dispatch_id)
    assert ds_order_id is not None and ds_order_id in world.state.orders.dropships
    (mirrored,) = world.published
    assert isinstance(mirrored, DispatchMirrored) and mirrored.ds_order_id == ds_order_id
    record = world.records.get(order.dispatch_id)
    assert record is not None and record.outbox == [] and record.pending is None

    await world.mirrors.handle_dispatch_event(rejected_message(order))
    (cancel,) = world.calls(CANCEL)
    assert cancel["ds_order_id"] == ds_order_id and len(cancel["dropship_product_list"]) == 2
    assert isinstance(world.published[-1], DispatchMirrorCancelled)
    assert world.mirrors.ds_order_id(order.dispatch_id) is None
    await world.mirrors.handle_dispatch_event(rejected_message(order))  # redelivered
    assert len(world.calls(CANCEL)) == 1


async def test_no_wechat_call_without_the_switch_or_the_suppliers_appid(world: World) -> None:
    order_id = await world.paid_order()
    await world.mirrors.handle_dispatch_event(offered_message(offer(order_id, shop_id="off")))
    await world.mirrors.handle_dispatch_event(offered_message(offer(order_id, shop_id="unknown")))
    await world.mirrors.handle_dispatch_event(offered_message(offer(order_id, supplier_id="sup-b")))
    await world.mirrors.handle_dispatch_event(rejected_message(offer(order_id, shop_id="off")))
    assert world.state.calls.calls() == [] and world.records.current == {} and world.published == []


async def test_dispatch_copies_to_the_mirror_only_changes_of_shops_with_it_on_or_of_mirrored_orders(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    order_id = await world.paid_order()
    on, off = offer(order_id), offer(await world.paid_order(), shop_id="off")
    assert await world.mirrors.follows(offer_event(on))
    assert not await world.mirrors.follows(offer_event(off))
    assert not await world.mirrors.follows(offer_event(offer(await world.paid_order(), shop_id="unknown")))
    accepted = dispatch.accept(on, estimated_ship_at=None, now=at(1)).events[0]
    assert accepted.event_type not in DISPATCH_DROPSHIP.carries
    assert not await world.mirrors.follows(accepted)  # moves no unit

    monkeypatch.setitem(SHOPS, "on", shop("on", mirror=False))  # off before the mirror read the offer
    (rejected,) = dispatch.reject(on, reason=RejectReason.OUT_OF_STOCK, text="", now=at(2)).events
    assert await world.mirrors.follows(rejected)  # copied offer: its changes follow it
    await world.mirrors.handle_dispatch_event(offered_message(on))
    assert await world.mirrors.follows(rejected)  # recorded: followed for good


async def test_a_lost_assign_answer_is_looked_up_not_assigned_again(world: World) -> None:
    order = offer(await world.paid_order())
    world.transport.lose.append(ASSIGN)
    with pytest.raises(OutcomeUnclear):
        await world.mirrors.handle_dispatch_event(offered_message(order))
    record = world.records.get(order.dispatch_id)
    assert record is not None and record.pending is not None  # recorded before the call
    (ds_order_id,) = world.state.orders.dropships  # WeChat did act

    await world.mirrors.handle_dispatch_event(offered_message(order))  # the consumer's retry
    assert len(world.calls(ASSIGN)) == 1
    assert world.calls("/channels/ec/order/dropship/list") and world.calls("/channels/ec/order/dropship/get")
    assert world.mirrors.ds_order_id(order.dispatch_id) == ds_order_id
    assert [type(e) for e in world.published] == [DispatchMirrored]


async def test_an_answer_without_the_ds_order_id_is_completed_by_a_lookup(world: World) -> None:
    world.transport.as_documented = True
    order = offer(await world.paid_order())
    await world.mirrors.handle_dispatch_event(offered_message(order))
    (ds_order_id,) = world.state.orders.dropships
    assert world.mirrors.ds_order_id(order.dispatch_id) == ds_order_id
    assert len(world.calls(ASSIGN)) == 1
    (mirrored,) = world.published
    assert isinstance(mirrored, DispatchMirrored) and mirrored.ds_order_id == ds_order_id


async def test_an_assign_that_never_reached_wechat_is_made_after_the_lookup(world: World) -> None:
    order = offer(await world.paid_order())
    # A busy WeChat (-1): the client does not send a non-idempotent call again (WeChat might have acted).
    world.state.faults.add_errcode(-1, count=1, path=ASSIGN)
    with pytest.raises(OutcomeUnclear):
        await world.mirrors.handle_dispatch_event(offered_message(order))
    assert world.state.orders.dropships == {}
    await world.mirrors.handle_dispatch_event(offered_message(order))
    assert len(world.calls(ASSIGN)) == 2 and len(world.state.orders.dropships) == 1
    assert world.mirrors.ds_order_id(order.dispatch_id) in world.state.orders.dropships


async def test_a_refusal_for_good_is_recorded_and_published_not_retried(world: World) -> None:
    order = offer(await world.paid_order(paid=False))  # not awaiting shipment: 610001
    await world.mirrors.handle_dispatch_event(offered_message(order))
    await world.mirrors.handle_dispatch_event(offered_message(order))
    assert len(world.calls(ASSIGN)) == 1
    (failed,) = world.published
    assert isinstance(failed, DispatchMirrorFailed)
    assert failed.reason == MirrorFailureReason.ORDER_NOT_AWAITING_SHIPMENT and failed.errcode == 610001
    record = world.records.get(order.dispatch_id)
    assert record is not None and record.assign_refused is not None


async def test_a_refusal_of_the_set_up_is_dead_lettered_and_asked_again_on_replay(world: World) -> None:
    order = offer(await world.paid_order())
    world.state.faults.add_errcode(610000, count=1, path=ASSIGN)  # supplier not linked
    with pytest.raises(PermanentFailure) as raised:
        await world.mirrors.handle_dispatch_event(offered_message(order))
    assert raised.value.reason == DeadLetterReason.PERMANENT_API_ERROR
    record = world.records.get(order.dispatch_id)
    assert record is not None and record.pending is None and record.assign_refused is None
    await world.mirrors.handle_dispatch_event(offered_message(order))  # replayed once linked
    assert len(world.calls(ASSIGN)) == 2 and world.mirrors.ds_order_id(order.dispatch_id) is not None


async def test_undecodable_events_are_dead_lettered_and_other_events_skipped_unread(world: World) -> None:
    skipped = InboundMessage("dispatch", 0, 0, b"1", b"not json", headers=(("event_type", b"order_held"),))
    await world.mirrors.handle_dispatch_event(skipped)
    broken = InboundMessage(
        "dispatch", 0, 0, b"1", b"{not json", headers=(("event_type", b"dispatch_offered"),)
    )
    with pytest.raises(PermanentFailure) as raised:
        await world.mirrors.handle_dispatch_event(broken)
    assert raised.value.reason == DeadLetterReason.UNDECODABLE


async def test_unpublished_events_are_published_at_start_up(world: World) -> None:
    order = offer(await world.paid_order())
    await world.mirrors.handle_dispatch_event(offered_message(order))
    record = world.records.get(order.dispatch_id)
    assert record is not None
    unpublished = world.records.history[-2]  # as written before a crash between write and publish
    assert unpublished.outbox
    world.records.current[order.dispatch_id] = unpublished
    world.published.clear()
    assert await world.mirrors.flush_outboxes() == 1
    assert [e.event_id for e in world.published] == [e.event_id for e in unpublished.outbox]
