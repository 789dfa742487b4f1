"""Carrier stand-in: e-waybill numbers (/label/order), Kuaidi100 subscriptions (/poll) and Kdniao
subscriptions (/api/dist), timelines pushed to an in-process receiver that checks every signature with
shared.carriers, retries, duplicates and reordering, and the control API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from shared.carriers import kdniao, kuaidi100
from shared.carriers.errors import CarrierFormatError
from shared.carriers.kuaidi100_label import LabelMethod, LabelOrderParam, ManInfo, label_form, label_sign
from sim.carriers.app import create_app
from sim.carriers.settings import CarrierSimSettings, FaultShares, KdniaoAccount

KEY, SECRET = "lvyue-sim-key", "lvyue-sim-secret"
SALT = "盐-lvyue"
APP_KEY = "56da2cf8-c8a2-44b2-b6fa-476cd7d1ba17"
EBUSINESS_ID = "1237100"
RECEIVER = "http://logistics.test"

Answer = Callable[[int], tuple[int, dict[str, Any]] | None]  # attempt number -> (status, body); None: ok


@dataclass
class Receiver:
    """The logistics service's webhooks: verify, parse, record; answer as scripted."""

    answer: Answer = lambda _: None
    kuaidi100: list[kuaidi100.Callback] = field(default_factory=list)
    kdniao: list[kdniao.Push] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    calls: int = 0

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/kuaidi100")
        async def on_kuaidi100(request: Request) -> JSONResponse:
            self.calls += 1
            try:
                callback = kuaidi100.parse_callback(await request.body(), salt=SALT)
            except CarrierFormatError as exc:
                self.rejected.append(str(exc))
                return JSONResponse(kuaidi100.failure_reply("签名错误"))
            scripted = self.answer(self.calls)
            if scripted is not None:
                return JSONResponse(scripted[1], status_code=scripted[0])
            self.kuaidi100.append(callback)
            return JSONResponse(kuaidi100.success_reply())

        @app.post("/kdniao")
        async def on_kdniao(request: Request) -> JSONResponse:
            self.calls += 1
            try:
                push = kdniao.parse_push(await request.body(), app_key=APP_KEY)
            except CarrierFormatError as exc:
                self.rejected.append(str(exc))
                return JSONResponse(kdniao.push_reply(EBUSINESS_ID, success=False, reason=str(exc)))
            self.kdniao.append(push)
            return JSONResponse(kdniao.push_reply(push.request.ebusiness_id))

        return app

    def states(self) -> list[int]:
        return [c.param.last_result.state for c in self.kuaidi100]


@dataclass
class Sim:
    app: FastAPI
    http: httpx.AsyncClient
    receiver: Receiver

    async def settle(self) -> None:
        """Until every timeline is over and every push delivered or given up."""
        world, pusher = self.app.state.world, self.app.state.pusher
        async with asyncio.timeout(5):
            while not all(p.finished for p in world.parcels.values()):
                await asyncio.sleep(0.005)
            await pusher.wait_idle()

    async def idle(self) -> None:
        async with asyncio.timeout(5):
            await self.app.state.pusher.wait_idle()

    async def control(self, path: str, body: Any = None, *, expect: int = 200) -> Any:
        response = await self.http.post(path, json=body)
        assert response.status_code == expect, response.text
        return response.json()

    async def get(self, url: str, **params: str) -> Any:
        response = await self.http.get(url, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    async def subscribe(
        self, number: str, *, company: str = "zhongtong", key: str = KEY, **parameters: str
    ) -> Any:
        param = {
            "company": company,
            "number": number,
            "key": key,
            "parameters": {"callbackurl": f"{RECEIVER}/kuaidi100", "salt": SALT, **parameters},
        }
        form = {"schema": "json", "param": json.dumps(param, ensure_ascii=False)}
        response = await self.http.post("/poll", data=form)
        assert response.status_code == 200
        return response.json()

    async def label(
        self, method: LabelMethod, param: Any, *, secret: str = SECRET, t: str = "1714537200000"
    ) -> Any:
        if isinstance(param, dict):
            raw = json.dumps(param, ensure_ascii=False)
            form = {
                "method": method.value,
                "key": KEY,
                "t": t,
                "param": raw,
                "sign": label_sign(raw, t, KEY, secret),
            }
        else:
            form = label_form(method, param, key=KEY, secret=secret, t=t)
        response = await self.http.post("/label/order", data=form)
        assert response.status_code == 200
        return response.json()


@asynccontextmanager
async def running(receiver: Receiver | None = None, **overrides: Any) -> AsyncIterator[Sim]:
    receiver = receiver or Receiver()
    options: dict[str, Any] = {"time_scale": 1_000_000.0, "seed": 7, "retry_delays_s": (60.0, 300.0, 900.0)}
    options.update(overrides)
    settings = CarrierSimSettings(**options)
    app = create_app(settings=settings, push_transport=httpx.ASGITransport(app=receiver.app()))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://carrier.test") as http,
    ):
        yield Sim(app, http, receiver)


