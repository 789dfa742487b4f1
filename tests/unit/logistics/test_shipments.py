"""Shipments from the dispatch topic, through the logistics handler with fakes (records in memory, a
WeChat that answers what it is told to, a producer that keeps what it is given): the order's own
parcels are told with delivery/send; an after-sale replacement's parcels are tracked and watched like
any other but never sent with delivery/send nor held, and announced once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

import pytest
from prometheus_client import REGISTRY
from pydantic import BaseModel

from services.logistics.domain.deadlines import DeadlinePolicy
from services.logistics.domain.tracking import parcel_key
from services.logistics.handlers import DELIVERY_SEND, GET_AFTERSALE, ORDER_GET, Logistics
from shared.events.dispatch import (
    ChangeKind,
    ChangeRequest,
    ChangeStatus,
    DispatchChangeAnswered,
    DispatchLine,
    DispatchOffered,
    DispatchShipped,
    DispatchState,
    Parcel,
    ParcelLine,
    ShippingAddress,
)
from shared.events.logistics import (
    LOGISTICS_EVENTS,
    AnyLogisticsEvent,
    DeliveryOutcome,
    ShipmentReported,
    TrackingSource,
    TrackingState,
)
from shared.kafka.consumer import InboundMessage, PermanentFailure
from shared.kafka.topics import DISPATCH, LOGISTICS
from shared.locks import KeyedLocks
from shared.versioned import VersionedProjection
from shared.wechat.client import WeChatApiError
from tests.unit.logistics.builders import ORDER_ID, SHOP, T0, at, entry

M = TypeVar("M", bound=BaseModel)

CASE_ID = "4500000001"
ADDRESS = ShippingAddress(
    name="张三", phone="13800000000", province="广东省", city="广州市", county="天河区", detail="1号"
)
LINES = [DispatchLine(line_no=0, product_id="10000", sku_id="20000", quantity=1, shipped_quantity=1)]


class InMemory(VersionedProjection[M]):
    """VersionedProjection's behaviour without a database: the newest value per key."""

    def __init__(self) -> None:
        self._current: dict[str, M] = {}
        self._revisions: dict[str, int] = {}
        self._locks = KeyedLocks()

    async def save(self, key: str, value: M, *, cause: str, extra: dict[str, Any] | None = None) -> M:
        self._revisions[key] = self._revisions.get(key, 0) + 1
        self._current[key] = value
        return value


