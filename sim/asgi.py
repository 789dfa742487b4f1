"""The stand-ins' hot POST routes answered in front of FastAPI: the same function answers there and in
the FastAPI route (which stays, for the OpenAPI page and anything unusual), so both give the same
JSON; only FastAPI's middleware and routing around the call are skipped."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.asgi import read_body

# (the request's scope, its raw body) -> the JSON object to answer with HTTP 200
JsonCall = Callable[[Scope, bytes], Awaitable[dict[str, Any]]]


class JsonCallsFastPath:
    """POSTs to the paths in `calls` answered here; every other request goes on to `app`."""

    def __init__(self, app: ASGIApp, calls: Mapping[str, JsonCall]) -> None:
        self.app = app
        self._calls = calls

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call = self._calls.get(scope["path"]) if scope["type"] == "http" else None
        if call is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        raw = await read_body(receive)
        if raw is None:  # the client left: nothing is done or answered, as by Starlette
            return
        await JSONResponse(await call(scope, raw))(scope, receive, send)


def header(scope: Scope, name: bytes) -> str:
    """The first value of header `name` (lower case), as Starlette's `request.headers.get` reads it."""
    return next((v.decode("latin-1") for k, v in scope["headers"] if k == name), "")
