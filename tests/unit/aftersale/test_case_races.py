"""A case being decided while its order's goods move: the order's event must not slip past the case."""

from __future__ import annotations

import asyncio
from typing import Any

from services.aftersale.domain.case import Case
from services.aftersale.fulfilment import DispatchView, OrderFulfilment, ParcelView, Unit
from services.aftersale.handlers import Aftersale, ShopPolicies
from shared.events.aftersale import AFTERSALE_EVENTS, CaseState, CaseType
from shared.events.dispatch import DispatchState
from tests.unit.aftersale.builders import CASE_ID, ORDER_ID, POLICY, SHOP, new_case
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
    return OrderFulfilment(order_id=ORDER_ID, shop_id=SHOP, dispatch={"d-1": view})


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


async def test_goods_shipped_while_a_new_refund_is_decided_are_intercepted() -> None:
    """The refund is decided on the offer (the supplier is told to stop); the shipment is applied
    while that decision is being saved: the case is looked at again and the parcel asked back."""
    cases = SlowCases()
    orders: InMemory[OrderFulfilment] = InMemory()
    await orders.save(ORDER_ID, _fulfilment(shipped=False), cause="offered")
    producer = Producer()
    aftersale = Aftersale(
        cases=cases,
        orders=orders,
        created={},
        policies=ShopPolicies(InMemory(), POLICY),
        wechat=None,
        producer=producer,
        return_addresses=lambda _: None,
    )

    async def push() -> None:
        async with aftersale.cases.lock(CASE_ID):
            await aftersale._decide_and_act(new_case(CaseType.REFUND), cause="push")

    deciding = asyncio.create_task(push())
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
