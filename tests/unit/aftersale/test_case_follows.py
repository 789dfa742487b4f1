"""Aftersale reads the dispatch changes of the orders it follows only: a case asks dispatch to follow
its order, is decided once dispatch's snapshot answered, and lets go when it ends."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from services.aftersale.domain.case import Case
from services.aftersale.fulfilment import (
    DispatchView,
    OrderFulfilment,
    ParcelView,
    Unit,
    apply_dispatch_event,
    apply_snapshot,
)
from services.aftersale.handlers import Aftersale, ShopPolicies
from shared.events.aftersale import AFTERSALE_EVENTS, CaseState, CaseType
from shared.events.base import Event
from shared.events.dispatch import (
    DispatchFulfilmentSnapshot,
    DispatchLine,
    DispatchOffered,
    DispatchOrderFacts,
    DispatchShipped,
    DispatchState,
    Parcel,
    ParcelLine,
    ShippingAddress,
)
from shared.events.logistics import TrackingState
from shared.kafka.consumer import InboundMessage
from shared.kafka.producer import event_headers
from shared.kafka.topics import AFTERSALE_INSTRUCTIONS, DISPATCH_AFTERSALE
from tests.unit.aftersale.builders import CASE_ID, ORDER_ID, POLICY, SHOP, T0, new_case
from tests.unit.logistics.test_shipments import InMemory, Producer

ADDRESS = ShippingAddress(
    name="张三", phone="13800000000", province="广东省", city="广州市", county="天河区", detail="1号"
)
DISPATCH_ID = f"{ORDER_ID}-1"
OTHER_CASE = "14000000000000000002"


def _line(quantity: int = 1, shipped: int = 0) -> DispatchLine:
    return DispatchLine(
        line_no=0, product_id="p-1", sku_id="sku-1", quantity=quantity, shipped_quantity=shipped
    )


def _parcel(waybill: str = "ZT1", quantity: int = 1) -> Parcel:
    return Parcel(
        parcel_no=1,
        carrier_code="ZTO",
        waybill_no=waybill,
        lines=[ParcelLine(line_no=0, quantity=quantity)],
        shipped_at=T0,
    )


def _facts(
    *, shipped: bool, version: int, dispatch_id: str = DISPATCH_ID, **more: object
) -> DispatchOrderFacts:
    fields: dict[str, object] = {
        "dispatch_id": dispatch_id,
        "supplier_id": "alpha",
        "state": DispatchState.SHIPPED if shipped else DispatchState.OFFERED,
        "version": version,
        "lines": [_line(shipped=1 if shipped else 0)],
        "offered_lines": [_line()],
        "parcels": [_parcel()] if shipped else [],
        "receiver": ADDRESS,
        **more,
    }
    return DispatchOrderFacts.model_validate(fields)


def _snapshot(*facts: DispatchOrderFacts, case_id: str = CASE_ID) -> DispatchFulfilmentSnapshot:
    return DispatchFulfilmentSnapshot(
        order_id=ORDER_ID, shop_id=SHOP, case_id=case_id, dispatch_orders=list(facts)
    )


def _offered(version: int = 1) -> DispatchOffered:
    return DispatchOffered(
        order_id=ORDER_ID,
        dispatch_id=DISPATCH_ID,
        shop_id=SHOP,
        supplier_id="alpha",
        version=version,
        state=DispatchState.OFFERED,
        lines=[_line()],
        receiver=ADDRESS,
        ship_by=None,
        paid_at=T0,
    )


def _shipped(version: int) -> DispatchShipped:
    return DispatchShipped(
        order_id=ORDER_ID,
        dispatch_id=DISPATCH_ID,
        shop_id=SHOP,
        supplier_id="alpha",
        version=version,
        state=DispatchState.SHIPPED,
        parcels=[_parcel("ZT2")],
        lines=[_line(shipped=1)],
    )


def _message(event: Event) -> InboundMessage:
    return InboundMessage(
        topic=DISPATCH_AFTERSALE.name,
        partition=0,
        offset=0,
        key=event.kafka_key,
        value=event.to_kafka_value(),
        headers=tuple(event_headers(event)),
    )


class WeChat:
    """Accepts every call; the case reads as refunded afterwards."""

    async def call(self, shop_id: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"errcode": 0, "after_sale_order": {"status": "MERCHANT_REFUND_SUCCESS"}}


async def _aftersale(*cases: Case, orders: OrderFulfilment | None = None) -> tuple[Aftersale, Producer]:
    stored_cases: InMemory[Case] = InMemory()
    for case in cases:
        await stored_cases.save(case.case_id, case, cause="load")
    stored_orders: InMemory[OrderFulfilment] = InMemory()
    if orders is not None:
        await stored_orders.save(orders.order_id, orders, cause="load")
    producer = Producer()
    aftersale = Aftersale(
        cases=stored_cases,
        orders=stored_orders,
        created={},
        policies=ShopPolicies(InMemory(), POLICY),
        wechat=None,
        producer=producer,
        return_addresses=lambda _: None,
    )
    aftersale.index()
    return aftersale, producer


async def _open(aftersale: Aftersale, case: Case) -> Case:
    async with aftersale.cases.lock(case.case_id):
        return await aftersale._decide_and_act(case, cause="push")


def _sent(producer: Producer) -> list[str]:
    """The event types aftersale published, leaving out the case's record (`aftersale_case_updated`)."""
    kinds = [AFTERSALE_EVENTS.validate_json(value).event_type for _, value in producer.sent]
    return [kind for kind in kinds if kind != "aftersale_case_updated"]


