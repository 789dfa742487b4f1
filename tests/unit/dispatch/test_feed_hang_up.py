"""A long poll stops waiting when its client hangs up, and answers as before when it does not."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.dispatch.feed_endpoint import unless_hung_up


def _server(hang_up: asyncio.Event) -> Any:
    """An ASGI receive for a GET: its empty body, then a disconnect once `hang_up` is set."""
    messages = 0

    async def receive() -> dict[str, Any]:
        nonlocal messages
        messages += 1
        if messages == 1:
            return {"type": "http.request", "body": b"", "more_body": False}
        await hang_up.wait()
        return {"type": "http.disconnect"}

    return receive


async def test_the_page_is_answered_while_the_client_stays() -> None:
    async def page() -> bytes:
        await asyncio.sleep(0.01)
        return b'{"changes":[]}'

    assert await unless_hung_up(page(), _server(asyncio.Event())) == b'{"changes":[]}'


async def test_a_hang_up_ends_the_wait_and_cancels_the_page() -> None:
    hang_up = asyncio.Event()
    page_cancelled = asyncio.Event()

    async def page() -> bytes:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            page_cancelled.set()
            raise
        return b"never"

    asyncio.get_running_loop().call_later(0.01, hang_up.set)
    async with asyncio.timeout(5):
        assert await unless_hung_up(page(), _server(hang_up)) is None
        await page_cancelled.wait()  # cancelled, not left waiting out its 30 s


async def test_a_failing_page_fails_the_poll() -> None:
    async def page() -> bytes:
        raise RuntimeError("store gone")

    with pytest.raises(RuntimeError, match="store gone"):
        await unless_hung_up(page(), _server(asyncio.Event()))
