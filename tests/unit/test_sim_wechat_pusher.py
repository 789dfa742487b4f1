"""WeChat stand-in: pushes to the shop's callback URL, signed and encrypted as WeChat does, on
WeChat's retry schedule, with scripted duplicates and reordering. The receiver is an in-process
FastAPI app that checks every push with shared.wechat.crypto."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response

from shared.wechat.crypto import MessageCipher, WeChatCryptoError, signature_matches
from shared.wechat.push import PushFormat, PushParseError, encrypted_field, parse_document, parse_event
from sim.wechat.app import create_app
from sim.wechat.pusher import MAX_ATTEMPTS, RETRY_DELAYS_S, Pusher
from sim.wechat.settings import WeChatSimSettings
from sim.wechat.state import AttemptOutcome, PushStatus, Shop, SimState
from sim.wechat.testing import FakeClock

APPID = "wx134c8103faa5a59e"
TOKEN = "AAAAA"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
CALLBACK = "http://merchant.test/wechat/callback"

Answer = Callable[[int], Response | None]  # attempt number (1-based, all pushes) -> answer, None: "success"


@dataclass
class Receiver:
    """The shop's webhook: verifies signatures, decrypts, and records what it got."""

    shop: Shop
    answer: Answer = lambda _: None
    received: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    gate: asyncio.Event | None = None  # if set, pushes about `gated_order` wait for it
    gated_order: int | None = None

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/wechat/callback")
        async def callback(request: Request) -> Response:
            query = request.query_params
            body = await request.body()
            fmt = self.shop.push_format
            try:
                if not signature_matches(query.get("signature"), TOKEN, query["timestamp"], query["nonce"]):
                    raise ValueError("signature")
                envelope = parse_document(body, fmt)
                if self.shop.encrypted:
                    encrypted = encrypted_field(envelope)
                    parts = (TOKEN, query["timestamp"], query["nonce"], encrypted)
                    if query.get("encrypt_type") != "aes" or not signature_matches(
                        query.get("msg_signature"), *parts
                    ):
                        raise ValueError("msg_signature")
                    document = parse_document(MessageCipher(AES_KEY, APPID).decrypt(encrypted), fmt)
                    if envelope["ToUserName"] != document["ToUserName"]:
                        raise ValueError("ToUserName")
                else:
                    document = envelope
            except (ValueError, KeyError, PushParseError, WeChatCryptoError) as exc:
                self.rejected.append(str(exc))
                return PlainTextResponse("bad push", status_code=400)
            order_id = document.get("order_info", {}).get("order_id")
            if self.gate is not None and order_id == self.gated_order:
                await self.gate.wait()
            self.received.append(document)
            answer = self.answer(len(self.received))
            return answer if answer is not None else PlainTextResponse("success")

        return app


def make_shop(*, fmt: PushFormat = PushFormat.JSON, encrypted: bool = True) -> Shop:
    return Shop(
        appid=APPID,
        secret="s3cr3t",
        token=TOKEN,
        encoding_aes_key=AES_KEY,
        callback_url=CALLBACK,
        push_format=fmt,
        encrypted=encrypted,
    )


@dataclass
class Rig:
    state: SimState
    receiver: Receiver
    http: httpx.AsyncClient
    pusher: Pusher

    async def idle(self) -> None:
        async with asyncio.timeout(10):
            await self.pusher.wait_idle()

    async def post(self, path: str, body: Any = None) -> Any:
        response = await self.http.post(path, json=body)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
def settings() -> WeChatSimSettings:
    return WeChatSimSettings(time_scale=10_000, push_timeout_s=0.5)


@asynccontextmanager
async def rig_for(
    shop: Shop, settings: WeChatSimSettings, answer: Answer | None = None
) -> AsyncIterator[Rig]:
    state = SimState(clock=FakeClock(), seed=3)
    state.register_shop(shop)
    receiver = Receiver(shop) if answer is None else Receiver(shop, answer)
    app = create_app(state, settings, push_transport=httpx.ASGITransport(app=receiver.app()))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.weixin.test") as http,
    ):
        yield Rig(state, receiver, http, app.state.pusher)


@pytest.fixture
async def rig(settings: WeChatSimSettings) -> AsyncIterator[Rig]:
    async with rig_for(make_shop(), settings) as value:
        yield value


