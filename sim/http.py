"""The one HTTP client object each stand-in's pusher and each supplier bot keeps: a lean HTTP/1.1
keep-alive pool of its own (responses framed by httptools, uvicorn's parser), or an httpx transport
when one is given (tests mount the far end in-process).

Why not httpx, or aiohttp's pool (`shared.http.PooledTransport`): the stand-ins and bots stand for the
outside world and must not be the bottleneck of the benchmarks they drive. Per call, httpx's request
and response objects, URL parsing, cookies and redirects, and then aiohttp's own request machinery,
cost several times what writing a request and parsing the answer on a kept-alive connection does.
The far end sees the same request (method, path, query, headers, body), and failures are raised as
the httpx exceptions PooledTransport raises for them, so callers handle one set.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import quote, quote_plus, urlencode

import httptools
import httpx
from multidict import CIMultiDict

from shared.http import CLIENT_KEEP_ALIVE_S

Params = Mapping[str, str | int | float]
_DEFAULT_PORTS = {"http": 80, "https": 443}
_PATH_SAFE = "/:@!$&'()*+,;=-._~%?"  # what a URL path may hold as it is


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]  # case-insensitive
    body: bytes


class OutboundHttp:
    """At most `connections` requests at once, every connection kept alive (closed after
    CLIENT_KEEP_ALIVE_S idle); a request beyond them waits its turn, in order, for as long as it
    takes (its connect and read timeouts still apply once it has a connection)."""

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
        # What httpx sends besides our own headers, so the far end sees the same on either path.
        self._headers = {
            "Accept": "*/*",
            "Accept-Encoding": "gzip, deflate",
            "Connection": "keep-alive",
            "User-Agent": f"python-httpx/{httpx.__version__}",
            **(headers or {}),
        }
        self._head = "".join(f"{name}: {value}\r\n" for name, value in self._headers.items())
        self._default_names = frozenset(name.lower() for name in self._headers)
        self._slots = asyncio.Semaphore(connections)
        self._origins: dict[str, _Origin] = {}
        self._httpx = (
            httpx.AsyncClient(transport=transport, base_url=base_url, headers=self._headers)
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
        origin, target = self._split(self._base_url + url)
        if params:
            target += ("&" if "?" in target else "?") + urlencode(
                _query(params), quote_via=quote_plus, safe="/"
            )
        head = f"{method} {target} HTTP/1.1\r\nHost: {origin.host_header}\r\n{self._head}"
        if headers:
            head = _with(head, self._default_names, headers)
        body = content or b""
        if body or method in ("POST", "PUT", "PATCH"):
            head += f"Content-Length: {len(body)}\r\n"
        message = (head + "\r\n").encode("latin-1") + body
        async with self._slots:
            return await origin.exchange(message, method, self._base_url + url, timeout)

    def _split(self, url: str) -> tuple[_Origin, str]:
        scheme, sep, rest = url.partition("://")
        netloc, _, path = rest.partition("/")
        key = f"{scheme}://{netloc}"
        origin = self._origins.get(key)
        if origin is None:
            if not sep or scheme not in _DEFAULT_PORTS or not netloc:
                raise httpx.UnsupportedProtocol(f"Request URL {url!r} is not an http(s) URL")
            origin = self._origins[key] = _Origin(scheme, netloc)
        return origin, quote("/" + path, safe=_PATH_SAFE)

    async def aclose(self) -> None:
        if self._httpx is not None:
            await self._httpx.aclose()
        for origin in self._origins.values():
            origin.close()
        self._origins.clear()


def _query(params: Params) -> dict[str, str]:
    """The query as httpx writes its values (True as "true", 20.0 as "20.0")."""
    return {k: ("true" if v is True else "false" if v is False else str(v)) for k, v in params.items()}


def _with(head: str, defaults: frozenset[str], headers: Mapping[str, str]) -> str:
    """`head` with the call's own headers, each replacing a default of the same name (lower-cased
    in `defaults`)."""
    if not defaults.isdisjoint(name.lower() for name in headers):
        replaced = {name.lower() for name in headers}
        lines = [line for line in head.split("\r\n") if line.partition(":")[0].lower() not in replaced]
        head = "\r\n".join(lines)
    return head + "".join(f"{name}: {value}\r\n" for name, value in headers.items())


class _Origin:
    """The idle connections to one scheme://host:port."""

    def __init__(self, scheme: str, netloc: str) -> None:
        host, _, port = netloc.rpartition(":") if netloc.rsplit(":", 1)[-1].isdigit() else (netloc, "", "")
        self.host = host.strip("[]")
        self.port = int(port) if port else _DEFAULT_PORTS[scheme]
        self.host_header = netloc
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if scheme == "https" else None
        self.idle: deque[_Connection] = deque()

    async def exchange(self, message: bytes, method: str, url: str, timeout_s: float) -> Reply:
        connection = self._take_idle()
        if connection is None:
            connection = await self._connect(method, url, timeout_s)
        try:
            reply = await connection.exchange(message, method, url, timeout_s)
        except BaseException:
            connection.close()
            raise
        if connection.reusable:
            connection.idle_since = time.monotonic()
            self.idle.append(connection)
        else:
            connection.close()
        return reply

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self.idle:
            connection = self.idle.pop()  # the most recently used: the least likely to be stale
            if connection.open and now - connection.idle_since < CLIENT_KEEP_ALIVE_S:
                return connection
            connection.close()
        return None

    async def _connect(self, method: str, url: str, timeout_s: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout_s):
                _, connection = await loop.create_connection(_Connection, self.host, self.port, ssl=self.ssl)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(
                f"no connection within {timeout_s} s", request=_request(method, url)
            ) from exc
        except OSError as exc:
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}", request=_request(method, url)) from exc
        return connection

    def close(self) -> None:
        while self.idle:
            self.idle.pop().close()


