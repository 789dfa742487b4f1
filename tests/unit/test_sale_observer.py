"""The sale simulator's observer sees every order change the WeChat stand-in makes."""

import httpx

from sim.sale.observer import Observer
from sim.wechat.app import SIM_NOW_HEADER, create_app
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
