"""The stand-ins' and bots' HTTP client: over aiohttp's pool it puts on the wire exactly what httpx
puts there over the same pool (PooledTransport), and fails with the same httpx exceptions."""

from __future__ import annotations

import asyncio
import gzip
import re
import socket

import httpx
import pytest
import uvloop

from shared.http import kept_alive_transport
from sim.http import OutboundHttp


class RecordingServer:
    """Keeps each request's head and body; answers 200 with a JSON body (or never, when `silent`)."""

    def __init__(self, *, silent: bool = False) -> None:
        self.requests: list[tuple[list[bytes], bytes]] = []
        self.silent = silent

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = re.search(rb"(?i)\r\ncontent-length: *([0-9]+)", head)
                body = await reader.readexactly(int(length.group(1))) if length else b""
                self.requests.append((head.rstrip(b"\r\n").split(b"\r\n"), body))
                if self.silent:
                    await asyncio.sleep(10)
                writer.write(
                    b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\n"
                    b'idempotent-replayed: true\r\ncontent-length: 11\r\n\r\n{"ok":true}'
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _normalised(head: list[bytes]) -> tuple[bytes, list[bytes]]:
    """The request line and the header lines, names lower-cased, in a stable order."""
    lines = [re.sub(rb"^([^:]+):\s*", lambda m: m.group(1).lower() + b": ", line) for line in head[1:]]
    return head[0], sorted(lines)


async def _send_both_ways(server: RecordingServer) -> list[tuple[int, str | None, bytes]]:
    listening = await asyncio.start_server(server.serve, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    answers = []
    async with listening:
        for transport in (None, kept_alive_transport(2)):
            client = OutboundHttp(
                connections=2,
                timeout_s=5,
                base_url=f"http://127.0.0.1:{port}/supplier/v1",
                headers={"Authorization": "Bearer k", "User-Agent": "lvyue-supplier-sim/1"},
                transport=transport,
            )
            reply = await client.request(
                "POST",
                "/dispatch-orders/d-1/accept",
                params={"after": 3, "wait_s": 20.0, "flag": True, "sig": "a b/c+d"},
                content='{"text":"张三"}'.encode(),
                headers={
                    "Idempotency-Key": "k-1",
                    "Content-Type": "application/json",
                    "accept": "application/json",
                },
            )
            answers.append((reply.status, reply.headers.get("Idempotent-Replayed"), reply.body))
            reply = await client.request("GET", "/feed", params={"after": 0})
            answers.append((reply.status, reply.headers.get("idempotent-replayed"), reply.body))
            await client.aclose()
    return answers


async def test_aiohttp_and_httpx_put_the_same_request_on_the_wire() -> None:
    server = RecordingServer()
    answers = await _send_both_ways(server)
    direct, over_httpx = server.requests[:2], server.requests[2:]
    for (direct_head, direct_body), (httpx_head, httpx_body) in zip(direct, over_httpx, strict=True):
        assert _normalised(direct_head) == _normalised(httpx_head)
        assert direct_body == httpx_body
    query = b"after=3&wait_s=20.0&flag=true&sig=a+b/c%2Bd"
    assert direct[0][0][0] == b"POST /supplier/v1/dispatch-orders/d-1/accept?" + query + b" HTTP/1.1"
    assert answers[:2] == answers[2:]
    assert answers[0] == (201, "true", b'{"ok":true}')


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_refused_connection_and_a_silent_server_fail_as_over_httpx() -> None:
    for transport in (None, kept_alive_transport(1)):
        client = OutboundHttp(connections=1, timeout_s=0.2, transport=transport)
        with pytest.raises(httpx.ConnectError):
            await client.request("POST", f"http://127.0.0.1:{_unused_port()}/cb", content=b"x")
        listening = await asyncio.start_server(RecordingServer(silent=True).serve, "127.0.0.1", 0)
        port = listening.sockets[0].getsockname()[1]
        async with listening:
            with pytest.raises(httpx.TimeoutException):
                await client.request("GET", f"http://127.0.0.1:{port}/slow")
            await client.aclose()


class ScriptedServer:
    """Answers each request with the next of `answers` (raw bytes; None: close without answering),
    counting the connections it accepted."""

    def __init__(self, answers: list[bytes | None]) -> None:
        self.answers = answers
        self.connections = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                answer = self.answers.pop(0)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if b"connection: close" in answer.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


CHUNKED = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n7\r\nsuccess\r\n0\r\n\r\n"
GZIPPED = b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n%s" % (
    len(gzip.compress(b"success")),
    gzip.compress(b"success"),
)
CLOSING = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 4\r\n\r\nbusy"


async def _replies(server: ScriptedServer, requests: int) -> list[tuple[int, bytes] | str]:
    listening = await asyncio.start_server(server.serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{listening.sockets[0].getsockname()[1]}/cb"
    client = OutboundHttp(connections=1, timeout_s=2)
    replies: list[tuple[int, bytes] | str] = []
    async with listening:
        for _ in range(requests):
            try:
                reply = await client.request("POST", url, content=b"{}")
                replies.append((reply.status, reply.body))
            except httpx.TransportError as exc:
                replies.append(type(exc).__name__)
        await client.aclose()
    return replies


async def test_a_kept_alive_connection_is_reused_until_the_server_closes_it() -> None:
    server = ScriptedServer([CHUNKED, GZIPPED, CLOSING, CHUNKED, None, CHUNKED])
    replies = await _replies(server, 6)
    assert replies == [
        (200, b"success"),
        (200, b"success"),
        (503, b"busy"),  # and the server closed the connection
        (200, b"success"),
        "RemoteProtocolError",  # closed without an answer: not retried (a POST)
        (200, b"success"),
    ]
    assert server.connections == 3


def test_the_client_runs_on_uvloop_as_the_stand_ins_do() -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        replies = runner.run(_replies(ScriptedServer([CHUNKED, CHUNKED]), 2))
    assert replies == [(200, b"success"), (200, b"success")]
