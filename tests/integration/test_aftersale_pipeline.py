"""After-sale paths end to end on the real stack with the stand-ins: the buyer's request at WeChat,
the instruction in the supplier's feed, the supplier's answer, and the exact calls WeChat received."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from ops.stack import LocalStack
from shared.operators import AuditTrail, OperatorRole
from tests.integration.pipeline import APPID, Line, fulfilment_line

pytestmark = pytest.mark.integration

ACCEPT = "/channels/ec/aftersale/acceptapply"
REJECT = "/channels/ec/aftersale/rejectapply"
RESHIP = "/channels/ec/aftersale/acceptexchangereship"
DELIVERY_SEND = "/channels/ec/order/delivery/send"
PRODUCT = {
    "product_id": "3000001",
    "sku_id": "4000001",
    "sku_cnt": 1,
    "title": "真丝枕套",
    "sale_price": 5900,
}


@pytest.fixture(scope="module")
async def line(stack: LocalStack) -> AsyncIterator[Line]:
    # Parcels move only when a test says so (time_scale 1: a delivery takes a day and a half).
    async with fulfilment_line(stack, carrier_time_scale=1) as running:
        await running.add_supplier("alpha")
        yield running


class Supplier:
    """The test's hands as the supplier, through the supplier API."""

    def __init__(self, line: Line, client: httpx.AsyncClient) -> None:
        self.line, self.client, self.after = line, client, 0

    async def change(
        self, matches: Callable[[dict[str, Any]], bool], timeout_s: float = 90
    ) -> dict[str, Any]:
        async def poll() -> dict[str, Any] | None:
            page = (await self.client.get("/feed", params={"after": self.after, "wait_s": 2})).json()
            changes: list[dict[str, Any]] = page["changes"]
            for change in changes:
                self.after = change["cursor"]
                if matches(change):
                    return change
            self.after = page["next_cursor"]
            return None

        found: dict[str, Any] = await self.line.until(poll, timeout_s=timeout_s)
        return found

    async def offered(self, order_id: str) -> dict[str, Any]:
        change = await self.change(
            lambda c: (
                c["change"] == "dispatch_offered"
                and c["dispatch_order"]["order_id"] == order_id
                and c["dispatch_order"]["aftersale_case_id"] is None
            )
        )
        order: dict[str, Any] = change["dispatch_order"]
        return order

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = await self.client.post(path, json=body)
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    async def ship(self, dispatch_order: dict[str, Any], waybill_no: str) -> None:
        lines = [
            {"line_no": line["line_no"], "quantity": line["quantity"]} for line in dispatch_order["lines"]
        ]
        await self.post(
            f"/dispatch-orders/{dispatch_order['dispatch_id']}/shipments",
            {"parcels": [{"carrier_code": "ZTO", "waybill_no": waybill_no, "lines": lines}]},
        )


@pytest.fixture
async def supplier(line: Line) -> AsyncIterator[Supplier]:
    async with line.supplier("alpha") as client:
        hands = Supplier(line, client)
        hands.after = (await client.get("/feed", params={"after": 0, "limit": 1000})).json()["next_cursor"]
        yield hands


async def _paid_order(line: Line) -> str:
    order = await line.sim("POST", "/orders", appid=APPID, paid=True, products=[PRODUCT])
    return str(order["order_id"])


async def _open_case(line: Line, order_id: str, kind: str) -> str:
    case = await line.sim(
        "POST",
        f"/orders/{order_id}/aftersale",
        type=kind,
        product_id=PRODUCT["product_id"],
        sku_id=PRODUCT["sku_id"],
        count=1,
        reason="不想要了",
    )
    return str(case["after_sale_order_id"])


async def _case_status(line: Line, case_id: str, status: str) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        case: dict[str, Any] = await line.sim("GET", f"/aftersales/{case_id}")
        return case if case["status"] == status else None

    found: dict[str, Any] = await line.until(reached, timeout_s=90)
    return found


