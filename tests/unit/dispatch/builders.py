"""Builders for the dispatch domain tests: fixed aware UTC times, small orders and routes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from services.dispatch.domain import dispatch_order as dispatch
from services.dispatch.domain.dispatch_order import DispatchOrder, ParcelShipment
from services.dispatch.domain.plan import OrderPlan, PlanOutcome, RoutingContext
from services.dispatch.domain.routing import LineToRoute, Route
from shared.events.base import Event
from shared.events.dispatch import DispatchEvent, DispatchLine, ParcelLine, RejectReason, ShippingAddress
from shared.events.orders import (
    OrderAddressChanged,
    OrderCancelled,
    OrderLine,
    OrderPaid,
    OrderSkuChanged,
    Receiver,
)

T0 = datetime(2025, 11, 13, 2, 0, tzinfo=UTC)
PAID_AT = T0 - timedelta(minutes=5)
SHIP_BY = T0 + timedelta(days=2)
ORDER_ID = "3705115058471208928"
SHOP = "shop-1"
PAID_VERSION = 1_763_000_100


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


ADDRESS = ShippingAddress(
    name="张三", phone="13800000000", province="广东省", city="广州市", county="天河区", detail="1号"
)
OTHER_ADDRESS = ShippingAddress(
    name="张三", phone="13800000000", province="北京市", city="北京市", county="朝阳区", detail="2号"
)
THIRD_ADDRESS = ShippingAddress(
    name="李四", phone="13900000000", province="上海市", city="上海市", county="浦东新区", detail="3号"
)


def dline(line_no: int, quantity: int = 1, *, sku: str | None = None, shipped: int = 0) -> DispatchLine:
    sku_id = sku if sku is not None else f"sku-{line_no}"
    return DispatchLine(
        line_no=line_no,
        product_id=f"p-{sku_id}",
        sku_id=sku_id,
        sku_code=f"code-{sku_id}",
        quantity=quantity,
        shipped_quantity=shipped,
    )


def offered(
    *lines: DispatchLine, dispatch_id: str = f"{ORDER_ID}-1", supplier_id: str = "sup-a"
) -> DispatchOrder:
    return dispatch.offer(
        dispatch_id=dispatch_id,
        order_id=ORDER_ID,
        shop_id=SHOP,
        supplier_id=supplier_id,
        lines=list(lines) or [dline(0, 2), dline(1, 1)],
        receiver=ADDRESS,
        ship_by=SHIP_BY,
        paid_at=PAID_AT,
        now=T0,
    ).order


def accepted(*lines: DispatchLine) -> DispatchOrder:
    return dispatch.accept(offered(*lines), estimated_ship_at=at(60), now=at(1)).order


def parcel(waybill: str, *items: tuple[int, int], carrier: str = "ZTO") -> ParcelShipment:
    return ParcelShipment(
        carrier_code=carrier, waybill_no=waybill, lines=[ParcelLine(line_no=n, quantity=q) for n, q in items]
    )


def partially_shipped() -> DispatchOrder:
    """Lines 0 (2 units) and 1 (1 unit): one unit of line 0 has left."""
    return dispatch.ship(accepted(), parcels=[parcel("W1", (0, 1))], now=at(2)).order


def shipped() -> DispatchOrder:
    return dispatch.ship(accepted(), parcels=[parcel("W1", (0, 2), (1, 1))], now=at(2)).order


def rejected() -> DispatchOrder:
    return dispatch.reject(offered(), reason=RejectReason.OUT_OF_STOCK, text="", now=at(1)).order


def cancelled() -> DispatchOrder:
    return dispatch.cancel_for_order(offered(), now=at(1)).order


def assert_versions_follow(
    before: DispatchOrder, after: DispatchOrder, events: Sequence[DispatchEvent]
) -> None:
    """One version per event, each event carrying the aggregate version right after it."""
    assert after.version == before.version + len(events)
    assert [e.version for e in events] == list(range(before.version + 1, after.version + 1))
    for event in events:
        assert event.dispatch_id == after.dispatch_id
        assert event.order_id == after.order_id
        assert event.supplier_id == after.supplier_id
        assert event.shop_id == after.shop_id
    if events:
        assert events[-1].state == after.state


# --- Routing -----------------------------------------------------------------------------------


def to_route(
    line_no: int, quantity: int = 1, *, product: str = "p1", sku: str = "s1", code: str = ""
) -> LineToRoute:
    return LineToRoute(line_no=line_no, product_id=product, sku_id=sku, sku_code=code, quantity=quantity)


def route(supplier: str, priority: int = 100, **kwargs: Any) -> Route:
    return Route(shop_id=SHOP, supplier_id=supplier, priority=priority, **kwargs)


def sku_route(supplier: str, product: str, sku: str, priority: int = 100, **kwargs: Any) -> Route:
    return route(supplier, priority, product_id=product, sku_id=sku, **kwargs)


def context(*routes: Route, active: Sequence[str] | None = None) -> RoutingContext:
    suppliers = set(active) if active is not None else {r.supplier_id for r in routes}
    return RoutingContext(routes=list(routes), active_suppliers=suppliers)


# --- Order events -------------------------------------------------------------------------------

RECEIVER = Receiver(
    name="张三", phone="13800000000", province="广东省", city="广州市", county="天河区", detail="1号"
)
NEW_RECEIVER = Receiver(
    name="张三",
    phone="13800000000",
    virtual_phone="17000001111",
    province="北京市",
    city="北京市",
    county="朝阳区",
    detail="2号",
)


def oline(sku: str, quantity: int = 1) -> OrderLine:
    """An order line whose product is p-<sku> and sku_code code-<sku>."""
    return OrderLine(
        product_id=f"p-{sku}",
        sku_id=sku,
        sku_code=f"code-{sku}",
        quantity=quantity,
        unit_sale_price_fen=1990,
        unit_paid_price_fen=1890,
        title=f"item {sku}",
    )


def paid(*lines: OrderLine, version: int = PAID_VERSION) -> OrderPaid:
    return OrderPaid(
        order_id=ORDER_ID,
        occurred_at=PAID_AT,
        shop_id=SHOP,
        version=version,
        paid_at=PAID_AT,
        ship_by=SHIP_BY,
        lines=list(lines),
        receiver=RECEIVER,
        order_price_fen=4770,
    )


def cancelled_event(version: int = PAID_VERSION + 10) -> OrderCancelled:
    return OrderCancelled(order_id=ORDER_ID, occurred_at=T0, shop_id=SHOP, version=version, wechat_status=250)


def address_changed(
    receiver: Receiver = NEW_RECEIVER, version: int = PAID_VERSION + 10
) -> OrderAddressChanged:
    return OrderAddressChanged(
        order_id=ORDER_ID, occurred_at=T0, shop_id=SHOP, version=version, receiver=receiver
    )


def sku_changed(*lines: OrderLine, version: int = PAID_VERSION + 10) -> OrderSkuChanged:
    return OrderSkuChanged(
        order_id=ORDER_ID, occurred_at=T0, shop_id=SHOP, version=version, lines=list(lines)
    )


def by_supplier(outcome: PlanOutcome) -> dict[str, DispatchOrder]:
    return {t.order.supplier_id: t.order for t in outcome.transitions}


def event_types(events: Sequence[Event]) -> list[str]:
    return [e.event_type for e in events]


def stored(outcome: PlanOutcome) -> OrderPlan:
    assert outcome.plan is not None
    return outcome.plan
