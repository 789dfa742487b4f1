"""A benchmark's helper process (the supplier bots, the reference chain's relays): spawned, told when
to stop, and giving back one result."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from multiprocessing.queues import Queue as MpQueue
from typing import Any


class Helper:
    """A spawned helper process with a stop event and one result."""

    def __init__(self, target: Any, args: tuple[Any, ...], name: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.ready, self._stop = context.Event(), context.Event()
        self._out: MpQueue[Any] = context.Queue()
        self.process = context.Process(
            target=target, args=(*args, self.ready, self._stop, self._out), name=name, daemon=True
        )

    @property
    def pid(self) -> int:
        return self.process.pid or 0

    async def start(self, wait_ready: bool) -> None:
        self.process.start()
        deadline = time.monotonic() + 60
        while wait_ready and not await asyncio.to_thread(self.ready.wait, 0.5):
            if not self.process.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self.process.name} did not get ready")

    async def stop(self) -> Any:
        self._stop.set()
        if not self.process.is_alive():
            return None
        result = await asyncio.to_thread(self._out.get, True, 60)
        await asyncio.to_thread(self.process.join, 10)
        return result