def order_param(**changes: Any) -> LabelOrderParam:
    param = LabelOrderParam(
        kuaidicom="zhongtong",
        partner_id="ZT-ACCOUNT-1",
        rec_man=ManInfo(name="张三", mobile="13800138000", print_addr="广东省广州市海珠区新港中路397号"),
        send_man=ManInfo(name="义乌仓", mobile="13900139000", print_addr="浙江省金华市义乌市福田街道"),
        cargo="T恤",
        order_id="DO-1001",
    )
    return param.model_copy(update=changes)


# ---- e-waybill numbers -------------------------------------------------------------------------------


async def test_each_order_call_mints_a_new_number() -> None:
    async with running() as sim:
        first = await sim.label(LabelMethod.ORDER, order_param())
        again = await sim.label(LabelMethod.ORDER, order_param())  # same orderId: still a new number
        sf = await sim.label(LabelMethod.ORDER, order_param(kuaidicom="shunfeng"))
        assert first["result"] is True and first["returnCode"] == "200"
        numbers = [first["data"]["kuaidinum"], again["data"]["kuaidinum"], sf["data"]["kuaidinum"]]
        assert len(set(numbers)) == 3
        assert numbers[0].isdigit() and len(numbers[0]) == 14 and numbers[0].startswith("7")  # ZTO-shaped
        assert numbers[2].startswith("SF") and len(numbers[2]) == 15
        assert first["data"]["taskId"] != again["data"]["taskId"]
        listed = {w["number"]: w for w in await sim.get("/sim/waybills")}
        assert set(listed) == set(numbers)
        assert (
            listed[numbers[0]]["delivery_id"] == "ZTO"
            and listed[numbers[0]]["issued"]["order_id"] == "DO-1001"
        )
        assert listed[numbers[0]]["tracking"] is None


async def test_a_lookup_answers_only_the_waybills_asked_for() -> None:
    async with running() as sim:
        zto = (await sim.label(LabelMethod.ORDER, order_param()))["data"]["kuaidinum"]
        sf = (await sim.label(LabelMethod.ORDER, order_param(kuaidicom="shunfeng")))["data"]["kuaidinum"]
        asked = [
            {"number": zto, "delivery_id": "ZTO"},
            {"number": sf, "delivery_id": "ZTO"},  # not ZTO's: left out
            {"number": "73199999999999", "delivery_id": "ZTO"},  # never issued: left out
            {"number": zto, "delivery_id": "NOSUCH"},  # no such carrier: left out
        ]
        found = await sim.control("/sim/waybills/lookup", {"waybills": asked})
        assert [(w["number"], w["delivery_id"]) for w in found] == [(zto, "ZTO")]
        assert found[0] == await sim.get(f"/sim/waybills/{zto}")
        assert [w["number"] for w in await sim.control("/sim/waybills/lookup", {"waybills": []})] == []
        await sim.control("/sim/waybills/lookup", {"waybills": [{"number": ""}]}, expect=422)


async def test_order_refusals_use_the_reply_shape() -> None:
    async with running() as sim:
        wrong_sign = await sim.label(LabelMethod.ORDER, order_param(), secret="not-the-secret")
        assert wrong_sign == {"result": False, "returnCode": "503", "message": "验证签名失败"}
        unknown = await sim.label(LabelMethod.ORDER, order_param(kuaidicom="nosuchco"))
        assert (unknown["result"], unknown["returnCode"]) == (False, "400") and "nosuchco" in unknown[
            "message"
        ]
        no_phone = order_param(rec_man=ManInfo(name="张三", print_addr="广东省广州市"))
        assert (await sim.label(LabelMethod.ORDER, no_phone))["returnCode"] == "400"
        bad_key = await sim.http.post(
            "/label/order", data={"method": "order", "key": "x", "t": "1", "sign": "s", "param": "{}"}
        )
        assert bad_key.json()["returnCode"] == "601"
        missing = await sim.http.post("/label/order", data={"method": "order", "key": KEY})
        assert missing.json()["returnCode"] == "400"
        assert await sim.get("/sim/waybills") == []  # nothing minted
        calls = await sim.get("/sim/calls", path="/label/order")
        assert [c["reply"]["returnCode"] for c in calls] == ["503", "400", "400", "601", "400"]