async def test_receiver_verifies_and_decrypts_the_pay_push(rig: Rig) -> None:
    order = await rig.post("/sim/orders", {"appid": APPID, "paid": True})
    await rig.idle()
    assert rig.receiver.rejected == []
    assert [d["Event"] for d in rig.receiver.received] == ["channels_ec_order_new", "channels_ec_order_pay"]
    pay = parse_event(rig.receiver.received[1])
    assert pay.order_id == order["order_id"]
    assert rig.receiver.received[1]["order_info"]["order_id"] == int(order["order_id"])  # a JSON number
    assert rig.receiver.received[1]["order_info"]["pay_time"] == order["order_detail"]["pay_info"]["pay_time"]
    assert pay.to_user_name == rig.state.shops[APPID].username
    assert rig.receiver.received[1]["MsgType"] == "event"
    assert rig.receiver.received[1]["FromUserName"] == order["openid"]
    log = (await rig.http.get("/sim/pushes", params={"event": "channels_ec_order_pay"})).json()
    assert log[0]["status"] == "delivered"
    assert [(a["number"], a["outcome"], a["status_code"]) for a in log[0]["attempts"]] == [
        (1, "delivered", 200)
    ]


@pytest.mark.parametrize(("fmt", "encrypted"), [(PushFormat.XML, True), (PushFormat.JSON, False)])
async def test_xml_and_plaintext_shops(settings: WeChatSimSettings, fmt: PushFormat, encrypted: bool) -> None:
    async with rig_for(make_shop(fmt=fmt, encrypted=encrypted), settings) as rig:
        order = await rig.post("/sim/orders", {"appid": APPID})
        await rig.idle()
        assert rig.receiver.rejected == []
        (document,) = rig.receiver.received
        assert parse_event(document).event == "channels_ec_order_new"
        assert str(document["order_info"]["order_id"]) == order["order_id"]


async def test_receiver_failing_twice_sees_exactly_three_attempts(settings: WeChatSimSettings) -> None:
    def fail_twice(n: int) -> Response | None:
        return PlainTextResponse("oops", status_code=500) if n <= 2 else None

    async with rig_for(make_shop(), settings, fail_twice) as rig:
        order = await rig.post("/sim/orders", {"appid": APPID})
        await rig.idle()
        assert len(rig.receiver.received) == 3
        assert len({d["CreateTime"] for d in rig.receiver.received}) == 1  # the same event, retried
        (push,) = rig.state.pushes.find(subject_id=order["order_id"])
        assert push.status is PushStatus.DELIVERED
        outcomes = [(a.outcome, a.status_code) for a in push.attempts]
        assert outcomes == [
            (AttemptOutcome.REJECTED, 500),
            (AttemptOutcome.REJECTED, 500),
            (AttemptOutcome.DELIVERED, 200),
        ]
        assert push.attempts[0].answer == "oops"


async def test_an_answer_other_than_success_is_a_failure(settings: WeChatSimSettings) -> None:
    def say_ok_once(n: int) -> Response | None:
        return PlainTextResponse("ok") if n == 1 else PlainTextResponse("")

    async with rig_for(make_shop(), settings, say_ok_once) as rig:
        await rig.post("/sim/orders", {"appid": APPID})
        await rig.idle()
        (push,) = rig.state.pushes.records
        assert [a.outcome for a in push.attempts] == [AttemptOutcome.REJECTED, AttemptOutcome.DELIVERED]


async def test_success_is_delivered_once_and_duplicates_k_plus_one(rig: Rig) -> None:
    await rig.post("/sim/orders", {"appid": APPID})
    await rig.idle()
    assert len(rig.receiver.received) == 1
    await rig.post("/sim/faults", {"fault": "duplicate_pushes", "times": 2})
    order = await rig.post("/sim/orders", {"appid": APPID})
    await rig.post(f"/sim/orders/{order['order_id']}/pay", {})  # the fault covered one push only
    await rig.idle()
    about = [d for d in rig.receiver.received if str(d["order_info"]["order_id"]) == order["order_id"]]
    assert [d["Event"] for d in about] == ["channels_ec_order_new"] * 3 + ["channels_ec_order_pay"]
    assert about[0] == about[1] == about[2]  # identical copies: same CreateTime, same body
    records = rig.state.pushes.find(subject_id=order["order_id"], event="channels_ec_order_new")
    assert [r.duplicate_of for r in records] == [None, records[0].push_id, records[0].push_id]
    assert all(len(r.attempts) == 1 for r in records)


async def test_held_pushes_are_released_in_reverse_order(rig: Rig) -> None:
    await rig.post("/sim/faults", {"fault": "hold_pushes", "count": 2})
    order = await rig.post("/sim/orders", {"appid": APPID, "paid": True})
    await rig.idle()
    events = [d["Event"] for d in rig.receiver.received]
    assert events == ["channels_ec_order_pay", "channels_ec_order_new"]  # pay overtakes new
    assert all(str(d["order_info"]["order_id"]) == order["order_id"] for d in rig.receiver.received)


async def test_hold_until_released(rig: Rig) -> None:
    await rig.post("/sim/faults", {"fault": "hold_pushes"})
    order = await rig.post("/sim/orders", {"appid": APPID})
    await rig.post(f"/sim/orders/{order['order_id']}/cancel", {"cancel_type": 1})
    await rig.idle()
    assert rig.receiver.received == []
    held = (await rig.http.get("/sim/pushes", params={"status": "held"})).json()
    assert len(held) == 2
    released = await rig.post("/sim/faults", {"fault": "release_pushes"})
    assert released["released"] == 2
    await rig.idle()
    assert [d["Event"] for d in rig.receiver.received] == [
        "channels_ec_order_cancel",
        "channels_ec_order_new",
    ]


