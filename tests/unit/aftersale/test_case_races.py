"""A case being decided while its order's goods move: the order's event must not slip past the case."""

from __future__ import annotations

import asyncio
from typing import Any

from services.aftersale.domain.case import Case
from services.aftersale.fulfilment import DispatchView, OrderFulfilment, ParcelView, Unit
from services.aftersale.handlers import Aftersale, ShopPolicies
from shared.events.aftersale import AFTERSALE_EVENTS, CaseState, CaseType
from shared.events.dispatch import (
    DispatchFulfilmentSnapshot,
    DispatchLine,
    DispatchOrderFacts,
    DispatchState,
    Parcel,
    ParcelLine,
)
from tests.unit.aftersale.builders import CASE_ID, ORDER_ID, POLICY, SHOP, T0, new_case
from tests.unit.aftersale.test_case_follows import ADDRESS
from tests.unit.logistics.test_shipments import InMemory, Producer

UNIT = Unit(product_id="p-1", sku_id="sku-1", quantity=1)


def _fulfilment(*, shipped: bool) -> OrderFulfilment:
    view = DispatchView(
        dispatch_id="d-1",
        supplier_id="alpha",
        state=DispatchState.SHIPPED if shipped else DispatchState.OFFERED,
        version=3 if shipped else 1,
        lines=[UNIT.model_copy(update={"shipped": 1})] if shipped else [UNIT],
        original=[UNIT],
        parcels=[ParcelView(carrier_code="ZTO", waybill_no="ZT1", units=[UNIT])] if shipped else [],
    )
    # Dispatch follows the order for the case: its snapshot came, later changes are copied.
    return OrderFulfilment(order_id=ORDER_ID, shop_id=SHOP, dispatch={"d-1": view}, followed_cases=[CASE_ID])


class SlowCases(InMemory[Case]):
    """Saving a case waits until `go` is set: the moment another handler can run."""

    def __init__(self) -> None:
        super().__init__()
        self.saving = asyncio.Event()
        self.go = asyncio.Event()

    async def save(self, key: str, value: Case, *, cause: str, extra: dict[str, Any] | None = None) -> Case:
        self.saving.set()
        await self.go.wait()
        return await super().save(key, value, cause=cause, extra=extra)


def _aftersale(cases: SlowCases, orders: InMemory[OrderFulfilment], producer: Producer) -> Aftersale:
    return Aftersale(
        cases=cases,
        orders=orders,
        created={},
        policies=ShopPolicies(InMemory(), POLICY),
        wechat=None,
        producer=producer,
        return_addresses=lambda _: None,
    )


async def _new_refund_pushed(aftersale: Aftersale) -> None:
    """A refund's first push, decided under the case's lock as the push handler does."""
    async with aftersale.cases.lock(CASE_ID):
        await aftersale._decide_and_act(new_case(CaseType.REFUND), cause="push")


async def test_goods_shipped_while_a_new_refund_is_decided_are_intercepted() -> None:
    """The refund is decided on the offer (the supplier is told to stop); the shipment is applied
    while that decision is being saved: the case is looked at again and the parcel asked back."""
    cases = SlowCases()
    orders: InMemory[OrderFulfilment] = InMemory()
    await orders.save(ORDER_ID, _fulfilment(shipped=False), cause="offered")
    producer = Producer()
    aftersale = _aftersale(cases, orders, producer)
    deciding = asyncio.create_task(_new_refund_pushed(aftersale))
    await cases.saving.wait()
    await orders.save(ORDER_ID, _fulfilment(shipped=True), cause="shipped")
    shipped = asyncio.create_task(aftersale.reconsider_order(ORDER_ID, cause="shipped"))
    await asyncio.sleep(0)
    cases.go.set()
    await asyncio.gather(deciding, shipped)

    case = aftersale.cases.get(CASE_ID)
    assert case is not None
    assert case.state == CaseState.INTERCEPTING
    instructions = [AFTERSALE_EVENTS.validate_json(value).event_type for _, value in producer.sent]
    assert [kind for kind in instructions if kind != "aftersale_case_updated"] == [
        "aftersale_cancel_lines",
        "aftersale_intercept",
    ]


async def test_a_snapshot_that_arrives_while_a_new_case_is_first_saved_decides_it() -> None:
    """The first look at a case knows nothing yet (dispatch's snapshot has not come) and is being
    saved when a snapshot for it arrives (asked again by a tick, say): the case was already followed by
    its order, so the snapshot's handler waits for it and decides it, on the parcel that left."""
    cases = SlowCases()
    producer = Producer()
    aftersale = _aftersale(cases, InMemory(), producer)
    deciding = asyncio.create_task(_new_refund_pushed(aftersale))
    await cases.saving.wait()
    shipped = _fulfilment(shipped=True).dispatch["d-1"]
    snapshot = DispatchFulfilmentSnapshot(
        order_id=ORDER_ID,
        shop_id=SHOP,
        case_id=CASE_ID,
        dispatch_orders=[
            DispatchOrderFacts(
                dispatch_id=shipped.dispatch_id,
                supplier_id=shipped.supplier_id,
                state=shipped.state,
                version=shipped.version,
                lines=[
                    DispatchLine(line_no=0, product_id="p-1", sku_id="sku-1", quantity=1, shipped_quantity=1)
                ],
                offered_lines=[DispatchLine(line_no=0, product_id="p-1", sku_id="sku-1", quantity=1)],
                parcels=[
                    Parcel(
                        parcel_no=1,
                        carrier_code="ZTO",
                        waybill_no="ZT1",
                        lines=[ParcelLine(line_no=0, quantity=1)],
                        shipped_at=T0,
                    )
                ],
                receiver=ADDRESS,
            )
        ],
    )
    answered = asyncio.create_task(aftersale._snapshot(snapshot))
    await asyncio.sleep(0)
    cases.go.set()
    await asyncio.gather(deciding, answered)

    case = aftersale.cases.get(CASE_ID)
    assert case is not None
    assert case.state == CaseState.INTERCEPTING
    instructions = [AFTERSALE_EVENTS.validate_json(value).event_type for _, value in producer.sent]
    assert [kind for kind in instructions if kind != "aftersale_case_updated"] == [
        "aftersale_follow",
        "aftersale_intercept",
    ]