async def test_order_accepts_a_json_body_and_cancel_works_once() -> None:
    async with running() as sim:
        raw = json.dumps(order_param().model_dump(by_alias=True, exclude_none=True), ensure_ascii=False)
        body = {
            "method": "order",
            "key": KEY,
            "t": "42",
            "param": raw,
            "sign": label_sign(raw, "42", KEY, SECRET),
        }
        minted = (await sim.http.post("/label/order", json=body)).json()
        number = minted["data"]["kuaidinum"]
        cancel = {"kuaidicom": "zhongtong", "kuaidinum": number, "reason": "重复下单"}
        assert (await sim.label(LabelMethod.CANCEL, cancel))["returnCode"] == "200"
        again = await sim.label(LabelMethod.CANCEL, cancel)
        assert (again["result"], again["message"]) == (False, "运单已取消")
        unknown = await sim.label(
            LabelMethod.CANCEL, {"kuaidicom": "zhongtong", "kuaidinum": "70000000000000"}
        )
        assert unknown["message"] == "运单不存在"
        assert (await sim.get(f"/sim/waybills/{number}"))["issued"]["cancelled"] is True


# ---- Kuaidi100 subscription and timeline -------------------------------------------------------------


async def test_subscription_refusals_and_duplicate() -> None:
    async with running(auto_advance=False) as sim:
        assert await sim.subscribe("73100000000001") == {
            "result": True,
            "returnCode": "200",
            "message": "提交成功",
        }
        assert (await sim.subscribe("73100000000001"))["returnCode"] == "501"
        assert (await sim.subscribe("73100000000002", key="stolen"))["returnCode"] == "600"
        assert (await sim.subscribe("73100000000002", company="nosuchco"))["returnCode"] == "700"
        assert (await sim.subscribe("73100000000002", callbackurl="ftp://x"))["returnCode"] == "700"
        garbage = await sim.http.post("/poll", data={"schema": "json", "param": "{not json"})
        assert garbage.json()["returnCode"] == "700"
        assert sim.receiver.calls == 0  # nothing happens until the parcel moves


async def test_full_timeline_is_pushed_in_order_with_valid_signatures() -> None:
    async with running() as sim:
        minted = await sim.label(LabelMethod.ORDER, order_param())
        number = minted["data"]["kuaidinum"]
        assert (await sim.subscribe(number, resultv2="1"))["returnCode"] == "200"
        await sim.settle()
        receiver = sim.receiver
        assert receiver.rejected == []
        assert receiver.states() == [1, 0, 0, 5, 3]
        statuses = [c.param.status for c in receiver.kuaidi100]
        assert statuses == ["polling"] * 4 + ["shutdown"]
        for index, callback in enumerate(receiver.kuaidi100):
            last = callback.param.last_result
            assert (last.com, last.nu) == ("zhongtong", number)
            assert len(last.data) == index + 1  # the full history, newest first
            assert last.data[0].status_code == str(last.state) and last.data[0].status
            times = [node.ftime for node in last.data]
            assert times == sorted(times, reverse=True)
            assert callback.sign == kuaidi100.sign(callback.raw_param, SALT)
        assert receiver.kuaidi100[-1].param.last_result.ischeck == 1
        assert "签收" in receiver.kuaidi100[-1].param.last_result.data[0].context
        waybill = await sim.get(f"/sim/waybills/{number}")
        assert waybill["tracking"]["finished"] is True and waybill["tracking"]["outcome"] == "delivered"
        pushes = await sim.get(f"/sim/waybills/{number}/pushes")
        assert [p["status"] for p in pushes] == ["delivered"] * 5
        assert all(json.loads(p["attempts"][0]["answer"]) == kuaidi100.success_reply() for p in pushes)
        # subscribing again after shutdown is allowed and repeats the final view
        assert (await sim.subscribe(number))["returnCode"] == "200"
        await sim.idle()
        assert receiver.states()[-1] == 3


