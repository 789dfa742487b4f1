"""The stand-in answers WeChat's POST ...?access_token= calls, and the control API's order creation, in
front of FastAPI exactly as its FastAPI routes do: same status, content type, body and call record, for
answers and refusals alike."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
from fastapi import FastAPI

from sim.wechat.app import (
    OrderCreationFastPath,
    TokenCallsFastPath,
    control_router,
    create_app,
    token_calls,
    wechat_router,
)
from sim.wechat.state import Shop, SimState
from sim.wechat.testing import FakeClock

APPID = "wx134c8103faa5a59e"
SECRET = "s3cr3t"


def _state() -> tuple[SimState, str, str]:
    """A shop with one order, and a valid access token: the same in every state built here (seeded)."""
    state = SimState(clock=FakeClock(), seed=7)
    state.register_shop(Shop(appid=APPID, secret=SECRET, token="AAAAA", encoding_aes_key="A" * 43))
    order = state.create_order(APPID)
    token = state.tokens.issue_basic(APPID).value
    return state, str(order.order_id), token


def _routes_only(state: SimState) -> FastAPI:
    app = FastAPI()
    app.include_router(wechat_router(state))
    return app


async def _ask(app: Any, path: str, *, params: dict[str, str], content: bytes) -> tuple[int, str, Any]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as http:
        reply = await http.post(path, params=params, content=content)
    return reply.status_code, reply.headers["content-type"], reply.json()


# (path, access_token or None, body); TOKEN and ORDER stand for each state's own (tokens are random).
CASES: list[tuple[str, str | None, str]] = [
    ("/channels/ec/order/get", "TOKEN", '{"order_id": "ORDER"}'),
    ("/channels/ec/order/get", "TOKEN", '{"order_id": "1"}'),  # unknown order
    ("/channels/ec/order/get", None, '{"order_id": "1"}'),  # no token: 41001
    ("/channels/ec/order/get", "", '{"order_id": "1"}'),  # blank token
    ("/channels/ec/order/get", "not-a-token", "{}"),  # 40001
    ("/channels/ec/order/get", "TOKEN", "{not json"),  # 47001
    ("/channels/ec/order/get", "TOKEN", "[1, 2]"),  # not an object
    ("/channels/ec/order/get", "TOKEN", "{}"),  # order_id missing
    ("/channels/ec/order/list/get", "TOKEN", '{"page_size": 10}'),
]


async def _answers(app: Any, order_id: str, token: str) -> list[tuple[int, str, Any]]:
    answers = []
    for path, access_token, body in CASES:
        params = {} if access_token is None else {"access_token": access_token.replace("TOKEN", token)}
        answer = await _ask(app, path, params=params, content=body.replace("ORDER", order_id).encode())
        answers.append(_without(answer, order_id))
    return answers


def _without(answer: tuple[int, str, Any], order_id: str) -> tuple[int, str, Any]:
    """The answer with this state's order id written as ORDER (the two states need not number alike)."""
    status, content_type, body = answer
    return status, content_type, json.loads(_no_rid(json.dumps(body).replace(order_id, "ORDER")))


def _recorded(state: SimState) -> list[tuple[str, str, str | None, int, str]]:
    return [(c.method, c.path, c.appid, c.errcode, _no_rid(c.errmsg)) for c in state.calls.calls()]


def _no_rid(text: str) -> str:
    """WeChat's errmsg ends with a random request id."""
    return re.sub(r" rid: [0-9a-f-]+", "", text)


async def test_the_fast_path_answers_every_case_as_the_routes_do() -> None:
    fast_state, fast_order, fast_token = _state()
    route_state, route_order, route_token = _state()
    by_fast_path = await _answers(create_app(fast_state), fast_order, fast_token)
    by_route = await _answers(_routes_only(route_state), route_order, route_token)
    for case, fast, route in zip(CASES, by_fast_path, by_route, strict=True):
        assert fast == route, case
    assert by_fast_path[0][2]["errcode"] == 0 and by_fast_path[0][2]["order"]["order_id"] == "ORDER"
    fast_calls = [(c.method, c.path, c.appid, c.errcode, _no_rid(c.errmsg)) for c in fast_state.calls.calls()]
    route_calls = [
        (c.method, c.path, c.appid, c.errcode, _no_rid(c.errmsg)) for c in route_state.calls.calls()
    ]
    assert fast_calls == route_calls and len(fast_calls) == len(CASES)
    assert {c[3] for c in fast_calls} >= {0, 41001, 40001, 47001}


