"""The sale simulator's observer sees every order change the WeChat stand-in makes."""

import json
from typing import Any

import httpx

from sim.sale.observer import Observer
from sim.wechat.app import SIM_NOW_HEADER, create_app
from sim.wechat.orders import DeliverType, Parcel, ShipLine
from sim.wechat.state import Shop, SimState
from sim.wechat.testing import FakeClock

APPID = "wx_observed"


def _no_carriers(request: httpx.Request) -> httpx.Response:
    raise AssertionError("no parcel here: the carriers are not asked")


async def test_an_order_changed_often_in_one_second_does_not_hide_other_orders_later_changes() -> None:
    clock = FakeClock()
    state = SimState(clock=clock, seed=1)
    state.register_shop(Shop(appid=APPID, secret="s", token="AAAAA", encoding_aes_key="A" * 43))
    wechat = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(state)), base_url="http://sim")
    carriers = httpx.AsyncClient(transport=httpx.MockTransport(_no_carriers), base_url="http://carriers")
    observer = Observer(wechat, carriers, [APPID], poll_interval_s=0.1)
    async with wechat, carriers:
        busy = state.create_order(APPID)
        for _ in range(5):  # five changes in one second: its update_time runs 5 s ahead of the clock
            busy.touch(state.now())
        await observer.look()
        assert int(observer.orders[busy.order_id]["update_time"]) == state.now() + 5

        clock.advance(1)
        quiet = state.create_order(APPID)  # changed after the look, stamped with the clock
        await observer.look()
        assert quiet.order_id in observer.orders

        answer = await wechat.get("/sim/aftersales")
        assert int(answer.headers[SIM_NOW_HEADER]) == state.now()


async def test_the_carriers_are_asked_only_about_parcels_still_travelling() -> None:
    clock = FakeClock()
    state = SimState(clock=clock, seed=1)
    state.register_shop(Shop(appid=APPID, secret="s", token="AAAAA", encoding_aes_key="A" * 43))
    order = state.create_order(APPID)
    state.pay_order(order.order_id)
    product = order.doc["order_detail"]["product_infos"][0]
    line = ShipLine(str(product["product_id"]), str(product["sku_id"]), int(product["sku_cnt"]))
    state.ship(APPID, order.order_id, [Parcel("ZTO", "73100000000001", DeliverType.COURIER, (line,))])
    asked: list[Any] = []
    finished = False

    def carriers_stand_in(request: httpx.Request) -> httpx.Response:
        assert (request.method, request.url.path) == ("POST", "/sim/waybills/lookup")
        asked.append(json.loads(request.content))
        tracking = {"state": "3" if finished else "0", "finished": finished}
        return httpx.Response(200, json=[{"number": "73100000000001", "tracking": tracking}])

    wechat = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(state)), base_url="http://sim")
    carriers = httpx.AsyncClient(transport=httpx.MockTransport(carriers_stand_in), base_url="http://carriers")
    observer = Observer(wechat, carriers, [APPID], poll_interval_s=0.1)
    async with wechat, carriers:
        await observer.look()
        assert asked == [{"waybills": [{"number": "73100000000001", "delivery_id": "ZTO"}]}]
        assert [p.finished for p in observer.parcels(order.order_id)] == [False]
        finished = True
        await observer.look()
        assert [p.finished for p in observer.parcels(order.order_id)] == [True]
        await observer.look()  # delivered: not asked about again
        assert len(asked) == 2
