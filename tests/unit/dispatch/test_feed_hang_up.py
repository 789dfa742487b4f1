"""A parked long poll stops waiting when its client hangs up, and answers as before when it does not."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.dispatch.feed_endpoint import disconnected
from services.dispatch.supplier_api import finished_first


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


async def _parked(cancelled: asyncio.Event) -> None:
    """A long poll's wait that ends only by cancellation, which it records."""
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        cancelled.set()
        raise


async def test_the_wait_ends_as_before_while_the_client_stays() -> None:
    hang_up = asyncio.Event()
    assert await finished_first(asyncio.sleep(0.01), disconnected(_server(hang_up)))
    assert not hang_up.is_set()


async def test_a_hang_up_ends_the_wait_and_cancels_it() -> None:
    hang_up = asyncio.Event()
    wait_cancelled = asyncio.Event()
    asyncio.get_running_loop().call_later(0.01, hang_up.set)
    async with asyncio.timeout(5):
        assert not await finished_first(_parked(wait_cancelled), disconnected(_server(hang_up)))
    assert wait_cancelled.is_set()  # cancelled and finished, not left waiting out its 30 s


async def test_a_failing_wait_fails_the_poll() -> None:
    async def parked() -> None:
        raise RuntimeError("store gone")

    with pytest.raises(RuntimeError, match="store gone"):
        await finished_first(parked(), disconnected(_server(asyncio.Event())))


async def test_a_failing_watch_fails_the_poll_and_stops_the_wait() -> None:
    wait_cancelled = asyncio.Event()

    async def broken_watch() -> None:
        raise ConnectionError("receive failed")

    with pytest.raises(ConnectionError, match="receive failed"):
        await finished_first(_parked(wait_cancelled), broken_watch())
    assert wait_cancelled.is_set()  # finished before the failure was raised


async def test_a_cancelled_poll_leaves_neither_task_running() -> None:
    started = asyncio.Event()
    ended: list[str] = []

    async def parked(name: str) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        finally:
            ended.append(name)

    poll = asyncio.ensure_future(finished_first(parked("wait"), parked("watch")))
    await started.wait()
    poll.cancel()
    with pytest.raises(asyncio.CancelledError):
        await poll
    assert sorted(ended) == ["wait", "watch"]


async def test_the_watch_is_stopped_once_the_wait_ends() -> None:
    watch_ended = asyncio.Event()

    async def watch() -> None:
        try:
            await asyncio.sleep(30)
        finally:
            watch_ended.set()

    assert await finished_first(asyncio.sleep(0), watch())
    assert watch_ended.is_set()