@pytest.mark.parametrize(
    ("faults", "states", "outcome"),
    [
        ({"return_share": 1.0}, [1, 0, 0, 5, 2, 6, 4], "returned"),
        ({"refusal_share": 1.0}, [1, 0, 0, 5, 14, 6, 4], "refused"),
        ({"problem_share": 1.0}, [1, 0, 0, 5, 2, 5, 3], "problem_then_delivered"),
    ],
)
async def test_exception_timelines(faults: dict[str, float], states: list[int], outcome: str) -> None:
    async with running(faults=FaultShares(**faults)) as sim:
        await sim.subscribe("4312345678901", company="yunda")
        await sim.settle()
        assert sim.receiver.states() == states
        assert sim.receiver.kuaidi100[-1].param.status == "shutdown"
        tracking = (await sim.get("/sim/waybills/4312345678901"))["tracking"]
        assert tracking["outcome"] == outcome and [s["state"] for s in tracking["history"]] == states


async def test_control_api_advances_and_forces_states() -> None:
    async with running(auto_advance=False) as sim:
        await sim.subscribe("73100000000009")
        for expected in (1, 0, 0, 5):
            scan = await sim.control("/sim/waybills/73100000000009/advance")
            assert scan["state"] == expected
        forced = await sim.control(
            "/sim/waybills/73100000000009/state", {"state": 14, "context": "收件人拒收"}
        )
        assert forced["state"] == 14 and forced["forced"] is True and forced["context"] == "收件人拒收"
        tracking = (await sim.get("/sim/waybills/73100000000009"))["tracking"]
        assert tracking["remaining"] == [6, 4] and tracking["outcome"] == "refused"
        assert (await sim.control("/sim/waybills/73100000000009/advance"))["state"] == 6
        assert (await sim.control("/sim/waybills/73100000000009/advance"))["state"] == 4
        assert await sim.control("/sim/waybills/73100000000009/advance") is None  # journey over
        await sim.idle()
        assert sim.receiver.states() == [1, 0, 0, 5, 14, 6, 4]
        await sim.control("/sim/waybills/nope/advance", expect=404)
        await sim.control("/sim/waybills/73100000000009/state", {"state": 99}, expect=422)


# ---- delivery: retries, duplicates, reordering -------------------------------------------------------


async def test_a_refused_push_is_retried_until_acknowledged() -> None:
    def answer(call: int) -> tuple[int, dict[str, Any]] | None:
        if call == 1:
            return 200, kuaidi100.failure_reply("busy")
        if call == 2:
            return 503, {"error": "unavailable"}
        return None

    receiver = Receiver(answer=answer)
    async with running(receiver, auto_advance=False) as sim:
        await sim.subscribe("73100000000003")
        await sim.control("/sim/waybills/73100000000003/advance")
        await sim.idle()
        [push] = await sim.get("/sim/pushes", number="73100000000003")
        assert push["status"] == "delivered"
        assert [a["outcome"] for a in push["attempts"]] == ["rejected", "rejected", "delivered"]
        assert [a["status_code"] for a in push["attempts"]] == [200, 503, 200]
        assert receiver.states() == [1]


async def test_a_push_nobody_acknowledges_fails_after_the_last_retry() -> None:
    receiver = Receiver(answer=lambda _: (500, {"oops": True}))
    async with running(receiver, auto_advance=False, retry_delays_s=(1.0, 2.0)) as sim:
        await sim.subscribe("73100000000004")
        await sim.control("/sim/waybills/73100000000004/advance")
        await sim.idle()
        [push] = await sim.get("/sim/pushes", number="73100000000004", status="failed")
        assert len(push["attempts"]) == 3
        params = parse_qs(push["body"])
        assert kuaidi100.verify(params["param"][0], params["sign"][0], SALT)


async def test_duplicate_pushes_carry_identical_bytes() -> None:
    async with running(faults=FaultShares(duplicate_share=1.0)) as sim:
        await sim.subscribe("73100000000005")
        await sim.settle()
        assert sim.receiver.states() == [1, 1, 0, 0, 0, 0, 5, 5, 3, 3]
        pairs = zip(sim.receiver.kuaidi100[::2], sim.receiver.kuaidi100[1::2], strict=True)
        assert all(a.raw_param == b.raw_param and a.sign == b.sign for a, b in pairs)
        pushes = await sim.get("/sim/pushes", number="73100000000005")
        assert sum(p["duplicate_of"] is not None for p in pushes) == 5


async def test_out_of_order_pushes_are_held_back_behind_the_next() -> None:
    async with running(faults=FaultShares(out_of_order_share=1.0)) as sim:
        await sim.subscribe("73100000000006")
        await sim.settle()
        history_lengths = [len(c.param.last_result.data) for c in sim.receiver.kuaidi100]
        assert history_lengths == [2, 1, 4, 3, 5]  # steps 1,0,3,2,4: every other one late
        assert sim.receiver.states() == [0, 1, 5, 0, 3]


