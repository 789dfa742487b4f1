"""An open-loop load generator: requests start on a fixed schedule whatever the answers, and each
latency is measured from the request's scheduled start (no coordinated omission). HdrHistogram
records microseconds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from hdrh.histogram import HdrHistogram

# 1 µs .. 60 s, 3 significant digits.
_LOWEST_US, _HIGHEST_US, _DIGITS = 1, 60_000_000, 3


def new_histogram() -> HdrHistogram:
    return HdrHistogram(_LOWEST_US, _HIGHEST_US, _DIGITS)


@dataclass
class LoadResult:
    name: str
    target_rate: float
    duration_s: float
    sent: int = 0
    ok: int = 0
    failed: int = 0
    over_deadline: int = 0
    elapsed_s: float = 0.0
    histogram: HdrHistogram = field(default_factory=new_histogram)
    # (second since start, answers completed in that second, p99 ms of that second)
    timeline: list[tuple[int, int, float]] = field(default_factory=list)

    @property
    def achieved_rate(self) -> float:
        """Answers per second over the whole run, the drain after the last send included."""
        return self.ok / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def drain_s(self) -> float:
        """How long the last answers took to arrive after the last request was due."""
        return max(0.0, self.elapsed_s - self.duration_s)

    def percentile_ms(self, percentile: float) -> float:
        return float(self.histogram.get_value_at_percentile(percentile)) / 1000

    @property
    def max_ms(self) -> float:
        return float(self.histogram.get_max_value()) / 1000

    def summary(self) -> dict[str, float | int | str]:
        return {
            "scenario": self.name,
            "target_rate_per_s": self.target_rate,
            "duration_s": self.duration_s,
            "sent": self.sent,
            "ok": self.ok,
            "failed": self.failed,
            "over_deadline": self.over_deadline,
            "achieved_rate_per_s": round(self.achieved_rate, 1),
            "drain_s": round(self.drain_s, 2),
            "p50_ms": round(self.percentile_ms(50), 2),
            "p99_ms": round(self.percentile_ms(99), 2),
            "p999_ms": round(self.percentile_ms(99.9), 2),
            "max_ms": round(self.max_ms, 2),
        }


async def open_loop(
    name: str,
    send: Callable[[int], Awaitable[bool]],
    *,
    rate: float,
    duration_s: float,
    deadline_s: float = 5.0,
    max_in_flight: int = 5_000,
    on_tick: Callable[[LoadResult], None] | None = None,
) -> LoadResult:
    """Call `send(i)` at `rate` per second for `duration_s`; `send` returns True on success."""
    result = LoadResult(name, rate, duration_s)
    per_second: dict[int, HdrHistogram] = {}
    in_flight: set[asyncio.Task[None]] = set()
    start = time.perf_counter()
    total = int(rate * duration_s)

    async def one(i: int, scheduled: float) -> None:
        try:
            ok = await send(i)
        except Exception:  # a failed request is a data point, not a crash of the generator
            ok = False
        done = time.perf_counter()
        latency_us = max(1, int((done - scheduled) * 1_000_000))
        result.histogram.record_value(min(latency_us, _HIGHEST_US))
        second = int(done - start)
        per_second.setdefault(second, new_histogram()).record_value(min(latency_us, _HIGHEST_US))
        if done - scheduled > deadline_s:
            result.over_deadline += 1
        if ok:
            result.ok += 1
        else:
            result.failed += 1

    last_tick = 0
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(in_flight) >= max_in_flight:
            await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.create_task(one(i, scheduled))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        result.sent += 1
        now_second = int(time.perf_counter() - start)
        if on_tick and now_second != last_tick:
            last_tick = now_second
            on_tick(result)
    if in_flight:
        await asyncio.wait(in_flight)
    result.elapsed_s = time.perf_counter() - start
    result.timeline = [
        (second, h.get_total_count(), h.get_value_at_percentile(99) / 1000)
        for second, h in sorted(per_second.items())
    ]
    return result
