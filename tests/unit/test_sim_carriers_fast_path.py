"""The carrier stand-in answers the aggregator APIs (/label/order, /poll, Kdniao's /api/dist) in front
of FastAPI exactly as its FastAPI routes do: same status, content type, body and call record, for
answers and refusals alike."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import httpx
from fastapi import FastAPI

from shared.carriers.kuaidi100_label import LabelMethod, label_form
from sim.carriers.app import Aggregator, CarrierCallsFastPath, carrier_calls, carrier_router, create_app
from sim.carriers.pusher import Pusher
from sim.carriers.settings import CarrierSimSettings
from sim.carriers.state import CarrierWorld
from sim.carriers.tracker import Tracker
from tests.unit.test_sim_carriers import KEY, SECRET, order_param

FORM = "application/x-www-form-urlencoded"
SETTINGS = CarrierSimSettings(seed=7, auto_advance=False)


def _subscription(number: str, **changes: Any) -> bytes:
    param = {
        "company": "zhongtong",
        "number": number,
        "key": KEY,
        "parameters": {
            "callbackurl": "http://logistics.test/callbacks/kuaidi100",
            "salt": "s",
            "resultv2": "4",
        },
    }
    return urlencode({"schema": "json", "param": json.dumps({**param, **changes})}).encode()


def _label() -> dict[str, str]:
    return label_form(LabelMethod.ORDER, order_param(), key=KEY, secret=SECRET, t="1700000000000")


# (path, content type, body)
CASES: list[tuple[str, str | None, bytes]] = [
    ("/poll", FORM, _subscription("73100000000001")),
    ("/poll", FORM, _subscription("73100000000001")),  # already polling: 501
    ("/poll", f"{FORM}; charset=UTF-8", _subscription("73100000000002", key="no-such-key")),
    ("/poll", FORM, _subscription("73100000000003", company="no-such-carrier")),
    ("/poll", FORM, urlencode({"schema": "xml", "param": "{}"}).encode()),
    ("/poll", None, b"%%%not a form"),
    ("/poll", FORM, b""),
    ("/label/order", FORM, urlencode(_label()).encode()),
    ("/label/order", "application/json", json.dumps(_label()).encode()),  # same fields as JSON
    ("/label/order", FORM, urlencode({**_label(), "sign": "bad"}).encode()),
    ("/label/order", "application/json", b"[1, 2]"),
    ("/api/dist", FORM, urlencode({"EBusinessID": "1", "RequestType": "1008"}).encode()),
    ("/kdniao/subscribe", FORM, b"not=a&kdniao=form"),
]


def _routes_only(world: CarrierWorld) -> FastAPI:
    tracker = Tracker(world, SETTINGS, Pusher(world, SETTINGS))
    app = FastAPI()
    app.include_router(carrier_router(carrier_calls(Aggregator(world, SETTINGS, tracker))))
    return app


async def _answers(app: Any) -> list[tuple[int, str, Any]]:
    answers = []
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://carrier.test"
    ) as http:
        for path, content_type, body in CASES:
            headers = {} if content_type is None else {"content-type": content_type}
            reply = await http.post(path, content=body, headers=headers)
            answers.append((reply.status_code, reply.headers["content-type"], reply.json()))
    return answers


async def test_the_fast_path_answers_every_case_as_the_routes_do() -> None:
    fast_world, route_world = CarrierWorld(seed=7), CarrierWorld(seed=7)
    by_fast_path = await _answers(create_app(fast_world, SETTINGS))
    by_route = await _answers(_routes_only(route_world))
    for case, fast, route in zip(CASES, by_fast_path, by_route, strict=True):
        assert fast == route, case
    codes = [body.get("returnCode") for _, _, body in by_fast_path]
    assert codes[:8] == ["200", "501", "600", "700", "700", "700", "700", "200"]
    assert by_fast_path[7][2]["data"]["kuaidinum"] != by_fast_path[8][2]["data"]["kuaidinum"]
    assert [(c.method, c.path, c.request, c.reply) for c in fast_world.calls] == [
        (c.method, c.path, c.request, c.reply) for c in route_world.calls
    ]
    assert len(fast_world.calls) == len(CASES) and set(fast_world.waybills) == set(route_world.waybills)


async def test_a_subscription_never_reaches_fastapi() -> None:
    world = CarrierWorld(seed=7)
    tracker = Tracker(world, SETTINGS, Pusher(world, SETTINGS))

    async def not_here(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError(f"{scope['method']} {scope['path']} reached the app behind the fast path")

    fast_path = CarrierCallsFastPath(not_here, carrier_calls(Aggregator(world, SETTINGS, tracker)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fast_path), base_url="http://c") as http:
        reply = await http.post(
            "/poll", content=_subscription("73100000000009"), headers={"content-type": FORM}
        )
    assert reply.status_code == 200 and reply.json()["result"] is True
    assert [c.path for c in world.calls] == ["/poll"] and world.find_parcels("73100000000009")


async def test_other_requests_go_on_to_fastapi() -> None:
    app = create_app(CarrierWorld(seed=7), SETTINGS)
    assert any(fast_path is CarrierCallsFastPath for fast_path, _ in app.fast_paths)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c") as http:
        assert (await http.get("/poll")).status_code == 405
        assert (await http.get("/sim/health")).status_code == 200