async def test_fault_shares_can_be_set_at_runtime() -> None:
    async with running() as sim:
        assert await sim.get("/sim/faults") == FaultShares().model_dump()
        updated = await sim.control("/sim/faults", {"refusal_share": 1.0})
        assert updated["refusal_share"] == 1.0 and updated["return_share"] == 0.0
        await sim.subscribe("73100000000007")
        await sim.settle()
        assert 14 in sim.receiver.states()
        await sim.control("/sim/faults", {"refusal_share": 2.0}, expect=422)


# ---- Kdniao ------------------------------------------------------------------------------------------


def kdniao_subscribe_form(number: str, *, shipper: str = "YD", app_key: str = APP_KEY) -> dict[str, str]:
    request = kdniao.SubscribeRequestData(shipper_code=shipper, logistic_code=number, callback="order-42")
    return kdniao.subscribe_form(request, ebusiness_id=EBUSINESS_ID, app_key=app_key)


async def test_kdniao_subscription_gets_signed_pushes() -> None:
    account = KdniaoAccount(ebusiness_id=EBUSINESS_ID, app_key=APP_KEY, callback_url=f"{RECEIVER}/kdniao")
    async with running(auto_advance=False) as sim:
        unknown = (await sim.http.post("/api/dist", data=kdniao_subscribe_form("4312345678901"))).json()
        assert unknown["Success"] is False
        await sim.control("/sim/kdniao/accounts", account.model_dump())
        wrong_sign = (
            await sim.http.post("/api/dist", data=kdniao_subscribe_form("4312345678901", app_key="x"))
        ).json()
        assert (wrong_sign["Success"], wrong_sign["Reason"]) == (False, "数据签名错误")
        ok = (await sim.http.post("/kdniao/subscribe", data=kdniao_subscribe_form("4312345678901"))).json()
        assert ok["Success"] is True and ok["EBusinessID"] == EBUSINESS_ID
        for _ in range(5):
            await sim.control("/sim/waybills/4312345678901/advance")
        await sim.idle()
        receiver = sim.receiver
        assert receiver.rejected == [] and len(receiver.kdniao) == 5
        items = [push.request.data[0] for push in receiver.kdniao]
        assert [(int(i.state), i.state_ex) for i in items] == [(1, 1), (2, 2), (2, 201), (2, 202), (3, 301)]
        assert all(i.shipper_code == "YD" and i.logistic_code == "4312345678901" for i in items)
        assert all(i.callback == "order-42" for i in items)
        assert [len(i.traces) for i in items] == [1, 2, 3, 4, 5]  # oldest first, growing
        assert items[-1].traces[0].accept_station.endswith("已揽收")
        assert all(
            p.form.request_type == "101" and p.form.ebusiness_id == EBUSINESS_ID for p in receiver.kdniao
        )


async def test_both_formats_for_one_parcel() -> None:
    account = KdniaoAccount(ebusiness_id=EBUSINESS_ID, app_key=APP_KEY, callback_url=f"{RECEIVER}/kdniao")
    async with running(kdniao_accounts=[account]) as sim:
        await sim.subscribe("4312345678902", company="yunda")
        await sim.http.post("/api/dist", data=kdniao_subscribe_form("4312345678902"))
        await sim.settle()
        assert sim.receiver.states()[-1] == 3
        assert sim.receiver.kdniao[-1].request.data[0].state is kdniao.State.SIGNED
        listed = await sim.get("/sim/waybills/4312345678902")
        assert listed["tracking"]["kdniao_subscribers"] == [EBUSINESS_ID]


# ---- settings ----------------------------------------------------------------------------------------


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert CarrierSimSettings().http_port == 9002
    monkeypatch.setenv("CARRIER_SIM_HTTP_PORT", "9102")
    monkeypatch.setenv("CARRIER_SIM_TIME_SCALE", "3600")
    monkeypatch.setenv("CARRIER_SIM_FAULTS__RETURN_SHARE", "0.05")
    monkeypatch.setenv("CARRIER_SIM_KUAIDI100_ACCOUNTS", '{"k": "s"}')
    settings = CarrierSimSettings()
    assert (settings.http_port, settings.time_scale, settings.faults.return_share) == (9102, 3600.0, 0.05)
    assert settings.kuaidi100_accounts == {"k": "s"}
