"""WeChat stand-in: drop-ship (代发) orders: assign, get, list and cancel, with the documented errcodes
(610001 not awaiting shipment, 610003 all shipped, 610004 units shipped, 610009 ds order conflict)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from shared.wechat.api import DropshipErrCode, DropshipGetResponse, DropshipListResponse, ErrCode
from sim.wechat.app import create_app
from sim.wechat.state import Shop, SimState
from sim.wechat.testing import DOC_TIME, FakeClock, SimClient

APPID = "wx134c8103faa5a59e"
OTHER_APPID = "wx0000000000000002"
SECRET = "s3cr3t"
DROPSHIP = "/channels/ec/order/dropship"


@pytest.fixture
def state() -> SimState:
    sim = SimState(clock=FakeClock(), seed=11)
    for appid in (APPID, OTHER_APPID):
        sim.register_shop(Shop(appid=appid, secret=SECRET, token="AAAAA", encoding_aes_key="A" * 43))
    return sim


@pytest.fixture
async def sim(state: SimState) -> AsyncIterator[SimClient]:
    transport = httpx.ASGITransport(app=create_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://api.weixin.test") as http:
        yield SimClient(http, {APPID: SECRET, OTHER_APPID: SECRET})


async def paid_order(sim: SimClient, *, appid: str = APPID) -> str:
    products = [
        {"product_id": "1001", "sku_id": "2001", "sku_cnt": 3, "sale_price": 5000, "title": "围巾"},
        {"product_id": "1002", "sku_id": "2002", "sku_cnt": 1, "sale_price": 3000},
    ]
    order = await sim.control("/sim/orders", {"appid": appid, "paid": True, "products": products})
    return str(order["order_id"])


def product(spu: str, sku: str, count: int) -> dict[str, Any]:
    return {"spu_id": spu, "sku_id": sku, "product_cnt": count}


async def assign(sim: SimClient, order_id: str, *lines: dict[str, Any]) -> dict[str, Any]:
    body = {"order_id": order_id, "supplier_appid": "wxsupplier", "dropship_product_list": list(lines)}
    return await sim.call(f"{DROPSHIP}/assign", body, appid=APPID)


async def get(sim: SimClient, ds_order_id: str, *, appid: str = APPID) -> dict[str, Any]:
    return await sim.call(f"{DROPSHIP}/get", {"ds_order_id": ds_order_id}, appid=appid)


async def test_get_answers_the_drop_ship_order_with_wechat_field_names(sim: SimClient) -> None:
    order_id = await paid_order(sim)
    ds_order_id = (await assign(sim, order_id, product("1001", "2001", 2)))["ds_order_id"]
    answer = await get(sim, ds_order_id)
    assert answer["errcode"] == 0
    ds = answer["dropship_order"]
    assert {"ds_order_id", "order_id", "supplier_appid", "status", "create_time", "update_time"} <= set(ds)
    assert ds["order_id"] == order_id and ds["supplier_appid"] == "wxsupplier"
    (line,) = ds["dropship_order_detail"]["product_infos"]
    assert (line["product_id"], line["sku_id"], line["sku_cnt"], line["title"]) == ("1001", "2001", 2, "围巾")
    parsed = DropshipGetResponse.model_validate(answer).dropship_order
    assert parsed is not None and parsed.counts() == {("1001", "2001"): 2}
    assert (await get(sim, "42"))["errcode"] == ErrCode.INVALID_ARGS
    assert (await get(sim, ds_order_id, appid=OTHER_APPID))["errcode"] == ErrCode.INVALID_ARGS  # not theirs


async def test_list_finds_an_orders_drop_ship_orders_by_supplier_and_time(sim: SimClient) -> None:
    order_id = await paid_order(sim)
    other_order = await paid_order(sim)
    first = (await assign(sim, order_id, product("1001", "2001", 1)))["ds_order_id"]
    second = (await assign(sim, order_id, product("1002", "2002", 1)))["ds_order_id"]
    await assign(sim, other_order, product("1001", "2001", 1))
    window = {"start_time": int(DOC_TIME) - 60, "end_time": int(DOC_TIME) + 60}
    body: dict[str, Any] = {
        "order_id": int(order_id),  # a number in this request's docs
        "supplier_appid": "wxsupplier",
        "create_time_range": window,
        "page_info": {"offset": 0, "limit": 1},
    }
    page = DropshipListResponse.model_validate(await sim.call(f"{DROPSHIP}/list", body, appid=APPID))
    assert page.errcode == 0 and page.has_more and page.total == 2 and len(page.ds_order_id_list) == 1
    body["page_info"] = {"offset": 1, "limit": 1}
    rest = DropshipListResponse.model_validate(await sim.call(f"{DROPSHIP}/list", body, appid=APPID))
    assert set(page.ds_order_id_list + rest.ds_order_id_list) == {first, second} and not rest.has_more
    body["supplier_appid"] = "wxsomeone-else"
    assert (await sim.call(f"{DROPSHIP}/list", body, appid=APPID))["ds_order_id_list"] == []
    too_long = {**body, "create_time_range": {"start_time": 0, "end_time": 8 * 24 * 3600}}
    assert (await sim.call(f"{DROPSHIP}/list", too_long, appid=APPID))["errcode"] == ErrCode.INVALID_ARGS
    theirs = await sim.call(f"{DROPSHIP}/list", {"order_id": order_id}, appid=OTHER_APPID)
    assert theirs["ds_order_id_list"] == []


async def test_cancel_takes_units_back_and_frees_them_for_another_assign(
    sim: SimClient, state: SimState
) -> None:
    order_id = await paid_order(sim)
    ds_order_id = (await assign(sim, order_id, product("1001", "2001", 3)))["ds_order_id"]
    assert (await assign(sim, order_id, product("1001", "2001", 1)))["errcode"] == ErrCode.INVALID_ARGS

    body = {
        "order_id": order_id,
        "ds_order_id": ds_order_id,
        "dropship_product_list": [product("1001", "2001", 1)],
    }
    assert (await sim.call(f"{DROPSHIP}/cancel", body, appid=APPID))["errcode"] == 0
    ds = (await get(sim, ds_order_id))["dropship_order"]
    assert ds["dropship_order_detail"]["product_infos"][0]["sku_cnt"] == 2
    assert (await assign(sim, order_id, product("1001", "2001", 1)))["errcode"] == 0  # the freed unit

    body["dropship_product_list"] = [product("1001", "2001", 2)]
    assert (await sim.call(f"{DROPSHIP}/cancel", body, appid=APPID))["errcode"] == 0
    ds = (await get(sim, ds_order_id))["dropship_order"]
    assert ds["dropship_order_detail"]["product_infos"] == []
    again = await sim.call(f"{DROPSHIP}/cancel", body, appid=APPID)
    assert again["errcode"] == ErrCode.INVALID_ARGS  # nothing left to cancel
    ext = [
        p.document["order_info"]["type"] for p in state.pushes.find(event="channels_ec_order_ext_info_update")
    ]
    assert ext == [14, 15, 14, 15]  # assigned, cancelled, assigned, cancelled


async def test_cancel_refuses_a_foreign_ds_order_and_shipped_units(sim: SimClient) -> None:
    order_id = await paid_order(sim)
    other_order = await paid_order(sim)
    ds_order_id = (await assign(sim, order_id, product("1001", "2001", 3)))["ds_order_id"]
    foreign = {"order_id": other_order, "ds_order_id": ds_order_id, "dropship_product_list": []}
    assert (await sim.call(f"{DROPSHIP}/cancel", foreign, appid=APPID))["errcode"] == 610009
    unknown = {"order_id": order_id, "ds_order_id": "7", "dropship_product_list": []}
    assert (await sim.call(f"{DROPSHIP}/cancel", unknown, appid=APPID))["errcode"] == 610009

    parcel = {
        "delivery_id": "ZTO",
        "waybill_id": "ZT1001",
        "deliver_type": 1,
        "product_infos": [{"product_id": "1001", "sku_id": "2001", "product_cnt": 2}],
    }
    send = {"order_id": order_id, "delivery_list": [parcel]}
    assert (await sim.call("/channels/ec/order/delivery/send", send, appid=APPID))["errcode"] == 0
    everything = {"order_id": order_id, "ds_order_id": ds_order_id, "dropship_product_list": []}
    shipped = await sim.call(f"{DROPSHIP}/cancel", everything, appid=APPID)
    assert shipped["errcode"] == DropshipErrCode.PRODUCT_SHIPPED  # 该商品已发货
    one = {**everything, "dropship_product_list": [product("1001", "2001", 1)]}
    assert (await sim.call(f"{DROPSHIP}/cancel", one, appid=APPID))["errcode"] == 0  # the unshipped unit


async def test_assign_refuses_a_fully_shipped_order(sim: SimClient) -> None:
    order_id = await paid_order(sim)
    send = {
        "order_id": order_id,
        "delivery_list": [
            {"delivery_id": "ZTO", "waybill_id": "ZT2002", "deliver_type": 1, "product_infos": []}
        ],
    }
    assert (await sim.call("/channels/ec/order/delivery/send", send, appid=APPID))["errcode"] == 0
    refused = await assign(sim, order_id, product("1001", "2001", 1))
    assert refused["errcode"] == DropshipErrCode.ORDER_ALL_SHIPPED  # 订单所有商品已发货
