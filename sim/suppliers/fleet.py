"""Many supplier bots in one asyncio process: what `python -m sim.suppliers`, tests and `make run` start."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from pathlib import Path
from types import TracebackType

import httpx
from pydantic import ValidationError

from sim.suppliers.bot import SupplierBot
from sim.suppliers.records import FleetStats, SavedCursors
from sim.suppliers.settings import FleetSettings

log = logging.getLogger(__name__)


def read_cursors(path: Path) -> SavedCursors:
    """The saved cursors; none saved yet, or a file that cannot be read (said in the log), reads as
    none: the bots then read their feeds from the beginning, which loses nothing."""
    try:
        return SavedCursors.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return SavedCursors()
    except (OSError, ValidationError) as exc:
        log.warning("supplier cursors in %s not read, the feeds are read from the start: %s", path, exc)
        return SavedCursors()


def write_cursors(path: Path, cursors: SavedCursors) -> None:
    """Whole or not at all: a stop half-way through a write leaves the previous file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(cursors.model_dump_json(indent=1))
    os.replace(partial, path)


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
        self._saver: asyncio.Task[None] | None = None
        self._saved = SavedCursors()  # read once at start: suppliers not in this fleet keep theirs

    async def start(self) -> None:
        if not self._started:
            self._started = True
            if self.settings.cursor_file is not None:
                self._saved = read_cursors(self.settings.cursor_file)
                for supplier_id, bot in self.bots.items():
                    bot.cursor = self._saved.cursors.get(supplier_id, 0)
                self._saver = asyncio.create_task(self._save_cursors_every(self.settings.cursor_file))
            for bot in self.bots.values():
                await bot.start()

    async def stop(self) -> None:
        if self._started:
            self._started = False
            if self._saver is not None:
                self._saver.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._saver
                self._saver = None
            await asyncio.gather(*(bot.stop() for bot in self.bots.values()))
            if self.settings.cursor_file is not None:
                write_cursors(self.settings.cursor_file, self.resume_cursors())

    def resume_cursors(self) -> SavedCursors:
        """What a restarted fleet reads from; suppliers not in this fleet keep their saved cursor."""
        return SavedCursors(
            cursors={**self._saved.cursors, **{i: bot.resume_cursor() for i, bot in self.bots.items()}}
        )

    async def _save_cursors_every(self, path: Path) -> None:
        while True:
            await asyncio.sleep(self.settings.cursor_save_every_s)
            try:
                write_cursors(path, self.resume_cursors())
            except OSError as exc:  # kept trying; the stop writes it again
                log.warning("supplier cursors not saved to %s: %s", path, exc)

    def stats(self) -> FleetStats:
        return FleetStats(seed=self.seed, suppliers={i: bot.stats() for i, bot in self.bots.items()})

    async def __aenter__(self) -> SupplierFleet:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.stop()
