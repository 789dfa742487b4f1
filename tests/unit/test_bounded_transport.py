"""BoundedTransport keeps requests beyond the pool out of httpcore's queue, and frees each slot
when its response is closed (a local socket server stands in for the far end)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import httpx

from shared.http import BoundedTransport


@dataclass
class SlowServer:
    """Answers every request "ok" after `delay_s`, counting requests in flight and connections."""

    delay_s: float
    in_flight: int = 0
    most: int = 0
    connections: set[int] = field(default_factory=set)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.add(writer.get_extra_info("peername")[1])
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                self.in_flight += 1
                self.most = max(self.most, self.in_flight)
                await asyncio.sleep(self.delay_s)
                self.in_flight -= 1
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_no_more_requests_in_flight_than_connections_and_every_slot_comes_back() -> None:
    far_end = SlowServer(delay_s=0.01)
    server = await asyncio.start_server(far_end.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = BoundedTransport(limits=httpx.Limits(max_connections=2))
    async with server, httpx.AsyncClient(transport=transport, base_url=f"http://127.0.0.1:{port}") as client:
        answers = await asyncio.gather(*(client.get(f"/{n}") for n in range(30)))
        assert [a.text for a in answers] == ["ok"] * 30
        assert far_end.most == 2  # two at a time, not thirty in httpcore's queue
        async with client.stream("GET", "/streamed") as streamed:
            assert await streamed.aread() == b"ok"
        async with asyncio.timeout(5):  # a slot not given back would leave these two waiting
            again = await asyncio.gather(client.get("/after-1"), client.get("/after-2"))
        assert [a.text for a in again] == ["ok", "ok"]


async def test_a_pool_larger_than_a_shard_uses_every_connection_and_no_more() -> None:
    far_end = SlowServer(delay_s=0.02)
    server = await asyncio.start_server(far_end.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    limits = httpx.Limits(max_connections=20, max_keepalive_connections=20)
    transport = BoundedTransport(limits=limits)
    assert BoundedTransport.SHARD_CONNECTIONS < 20  # more than one shard
    async with server, httpx.AsyncClient(transport=transport, base_url=f"http://127.0.0.1:{port}") as client:
        for _ in range(3):
            answers = await asyncio.gather(*(client.get(f"/{n}") for n in range(60)))
            assert [a.text for a in answers] == ["ok"] * 60
    assert far_end.most == 20  # all twenty connections at work, across the shards, and never more
    assert len(far_end.connections) == 20  # each kept alive and reused: no connection opened twice