# --- the snapshot and the copies (pure) ---


def test_a_snapshot_is_the_orders_fulfilment_and_the_case_knows_from_then_on() -> None:
    before = OrderFulfilment(order_id=ORDER_ID, shop_id=SHOP)
    offered_three = _facts(shipped=True, version=5, offered_lines=[_line(3)])  # two units dropped since
    replacement = _facts(shipped=True, version=3, dispatch_id=f"{ORDER_ID}-2", aftersale_case_id="R1")
    after = apply_snapshot(before, _snapshot(offered_three, replacement))

    assert not before.knows_for(CASE_ID)
    assert after.knows_for(CASE_ID) and not after.knows_for(OTHER_CASE)
    assert after.receiver == ADDRESS
    view = after.dispatch[DISPATCH_ID]
    assert (view.state, view.version) == (DispatchState.SHIPPED, 5)
    assert view.lines == [Unit(product_id="p-1", sku_id="sku-1", quantity=1, shipped=1)]
    assert view.original == [Unit(product_id="p-1", sku_id="sku-1", quantity=3)]
    assert view.parcels == [
        ParcelView(
            carrier_code="ZTO", waybill_no="ZT1", units=[Unit(product_id="p-1", sku_id="sku-1", quantity=1)]
        )
    ]
    assert after.dispatch[f"{ORDER_ID}-2"].replacement_waybill == ("ZTO", "ZT1")
    assert apply_snapshot(after, _snapshot(offered_three, replacement)) == after  # a copy of it: nothing


def test_a_copy_older_than_the_snapshot_changes_nothing() -> None:
    known = apply_snapshot(
        OrderFulfilment(order_id=ORDER_ID, shop_id=SHOP), _snapshot(_facts(shipped=True, version=4))
    )
    assert apply_dispatch_event(known, _offered(version=1)) == known
    assert apply_dispatch_event(known, _shipped(version=4)) == known
    assert apply_dispatch_event(known, _shipped(version=5)).dispatch[DISPATCH_ID].version == 5


def test_a_snapshot_keeps_a_newer_copy_and_the_lines_as_first_offered() -> None:
    """A copy that overtook the snapshot stays; the lines as offered never change once known (an
    order offered before dispatch kept them apart has them as they are now in the snapshot)."""
    copied = apply_dispatch_event(OrderFulfilment(order_id=ORDER_ID, shop_id=SHOP), _offered(version=1))
    copied = apply_dispatch_event(copied, _shipped(version=3))
    after = apply_snapshot(copied, _snapshot(_facts(shipped=True, version=2, offered_lines=[_line(9)])))
    assert after.dispatch == copied.dispatch
    assert after.knows_for(CASE_ID)
    newer = apply_snapshot(copied, _snapshot(_facts(shipped=True, version=6, offered_lines=[_line(9)])))
    assert newer.dispatch[DISPATCH_ID].version == 6
    assert newer.dispatch[DISPATCH_ID].original == copied.dispatch[DISPATCH_ID].original


# --- the handlers ---


async def test_no_case_is_decided_before_the_snapshot_and_shipped_goods_are_then_intercepted() -> None:
    """Nothing known is not "not shipped": a refund opened before dispatch's view of the order came
    asks dispatch to follow the order and stops nothing; the snapshot says the goods left."""
    stale = OrderFulfilment(order_id=ORDER_ID, shop_id=SHOP)  # e.g. tracking only, no dispatch order
    aftersale, producer = await _aftersale(orders=stale)
    case = await _open(aftersale, new_case(CaseType.REFUND))
    assert case.state is None and case.sent == [] and case.dropped_before is None
    assert [topic for topic, _ in producer.sent] == [AFTERSALE_INSTRUCTIONS.name]
    assert _sent(producer) == ["aftersale_follow"]

    await aftersale.reconsider_order(ORDER_ID, cause="tracking")  # another event: still nothing decided
    await aftersale.tick()  # and the follow is not asked again
    assert _sent(producer) == ["aftersale_follow"]

    await aftersale.handle_dispatch_event(_message(_snapshot(_facts(shipped=True, version=3))))
    decided = aftersale.cases.get(CASE_ID)
    assert decided is not None and decided.state == CaseState.INTERCEPTING
    assert _sent(producer) == ["aftersale_follow", "aftersale_intercept"]


