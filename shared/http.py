"""HTTP client plumbing shared by the services and the stand-ins."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

# How long our HTTP servers keep an idle connection open: longer than httpx's keep-alive (5 s), so a
# client never sends a request on a connection the server is closing at that moment (uvicorn's own
# 5 s equals httpx's, and the race surfaced as ReadError('') on POSTs, which nothing retries).
KEEP_ALIVE_S = 75


class BoundedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that lets at most `max_connections` requests in at once (until each
    response is closed); the rest wait on a semaphore. httpcore's pool scans every queued request
    against every connection whenever one frees, so thousands queued there cost quadratic CPU
    (py-spy: most of the ingest worker's and the supplier bots' time in a sale's spike).

    The connections are split over pools of at most `SHARD_CONNECTIONS`, each request going to the
    least busy: each time a request enters or leaves a pool, httpcore checks every connection against
    every other (a third of the ingest worker's CPU with one pool of 32 under bench-e2e)."""

    SHARD_CONNECTIONS = 8

    def __init__(self, *, limits: httpx.Limits | None = None, **kwargs: Any) -> None:
        limits = limits or httpx.Limits()
        total = limits.max_connections or 100
        shards = math.ceil(total / self.SHARD_CONNECTIONS)
        per_shard = math.ceil(total / shards)
        keep_alive = math.ceil((limits.max_keepalive_connections or total) / shards)
        shard_limits = httpx.Limits(
            max_connections=per_shard,
            max_keepalive_connections=min(per_shard, keep_alive),
            keepalive_expiry=limits.keepalive_expiry,
        )
        self._shards = [httpx.AsyncHTTPTransport(limits=shard_limits, **kwargs) for _ in range(shards)]
        self._busy = [0] * shards
        self._slots = asyncio.Semaphore(total)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await self._slots.acquire()
        shard = min(range(len(self._shards)), key=self._busy.__getitem__)
        self._busy[shard] += 1

        def release() -> None:
            self._busy[shard] -= 1
            self._slots.release()

        try:
            response = await self._shards[shard].handle_async_request(request)
        except BaseException:
            release()
            raise
        response.stream = _ReleasingStream(response.stream, release)
        return response

    async def aclose(self) -> None:
        for shard in self._shards:
            await shard.aclose()


def kept_alive_transport(connections: int) -> BoundedTransport:
    """At most `connections` at once, every one kept alive: httpx keeps only 20 by default, so a
    client sending more at once opens (and closes) a TCP connection for most of its requests."""
    return BoundedTransport(
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    )


class _ReleasingStream(httpx.AsyncByteStream):
    """The response body; closing it frees the request's slot (once)."""

    def __init__(self, stream: Any, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()