class _Connection(asyncio.Protocol):
    """One kept-alive connection, one request at a time."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[None] | None = None
        self._headers: CIMultiDict[str] = CIMultiDict()
        self._body: list[bytes] = []
        self._status = 0
        self._received = False
        self.reusable = False
        self.open = False
        self.idle_since = 0.0

    # --- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.open = True

    def data_received(self, data: bytes) -> None:
        if self._answer is None:  # nothing asked: a server that speaks out of turn is not reused
            self.close()
            return
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("the server switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self._received:
            self._fail(httpx.ReadError(f"the connection closed mid-answer ({exc or 'EOF'})"))
        else:
            self._fail(httpx.RemoteProtocolError("Server disconnected without sending a response."))

    # --- httptools callbacks --------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.add(name.decode("latin-1"), value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self.reusable = self._parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(None)

    # --- the exchange -------------------------------------------------------------------------------

    async def exchange(self, message: bytes, method: str, url: str, timeout_s: float) -> Reply:
        assert self._transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self._headers, self._body, self._received, self.reusable = CIMultiDict(), [], False, False
        self._transport.write(message)
        try:
            async with asyncio.timeout(timeout_s):
                await self._answer
        except TimeoutError as exc:
            raise httpx.ReadTimeout(f"no answer within {timeout_s} s", request=_request(method, url)) from exc
        except httpx.TransportError as exc:
            exc.request = _request(method, url)
            raise
        finally:
            self._answer = None
        body = b"".join(self._body)
        encoding = self._headers.get("Content-Encoding", "").lower()
        if encoding in ("gzip", "deflate") and body:
            body = zlib.decompress(body, 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
        self.reusable = self.reusable and self.open
        return Reply(self._status, self._headers, body)

    def _fail(self, error: httpx.TransportError) -> None:
        self.reusable = False
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(error)
        self.close()

    def close(self) -> None:
        self.open = False
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()


def _request(method: str, url: str) -> httpx.Request:
    return httpx.Request(method, url)
