"""PooledTransport lets at most its connections' worth of requests in at once, keeps every connection
alive, frees each one when its response is closed, and raises httpx's errors, named for what happened
(a local socket server stands in for the far end)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from shared.http import kept_alive_transport
from tests.unit.slow_server import slow_server


async def test_no_more_requests_in_flight_than_connections_and_every_slot_comes_back() -> None:
    far_end, server, port = await slow_server(0.01)
    client = httpx.AsyncClient(transport=kept_alive_transport(2), base_url=f"http://127.0.0.1:{port}")
    async with server, client:
        answers = await asyncio.gather(*(client.get(f"/{n}") for n in range(30)))
        assert [a.text for a in answers] == ["ok"] * 30
        assert far_end.most == 2  # two at a time, the rest waiting for a connection
        async with client.stream("GET", "/streamed") as streamed:
            assert await streamed.aread() == b"ok"
        async with asyncio.timeout(5):  # a connection not given back would leave these two waiting
            again = await asyncio.gather(client.get("/after-1"), client.get("/after-2"))
        assert [a.text for a in again] == ["ok", "ok"]
    assert len(far_end.connections) == 2  # kept alive and reused


async def test_every_connection_is_used_and_kept_alive() -> None:
    far_end, server, port = await slow_server(0.02)
    client = httpx.AsyncClient(transport=kept_alive_transport(20), base_url=f"http://127.0.0.1:{port}")
    async with server, client:
        for _ in range(3):
            answers = await asyncio.gather(*(client.get(f"/{n}") for n in range(60)))
            assert [a.text for a in answers] == ["ok"] * 60
    assert far_end.most == 20  # all twenty connections at work, and never more
    assert len(far_end.connections) == 20  # each kept alive and reused: no connection opened twice


async def _serve_once(answer: bytes | None) -> tuple[asyncio.Server, int]:
    """A server that reads one request and answers `answer` raw (None: closes without answering)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if answer is not None:
            writer.write(answer)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_a_server_gone_before_answering_is_a_remote_protocol_error() -> None:
    server, port = await _serve_once(None)
    async with server, httpx.AsyncClient(transport=kept_alive_transport(1)) as client:
        with pytest.raises(httpx.RemoteProtocolError, match="ServerDisconnected"):
            await client.post(f"http://127.0.0.1:{port}/x", content=b"{}")


async def test_a_malformed_answer_is_an_httpx_error() -> None:
    server, port = await _serve_once(b"NOT HTTP AT ALL\r\n\r\n")
    async with server, httpx.AsyncClient(transport=kept_alive_transport(1)) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(f"http://127.0.0.1:{port}/x")


async def test_a_refused_connection_is_a_connect_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()  # nothing listens on the port any more
    async with httpx.AsyncClient(transport=kept_alive_transport(1)) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/x")


async def test_a_slow_answer_is_a_read_timeout() -> None:
    _, server, port = await slow_server(1.0)
    client = httpx.AsyncClient(transport=kept_alive_transport(1), timeout=httpx.Timeout(0.2, pool=None))
    async with server, client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(f"http://127.0.0.1:{port}/x")


async def test_a_request_waiting_for_a_connection_is_not_timed_out_by_the_wait() -> None:
    _, server, port = await slow_server(0.15)
    # Each request answers within its 0.3 s; the fourth waits 0.45 s for the one connection.
    client = httpx.AsyncClient(
        transport=kept_alive_transport(1), timeout=0.3, base_url=f"http://127.0.0.1:{port}"
    )
    async with server, client:
        answers = await asyncio.gather(*(client.get(f"/{n}") for n in range(4)))
    assert [a.text for a in answers] == ["ok"] * 4


async def test_httpx_alone_keeps_the_cookies() -> None:
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                seen.append(head.lower())
                writer.write(b"HTTP/1.1 200 OK\r\nset-cookie: session=abc\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    # A host name, not an address: aiohttp's own jar ignores cookies of IP addresses.
    client = httpx.AsyncClient(transport=kept_alive_transport(1), base_url=f"http://localhost:{port}")
    async with server, client:
        await client.get("/first")
        await client.get("/second")
        client.cookies.clear()
        await client.get("/third")
    assert b"cookie: session=abc" in seen[1]  # httpx sends what it was given
    assert b"cookie:" not in seen[2]  # and nothing once it forgot it: no second jar in aiohttp
