"""HTTP client plumbing shared by the services and the stand-ins."""

from __future__ import annotations

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

# How long our HTTP servers keep an idle connection open: longer than the clients' keep-alive (5 s),
# so a client never sends a request on a connection the server is closing at that moment (uvicorn's
# own 5 s equals httpx's, and the race surfaced as ReadError('') on POSTs, which nothing retries).
KEEP_ALIVE_S = 75
CLIENT_KEEP_ALIVE_S = 5.0  # httpx's default keep-alive expiry


class PooledTransport(AiohttpTransport):
    """httpx's API over aiohttp's connection pool: at most `connections` requests at once (a request
    holds its connection until its response is closed), every connection kept alive, the rest of the
    requests waiting their turn in order, for as long as it takes: a burst queued behind the pool is
    not the far end failing (each request's connect and read timeouts still apply; aiohttp has no
    write timeout of its own).

    Why not httpx's own transport: httpcore scans every connection (and every queued request) each time
    a request enters or leaves its pool, and builds its own HTTP/1.1 state per request. Under
    bench-e2e that was a third to a half of the CPU of the ingest worker and of the WeChat stand-in;
    against a local server (2026-12-03), httpx cost 0.8 ms of CPU per request over httpcore (split into
    pools of 8) and 0.28 ms over aiohttp."""

    def __init__(self, connections: int) -> None:
        super().__init__(client=self._new_session)
        self._connections = connections

    def _new_session(self) -> aiohttp.ClientSession:
        """Made on the first request, inside the event loop. httpx alone keeps the cookies (as over
        httpcore): aiohttp's own jar would go on sending a cookie httpx has dropped."""
        connector = aiohttp.TCPConnector(
            limit=self._connections, keepalive_timeout=CLIENT_KEEP_ALIVE_S, ssl=self.ssl_context
        )
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout")
        if timeout is not None and timeout.get("pool") is not None:
            request.extensions["timeout"] = {**timeout, "pool": None}
        try:
            return await super().handle_async_request(request)
        except httpx.TransportError as exc:
            raise _precise(exc, request) from exc.__cause__ or exc
        except aiohttp.ClientError as exc:  # those httpx-aiohttp leaves as they are (a malformed answer)
            raise httpx.RemoteProtocolError(f"{type(exc).__name__}: {exc}", request=request) from exc


def _precise(exc: httpx.TransportError, request: httpx.Request) -> httpx.TransportError:
    """httpx-aiohttp maps every aiohttp connection error to `ConnectTimeout`; name what happened as
    httpcore would (a refused connection, a server gone before answering, a reset)."""
    cause = exc.__cause__
    message = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
    if isinstance(cause, aiohttp.ServerTimeoutError):
        return exc
    if isinstance(cause, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message, request=request)
    if isinstance(cause, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError(message, request=request)
    if isinstance(cause, aiohttp.ClientOSError):
        return httpx.ReadError(message, request=request)
    return exc


def kept_alive_transport(connections: int) -> PooledTransport:
    """At most `connections` at once, every one kept alive (httpx keeps only 20 of its 100 by default,
    so a client sending more at once would open and close a TCP connection for most requests)."""
    return PooledTransport(connections)
