"""Many supplier bots in one asyncio process: what `python -m sim.suppliers`, tests and `make run` start."""

from __future__ import annotations

import asyncio
import random
from types import TracebackType

import httpx

from sim.suppliers.bot import SupplierBot
from sim.suppliers.records import FleetStats
from sim.suppliers.settings import FleetSettings


class SupplierFleet:
    def __init__(self, settings: FleetSettings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        ids = [s.supplier_id for s in settings.suppliers]
        if len(set(ids)) != len(ids):
            raise ValueError(f"a supplier appears twice: {ids}")
        self.settings = settings
        # A run without a seed picks one and reports it, so an odd run can be replayed.
        self.seed = settings.seed if settings.seed is not None else random.SystemRandom().randrange(2**31)
        self.bots = {
            s.supplier_id: SupplierBot(s, settings, seed=self.seed, transport=transport)
            for s in settings.suppliers
        }
        self._started = False

    async def start(self) -> None:
        if not self._started:
            self._started = True
            for bot in self.bots.values():
                await bot.start()

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await asyncio.gather(*(bot.stop() for bot in self.bots.values()))

    def stats(self) -> FleetStats:
        return FleetStats(seed=self.seed, suppliers={i: bot.stats() for i, bot in self.bots.items()})

    async def __aenter__(self) -> SupplierFleet:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.stop()
