"""The supplier API lets each key have at most so many calls in flight: the next one gets a 429 with
Retry-After at once, other keys and feed long polls are not affected, and a slot comes back when its
call ends, fails or is cancelled."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from services.dispatch.in_flight import InFlightPerKey
from services.dispatch.supplier_api import FEED_PATH
from shared.api.supplier import API_PREFIX, SupplierErrorCode


class HeldApp:
    """Answers 200 once `release` is set; counts the calls it has started."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.started += 1
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def _client(app: InFlightPerKey) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://dispatch.test")


async def _started(inner: HeldApp, count: int) -> None:
    async with asyncio.timeout(5):
        while inner.started < count:
            await asyncio.sleep(0.01)


async def test_a_key_over_its_calls_in_flight_is_refused_at_once_and_its_slots_come_back() -> None:
    inner = HeldApp()
    limited = InFlightPerKey(inner, limit=2)
    client = _client(limited)
    url = API_PREFIX + "/dispatch-orders/d-1"
    async with client:
        held = [
            asyncio.create_task(client.get(url, headers={"Authorization": "Bearer key-a"})),
            asyncio.create_task(client.get(url, headers={"X-Api-Key": "key-a"})),  # the same key
        ]
        await _started(inner, 2)
        refused = await client.get(url, headers={"Authorization": "Bearer key-a"})
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
        assert refused.json()["code"] == SupplierErrorCode.TOO_MANY_IN_FLIGHT
        assert inner.started == 2  # the refused call never reached the app
        other_key = asyncio.create_task(client.get(url, headers={"Authorization": "Bearer key-b"}))
        unauthenticated = asyncio.create_task(client.get(url))  # left to the route's 401
        elsewhere = asyncio.create_task(client.get("/metrics", headers={"X-Api-Key": "key-a"}))
        # A long poll parks on an event: not counted, so a dropped one never blocks the key's commands.
        polls = [asyncio.create_task(client.get(FEED_PATH, headers={"X-Api-Key": "key-a"})) for _ in range(3)]
        await _started(inner, 8)
        assert limited.in_flight("key-a") == 2 and limited.in_flight("key-b") == 1
        inner.release.set()
        answers = await asyncio.gather(*held, other_key, unauthenticated, elsewhere, *polls)
        assert [a.status_code for a in answers] == [200] * 8
        assert limited.in_flight("key-a") == 0 and limited.in_flight("key-b") == 0
        again = await asyncio.gather(
            *(client.get(url, headers={"Authorization": "Bearer key-a"}) for _ in range(2))
        )
        assert [a.status_code for a in again] == [200, 200]


async def test_a_cancelled_call_gives_its_slot_back() -> None:
    inner = HeldApp()
    limited = InFlightPerKey(inner, limit=1)
    client = _client(limited)
    url = API_PREFIX + "/dispatch-orders/d-1"
    async with client:
        call = asyncio.create_task(client.get(url, headers={"X-Api-Key": "key-a"}))
        await _started(inner, 1)
        assert limited.in_flight("key-a") == 1
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert limited.in_flight("key-a") == 0


async def test_a_call_that_fails_gives_its_slot_back() -> None:
    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("the route failed")

    limited = InFlightPerKey(failing, limit=1)
    client = _client(limited)
    async with client:
        for _ in range(2):
            with pytest.raises(RuntimeError):
                await client.get(API_PREFIX + "/dispatch-orders", headers={"X-Api-Key": "key-a"})
            assert limited.in_flight("key-a") == 0
