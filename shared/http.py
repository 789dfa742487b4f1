"""HTTP client plumbing shared by the services and the stand-ins."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

# How long our HTTP servers keep an idle connection open: longer than httpx's keep-alive (5 s), so a
# client never sends a request on a connection the server is closing at that moment (uvicorn's own
# 5 s equals httpx's, and the race surfaced as ReadError('') on POSTs, which nothing retries).
KEEP_ALIVE_S = 75


class BoundedTransport(httpx.AsyncHTTPTransport):
    """An httpx transport that lets at most `max_connections` requests into its pool at once (until
    each response is closed); the rest wait on a semaphore. httpcore's pool scans every queued request
    against every connection whenever one frees, so thousands queued there cost quadratic CPU
    (py-spy: most of the ingest worker's and the supplier bots' time in a sale's spike)."""

    def __init__(self, *, limits: httpx.Limits | None = None, **kwargs: Any) -> None:
        limits = limits or httpx.Limits()
        super().__init__(limits=limits, **kwargs)
        self._slots = asyncio.Semaphore(limits.max_connections or 100)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await self._slots.acquire()
        try:
            response = await super().handle_async_request(request)
        except BaseException:
            self._slots.release()
            raise
        response.stream = _ReleasingStream(response.stream, self._slots.release)
        return response


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