async def test_a_token_call_never_reaches_fastapi() -> None:
    state, order_id, token = _state()

    async def not_here(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError(f"{scope['method']} {scope['path']} reached the app behind the fast path")

    fast_path = TokenCallsFastPath(not_here, token_calls(state))
    status, _, body = await _ask(
        fast_path,
        "/channels/ec/order/get",
        params={"access_token": token},
        content=b'{"order_id": "%s"}' % order_id.encode(),
    )
    assert status == 200 and body["order"]["order_id"] == order_id


async def test_the_fast_path_takes_the_token_calls_only() -> None:
    state, _, _ = _state()
    app = create_app(state)
    assert any(fast_path is TokenCallsFastPath for fast_path, _ in app.fast_paths)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as http:
        assert (await http.get("/channels/ec/order/get")).status_code == 405  # a GET is FastAPI's
        assert (await http.post("/channels/ec/no/such/path", content=b"{}")).status_code == 404
        assert (await http.get("/sim/health")).status_code == 200


# (content type or None, body) of POST /sim/orders; APPID is the registered shop's.
ORDER_CASES: list[tuple[str | None, str]] = [
    ("application/json", '{"appid": "APPID", "paid": true}'),
    (
        "application/json",
        '{"appid": "APPID", "order_id": "3700000000000000001", "products": [{"sku_cnt": 2}]}',
    ),
    ("application/json", '{"appid": "APPID", "order_id": "3700000000000000001"}'),  # exists: 409
    ("application/json; charset=utf-8", '{"appid": "wx-no-such-shop"}'),  # 404
    (None, '{"appid": "APPID", "freight": 500}'),  # no content type: the route's to judge
    ("application/vnd.sale+json", '{"appid": "APPID"}'),
    ("application/json", '{"appid": "APPID", "products": [{"sku_cnt": 0}]}'),  # 422
    ("application/json", '{"products": []}'),  # 422: no appid, no product
    ("application/json", "{not json"),  # 422
    ("text/plain", '{"appid": "APPID"}'),  # FastAPI does not read it as JSON
    ("application/json", "[1]"),  # 422
    ("application/json", ""),  # no body: 422
    ("application/json", "null"),  # 422
    ("application/json", "[" * 100_000 + "]" * 100_000),  # too deep for json.loads: 400
]


async def _order_answers(app: Any) -> list[tuple[int, str, Any]]:
    answers = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim.test") as http:
        for content_type, body in ORDER_CASES:
            headers = {} if content_type is None else {"content-type": content_type}
            reply = await http.post("/sim/orders", content=body.replace("APPID", APPID), headers=headers)
            answers.append((reply.status_code, reply.headers["content-type"], reply.json()))
    return answers


async def test_order_creation_in_front_of_fastapi_answers_as_the_route_does() -> None:
    fast_state, _, _ = _state()
    route_state, _, _ = _state()
    routes_only = FastAPI()
    routes_only.include_router(control_router(route_state))
    by_fast_path = await _order_answers(create_app(fast_state))
    by_route = await _order_answers(routes_only)
    for case, fast, route in zip(ORDER_CASES, by_fast_path, by_route, strict=True):
        assert fast == route, case
    statuses = [status for status, _, _ in by_fast_path]
    assert statuses == [200, 200, 409, 404, 422, 200, 422, 422, 422, 422, 422, 422, 422, 400]
    paid = by_fast_path[0][2]
    assert paid["status"] == 20 and paid["order_detail"]["pay_info"]["pay_time"] > 0
    assert by_fast_path[1][2]["order_detail"]["product_infos"][0]["sku_cnt"] == 2
    assert by_fast_path[2][2]["detail"]["code"] == "order_exists"
    assert [o.doc for o in fast_state.orders.orders.values()] == [
        o.doc for o in route_state.orders.orders.values()
    ]
    assert len(fast_state.orders.orders) == 1 + 3  # the seeded one and the three created


async def test_a_valid_order_creation_never_reaches_fastapi() -> None:
    state, _, _ = _state()

    async def not_here(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError(f"{scope['method']} {scope['path']} reached the app behind the fast path")

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=OrderCreationFastPath(not_here, state)), base_url="http://sim.test"
    ) as http:
        reply = await http.post("/sim/orders", json={"appid": APPID, "paid": True})
    assert reply.status_code == 200 and reply.json()["status"] == 20
    assert state.orders.find(reply.json()["order_id"]).doc["status"] == 20