async def _case_calls(line: Line, case_id: str) -> list[tuple[str, int]]:
    calls: list[dict[str, Any]] = await line.sim("GET", "/calls")
    return [
        (c["path"], c["errcode"])
        for c in calls
        if c["path"] in (ACCEPT, REJECT, RESHIP) and str(c["request"].get("after_sale_order_id")) == case_id
    ]


async def _our_case(line: Line, case_id: str, state: str, *, because: str = "") -> dict[str, Any]:
    """Until our case is in `state`, its latest reason mentioning `because` (events reach aftersale
    in their own time: a case opened before the delivery arrived waits for the same reason later)."""
    async with line.operator(OperatorRole.VIEWER) as client:

        async def reached() -> dict[str, Any] | None:
            answer = await client.get(f"/admin/v1/cases/{case_id}")
            case: dict[str, Any] = answer.json()
            if answer.status_code != 200 or case["state"] != state:
                return None
            return case if because in case["timeline"][-1]["reason"] else None

        found: dict[str, Any] = await line.until(reached, timeout_s=90)
        return found


async def _deliver(line: Line, waybill_no: str, state: int = 3) -> None:
    """The carrier reports the parcel signed (3) or returned to the sender (4)."""

    async def known() -> bool:
        return (await line.carriers.get(f"/sim/waybills/{waybill_no}")).status_code == 200

    await line.until(known)  # logistics subscribed to its tracking
    forced = await line.carriers.post(f"/sim/waybills/{waybill_no}/state", json={"state": state})
    assert forced.status_code == 200, forced.text


async def _aftersale_sees(line: Line, order_id: str, waybill_no: str, state: str) -> None:
    """Until aftersale's view of the order has the parcel in `state` (the carrier's push reaches it
    through logistics and Kafka: a case opened before that is decided on the parcel still moving)."""

    async def seen() -> bool:
        newest = await line.db["aftersale_order_fulfilment"].find_one(
            {"key": order_id}, sort=[("revision", -1)]
        )
        parcels = newest["value"]["parcels"] if newest else {}
        return any(key.endswith(f":{waybill_no}") and now == state for key, now in parcels.items())

    await line.until(seen)


async def test_refund_before_shipping_stops_the_supplier_then_refunds(line: Line, supplier: Supplier) -> None:
    order_id = await _paid_order(line)
    offered = await supplier.offered(order_id)
    case_id = await _open_case(line, order_id, "REFUND")
    cancelled = await supplier.change(
        lambda c: (
            c["dispatch_order"]["dispatch_id"] == offered["dispatch_id"]
            and c["change"] == "dispatch_cancelled"
        )
    )
    assert cancelled["dispatch_order"]["state"] == "cancelled"
    await _case_status(line, case_id, "MERCHANT_REFUND_SUCCESS")
    ours = await _our_case(line, case_id, "resolved")
    assert ours["resolution"] == "refunded"
    assert await _case_calls(line, case_id) == [(ACCEPT, 0)]
    assert not [
        c for c in await line.wechat_calls(DELIVERY_SEND) if str(c["request"]["order_id"]) == order_id
    ]


async def test_refund_after_acceptance_waits_for_the_supplier_to_confirm(
    line: Line, supplier: Supplier
) -> None:
    order_id = await _paid_order(line)
    offered = await supplier.offered(order_id)
    await supplier.post(f"/dispatch-orders/{offered['dispatch_id']}/accept", {})
    case_id = await _open_case(line, order_id, "REFUND")
    asked = await supplier.change(
        lambda c: (
            c["dispatch_order"]["dispatch_id"] == offered["dispatch_id"]
            and c["change"] == "dispatch_change_requested"
        )
    )
    request = asked["dispatch_order"]["change_requests"][-1]
    assert request["kind"] == "cancel"
    assert await _case_calls(line, case_id) == []  # nothing refunded before the supplier confirms
    await supplier.post(
        f"/dispatch-orders/{offered['dispatch_id']}/change-requests/{request['request_id']}/answer",
        {"decision": "confirm"},
    )
    await _case_status(line, case_id, "MERCHANT_REFUND_SUCCESS")
    assert await _case_calls(line, case_id) == [(ACCEPT, 0)]


