"""A local HTTP server that answers slowly, counting requests in flight and connections: the far end
for tests of HTTP clients' pools."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field


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
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = re.search(rb"(?i)\r\ncontent-length: *([0-9]+)", head)
                if length:
                    await reader.readexactly(int(length.group(1)))  # the body, before answering
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


async def slow_server(delay_s: float) -> tuple[SlowServer, asyncio.Server, int]:
    """A SlowServer listening on a free local port: (its counters, the server, the port)."""
    far_end = SlowServer(delay_s=delay_s)
    server = await asyncio.start_server(far_end.serve, "127.0.0.1", 0)
    return far_end, server, server.sockets[0].getsockname()[1]
