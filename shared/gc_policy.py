"""Python's cyclic garbage collector under a large, long-lived in-memory projection.

A service that keeps its orders in memory (dispatch, logistics, ...) holds hundreds of thousands of
container objects that live for hours. CPython 3.11 rescans all of them in every full collection,
and a full collection runs whenever the old generation has grown by a quarter: in `make
bench-dispatch` that was 32 full collections of ~270 ms each in 75 s, with the event loop (the
consumer, the long polls) standing still each time.

The policy:
- a larger young generation, so a message's objects die young instead of being promoted;
- after each full collection, its survivors are frozen (`gc.freeze`): they are not scanned again,
  so each object costs one full scan in its life. They are still freed by reference counting;
- what freezing gives up is cyclic garbage among frozen objects (our projections are trees, so
  only what was in flight at a freeze), so a periodic sweep unfreezes everything and collects once.
  That one pause is counted like every other (`lvyue_gc_pause_seconds`), with what it reclaimed
  (`lvyue_gc_swept_objects_total`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

from prometheus_client import Counter, Gauge, Histogram

from shared.settings import GcSettings

log = logging.getLogger(__name__)

GC_PAUSE = Histogram(
    "lvyue_gc_pause_seconds",
    "Time the event loop stood still in Python's garbage collector, by generation.",
    ["service", "generation"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
GC_FROZEN = Gauge(
    "lvyue_gc_frozen_objects",
    "Objects frozen out of the collector's scans (survivors of full collections).",
    ["service"],
    multiprocess_mode="max",
)
GC_SWEPT = Counter(
    "lvyue_gc_swept_objects_total",
    "Unreachable objects the periodic full sweep found among the frozen ones (cyclic garbage).",
    ["service"],
)


class GcPolicy:
    """Installs the collector settings and the timing callback for one service; `uninstall` undoes."""

    _installed: GcPolicy | None = None

    def __init__(self, service: str, settings: GcSettings) -> None:
        self._settings = settings
        self._pauses = [GC_PAUSE.labels(service, str(generation)) for generation in range(3)]
        self._frozen = GC_FROZEN.labels(service)
        self._swept = GC_SWEPT.labels(service)
        self._started = 0.0
        self._previous_threshold: tuple[int, int, int] | None = None

    def install(self) -> bool:
        """False if another policy of this process is installed: the collector is one per process
        (tests run several services in one), so the first one governs it."""
        if GcPolicy._installed is not None:
            return False
        GcPolicy._installed = self
        self._previous_threshold = gc.get_threshold()
        _, middle, old = self._previous_threshold
        gc.set_threshold(self._settings.young_threshold, middle, old)
        gc.callbacks.append(self._on_gc)
        self._frozen.set(gc.get_freeze_count())
        return True

    def uninstall(self) -> None:
        if GcPolicy._installed is not self:
            return
        GcPolicy._installed = None
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._previous_threshold is not None:
            gc.set_threshold(*self._previous_threshold)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = info["generation"]
        self._pauses[generation].observe(time.perf_counter() - self._started)
        if generation == 2 and self._settings.freeze_survivors:
            gc.freeze()  # the collection is over: only moves its survivors to the permanent generation
            self._frozen.set(gc.get_freeze_count())

    def sweep(self) -> int:
        """Unfreeze and collect everything once (one long pause); returns the unreachable objects found."""
        gc.unfreeze()
        found = gc.collect()  # the callback times it and freezes the survivors again
        self._swept.inc(found)
        self._frozen.set(gc.get_freeze_count())
        return found

    async def sweep_forever(self) -> None:
        interval = self._settings.full_sweep_interval_s
        if interval <= 0:
            return
        while True:
            await asyncio.sleep(interval)
            started = time.perf_counter()
            found = self.sweep()
            log.info(
                "full garbage sweep",
                extra={"unreachable": found, "pause_ms": round((time.perf_counter() - started) * 1000)},
            )
