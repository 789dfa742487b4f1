"""Running an ASGI app on a real port inside the test's event loop, and reading topics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import httpx
import uvicorn
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from fastapi import FastAPI


@asynccontextmanager
async def serving(
    app: FastAPI, port: int, ready_path: str = "/readyz", timeout_s: float = 90
) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1:`port` until the block ends; yields its base URL once ready."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client, asyncio.timeout(timeout_s):
            while True:
                if task.done():
                    task.result()  # start-up failed: raise its error
                    raise RuntimeError("server exited during start-up")
                if server.started and (await client.get(ready_path)).status_code == 200:
                    break
                await asyncio.sleep(0.2)
        yield base
    finally:
        server.should_exit = True
        await task


async def read_topic(
    bootstrap: str,
    topic: str | Sequence[str],
    *,
    until: Callable[[list[ConsumerRecord[bytes, bytes]]], bool] | None,
    timeout_s: float = 30,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Records of `topic` (or of several) from the beginning (no consumer group) until
    `until(records)` holds (TimeoutError after `timeout_s`); with `until=None`, whatever arrives
    within `timeout_s`."""
    # No group: every partition is assigned to this consumer, read from the start.
    topics = [topic] if isinstance(topic, str) else list(topic)
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        async with asyncio.timeout(timeout_s):
            while until is None or not until(records):
                for batch in (await consumer.getmany(timeout_ms=300)).values():
                    records.extend(batch)
    except TimeoutError:
        if until is not None:
            raise
    finally:
        await consumer.stop()
    return records
