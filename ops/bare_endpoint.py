"""The benchmarks' bare HTTP endpoints, each run under uvicorn in a process of its own.

`app`: bench ingest's ceiling, the webhook's route answering `success` with no work at all
(`uvicorn ops.bare_endpoint:app`). `echo`: the reference chain's HTTP hop in bench e2e, a raw ASGI
app answering every request with its own body (`uvicorn ops.bare_endpoint:echo --lifespan off`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

app = FastAPI(title="bare endpoint (benchmark ceiling)")


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/wechat/callback/{shop_id}", response_class=PlainTextResponse)
async def callback(shop_id: str, request: Request) -> str:
    await request.body()
    return "success"


Message = dict[str, Any]


async def echo(
    scope: Message, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]
) -> None:
    """Any method, any path: 200 with the request's body."""
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/octet-stream"),
                (b"content-length", b"%d" % len(body)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
