"""The stand-ins' hot POST routes answered in front of FastAPI: the same function answers there and in
the FastAPI route (which stays, for the OpenAPI page and anything unusual), so both give the same
JSON; only FastAPI's middleware and routing around the call are skipped."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI
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


class StandInApp(FastAPI):
    """FastAPI with the stand-in's fast paths in front of everything of FastAPI's own: its preamble
    (telemetry checks reading the environment, the middleware stack) cost a tenth of each call a fast
    path answered behind it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fast_paths: list[tuple[Callable[..., ASGIApp], dict[str, Any]]] = []
        self._front: ASGIApp | None = None

    def add_fast_path(self, fast_path: Callable[..., ASGIApp], **options: Any) -> None:
        """`fast_path(app, **options)` answers what it takes and passes the rest on to `app`."""
        self.fast_paths.append((fast_path, options))
        self._front = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._front is None:
            front: ASGIApp = super().__call__
            for fast_path, options in self.fast_paths:
                front = fast_path(front, **options)
            self._front = front
        await self._front(scope, receive, send)
