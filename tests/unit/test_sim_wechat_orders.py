"""WeChat stand-in: order get/list, delivery/send, carriers, scripted faults, the call recorder and the
control endpoints that play the buyer."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from shared.wechat.api import MAX_LIST_WINDOW_S, ErrCode, Order, OrderListResponse, OrderStatus
from sim.wechat.app import create_app
from sim.wechat.state import Shop, SimState
from sim.wechat.testing import FakeClock, SimClient

APPID = "wx134c8103faa5a59e"
OTHER_APPID = "wx0000000000000002"
SECRET = "s3cr3t"
LIST = "/channels/ec/order/list/get"
GET = "/channels/ec/order/get"
SEND = "/channels/ec/order/delivery/send"


class WeChat(SimClient):
    """The stand-in as these tests use it: shop APPID by default, a fake clock beside it."""

    def __init__(self, http: httpx.AsyncClient, clock: FakeClock) -> None:
        super().__init__(http, {APPID: SECRET, OTHER_APPID: SECRET})
        self.clock = clock

    async def call(
        self, path: str, body: Any, *, appid: str = APPID, raw: bytes | None = None
    ) -> dict[str, Any]:
        return await super().call(path, body, appid=appid, raw=raw)

    async def new_order(self, **fields: Any) -> dict[str, Any]:
        order: dict[str, Any] = await self.control("/sim/orders", {"appid": APPID, **fields})
        return order

    async def paid_order(self, products: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        fields: dict[str, Any] = {"paid": True}
        if products is not None:
            fields["products"] = products
        return await self.new_order(**fields)

    async def ship(self, order_id: str, *parcels: dict[str, Any]) -> int:
        answer = await self.call(SEND, {"order_id": order_id, "delivery_list": list(parcels)})
        return int(answer["errcode"])

    async def order(self, order_id: str) -> Order:
        answer = await self.call(GET, {"order_id": order_id})
        assert answer["errcode"] == 0
        return Order.model_validate(answer["order"])


def parcel(waybill: str, *lines: tuple[str, str, int], carrier: str = "ZTO") -> dict[str, Any]:
    return {
        "delivery_id": carrier,
        "waybill_id": waybill,
        "deliver_type": 1,
        "product_infos": [{"product_id": p, "sku_id": s, "product_cnt": n} for p, s, n in lines],
    }


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def state(clock: FakeClock) -> SimState:
    sim = SimState(clock=clock, seed=42)
    for appid in (APPID, OTHER_APPID):
        sim.register_shop(Shop(appid=appid, secret=SECRET, token="AAAAA", encoding_aes_key="A" * 43))
    return sim


@pytest.fixture
async def wechat(state: SimState, clock: FakeClock) -> AsyncIterator[WeChat]:
    transport = httpx.ASGITransport(app=create_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://api.weixin.test") as http:
        yield WeChat(http, clock)


# ---- order/get ----------------------------------------------------------------------------------


async def test_order_get_accepts_a_json_number_above_2_53_exactly(wechat: WeChat) -> None:
    created = await wechat.paid_order()
    order_id = created["order_id"]
    assert isinstance(order_id, str) and int(order_id) > 2**53
    # Sent as a bare JSON number (as WeChat's examples do): a float would round the last digits.
    raw = b'{"order_id": ' + order_id.encode() + b"}"
    answer = await wechat.call(GET, None, raw=raw)
    assert answer["errcode"] == 0
    order = Order.model_validate(answer["order"])
    assert order.order_id == order_id
    assert order.status == OrderStatus.AWAITING_SHIPMENT
    assert order.order_detail.pay_info.pay_time == int(wechat.clock.now)
    line = order.order_detail.product_infos[0]
    assert line.delivery_deadline == order.order_detail.pay_info.pay_time + 48 * 3600
    # A neighbour id (what float rounding would produce) is a different, unknown order.
    neighbour = b'{"order_id": ' + str(int(order_id) + 1).encode() + b"}"
    assert (await wechat.call(GET, None, raw=neighbour))["errcode"] == ErrCode.ORDER_NOT_FOUND


async def test_order_get_errors(wechat: WeChat) -> None:
    created = await wechat.new_order()
    assert (await wechat.call(GET, {"order_id": "3705115058471208928"}))["errcode"] == ErrCode.ORDER_NOT_FOUND
    # Another shop's token does not see this shop's orders.
    other = await wechat.call(GET, {"order_id": created["order_id"]}, appid=OTHER_APPID)
    assert other["errcode"] == ErrCode.ORDER_NOT_FOUND
    assert (await wechat.call(GET, None, raw=b"{not json"))["errcode"] == ErrCode.INVALID_JSON_TYPES
    assert (await wechat.call(GET, {"order_id": [1]}))["errcode"] != 0
    assert (await wechat.call(GET, {"order_id": 3.7e18}))["errcode"] != 0


async def test_created_order_has_wechat_shape(wechat: WeChat) -> None:
    created = await wechat.new_order(
        products=[{"sku_cnt": 2, "sale_price": 1000, "title": "茶叶"}], freight=500, customer_notes="请尽快"
    )
    order = Order.model_validate(created)
    assert order.status == OrderStatus.UNPAID
    assert order.create_time == order.update_time == int(wechat.clock.now)
    assert order.order_detail.price_info.product_price == 2000
    assert order.order_detail.price_info.order_price == 2500
    assert order.order_detail.ext_info.customer_notes == "请尽快"
    assert order.order_detail.delivery_info.address_info.province_name == "广东省"
    assert order.openid


# ---- order/list/get ------------------------------------------------------------------------------


async def test_list_pages_stably_with_next_key(wechat: WeChat) -> None:
    start = int(wechat.clock.now)
    created = []
    for _ in range(25):
        created.append((await wechat.new_order())["order_id"])
        wechat.clock.advance(60)
    window = {"start_time": start, "end_time": start + 3600}
    seen: list[str] = []
    body: dict[str, Any] = {"create_time_range": window, "page_size": 10}
    first = OrderListResponse.model_validate(await wechat.call(LIST, body))
    assert first.errcode == 0 and len(first.order_id_list) == 10 and first.has_more
    seen += first.order_id_list
    late = (await wechat.new_order())["order_id"]  # created while the client pages
    next_key = first.next_key
    pages = 1
    while True:
        page = OrderListResponse.model_validate(await wechat.call(LIST, {**body, "next_key": next_key}))
        pages += 1
        seen += page.order_id_list
        next_key = page.next_key
        if not page.has_more:
            break
    assert pages == 3
    assert seen[:25] == created  # oldest first, each exactly once
    assert seen[25:] == [late]
    assert len(set(seen)) == len(seen)


async def test_list_filters_by_status_and_update_time(wechat: WeChat) -> None:
    start = int(wechat.clock.now)
    unpaid = (await wechat.new_order())["order_id"]
    paid = (await wechat.paid_order())["order_id"]
    wechat.clock.advance(3600)
    await wechat.control(f"/sim/orders/{unpaid}/address", {"detail_info": "另一处"})
    by_status = await wechat.call(
        LIST,
        {"create_time_range": {"start_time": start, "end_time": start + 10}, "status": 20, "page_size": 5},
    )
    assert by_status["order_id_list"] == [paid]
    recent = {"start_time": start + 3000, "end_time": start + 4000}
    updated = await wechat.call(LIST, {"update_time_range": recent, "page_size": 5})
    assert updated["order_id_list"] == [unpaid]
    assert updated["has_more"] is False
    other_shop = await wechat.call(LIST, {"update_time_range": recent, "page_size": 5}, appid=OTHER_APPID)
    assert other_shop["order_id_list"] == []


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ({"create_time_range": {"start_time": 0, "end_time": MAX_LIST_WINDOW_S}, "page_size": 10}, 0),
        ({"create_time_range": {"start_time": 0, "end_time": MAX_LIST_WINDOW_S + 1}, "page_size": 10}, 40097),
        ({"update_time_range": {"start_time": 0, "end_time": MAX_LIST_WINDOW_S + 1}, "page_size": 10}, 40097),
        ({"create_time_range": {"start_time": 10, "end_time": 5}, "page_size": 10}, 40097),
        ({"create_time_range": {"start_time": 0, "end_time": 10}, "page_size": 100}, 0),
        ({"create_time_range": {"start_time": 0, "end_time": 10}, "page_size": 101}, 40097),
        ({"create_time_range": {"start_time": 0, "end_time": 10}, "page_size": 0}, 40097),
        ({"create_time_range": {"start_time": 0, "end_time": 10}}, 40097),
        ({"page_size": 10}, 40097),
        ({"create_time_range": {"start_time": 0, "end_time": 10}, "page_size": 10, "next_key": "%%%"}, 40097),
        ({"create_time_range": {"start_time": 0, "end_time": 10}, "page_size": "10"}, 47001),
    ],
)
async def test_list_limits(wechat: WeChat, body: dict[str, Any], errcode: int) -> None:
    assert (await wechat.call(LIST, body))["errcode"] == errcode


# ---- delivery/send -------------------------------------------------------------------------------


async def two_line_order(wechat: WeChat) -> dict[str, Any]:
    return await wechat.paid_order(
        [
            {"product_id": "1001", "sku_id": "2001", "sku_cnt": 2},
            {"product_id": "1002", "sku_id": "2002", "sku_cnt": 1},
        ]
    )


async def test_partial_then_full_shipping(wechat: WeChat, state: SimState) -> None:
    order_id = (await two_line_order(wechat))["order_id"]
    before = (await wechat.order(order_id)).update_time
    assert await wechat.ship(order_id, parcel("ZT1", ("1001", "2001", 1))) == 0
    partial = await wechat.order(order_id)
    assert partial.status == OrderStatus.PARTIALLY_SHIPPED
    assert partial.update_time > before
    # Two parcels in one call: the rest of 1001 and all of 1002.
    assert (
        await wechat.ship(order_id, parcel("ZT2", ("1001", "2001", 1)), parcel("SF3", ("1002", "2002", 1)))
        == 0
    )
    shipped = await wechat.order(order_id)
    assert shipped.status == OrderStatus.AWAITING_RECEIPT
    parcels = shipped.order_detail.delivery_info.delivery_product_info
    assert [p.waybill_id for p in parcels] == ["ZT1", "ZT2", "SF3"]
    assert parcels[2].product_infos == [{"product_id": "1002", "sku_id": "2002", "product_cnt": 1}]
    assert await wechat.ship(order_id, parcel("ZT4", ("1001", "2001", 1))) == ErrCode.ALREADY_SHIPPED
    deliver = [p.document["order_info"] for p in state.pushes.find(event="channels_ec_order_deliver")]
    assert [d["finish_delivery"] for d in deliver] == [0, 1]
    assert all(d["order_id"] == int(order_id) for d in deliver)


async def test_shipping_without_product_infos_ships_the_rest(wechat: WeChat) -> None:
    order_id = (await two_line_order(wechat))["order_id"]
    assert await wechat.ship(order_id, parcel("ZT1", ("1001", "2001", 1))) == 0
    assert await wechat.ship(order_id, parcel("ZT2")) == 0
    order = await wechat.order(order_id)
    assert order.status == OrderStatus.AWAITING_RECEIPT
    assert order.order_detail.delivery_info.delivery_product_info[1].product_infos == [
        {"product_id": "1001", "sku_id": "2001", "product_cnt": 1},
        {"product_id": "1002", "sku_id": "2002", "product_cnt": 1},
    ]


async def test_quantities_beyond_the_order_fail_and_change_nothing(wechat: WeChat) -> None:
    order_id = (await two_line_order(wechat))["order_id"]
    assert await wechat.ship(order_id, parcel("ZT1", ("1001", "2001", 3))) == ErrCode.SHIPPING_FAILED
    # Split over two parcels of one call, still too many.
    too_many = (parcel("ZT1", ("1001", "2001", 2)), parcel("ZT2", ("1001", "2001", 1)))
    assert await wechat.ship(order_id, *too_many) == ErrCode.SHIPPING_FAILED
    assert await wechat.ship(order_id, parcel("ZT1", ("9999", "2001", 1))) == ErrCode.SHIPPING_FAILED
    order = await wechat.order(order_id)
    assert order.status == OrderStatus.AWAITING_SHIPMENT
    assert order.order_detail.delivery_info.delivery_product_info == []


async def test_status_forbids_shipping(wechat: WeChat) -> None:
    unpaid = (await wechat.new_order())["order_id"]
    assert await wechat.ship(unpaid, parcel("ZT1")) == ErrCode.STATUS_FORBIDS_SHIPPING
    cancelled = (await wechat.new_order())["order_id"]
    await wechat.control(f"/sim/orders/{cancelled}/cancel", {"cancel_type": 2})
    assert await wechat.ship(cancelled, parcel("ZT1")) == ErrCode.STATUS_FORBIDS_SHIPPING
    assert await wechat.ship("3705115058471208928", parcel("ZT1")) == ErrCode.ORDER_NOT_FOUND


async def test_open_aftersale_blocks_shipping_until_withdrawn(wechat: WeChat) -> None:
    order_id = (await wechat.paid_order())["order_id"]
    case = await wechat.control(f"/sim/orders/{order_id}/aftersale", {"type": "REFUND"})
    assert case["status"] == "MERCHANT_PROCESSING" and case["order_id"] == order_id
    assert await wechat.ship(order_id, parcel("ZT1")) == ErrCode.OPEN_AFTERSALE
    listed = (await wechat.order(order_id)).aftersale_detail.aftersale_order_list
    assert [a.aftersale_order_id for a in listed] == [case["after_sale_order_id"]]
    withdrawn = await wechat.control(f"/sim/aftersales/{case['after_sale_order_id']}/cancel")
    assert withdrawn["status"] == "USER_CANCELD"
    assert await wechat.ship(order_id, parcel("ZT1")) == 0


ACCEPT = "/channels/ec/aftersale/acceptapply"
TWO_CUPS = [{"product_id": "1001", "sku_id": "2001", "sku_cnt": 2, "title": "杯子"}]


async def _refund(wechat: WeChat, order_id: str) -> None:
    case = await wechat.control(f"/sim/orders/{order_id}/aftersale", {"type": "REFUND", "count": 1})
    answer = await wechat.call(ACCEPT, {"after_sale_order_id": case["after_sale_order_id"]})
    assert answer["errcode"] == 0, answer


async def test_a_unit_refunded_before_shipping_is_no_longer_to_ship(wechat: WeChat) -> None:
    order_id = (await wechat.paid_order(TWO_CUPS))["order_id"]
    await _refund(wechat, order_id)
    assert await wechat.ship(order_id, parcel("ZT1", ("1001", "2001", 2))) == ErrCode.SHIPPING_FAILED
    assert await wechat.ship(order_id, parcel("ZT1", ("1001", "2001", 1))) == 0
    assert (await wechat.order(order_id)).status == OrderStatus.AWAITING_RECEIPT


async def test_a_refund_covers_units_not_shipped_yet_first(wechat: WeChat) -> None:
    """One of two cups shipped, one refunded: the cup not sent yet is the refunded one, so nothing is
    left to ship and the order awaits receipt."""
    order_id = (await wechat.paid_order(TWO_CUPS))["order_id"]
    assert await wechat.ship(order_id, parcel("ZT1", ("1001", "2001", 1))) == 0
    assert (await wechat.order(order_id)).status == OrderStatus.PARTIALLY_SHIPPED
    await _refund(wechat, order_id)
    assert (await wechat.order(order_id)).status == OrderStatus.AWAITING_RECEIPT
    assert await wechat.ship(order_id, parcel("ZT2", ("1001", "2001", 1))) == ErrCode.ALREADY_SHIPPED


async def test_a_refund_beyond_the_units_not_shipped_covers_shipped_ones(wechat: WeChat) -> None:
    """Three cups, two shipped, two refunded: one unit is not sent, one comes back; none is left."""
    three = [{**TWO_CUPS[0], "sku_cnt": 3}]
    order_id = (await wechat.paid_order(three))["order_id"]
    assert await wechat.ship(order_id, parcel("ZT1", ("1001", "2001", 2))) == 0
    case = await wechat.control(f"/sim/orders/{order_id}/aftersale", {"type": "REFUND", "count": 2})
    assert (await wechat.call(ACCEPT, {"after_sale_order_id": case["after_sale_order_id"]}))["errcode"] == 0
    assert (await wechat.order(order_id)).status == OrderStatus.AWAITING_RECEIPT


async def test_a_return_is_of_shipped_units_and_leaves_the_rest_to_ship(wechat: WeChat) -> None:
    """A return is of goods the buyer has: the unit not yet shipped still ships."""
    order_id = (await wechat.paid_order(TWO_CUPS))["order_id"]
    assert await wechat.ship(order_id, parcel("ZT1", ("1001", "2001", 1))) == 0
    case = await wechat.control(f"/sim/orders/{order_id}/aftersale", {"type": "RETURN", "count": 1})
    case_id = case["after_sale_order_id"]
    assert (await wechat.call(ACCEPT, {"after_sale_order_id": case_id}))["errcode"] == 0
    await wechat.control(f"/sim/aftersales/{case_id}/return", {"delivery_id": "SF", "waybill_id": "SF1"})
    assert (await wechat.call(ACCEPT, {"after_sale_order_id": case_id}))["errcode"] == 0
    assert (await wechat.order(order_id)).status == OrderStatus.PARTIALLY_SHIPPED
    assert await wechat.ship(order_id, parcel("ZT2", ("1001", "2001", 1))) == 0
    assert await wechat.ship(order_id, parcel("ZT3", ("1001", "2001", 1))) == ErrCode.ALREADY_SHIPPED


async def test_bad_parcels_are_invalid_args(wechat: WeChat) -> None:
    order_id = (await wechat.paid_order())["order_id"]
    assert await wechat.ship(order_id, parcel("ZT1", carrier="NOPE")) == ErrCode.INVALID_ARGS
    assert await wechat.ship(order_id, parcel("", carrier="ZTO")) == ErrCode.INVALID_ARGS
    assert (await wechat.call(SEND, {"order_id": order_id, "delivery_list": []}))[
        "errcode"
    ] == ErrCode.INVALID_ARGS
    no_logistics = {"deliver_type": 3, "product_infos": []}
    assert (await wechat.call(SEND, {"order_id": order_id, "delivery_list": [no_logistics]}))["errcode"] == 0


async def test_updated_too_often_is_scriptable(wechat: WeChat) -> None:
    order_id = (await wechat.paid_order())["order_id"]
    await wechat.control("/sim/faults", {"fault": "errcode", "errcode": 100003, "count": 1, "path": SEND})
    assert await wechat.ship(order_id, parcel("ZT1")) == ErrCode.ORDER_UPDATED_TOO_OFTEN
    assert (await wechat.order(order_id)).status == OrderStatus.AWAITING_SHIPMENT
    assert await wechat.ship(order_id, parcel("ZT1")) == 0


async def test_delivery_companies(wechat: WeChat) -> None:
    answer = await wechat.call("/channels/ec/order/deliverycompanylist/new/get", {"ewaybill_only": False})
    codes = [c["delivery_id"] for c in answer["company_list"]]
    assert codes == ["ZTO", "YTO", "YUNDA", "JTSD", "STO", "SF", "JD", "EMS", "CNSD", "DBKD", "OTHER"]
    assert all(c["delivery_name"] for c in answer["company_list"])


# ---- faults and the call recorder ----------------------------------------------------------------


async def test_busy_and_rate_limit_faults_are_used_up(wechat: WeChat) -> None:
    order_id = (await wechat.paid_order())["order_id"]
    await wechat.token(APPID)
    await wechat.control("/sim/faults", {"fault": "busy", "count": 2})
    answers = [(await wechat.call(GET, {"order_id": order_id}))["errcode"] for _ in range(3)]
    assert answers == [ErrCode.SYSTEM_BUSY, ErrCode.SYSTEM_BUSY, 0]
    await wechat.control("/sim/faults", {"fault": "rate_limit", "count": 1, "path": LIST})
    assert (await wechat.call(GET, {"order_id": order_id}))["errcode"] == 0  # another path: untouched
    window = {"create_time_range": {"start_time": 0, "end_time": 10}, "page_size": 10}
    assert (await wechat.call(LIST, window))["errcode"] == ErrCode.MINUTE_QUOTA
    assert (await wechat.call(LIST, window))["errcode"] == 0


async def test_token_errors_come_before_scripted_faults(wechat: WeChat) -> None:
    await wechat.control("/sim/faults", {"fault": "busy", "count": 1, "path": GET})
    no_token = await wechat.http.post(GET, json={"order_id": "1"})
    assert no_token.json()["errcode"] == ErrCode.TOKEN_MISSING
    plan = await wechat.http.get("/sim/faults")
    assert plan.json()["errcodes"] == [{"errcode": -1, "remaining": 1, "path": GET}]


async def test_delay_fault_slows_answers(wechat: WeChat) -> None:
    await wechat.token(APPID)
    await wechat.control("/sim/faults", {"fault": "delay", "ms": 200, "count": 1})
    started = time.monotonic()
    await wechat.call("/channels/ec/order/deliverycompanylist/new/get", {})
    assert time.monotonic() - started >= 0.2
    # A one-shot delay is used up: the plan no longer holds it (an upper bound on time would be flaky).
    plan = await wechat.http.get("/sim/faults")
    assert plan.json()["delays"] == []


async def test_clear_removes_every_fault(wechat: WeChat) -> None:
    await wechat.control("/sim/faults", {"fault": "busy", "count": 5})
    await wechat.control("/sim/faults", {"fault": "delay", "ms": 1000})
    cleared = await wechat.control("/sim/faults", {"fault": "clear"})
    assert cleared["plan"]["errcodes"] == [] and cleared["plan"]["delays"] == []
    await wechat.control("/sim/faults", {"fault": "nonsense"}, expect=422)


async def test_calls_are_recorded_with_body_and_errcode(wechat: WeChat, state: SimState) -> None:
    order_id = (await wechat.paid_order())["order_id"]
    raw = b'{"order_id": ' + order_id.encode() + b"}"
    await wechat.call(GET, None, raw=raw)
    await wechat.call(GET, {"order_id": "1"})
    response = await wechat.http.get("/sim/calls", params={"path": GET})
    calls = response.json()
    assert [c["errcode"] for c in calls] == [0, ErrCode.ORDER_NOT_FOUND]
    assert [c["appid"] for c in calls] == [APPID, APPID]
    assert calls[0]["request"] == {"order_id": int(order_id)}  # exactly as sent: a JSON number
    assert json.loads(response.content)[0]["request"]["order_id"] == int(order_id)
    assert {c["path"] for c in (await wechat.http.get("/sim/calls")).json()} == {"/cgi-bin/token", GET}
    assert not [c for c in state.calls.calls() if c.path.startswith("/sim")]


async def test_a_watcher_asks_only_for_the_calls_after_its_mark(wechat: WeChat, state: SimState) -> None:
    order_id = (await wechat.paid_order())["order_id"]
    await wechat.call(GET, {"order_id": order_id})
    first = (await wechat.http.get("/sim/calls", params={"path": GET})).json()
    assert len(first) == 1
    await wechat.call(GET, {"order_id": "1"})
    await wechat.call(GET, {"order_id": order_id})
    mark = first[-1]["seq"]
    newer = (await wechat.http.get("/sim/calls", params={"path": GET, "after": mark})).json()
    assert [c["errcode"] for c in newer] == [ErrCode.ORDER_NOT_FOUND, 0]
    assert all(c["seq"] > mark for c in newer) and newer[0]["seq"] < newer[1]["seq"]
    everything = (await wechat.http.get("/sim/calls")).json()
    assert [c["seq"] for c in everything] == sorted({c["seq"] for c in everything})  # unique, in order
    last = everything[-1]["seq"]
    assert (await wechat.http.get("/sim/calls", params={"after": last})).json() == []
    state.calls.clear()  # numbers are not reused after a clear
    await wechat.call(GET, {"order_id": order_id})
    after_clear = (await wechat.http.get("/sim/calls", params={"path": GET})).json()
    assert [c["seq"] for c in after_clear] == [last + 1]
    assert (await wechat.http.get("/sim/calls", params={"after": -1})).status_code == 422


# ---- the buyer's side (control endpoints) --------------------------------------------------------


async def test_buyer_actions_update_the_order_and_queue_pushes(wechat: WeChat, state: SimState) -> None:
    order = await wechat.new_order()
    order_id = order["order_id"]
    times = [order["update_time"]]
    for path, body in (
        ("pay", {}),
        ("address", {"user_name": "李四", "detail_info": "天河路1号"}),
        ("urge", None),
    ):
        times.append((await wechat.control(f"/sim/orders/{order_id}/{path}", body))["update_time"])
    assert times == sorted(set(times))  # strictly increasing, even within one second
    assert (await wechat.order(order_id)).order_detail.delivery_info.address_info.user_name == "李四"
    assert await wechat.ship(order_id, parcel("ZT1")) == 0
    done = await wechat.control(f"/sim/orders/{order_id}/complete", {"confirm_type": 1})
    assert done["status"] == OrderStatus.COMPLETED
    pushes = (await wechat.http.get("/sim/pushes", params={"order_id": order_id})).json()
    assert [(p["event"], p["status"]) for p in pushes] == [
        ("channels_ec_order_new", "queued"),
        ("channels_ec_order_pay", "queued"),
        ("channels_ec_order_ext_info_update", "queued"),
        ("channels_ec_order_ext_info_update", "queued"),
        ("channels_ec_order_deliver", "queued"),
        ("channels_ec_order_confirm", "queued"),
    ]
    infos = [p["document"]["order_info"] for p in pushes]
    assert infos[1] == {"order_id": int(order_id), "pay_time": int(wechat.clock.now)}
    assert [infos[2]["type"], infos[3]["type"]] == [2, 7]
    assert infos[5]["confirm_type"] == 1
    envelope = pushes[0]["document"]
    assert envelope["MsgType"] == "event" and envelope["ToUserName"] == state.shops[APPID].username
    assert envelope["FromUserName"] == order["openid"]


async def test_cancel_types(wechat: WeChat, state: SimState) -> None:
    unpaid = (await wechat.new_order())["order_id"]
    assert (await wechat.control(f"/sim/orders/{unpaid}/cancel", {"cancel_type": 1}))["status"] == 250
    paid = (await wechat.paid_order())["order_id"]
    await wechat.control(f"/sim/orders/{paid}/cancel", {"cancel_type": 1}, expect=409)
    assert (await wechat.control(f"/sim/orders/{paid}/cancel", {"cancel_type": 3}))["status"] == 200
    cancels = [p.document["order_info"] for p in state.pushes.find(event="channels_ec_order_cancel")]
    assert cancels == [{"order_id": int(unpaid), "cancel_type": 1}, {"order_id": int(paid), "cancel_type": 3}]


async def test_control_refusals(wechat: WeChat) -> None:
    order_id = (await wechat.paid_order())["order_id"]
    refused = await wechat.control(f"/sim/orders/{order_id}/pay", {}, expect=409)
    assert refused["detail"]["code"] == "invalid_transition"
    await wechat.control("/sim/orders/123/pay", {}, expect=404)
    await wechat.control("/sim/orders", {"appid": "wx_nobody"}, expect=404)
    await wechat.control("/sim/orders", {"appid": APPID, "order_id": order_id}, expect=409)
    await wechat.control(f"/sim/orders/{order_id}/complete", {}, expect=409)
    bad_key = {"appid": "wx1", "secret": "s", "token": "t", "encoding_aes_key": "!" * 43}
    await wechat.control("/sim/shops", bad_key, expect=422)


async def test_order_id_can_be_chosen(wechat: WeChat) -> None:
    chosen = "3705115058471208928"
    created = await wechat.new_order(order_id=int(chosen))
    assert created["order_id"] == chosen
    assert (await wechat.order(chosen)).order_id == chosen
    shops = (await wechat.http.get("/sim/shops")).json()
    assert {s["appid"] for s in shops} == {APPID, OTHER_APPID}
    assert all("secret" not in s for s in shops)
