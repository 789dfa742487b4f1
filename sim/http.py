"""The one HTTP client object each stand-in's pusher and each supplier bot keeps: aiohttp's pool used
directly, or an httpx transport when one is given (tests mount the far end in-process).

Why not httpx over aiohttp (`shared.http.PooledTransport`) here: the stand-ins and bots stand for the
outside world and must not be the bottleneck of the benchmarks they drive, and httpx's request and
response objects, URL parsing, cookies and redirects cost more per call than aiohttp's pool under
them. The far end sees the same request either way (method, URL, query, headers, body), and a
failure is raised as the httpx exception PooledTransport raises for it, so callers handle one set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp.transport import map_aiohttp_exceptions
from multidict import CIMultiDict

from shared.http import CLIENT_KEEP_ALIVE_S, _precise

Params = Mapping[str, str | int | float]


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]  # case-insensitive
    body: bytes


class OutboundHttp:
    """At most `connections` requests at once, each connection kept alive; a request beyond them
    waits its turn for as long as it takes (each one's connect and read timeouts still apply)."""

    def __init__(
        self,
        *,
        connections: int,
        timeout_s: float,
        base_url: str = "",
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._base_url = base_url
        self._timeout_s = timeout_s
        self._connections = connections
        # What httpx would send besides our own headers, so the far end sees the same on either path.
        self._headers = CIMultiDict(
            {
                "Accept": "*/*",
                "Accept-Encoding": "gzip, deflate",
                "Connection": "keep-alive",
                "User-Agent": f"python-httpx/{httpx.__version__}",
                **(headers or {}),
            }
        )
        self._session: aiohttp.ClientSession | None = None
        self._httpx = (
            httpx.AsyncClient(transport=transport, base_url=base_url, headers=dict(self._headers))
            if transport is not None
            else None
        )

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Params | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Reply:
        """One request; `url` is joined to the base URL. Raises httpx.TransportError subclasses."""
        timeout = self._timeout_s if timeout_s is None else timeout_s
        if self._httpx is not None:
            answer = await self._httpx.request(
                method, url, params=params, content=content, headers=headers, timeout=timeout
            )
            return Reply(answer.status_code, answer.headers, answer.content)
        session = self._session if self._session is not None else self._new_session()
        merged = self._headers if not headers else CIMultiDict(self._headers, **headers)
        try:
            with map_aiohttp_exceptions():
                async with session.request(
                    method,
                    self._base_url + url,
                    params=_query(params) if params else None,
                    data=content or None,
                    headers=merged,
                    allow_redirects=False,
                    auto_decompress=True,
                    timeout=aiohttp.ClientTimeout(sock_connect=timeout, sock_read=timeout),
                ) as response:
                    body = await response.read()
                    return Reply(response.status, response.headers, body)
        except httpx.TransportError as exc:
            raise _precise(exc, _request_of(method, self._base_url + url)) from exc.__cause__ or exc
        except aiohttp.ClientError as exc:  # those left as they are (a malformed answer)
            raise httpx.RemoteProtocolError(f"{type(exc).__name__}: {exc}") from exc

    def _new_session(self) -> aiohttp.ClientSession:
        """Made on the first request, inside the event loop."""
        connector = aiohttp.TCPConnector(limit=self._connections, keepalive_timeout=CLIENT_KEEP_ALIVE_S)
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        )
        return self._session

    async def aclose(self) -> None:
        if self._httpx is not None:
            await self._httpx.aclose()
        if self._session is not None:
            await self._session.close()
            self._session = None


def _request_of(method: str, url: str) -> httpx.Request | Any:
    try:
        return httpx.Request(method, url)
    except httpx.InvalidURL:
        return None


def _query(params: Params) -> dict[str, str]:
    """The query as httpx writes its values (True as "true", 20.0 as "20.0")."""
    return {k: ("true" if v is True else "false" if v is False else str(v)) for k, v in params.items()}