async def test_refund_in_transit_intercepts_and_refunds_once_the_parcel_is_back(
    line: Line, supplier: Supplier
) -> None:
    order_id = await _paid_order(line)
    offered = await supplier.offered(order_id)
    await supplier.post(f"/dispatch-orders/{offered['dispatch_id']}/accept", {})
    waybill = f"75{order_id[-11:]}"
    await supplier.ship(offered, waybill)
    case_id = await _open_case(line, order_id, "REFUND")
    instructed = await supplier.change(
        lambda c: (
            c["dispatch_order"]["dispatch_id"] == offered["dispatch_id"]
            and c["change"] == "dispatch_aftersale_instructed"
        )
    )
    instruction = instructed["dispatch_order"]["aftersale_instructions"][-1]
    assert instruction["kind"] == "intercept"
    assert instruction["waybills"] == [{"carrier_code": "ZTO", "waybill_no": waybill}]
    await _our_case(line, case_id, "intercepting")
    assert await _case_calls(line, case_id) == []
    await _deliver(line, waybill, state=4)  # intercepted: back with the sender
    await _case_status(line, case_id, "MERCHANT_REFUND_SUCCESS")
    assert await _case_calls(line, case_id) == [(ACCEPT, 0)]


async def test_refund_of_the_units_left_on_a_partly_shipped_order_keeps_the_parcel(
    line: Line, supplier: Supplier
) -> None:
    """Two units, one shipped and told to WeChat, one refunded: the supplier is asked to drop the unit
    not sent, the parcel stays with the buyer (no interception), and WeChat's order awaits receipt. A
    sale once intercepted the parcel too and left WeChat waiting for a unit nobody would ship."""
    two = {**PRODUCT, "sku_cnt": 2}
    order_id = str((await line.sim("POST", "/orders", appid=APPID, paid=True, products=[two]))["order_id"])
    offered = await supplier.offered(order_id)
    dispatch_id = offered["dispatch_id"]
    await supplier.post(f"/dispatch-orders/{dispatch_id}/accept", {})
    waybill = f"75{order_id[-11:]}"
    await supplier.post(
        f"/dispatch-orders/{dispatch_id}/shipments",
        {
            "parcels": [
                {"carrier_code": "ZTO", "waybill_no": waybill, "lines": [{"line_no": 0, "quantity": 1}]}
            ]
        },
    )

    async def told() -> bool:
        return any(
            str(c["request"]["order_id"]) == order_id and c["errcode"] == 0
            for c in await line.wechat_calls(DELIVERY_SEND)
        )

    await line.until(told, timeout_s=90)
    case = await line.sim(
        "POST",
        f"/orders/{order_id}/aftersale",
        type="REFUND",
        product_id=PRODUCT["product_id"],
        sku_id=PRODUCT["sku_id"],
        count=1,
        reason="不想要了",
    )
    case_id = str(case["after_sale_order_id"])
    asked = await supplier.change(
        lambda c: (
            c["dispatch_order"]["dispatch_id"] == dispatch_id and c["change"] == "dispatch_change_requested"
        )
    )
    request = asked["dispatch_order"]["change_requests"][-1]
    assert request["kind"] == "sku"
    assert [(x["quantity"], x["shipped_quantity"]) for x in request["new_lines"]] == [(1, 1)]
    await supplier.post(
        f"/dispatch-orders/{dispatch_id}/change-requests/{request['request_id']}/answer",
        {"decision": "confirm"},
    )
    await _case_status(line, case_id, "MERCHANT_REFUND_SUCCESS")
    ours = await _our_case(line, case_id, "resolved")
    assert ours["resolution"] == "refunded"
    order = await line.sim("GET", f"/orders/{order_id}")
    assert order["status"] == 30, "nothing is left to ship"
    dispatch_order = (await supplier.client.get(f"/dispatch-orders/{dispatch_id}")).json()
    assert dispatch_order["state"] == "shipped"
    assert not dispatch_order["aftersale_instructions"], "the parcel sent is not asked back"