@dataclass
class WeChat:
    """Answers every call with `errcode` (0: accepted)."""

    errcode: int = 0
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def call(self, shop_id: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((path, body))
        if self.errcode:
            raise WeChatApiError(path, self.errcode, "refused")
        return {"errcode": 0, "errmsg": "ok"}


@dataclass
class Producer:
    sent: list[tuple[str, bytes]] = field(default_factory=list)

    async def send_and_wait(self, topic: str, *, value: bytes, key: bytes | None, **_: Any) -> None:
        self.sent.append((topic, value))

    async def send(self, topic: str, *, value: bytes, key: bytes | None, **_: Any) -> asyncio.Future[None]:
        self.sent.append((topic, value))
        delivered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        delivered.set_result(None)
        return delivered

    def published(self) -> list[AnyLogisticsEvent]:
        return [LOGISTICS_EVENTS.validate_json(v) for topic, v in self.sent if topic == LOGISTICS.name]


@dataclass
class Subscriber:
    waybills: list[tuple[str, str]] = field(default_factory=list)

    async def subscribe(self, carrier_code: str, waybill_no: str) -> None:
        self.waybills.append((carrier_code, waybill_no))


@dataclass
class World:
    logistics: Logistics
    wechat: WeChat
    producer: Producer
    subscriber: Subscriber
    offset: int = 0

    async def deliver(self, event: DispatchOffered | DispatchShipped) -> None:
        self.offset += 1
        message = InboundMessage(
            DISPATCH.name, 0, self.offset, event.order_id.encode(), event.to_kafka_value()
        )
        await self.logistics.handle_dispatch_event(message)

    def delivery_sends(self) -> list[dict[str, Any]]:
        return [body for path, body in self.wechat.calls if path == DELIVERY_SEND]

    def reports(self) -> list[ShipmentReported]:
        return [e for e in self.producer.published() if isinstance(e, ShipmentReported)]


@pytest.fixture
def world() -> World:
    return logistics_world(WeChat())


def logistics_world(wechat: WeChat, clock: Callable[[], datetime] = lambda: at(1)) -> World:
    """Logistics over in-memory projections, its producer, WeChat and tracking subscriber recorded."""
    producer, subscriber = Producer(), Subscriber()
    logistics = Logistics(
        parcels=InMemory(),
        deliveries=InMemory(),
        ship_by=InMemory(),
        orphans=InMemory(),
        alerts=InMemory(),
        confirmed_orders=InMemory(),
        held=InMemory(),
        producer=producer,
        wechat=wechat,
        subscriber=subscriber,
        policy=DeadlinePolicy(),
        clock=clock,
    )
    return World(logistics, wechat, producer, subscriber)


def offered(dispatch_id: str, *, case_id: str | None) -> DispatchOffered:
    return DispatchOffered(
        order_id=ORDER_ID,
        occurred_at=T0,
        dispatch_id=dispatch_id,
        shop_id=SHOP,
        supplier_id="sup-a",
        version=1,
        state=DispatchState.OFFERED,
        lines=[line.model_copy(update={"shipped_quantity": 0}) for line in LINES],
        receiver=ADDRESS,
        ship_by=T0 + timedelta(days=2),
        paid_at=T0,
        aftersale_case_id=case_id,
    )


def shipped(
    dispatch_id: str, waybill: str, *, case_id: str | None, occurred_at: datetime = T0
) -> DispatchShipped:
    return DispatchShipped(
        order_id=ORDER_ID,
        occurred_at=occurred_at,
        dispatch_id=dispatch_id,
        shop_id=SHOP,
        supplier_id="sup-a",
        version=3,
        state=DispatchState.SHIPPED,
        parcels=[
            Parcel(
                parcel_no=1,
                carrier_code="ZTO",
                waybill_no=waybill,
                lines=[ParcelLine(line_no=0, quantity=1)],
                shipped_at=occurred_at,
            )
        ],
        lines=LINES,
        aftersale_case_id=case_id,
    )


def shipments_counted(outcome: DeliveryOutcome) -> float:
    value = REGISTRY.get_sample_value("lvyue_logistics_shipments_total", {"outcome": outcome.value})
    return value or 0.0


async def test_the_orders_own_shipment_is_told_with_delivery_send(world: World) -> None:
    told_before = shipments_counted(DeliveryOutcome.TOLD)

    await world.deliver(shipped(f"{ORDER_ID}-1", "78800000001", case_id=None))

    [body] = world.delivery_sends()
    assert body["order_id"] == int(ORDER_ID)
    assert [p["waybill_id"] for p in body["delivery_list"]] == ["78800000001"]
    [report] = world.reports()
    assert report.outcome == DeliveryOutcome.TOLD
    assert [p.waybill_no for p in report.parcels] == ["78800000001"]
    assert shipments_counted(DeliveryOutcome.TOLD) == told_before + 1


async def test_a_replacement_is_tracked_but_never_sent_with_delivery_send(world: World) -> None:
    counted_before = shipments_counted(DeliveryOutcome.AFTERSALE_REPLACEMENT)

    await world.deliver(shipped(f"{ORDER_ID}-2", "78800000002", case_id=CASE_ID))

    assert world.wechat.calls == []
    key = parcel_key("ZTO", "78800000002")
    tracking = world.logistics.parcels.get(key)
    assert tracking is not None and tracking.parcel.dispatch_id == f"{ORDER_ID}-2"
    assert world.subscriber.waybills == [("ZTO", "78800000002")]
    [report] = world.reports()
    assert report.outcome == DeliveryOutcome.AFTERSALE_REPLACEMENT
    assert (report.order_id, report.shop_id, report.errcode) == (ORDER_ID, SHOP, 0)
    assert [(p.dispatch_id, p.waybill_no) for p in report.parcels] == [(f"{ORDER_ID}-2", "78800000002")]
    assert list(world.logistics.held) == []
    assert shipments_counted(DeliveryOutcome.AFTERSALE_REPLACEMENT) == counted_before + 1


async def test_a_redelivered_replacement_is_announced_once(world: World) -> None:
    event = shipped(f"{ORDER_ID}-2", "78800000002", case_id=CASE_ID)

    await world.deliver(event)
    await world.deliver(event)

    assert world.wechat.calls == []
    assert len(world.reports()) == 1


async def test_a_replacement_is_not_held_while_its_case_is_open(world: World) -> None:
    world.wechat.errcode = 108009  # what delivery/send answers while the exchange is open

    await world.deliver(shipped(f"{ORDER_ID}-2", "78800000002", case_id=CASE_ID))
    retried = await world.logistics.retry_held_shipments()

    assert world.wechat.calls == []
    assert retried == 0 and list(world.logistics.held) == []
    assert [r.outcome for r in world.reports()] == [DeliveryOutcome.AFTERSALE_REPLACEMENT]


async def test_the_orders_own_shipment_is_still_held_while_a_case_is_open(world: World) -> None:
    world.wechat.errcode = 108009

    await world.deliver(shipped(f"{ORDER_ID}-1", "78800000001", case_id=None))

    assert len(world.delivery_sends()) == 1
    assert [h.shipment.dispatch_id for h in world.logistics.held] == [f"{ORDER_ID}-1"]
    assert [r.outcome for r in world.reports()] == [DeliveryOutcome.HELD_FOR_AFTERSALE]


async def test_a_replacement_keeps_its_deadlines_and_tracking(world: World) -> None:
    dispatch_id = f"{ORDER_ID}-2"
    await world.deliver(offered(dispatch_id, case_id=CASE_ID))
    watch = world.logistics.ship_by_watch(dispatch_id)
    assert watch is not None and not watch.shipped

    await world.deliver(shipped(dispatch_id, "78800000002", case_id=CASE_ID))
    known = await world.logistics.track(
        "ZTO",
        "78800000002",
        [entry(1, TrackingState.PICKED_UP)],
        source=TrackingSource.KUAIDI100,
        cause="kuaidi100:1",
    )

    watch = world.logistics.ship_by_watch(dispatch_id)
    assert watch is not None and watch.shipped and not watch.cancelled
    assert known
    tracking = world.logistics.parcels.get(parcel_key("ZTO", "78800000002"))
    assert tracking is not None and tracking.state == TrackingState.PICKED_UP
    assert world.wechat.calls == []


@dataclass
class RefundingWeChat(WeChat):
    """delivery/send answers `send_answers` in turn (then 0); order/get shows the order with `refunded`
    units of each SKU refunded before WeChat was told of any parcel, one refund-only case per SKU (its
    id the SKU's, for getaftersaleorder)."""

    send_answers: list[int] = field(default_factory=list)
    ordered: dict[str, int] = field(default_factory=dict)
    refunded: dict[str, int] = field(default_factory=dict)

    async def call(self, shop_id: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((path, body))
        if path == GET_AFTERSALE:
            sku = body["after_sale_order_id"]
            product = {"product_id": f"1{sku[1:]}", "sku_id": sku, "count": self.refunded[sku]}
            case = {"type": "REFUND", "status": "MERCHANT_REFUND_SUCCESS", "product_info": product}
            return {"errcode": 0, "after_sale_order": case}
        if path == ORDER_GET:
            products = [
                {
                    "product_id": f"1{sku[1:]}",
                    "sku_id": sku,
                    "sku_cnt": n,
                    "finish_aftersale_sku_cnt": self.refunded.get(sku, 0),
                }
                for sku, n in self.ordered.items()
            ]
            cases = [
                {"aftersale_order_id": sku, "status": "MERCHANT_REFUND_SUCCESS"} for sku in self.refunded
            ]
            order = {
                "order_id": ORDER_ID,
                "status": 20,
                "order_detail": {"product_infos": products},
                "aftersale_detail": {"aftersale_order_list": cases},
            }
            return {"errcode": 0, "order": order}
        errcode = self.send_answers.pop(0) if self.send_answers else 0
        if errcode:
            raise WeChatApiError(path, errcode, "refused")
        return {"errcode": 0, "errmsg": "ok"}


TWO_SKUS = [
    DispatchLine(line_no=0, product_id="10000", sku_id="20000", quantity=2, shipped_quantity=2),
    DispatchLine(line_no=1, product_id="10001", sku_id="20001", quantity=1, shipped_quantity=1),
]


def _two_sku_shipment() -> DispatchShipped:
    event = shipped(f"{ORDER_ID}-1", "78800000003", case_id=None)
    parcel = event.parcels[0].model_copy(
        update={"lines": [ParcelLine(line_no=0, quantity=2), ParcelLine(line_no=1, quantity=1)]}
    )
    return event.model_copy(update={"lines": TWO_SKUS, "parcels": [parcel]})


async def test_goods_refunded_before_wechat_was_told_are_left_out_of_the_parcel_told() -> None:
    """A refund took one of two units WeChat had not seen shipped: the parcel is told with the rest."""
    wechat = RefundingWeChat(send_answers=[109000], ordered={"20000": 2, "20001": 1}, refunded={"20000": 1})
    world = logistics_world(wechat)

    await world.deliver(_two_sku_shipment())

    first, again = world.delivery_sends()
    assert [(x["sku_id"], x["product_cnt"]) for x in first["delivery_list"][0]["product_infos"]] == [
        ("20000", 2),
        ("20001", 1),
    ]
    assert [(x["sku_id"], x["product_cnt"]) for x in again["delivery_list"][0]["product_infos"]] == [
        ("20000", 1),
        ("20001", 1),
    ]
    [report] = world.reports()
    assert (report.outcome, report.errcode) == (DeliveryOutcome.TOLD, 0)
    assert world.logistics.told(ORDER_ID, _two_sku_shipment().parcels[0]) == DeliveryOutcome.TOLD


async def test_a_parcel_whose_goods_were_all_refunded_before_it_was_told_is_recorded_not_refused() -> None:
    counted_before = shipments_counted(DeliveryOutcome.REFUNDED_BEFORE_TOLD)
    wechat = RefundingWeChat(send_answers=[109001], ordered={"20000": 1}, refunded={"20000": 1})
    world = logistics_world(wechat)

    await world.deliver(shipped(f"{ORDER_ID}-1", "78800000004", case_id=None))  # no dead letter raised

    assert len(world.delivery_sends()) == 1, "nothing is left to tell"
    [report] = world.reports()
    assert (report.outcome, report.errcode) == (DeliveryOutcome.REFUNDED_BEFORE_TOLD, 109001)
    assert shipments_counted(DeliveryOutcome.REFUNDED_BEFORE_TOLD) == counted_before + 1
    await world.deliver(shipped(f"{ORDER_ID}-1", "78800000004", case_id=None))  # redelivered
    assert len(world.delivery_sends()) == 1 and len(world.reports()) == 1


async def test_a_refusal_no_refund_explains_is_still_dead_lettered() -> None:
    wechat = RefundingWeChat(send_answers=[109000], ordered={"20000": 1})
    world = logistics_world(wechat)

    with pytest.raises(PermanentFailure):
        await world.deliver(shipped(f"{ORDER_ID}-1", "78800000005", case_id=None))

    assert len(world.delivery_sends()) == 1
    assert [r.outcome for r in world.reports()] == [DeliveryOutcome.REFUSED]


async def test_a_refund_that_dropped_what_was_left_to_send_closes_the_ship_by_watch(world: World) -> None:
    dispatch_id = f"{ORDER_ID}-1"
    await world.deliver(offered(dispatch_id, case_id=None))
    confirmed = ChangeRequest(
        request_id=f"{dispatch_id}-r1",
        kind=ChangeKind.SKU,
        status=ChangeStatus.CONFIRMED,
        requested_at=at(1),
        answered_at=at(2),
        new_lines=LINES,
    )
    answered = DispatchChangeAnswered(
        order_id=ORDER_ID,
        occurred_at=at(2),
        dispatch_id=dispatch_id,
        shop_id=SHOP,
        supplier_id="sup-a",
        version=5,
        state=DispatchState.SHIPPED,
        request=confirmed,
    )
    world.offset += 1
    message = InboundMessage(DISPATCH.name, 0, world.offset, ORDER_ID.encode(), answered.to_kafka_value())
    await world.logistics.handle_dispatch_event(message)

    watch = world.logistics.ship_by_watch(dispatch_id)
    assert watch is not None and watch.shipped and not watch.cancelled


async def test_a_parcel_of_an_order_ended_by_refunds_is_recorded_not_refused() -> None:
    """101100 once refunds of every unit cancelled the order (status 200): nothing is left to tell."""
    wechat = RefundingWeChat(send_answers=[101100], ordered={"20000": 1}, refunded={"20000": 1})
    world = logistics_world(wechat)

    await world.deliver(shipped(f"{ORDER_ID}-1", "78800000006", case_id=None))

    assert [r.outcome for r in world.reports()] == [DeliveryOutcome.REFUNDED_BEFORE_TOLD]


@dataclass
class SilentWeChat(RefundingWeChat):
    """order/get answers `order_get_errcode` instead of the order."""

    order_get_errcode: int = 0

    async def call(self, shop_id: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if path == ORDER_GET and self.order_get_errcode:
            self.calls.append((path, body))
            raise WeChatApiError(path, self.order_get_errcode, "refused")
        return await super().call(shop_id, path, body)


async def test_a_recheck_wechat_refuses_for_good_leaves_the_refusal_to_the_dead_letters() -> None:
    """order/get refused for good (not one of WeChat's busy codes) cannot explain the 109000: the
    shipment is dead-lettered with delivery/send's refusal, not retried for ever."""
    wechat = SilentWeChat(send_answers=[109000], ordered={"20000": 1}, order_get_errcode=40013)
    world = logistics_world(wechat)

    with pytest.raises(PermanentFailure, match="109000"):
        await world.deliver(shipped(f"{ORDER_ID}-1", "78800000007", case_id=None))

    assert [path for path, _ in wechat.calls] == [DELIVERY_SEND, ORDER_GET]
    assert [(r.outcome, r.errcode) for r in world.reports()] == [(DeliveryOutcome.REFUSED, 109000)]


async def test_a_recheck_wechat_is_too_busy_for_is_retried_with_the_message() -> None:
    wechat = SilentWeChat(send_answers=[109001], ordered={"20000": 1}, order_get_errcode=-1)
    world = logistics_world(wechat)

    with pytest.raises(WeChatApiError) as raised:
        await world.deliver(shipped(f"{ORDER_ID}-1", "78800000008", case_id=None))

    assert raised.value.transient and not isinstance(raised.value, PermanentFailure)
    event = shipped(f"{ORDER_ID}-1", "78800000008", case_id=None)
    assert world.reports() == [] and world.logistics.told(ORDER_ID, event.parcels[0]) is None
    tracking = world.logistics.parcels.get(parcel_key("ZTO", "78800000008"))
    assert tracking is not None and tracking.told is None  # registered, tracked while WeChat is busy
