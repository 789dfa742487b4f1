"""The sale waits past its settle time while the world still changes, and stops once it is stuck."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest

from sim.sale.run import _end_when_stalled
from sim.sale.settings import SaleSettings

SETTLE = SaleSettings(poll_interval_s=0.01, settle_timeout_s=0.05, settle_stall_s=0.1, settle_limit_s=5)


async def _waited(observer: Any, *, keep_changing: float = 0.0) -> float:
    """Seconds until the sale's wait ended (the limit, or `_end_when_stalled` expiring it)."""
    started = time.monotonic()

    async def world() -> None:
        while time.monotonic() - started < keep_changing:
            observer.changed_at = time.monotonic()
            await asyncio.sleep(0.01)

    changes = asyncio.create_task(world())
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(SETTLE.settle_limit_s) as limit:
            watch = asyncio.create_task(_end_when_stalled(limit, observer, SETTLE, started))
            await asyncio.sleep(60)
    await asyncio.gather(watch, changes)
    return time.monotonic() - started


async def test_a_stuck_world_ends_the_wait_after_the_stall_time() -> None:
    waited = await _waited(SimpleNamespace(changed_at=time.monotonic()))
    assert SETTLE.settle_stall_s <= waited < SETTLE.settle_limit_s  # the stall ended it, not the limit


async def test_a_world_still_changing_is_waited_for_past_the_settle_time() -> None:
    waited = await _waited(SimpleNamespace(changed_at=time.monotonic()), keep_changing=0.6)
    assert 0.5 + SETTLE.settle_stall_s <= waited < SETTLE.settle_limit_s  # the last change: just before 0.6 s


async def test_an_old_change_does_not_end_the_wait_before_the_settle_time() -> None:
    settle = SETTLE.settle_timeout_s
    waited = await _waited(SimpleNamespace(changed_at=time.monotonic() - 100))
    assert settle <= waited < SETTLE.settle_limit_s  # the stall ended it, not the limit
