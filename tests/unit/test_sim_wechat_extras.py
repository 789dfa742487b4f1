"""WeChat stand-in: e-waybills, after-sale handling and drop-ship assignment."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from shared.wechat.api import ErrCode, OrderStatus
from sim.wechat.app import create_app
from sim.wechat.errors import SimErrCode
from sim.wechat.state import Shop, SimState
from sim.wechat.testing import FakeClock, SimCallError, SimClient

APPID = "wx134c8103faa5a59e"
SECRET = "s3cr3t"
EWAYBILL = "/channels/ec/logistics/ewaybill/biz"
AFTERSALE = "/channels/ec/aftersale"
SENDER = {"name": "仓库", "mobile": "13900000000", "province": "浙江省", "city": "杭州市", "county": "余杭区"}
RECEIVER = {
    "name": "张*",
    "mobile": "138****8000",
    "province": "广东省",
    "city": "广州市",
    "county": "海珠区",
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def state(clock: FakeClock) -> SimState:
    sim = SimState(clock=clock, seed=5)
    sim.register_shop(Shop(appid=APPID, secret=SECRET, token="AAAAA", encoding_aes_key="A" * 43))
    return sim


@pytest.fixture
async def sim(state: SimState) -> AsyncIterator[SimClient]:
    transport = httpx.ASGITransport(app=create_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://api.weixin.test") as http:
        yield SimClient(http, {APPID: SECRET})


async def paid_order(sim: SimClient, sku_cnt: int = 1) -> dict[str, Any]:
    products = [{"product_id": "1001", "sku_id": "2001", "sku_cnt": sku_cnt, "sale_price": 5000}]
    order: dict[str, Any] = await sim.control(
        "/sim/orders", {"appid": APPID, "paid": True, "products": products}
    )
    return order


def precreate_body(order_id: str, delivery_id: str = "ZTO") -> dict[str, Any]:
    goods = [{"good_name": "茶叶", "good_count": 1, "product_id": 1001, "sku_id": 2001}]
    return {
        "delivery_id": delivery_id,
        "ewaybill_acct_id": "6635671203",
        "sender": SENDER,
        "receiver": RECEIVER,
        "ec_order_list": [{"ec_order_id": int(order_id), "goods_list": goods}],
        "shop_id": "5009820302542",
    }


# ---- e-waybills ----------------------------------------------------------------------------------


async def test_ewaybill_life_cycle(sim: SimClient, state: SimState) -> None:
    order_id = (await paid_order(sim))["order_id"]
    first = await sim.call(f"{EWAYBILL}/order/precreate", precreate_body(order_id), appid=APPID)
    again = await sim.call(f"{EWAYBILL}/order/precreate", precreate_body(order_id), appid=APPID)
    assert first["errcode"] == again["errcode"] == 0
    assert first["ewaybill_order_id"] != again["ewaybill_order_id"]  # not idempotent
    ewaybill_order_id = first["ewaybill_order_id"]
    created = await sim.call(
        f"{EWAYBILL}/order/create",
        {**precreate_body(order_id), "ewaybill_order_id": ewaybill_order_id, "template_id": "single"},
        appid=APPID,
    )
    assert created["errcode"] == 0 and created["waybill_id"].startswith("78")
    waybill_id = created["waybill_id"]
    twice = await sim.call(f"{EWAYBILL}/order/create", {"ewaybill_order_id": ewaybill_order_id}, appid=APPID)
    assert twice["errcode"] == SimErrCode.EWAYBILL_EXISTS
    printed = await sim.call(
        f"{EWAYBILL}/print/get",
        {"ewaybill_order_id": ewaybill_order_id, "template_id": "single"},
        appid=APPID,
    )
    assert json.loads(base64.b64decode(printed["print_info"]))["waybill_id"] == waybill_id
    info = (await sim.call(f"{EWAYBILL}/order/get", {"ewaybill_order_id": ewaybill_order_id}, appid=APPID))[
        "order_info"
    ]
    assert (info["status"], info["waybill_id"], info["delivery_id"]) == (1, waybill_id, "ZTO")
    assert info["ec_order_list"][0]["ec_order_id"] == order_id
    # Shipping with that waybill marks the e-waybill shipped; the carrier's progress is pushed.
    delivery = {"delivery_id": "ZTO", "waybill_id": waybill_id, "deliver_type": 1}
    shipped = await sim.call(
        "/channels/ec/order/delivery/send", {"order_id": order_id, "delivery_list": [delivery]}, appid=APPID
    )
    assert shipped["errcode"] == 0
    assert state.ewaybills.records[ewaybill_order_id].doc["status"] == 4
    await sim.control(f"/sim/ewaybills/{ewaybill_order_id}/path", {"status": 1, "desc": "已揽收"})
    (push,) = state.pushes.find(event="ewaybill_push_path")
    assert push.document["waybill_info"] == {
        "ewaybill_order_id": ewaybill_order_id,
        "waybill_id": waybill_id,
        "update_time": state.now(),
        "status": 1,
        "desc": "已揽收",
    }


async def test_ewaybill_errors(sim: SimClient) -> None:
    order_id = (await paid_order(sim))["order_id"]
    unknown = await sim.call(f"{EWAYBILL}/order/get", {"ewaybill_order_id": "1612406"}, appid=APPID)
    assert unknown["errcode"] == SimErrCode.EWAYBILL_NOT_FOUND
    bad_carrier = await sim.call(f"{EWAYBILL}/order/precreate", precreate_body(order_id, "NOPE"), appid=APPID)
    assert bad_carrier["errcode"] == ErrCode.INVALID_ARGS
    no_order = await sim.call(
        f"{EWAYBILL}/order/precreate", precreate_body("3705115058471208928"), appid=APPID
    )
    assert no_order["errcode"] == ErrCode.ORDER_NOT_FOUND
    ewaybill_order_id = (
        await sim.call(f"{EWAYBILL}/order/precreate", precreate_body(order_id), appid=APPID)
    )["ewaybill_order_id"]
    no_number_yet = await sim.call(
        f"{EWAYBILL}/print/get", {"ewaybill_order_id": ewaybill_order_id}, appid=APPID
    )
    assert no_number_yet["errcode"] != 0


async def test_ewaybill_out_of_numbers_then_cancel(sim: SimClient) -> None:
    order_id = (await paid_order(sim))["order_id"]
    await sim.control("/sim/ewaybill/balance", {"appid": APPID, "delivery_id": "ZTO", "available": 1})
    ids = [
        (await sim.call(f"{EWAYBILL}/order/precreate", precreate_body(order_id), appid=APPID))[
            "ewaybill_order_id"
        ]
        for _ in range(2)
    ]
    ok = await sim.call(f"{EWAYBILL}/order/create", {"ewaybill_order_id": ids[0]}, appid=APPID)
    assert ok["errcode"] == 0
    empty = await sim.call(f"{EWAYBILL}/order/create", {"ewaybill_order_id": ids[1]}, appid=APPID)
    assert empty["errcode"] == SimErrCode.EWAYBILL_NO_NUMBER
    assert empty["delivery_error_msg"]
    cancel = {"ewaybill_order_id": ids[0], "delivery_id": "ZTO", "waybill_id": ok["waybill_id"]}
    assert (await sim.call(f"{EWAYBILL}/order/cancel", cancel, appid=APPID))["errcode"] == 0
    info = (await sim.call(f"{EWAYBILL}/order/get", {"ewaybill_order_id": ids[0]}, appid=APPID))["order_info"]
    assert info["status"] == 2


# ---- after-sale ----------------------------------------------------------------------------------


async def open_case(sim: SimClient, order_id: str, kind: str, count: int = 1) -> str:
    case = await sim.control(f"/sim/orders/{order_id}/aftersale", {"type": kind, "count": count})
    return str(case["after_sale_order_id"])


async def aftersale(sim: SimClient, after_sale_order_id: str) -> dict[str, Any]:
    answer = await sim.call(
        f"{AFTERSALE}/getaftersaleorder", {"after_sale_order_id": after_sale_order_id}, appid=APPID
    )
    assert answer["errcode"] == 0
    case: dict[str, Any] = answer["after_sale_order"]
    return case


async def test_refund_of_every_unit_cancels_the_order(sim: SimClient, state: SimState) -> None:
    order_id = (await paid_order(sim))["order_id"]
    case_id = await open_case(sim, order_id, "REFUND")
    case = await aftersale(sim, case_id)
    assert (case["type"], case["status"], case["refund_info"]["amount"]) == (
        "REFUND",
        "MERCHANT_PROCESSING",
        5000,
    )
    accepted = await sim.call(f"{AFTERSALE}/acceptapply", {"after_sale_order_id": case_id}, appid=APPID)
    assert accepted["errcode"] == 0
    assert (await aftersale(sim, case_id))["status"] == "MERCHANT_REFUND_SUCCESS"
    order = state.orders.orders[order_id].doc
    assert order["status"] == OrderStatus.CANCELLED_AFTER_AFTERSALE
    events = [
        (p.event, p.document.get("order_info", {}).get("cancel_type"))
        for p in state.pushes.find(subject_id=order_id)
    ]
    assert events[-2:] == [("channels_ec_aftersale_update", None), ("channels_ec_order_cancel", 3)]
    updates = [
        p.document["finder_shop_aftersale_status_update"]
        for p in state.pushes.find(event="channels_ec_aftersale_update")
    ]
    assert [u["status"] for u in updates] == ["MERCHANT_PROCESSING", "MERCHANT_REFUND_SUCCESS"]
    again = await sim.call(f"{AFTERSALE}/acceptapply", {"after_sale_order_id": case_id}, appid=APPID)
    assert again["errcode"] != 0


async def test_one_refund_per_order_per_minute(sim: SimClient, clock: FakeClock) -> None:
    order_id = (await paid_order(sim, sku_cnt=3))["order_id"]
    first, second = await open_case(sim, order_id, "REFUND"), await open_case(sim, order_id, "REFUND")
    assert (await sim.call(f"{AFTERSALE}/acceptapply", {"after_sale_order_id": first}, appid=APPID))[
        "errcode"
    ] == 0
    clock.advance(59)
    too_soon = await sim.call(f"{AFTERSALE}/acceptapply", {"after_sale_order_id": second}, appid=APPID)
    assert too_soon["errcode"] == SimErrCode.REFUND_TOO_OFTEN
    assert (await aftersale(sim, second))["status"] == "MERCHANT_PROCESSING"
    clock.advance(1)
    assert (await sim.call(f"{AFTERSALE}/acceptapply", {"after_sale_order_id": second}, appid=APPID))[
        "errcode"
    ] == 0


async def test_return_is_approved_then_refunded_after_receipt(sim: SimClient, state: SimState) -> None:
    order_id = (await paid_order(sim, sku_cnt=2))["order_id"]
    case_id = await open_case(sim, order_id, "RETURN")
    await sim.call(f"{AFTERSALE}/acceptapply", {"after_sale_order_id": case_id}, appid=APPID)
    assert (await aftersale(sim, case_id))["status"] == "USER_WAIT_RETURN"
    await sim.control(f"/sim/aftersales/{case_id}/return", {"delivery_id": "SF", "waybill_id": "SF1"})
    case = await aftersale(sim, case_id)
    assert case["status"] == "MERCHANT_WAIT_RECEIPT" and case["return_info"]["waybill_id"] == "SF1"
    await sim.call(f"{AFTERSALE}/acceptapply", {"after_sale_order_id": case_id}, appid=APPID)
    assert (await aftersale(sim, case_id))["status"] == "MERCHANT_RETURN_SUCCESS"
    product = state.orders.orders[order_id].products[0]
    assert (product["finish_aftersale_sku_cnt"], product["on_aftersale_sku_cnt"]) == (1, 0)
    assert state.orders.orders[order_id].status == OrderStatus.AWAITING_SHIPMENT  # one unit is still to ship


async def test_reject_and_exchange(sim: SimClient) -> None:
    order_id = (await paid_order(sim, sku_cnt=3))["order_id"]
    refund = await open_case(sim, order_id, "REFUND")
    body = {"after_sale_order_id": refund, "reject_reason_type": 1, "reject_reason": "已发货"}
    assert (await sim.call(f"{AFTERSALE}/rejectapply", body, appid=APPID))["errcode"] == 0
    assert (await aftersale(sim, refund))["status"] == "MERCHANT_REJECT_REFUND"
    exchange = await open_case(sim, order_id, "EXCHANGE")
    reship = {"after_sale_order_id": exchange, "delivery_id": "SF", "waybill_id": "SF2"}
    early = await sim.call(f"{AFTERSALE}/acceptexchangereship", reship, appid=APPID)
    assert early["errcode"] == ErrCode.INVALID_ARGS  # nothing received back yet
    await sim.call(f"{AFTERSALE}/acceptapply", {"after_sale_order_id": exchange}, appid=APPID)
    await sim.control(f"/sim/aftersales/{exchange}/return")
    assert (await sim.call(f"{AFTERSALE}/acceptexchangereship", reship, appid=APPID))["errcode"] == 0
    assert (await aftersale(sim, exchange))["status"] == "MERCHANT_EXCHANGE_SUCCESS"
    second = await open_case(sim, order_id, "EXCHANGE")
    await sim.call(f"{AFTERSALE}/acceptapply", {"after_sale_order_id": second}, appid=APPID)
    await sim.control(f"/sim/aftersales/{second}/return")
    body = {"after_sale_order_id": second, "reject_reason": "商品已损坏"}
    assert (await sim.call(f"{AFTERSALE}/rejectexchangereship", body, appid=APPID))["errcode"] == 0
    assert (await aftersale(sim, second))["status"] == "MERCHANT_REJECT_EXCHANGE"
    unknown = await sim.call(f"{AFTERSALE}/getaftersaleorder", {"after_sale_order_id": "1"}, appid=APPID)
    assert unknown["errcode"] != 0
    with pytest.raises(SimCallError):
        await sim.control(f"/sim/aftersales/{second}/return")  # not awaiting a return any more


# ---- drop-ship -----------------------------------------------------------------------------------


async def test_dropship_assign(sim: SimClient, state: SimState) -> None:
    order_id = (await paid_order(sim, sku_cnt=2))["order_id"]
    line = {"spu_id": "1001", "sku_id": "2001", "product_cnt": 2}
    body = {"order_id": order_id, "supplier_appid": "wxsupplier", "dropship_product_list": [line]}
    answer = await sim.call("/channels/ec/order/dropship/assign", body, appid=APPID)
    assert answer["errcode"] == 0 and answer["ds_order_id"]
    (assigned,) = (await sim.http.get("/sim/dropships", params={"order_id": order_id})).json()
    assert assigned["supplier_appid"] == "wxsupplier"
    again = await sim.call("/channels/ec/order/dropship/assign", body, appid=APPID)
    assert again["errcode"] == ErrCode.INVALID_ARGS  # every unit is assigned already
    ext = [
        p.document["order_info"]["type"] for p in state.pushes.find(event="channels_ec_order_ext_info_update")
    ]
    assert ext == [14]
    unpaid = (await sim.control("/sim/orders", {"appid": APPID}))["order_id"]
    body["order_id"] = unpaid
    refused = await sim.call("/channels/ec/order/dropship/assign", body, appid=APPID)
    assert refused["errcode"] == 610001  # 订单非待发货状态