async def test_slow_receiver_times_out_and_is_retried(settings: WeChatSimSettings) -> None:
    settings = settings.model_copy(update={"push_timeout_s": 0.1})
    shop = make_shop()
    state = SimState(clock=FakeClock())
    state.register_shop(shop)
    calls = 0

    async def slow_then_fast(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(0.5)
        return httpx.Response(200, text="success")

    pusher = Pusher(state, settings, transport=httpx.MockTransport(slow_then_fast))
    await pusher.start()
    try:
        state.create_order(APPID)
        async with asyncio.timeout(5):
            await pusher.wait_idle()
    finally:
        await pusher.stop()
    (push,) = state.pushes.records
    assert [a.outcome for a in push.attempts] == [AttemptOutcome.TIMEOUT, AttemptOutcome.DELIVERED]
    assert calls == 2


async def test_retry_schedule_is_wechats_scaled_and_stops_after_ten(settings: WeChatSimSettings) -> None:
    settings = settings.model_copy(update={"time_scale": 600})
    state = SimState(clock=FakeClock())
    state.register_shop(make_shop())
    slept: list[float] = []
    requests: list[httpx.Request] = []

    async def record_sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(0)

    def always_down(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(503, text="down")

    pusher = Pusher(state, settings, transport=httpx.MockTransport(always_down), sleep=record_sleep)
    await pusher.start()
    try:
        state.create_order(APPID)
        async with asyncio.timeout(5):
            await pusher.wait_idle()
    finally:
        await pusher.stop()
    assert len(requests) == MAX_ATTEMPTS == 10
    assert slept == [d / 600 for d in RETRY_DELAYS_S]
    assert slept[2:4] == [10 / 600, 60 / 600]
    (push,) = state.pushes.records
    assert push.status is PushStatus.FAILED
    assert [a.number for a in push.attempts] == list(range(1, 11))
    # Every attempt is freshly signed: nonces differ.
    assert len({r.url.params["nonce"] for r in requests}) > 1


async def test_unreachable_receiver_is_an_error_outcome(settings: WeChatSimSettings) -> None:
    state = SimState(clock=FakeClock())
    state.register_shop(make_shop())

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    pusher = Pusher(state, settings, transport=httpx.MockTransport(refuse))
    await pusher.start()
    try:
        state.create_order(APPID)
        async with asyncio.timeout(5):
            await pusher.wait_idle()
    finally:
        await pusher.stop()
    (push,) = state.pushes.records
    assert push.status is PushStatus.FAILED
    assert {a.outcome for a in push.attempts} == {AttemptOutcome.ERROR}
    assert "ConnectError" in push.attempts[0].error


async def test_pushes_for_different_orders_go_out_concurrently(rig: Rig) -> None:
    first = rig.state.create_order(APPID)
    await asyncio.sleep(0.05)
    rig.receiver.received.clear()
    rig.receiver.gate = asyncio.Event()
    rig.receiver.gated_order = int(first.order_id)
    rig.state.pay_order(first.order_id)  # its push hangs in the receiver
    second = rig.state.create_order(APPID)
    async with asyncio.timeout(2):
        while not rig.receiver.received:
            await asyncio.sleep(0.01)
    assert [d["order_info"]["order_id"] for d in rig.receiver.received] == [int(second.order_id)]
    rig.receiver.gate.set()
    await rig.idle()
    assert [d["Event"] for d in rig.receiver.received] == ["channels_ec_order_new", "channels_ec_order_pay"]


async def test_shop_without_callback_url_gets_no_pushes(settings: WeChatSimSettings) -> None:
    shop = make_shop()
    shop.callback_url = None
    async with rig_for(shop, settings) as rig:
        await rig.post("/sim/orders", {"appid": APPID})
        await rig.idle()
        assert rig.receiver.received == []
        (push,) = rig.state.pushes.records
        assert push.status is PushStatus.UNDELIVERABLE
        assert push.attempts == []


async def test_pushes_queued_before_start_are_sent(settings: WeChatSimSettings) -> None:
    state = SimState(clock=FakeClock())
    state.register_shop(make_shop())
    state.create_order(APPID)
    got: list[bytes] = []

    def ok(request: httpx.Request) -> httpx.Response:
        got.append(request.content)
        return httpx.Response(200, text="success")

    pusher = Pusher(state, settings, transport=httpx.MockTransport(ok))
    await pusher.start()
    try:
        async with asyncio.timeout(5):
            await pusher.wait_idle()
    finally:
        await pusher.stop()
    assert len(got) == 1
    assert state.pushes.records[0].status is PushStatus.DELIVERED