async def test_return_after_delivery_goes_through_the_suppliers_receipt(
    line: Line, supplier: Supplier
) -> None:
    order_id = await _paid_order(line)
    offered = await supplier.offered(order_id)
    await supplier.post(f"/dispatch-orders/{offered['dispatch_id']}/accept", {})
    waybill = f"76{order_id[-11:]}"
    await supplier.ship(offered, waybill)
    await _deliver(line, waybill)
    await _aftersale_sees(line, order_id, waybill, "delivered")
    case_id = await _open_case(line, order_id, "RETURN")
    await _our_case(line, case_id, "awaiting_operator", because="delivered")  # a person decides
    async with line.operator(OperatorRole.VIEWER) as viewer:
        refused = await viewer.post(f"/admin/v1/cases/{case_id}/approve", json={"reason": "质量问题"})
        assert refused.status_code == 403, refused.text
    async with line.operator(OperatorRole.DECIDER) as decider:
        approved = await decider.post(f"/admin/v1/cases/{case_id}/approve", json={"reason": "质量问题"})
        assert approved.status_code == 200, approved.text
    [audited] = await AuditTrail(line.db).entries(target=f"case:{case_id}")
    assert (audited.operator, audited.role, audited.action, audited.outcome) == (
        "test-decider",
        "decider",
        "approve",
        "ok",
    )
    await _case_status(line, case_id, "USER_WAIT_RETURN")  # approved, with the supplier's address
    expected = await supplier.change(
        lambda c: (
            c["dispatch_order"]["dispatch_id"] == offered["dispatch_id"]
            and c["change"] == "dispatch_aftersale_instructed"
        )
    )
    instruction = expected["dispatch_order"]["aftersale_instructions"][-1]
    assert instruction["kind"] == "return_expected" and instruction["return_address"]["city"] == "金华市"
    await line.sim("POST", f"/aftersales/{case_id}/return", delivery_id="SF", waybill_id="SF1234567890123")
    await _our_case(line, case_id, "awaiting_receipt")
    assert await _case_calls(line, case_id) == [(ACCEPT, 0)]  # the approval only
    await supplier.post(
        f"/dispatch-orders/{offered['dispatch_id']}/aftersale/{case_id}/receipt", {"condition": "intact"}
    )
    await _case_status(line, case_id, "MERCHANT_RETURN_SUCCESS")
    ours = await _our_case(line, case_id, "resolved")
    assert ours["resolution"] == "returned_and_refunded"
    assert await _case_calls(line, case_id) == [(ACCEPT, 0), (ACCEPT, 0)]


