"""An open-loop load generator: requests start on a fixed schedule whatever the answers, and each
latency is measured from the request's scheduled start (no coordinated omission). HdrHistogram
records microseconds."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

from hdrh.histogram import HdrHistogram

# 1 µs .. 60 s, 3 significant digits.
_LOWEST_US, _HIGHEST_US, _DIGITS = 1, 60_000_000, 3


def new_histogram() -> HdrHistogram:
    return HdrHistogram(_LOWEST_US, _HIGHEST_US, _DIGITS)


# A fixed-rate schedule was sustained when every request of it was answered OK, the last within this
# long after its due time.
SUSTAINED_DRAIN_S = 1.0


def sustained(*, failed: int, sent: int, planned: float, drain_s: float) -> bool:
    return failed == 0 and sent >= planned and drain_s < SUSTAINED_DRAIN_S


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
    generator_cpu_s: float = 0.0  # CPU this process (the load generator) used during the run
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
            "generator_cpu_s": round(self.generator_cpu_s, 2),
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
    start, cpu_start = time.perf_counter(), time.process_time()
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
        this_second = per_second.get(second)
        if this_second is None:  # not setdefault: that would build a histogram per request
            this_second = per_second[second] = new_histogram()
        this_second.record_value(min(latency_us, _HIGHEST_US))
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
    result.generator_cpu_s = time.process_time() - cpu_start
    result.timeline = [
        (second, h.get_total_count(), h.get_value_at_percentile(99) / 1000)
        for second, h in sorted(per_second.items())
    ]
    return result


# ---- a lean HTTP/1.1 client: the load generator must not eat the CPU it measures ---------------------


def http_request(host: str, port: int, target: str, body: bytes, content_type: str) -> bytes:
    """One POST as bytes on the wire, built before the timed run."""
    head = (
        f"POST {target} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: {content_type}\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class HttpResponseError(Exception):
    """The server answered something this client does not read (or closed the connection)."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection, one request at a time (no pipelining)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reusable = True
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(HttpResponseError(f"connection closed: {exc!r}"))

    def exchange(self, request: bytes) -> asyncio.Future[tuple[int, bytes]]:
        """Send `request`; the future gives (status, body)."""
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self._waiter

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        lines = bytes(self._buffer[:end]).split(b"\r\n")
        try:
            status = int(lines[0].split(b" ", 2)[1])
        except (IndexError, ValueError):
            self._fail(waiter, "no status line")
            return
        length = -1
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                self.reusable = False
        if length < 0:  # uvicorn sends a length for every body this benchmark gets
            self._fail(waiter, "answer without content-length")
            return
        if len(self._buffer) < end + 4 + length:
            return
        body = bytes(self._buffer[end + 4 : end + 4 + length])
        del self._buffer[: end + 4 + length]
        waiter.set_result((status, body))

    def _fail(self, waiter: asyncio.Future[tuple[int, bytes]], why: str) -> None:
        self.reusable = False
        waiter.set_exception(HttpResponseError(why))
        self.close()

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()


class HttpClient:
    """Keep-alive connections to one server, reused round-robin (like many senders, and so that a
    server with several worker processes gets its share on each); requests are prebuilt bytes
    (`http_request`). `open(n)` opens a pool before the clock starts; more are opened on demand
    when every connection is busy, up to `max_connections`."""

    def __init__(self, host: str, port: int, *, max_connections: int = 1000, timeout_s: float = 10) -> None:
        self._host, self._port = host, port
        self._max_connections = max_connections
        self._timeout_s = timeout_s
        self._idle: deque[_Connection] = deque()
        self._open = 0
        self._waiting: deque[asyncio.Future[None]] = deque()

    async def open(self, connections: int) -> None:
        for connection in await asyncio.gather(*(self._connect() for _ in range(connections))):
            self._idle.append(connection)

    async def _connect(self) -> _Connection:
        self._open += 1
        try:
            _, connection = await asyncio.get_running_loop().create_connection(
                _Connection, self._host, self._port
            )
        except BaseException:
            self._open -= 1
            raise
        return connection

    async def _acquire(self) -> _Connection:
        while True:
            while self._idle:
                connection = self._idle.popleft()
                if connection.reusable:
                    return connection
                self._open -= 1
            if self._open < self._max_connections:
                return await self._connect()
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            await waiter

    def _release(self, connection: _Connection) -> None:
        if connection.reusable:
            self._idle.append(connection)
        else:
            connection.close()
            self._open -= 1
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break

    async def send(self, request: bytes) -> tuple[int, bytes]:
        connection = await self._acquire()
        try:
            async with asyncio.timeout(self._timeout_s):
                return await connection.exchange(request)
        except BaseException:
            connection.close()  # an answer may still arrive on it: never reuse
            raise
        finally:
            self._release(connection)

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()