async def test_a_case_opened_before_dispatch_saw_the_order_reads_the_copies_after_an_empty_snapshot() -> None:
    """A refund push can overtake order_paid: dispatch follows the order by its id, answers with no
    dispatch order, and copies the offer when it comes."""
    aftersale, producer = await _aftersale()
    await _open(aftersale, new_case(CaseType.REFUND))
    await aftersale.handle_dispatch_event(_message(_snapshot()))
    order = aftersale.orders.get(ORDER_ID)
    assert order is not None and order.knows_for(CASE_ID) and order.dispatch == {}
    stopping = aftersale.cases.get(CASE_ID)
    assert stopping is not None and stopping.state == CaseState.STOPPING_SHIPMENT  # nothing dispatched

    await aftersale.handle_dispatch_event(_message(_offered()))
    order = aftersale.orders.get(ORDER_ID)
    assert order is not None and order.dispatch[DISPATCH_ID].state == DispatchState.OFFERED
    await aftersale.handle_dispatch_event(_message(_shipped(version=3)))  # the stop came too late
    intercepting = aftersale.cases.get(CASE_ID)
    assert intercepting is not None and intercepting.state == CaseState.INTERCEPTING
    assert _sent(producer) == ["aftersale_follow", "aftersale_cancel_lines", "aftersale_intercept"]


async def test_a_return_the_supplier_confirmed_is_known_from_the_snapshot() -> None:
    """Confirmed while aftersale did not follow the order (an upgrade): the snapshot tells it."""
    waiting = new_case(CaseType.RETURN).model_copy(
        update={
            "state": CaseState.AWAITING_RECEIPT,
            "approved_return": True,
            "return_waybill": ("YTO", "YT1"),
        }
    )
    aftersale, _ = await _aftersale(waiting)
    aftersale._wechat = WeChat()
    await aftersale.handle_dispatch_event(
        _message(_snapshot(_facts(shipped=True, version=4, returns_received=[CASE_ID])))
    )
    case = aftersale.cases.get(CASE_ID)
    assert case is not None and case.supplier_received
    assert case.state == CaseState.REFUNDING and "accept:refund" in case.sent


async def test_an_ended_case_lets_dispatch_stop_following() -> None:
    known = apply_snapshot(
        OrderFulfilment(order_id=ORDER_ID, shop_id=SHOP), _snapshot(_facts(shipped=False, version=1))
    )
    aftersale, producer = await _aftersale(orders=known)
    opened = await _open(aftersale, new_case(CaseType.REFUND))
    assert opened.state == CaseState.STOPPING_SHIPMENT
    withdrawn = opened.model_copy(update={"wechat_status": "USER_CANCELD"})
    closed = await _open(aftersale, withdrawn)
    assert closed.state == CaseState.CLOSED
    assert _sent(producer) == ["aftersale_cancel_lines", "aftersale_unfollow"]
    await _open(aftersale, closed)  # looked at again: already let go
    assert _sent(producer) == ["aftersale_cancel_lines", "aftersale_unfollow"]


async def test_open_cases_not_followed_yet_are_asked_for_once_by_the_first_tick() -> None:
    """After a restart, or an upgrade from reading every dispatch change: each open case whose
    snapshot has not come asks once; a case that knows, or has ended, does not."""
    intercepting = new_case(CaseType.REFUND).model_copy(update={"state": CaseState.INTERCEPTING})
    other = intercepting.model_copy(update={"case_id": OTHER_CASE})
    ended = intercepting.model_copy(update={"case_id": "14000000000000000003", "state": CaseState.RESOLVED})
    knows_other = OrderFulfilment(order_id=ORDER_ID, shop_id=SHOP, followed_cases=[OTHER_CASE])
    aftersale, producer = await _aftersale(intercepting, other, ended, orders=knows_other)
    aftersale.clock = lambda: T0 + timedelta(seconds=5)
    await aftersale.tick()
    await aftersale.tick()
    asked = [AFTERSALE_EVENTS.validate_json(value) for _, value in producer.sent]
    assert [(e.event_type, e.case_id) for e in asked] == [("aftersale_follow", CASE_ID)]


def test_a_view_without_a_snapshot_is_not_known() -> None:
    """Built from copies only (or from every dispatch change before the upgrade): not the whole truth."""
    view = DispatchView(
        dispatch_id=DISPATCH_ID,
        supplier_id="alpha",
        state=DispatchState.SHIPPED,
        version=3,
        lines=[],
        original=[],
    )
    fulfilment = OrderFulfilment(
        order_id=ORDER_ID,
        shop_id=SHOP,
        dispatch={DISPATCH_ID: view},
        parcels={"ZTO:ZT1": TrackingState.DELIVERED},
    )
    assert not fulfilment.knows_for(CASE_ID)