async def test_exchange_approved_by_an_operator_ships_a_replacement(line: Line, supplier: Supplier) -> None:
    order_id = await _paid_order(line)
    offered = await supplier.offered(order_id)
    await supplier.post(f"/dispatch-orders/{offered['dispatch_id']}/accept", {})
    waybill = f"77{order_id[-11:]}"
    await supplier.ship(offered, waybill)
    await _deliver(line, waybill)
    await _aftersale_sees(line, order_id, waybill, "delivered")
    case_id = await _open_case(line, order_id, "EXCHANGE")
    await _our_case(line, case_id, "awaiting_operator")
    async with line.operator(OperatorRole.DECIDER) as admin:
        approved = await admin.post(f"/admin/v1/cases/{case_id}/approve", json={"reason": "尺码不合适"})
        assert approved.status_code == 200, approved.text
    await _case_status(line, case_id, "USER_WAIT_RETURN")
    await line.sim("POST", f"/aftersales/{case_id}/return", delivery_id="SF", waybill_id="SF1234567890999")
    await _our_case(line, case_id, "awaiting_receipt")
    await supplier.post(
        f"/dispatch-orders/{offered['dispatch_id']}/aftersale/{case_id}/receipt", {"condition": "intact"}
    )
    replacement = (
        await supplier.change(
            lambda c: (
                c["change"] == "dispatch_offered" and c["dispatch_order"]["aftersale_case_id"] == case_id
            )
        )
    )["dispatch_order"]
    assert replacement["replaces_dispatch_id"] == offered["dispatch_id"]
    await supplier.post(f"/dispatch-orders/{replacement['dispatch_id']}/accept", {})
    await supplier.ship(replacement, f"78{order_id[-11:]}")
    await _case_status(line, case_id, "MERCHANT_EXCHANGE_SUCCESS")
    assert await _case_calls(line, case_id) == [(ACCEPT, 0), (RESHIP, 0)]
    ours = await _our_case(line, case_id, "resolved")
    assert ours["resolution"] == "exchanged"


async def test_a_withdrawn_request_closes_the_case_and_the_order_ships(
    line: Line, supplier: Supplier
) -> None:
    order_id = await _paid_order(line)
    offered = await supplier.offered(order_id)
    await supplier.post(f"/dispatch-orders/{offered['dispatch_id']}/accept", {})
    await supplier.ship(offered, f"79{order_id[-11:]}")
    await _deliver(line, f"79{order_id[-11:]}")
    await _aftersale_sees(line, order_id, f"79{order_id[-11:]}", "delivered")
    async with line.operator(OperatorRole.ADMIN) as admin:
        await admin.put(
            f"/admin/v1/policies/{line.shop_id}",
            json={"shop_id": line.shop_id, "auto_refund_before_shipment": True, "auto_approve_under_fen": 0},
        )
    case_id = await _open_case(line, order_id, "REFUND")  # refund-only after delivery: an operator decides
    await _our_case(line, case_id, "awaiting_operator")
    await line.sim("POST", f"/aftersales/{case_id}/cancel")
    ours = await _our_case(line, case_id, "closed")
    assert ours["resolution"] == "withdrawn"
    assert await _case_calls(line, case_id) == []


async def test_an_operator_reship_sends_the_lost_units_again(line: Line, supplier: Supplier) -> None:
    order_id = await _paid_order(line)
    offered = await supplier.offered(order_id)
    await supplier.post(f"/dispatch-orders/{offered['dispatch_id']}/accept", {})
    await supplier.ship(offered, f"80{order_id[-11:]}")
    await _deliver(line, f"80{order_id[-11:]}")
    async with line.operator(OperatorRole.ADMIN) as admin:
        opened = await admin.post(
            "/admin/v1/reships",
            json={
                "shop_id": line.shop_id,
                "order_id": order_id,
                "lines": [{"product_id": PRODUCT["product_id"], "sku_id": PRODUCT["sku_id"], "count": 1}],
                "reason": "快递丢件",
            },
        )
        assert opened.status_code == 200, opened.text
    case_id = opened.json()["case_id"]
    replacement = (
        await supplier.change(
            lambda c: (
                c["change"] == "dispatch_offered" and c["dispatch_order"]["aftersale_case_id"] == case_id
            )
        )
    )["dispatch_order"]
    assert replacement["replaces_dispatch_id"] == offered["dispatch_id"]
    assert [(x["product_id"], x["quantity"]) for x in replacement["lines"]] == [(PRODUCT["product_id"], 1)]
    await supplier.post(f"/dispatch-orders/{replacement['dispatch_id']}/accept", {})
    await supplier.ship(replacement, f"81{order_id[-11:]}")
    ours = await _our_case(line, case_id, "resolved")
    assert ours["resolution"] == "reshipped"
    assert await _case_calls(line, case_id) == []  # a re-ship is ours: WeChat is not asked anything
