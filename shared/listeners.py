"""A service's private listener: routes that must never face the internet (internal APIs, metrics, the
OpenAPI docs) are served only on a second port of the same process, kept on the private network,
while the public port answers only the routes meant for outsiders (e.g. carrier callbacks).

The second listener is a uvicorn server of the same app in the same event loop (started and stopped
with the service's lifespan), so both share every object the service built. `ListenerGate` tells
the two apart by the local port a request arrived on, and `ServiceCredential` checks the bearer token
other services send to the internal API."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import Generator, Sequence
from enum import StrEnum
from typing import Any

import uvicorn
from fastapi import Depends, HTTPException, Request
from pydantic import SecretStr
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

# Answered on every port: a load balancer or orchestrator probes the public one.
ALWAYS_PUBLIC = ("/healthz", "/readyz")


class ServiceAuthError(StrEnum):
    CREDENTIAL_REQUIRED = "service_credential_required"


class ListenerGate:
    """On any port but `internal_port`, only paths under `public_prefixes` (and the health checks)
    exist: everything else is a 404, as if the route were not there."""

    def __init__(self, app: ASGIApp, *, internal_port: int, public_prefixes: Sequence[str]) -> None:
        self.app = app
        self.internal_port = internal_port
        self.public = tuple(public_prefixes) + ALWAYS_PUBLIC

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not self._allowed(scope):
            if scope["type"] == "http":
                await JSONResponse({"detail": "Not Found"}, status_code=404)(scope, receive, send)
            return  # a websocket is refused by not accepting it
        await self.app(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        server = scope.get("server")
        if server is not None and server[1] == self.internal_port:
            return True
        path: str = scope.get("path", "")
        return any(path == prefix or path.startswith(prefix.rstrip("/") + "/") for prefix in self.public)


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signals to the process's main server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class InternalListener:
    """The app served again on `host:port` (no lifespan of its own: the main server ran it)."""

    def __init__(self, app: ASGIApp, host: str, port: int, **config: Any) -> None:
        self._server = _QuietServer(
            uvicorn.Config(app, host=host, port=port, lifespan="off", access_log=False, **config)
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout_s: float = 10.0) -> None:
        self._task = asyncio.create_task(self._server.serve())
        async with asyncio.timeout(timeout_s):
            while not self._server.started:
                if self._task.done():
                    self._task.result()  # bind failed: raise its error
                    raise RuntimeError("the internal listener stopped while starting")
                await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        await asyncio.gather(self._task, return_exceptions=True)


def bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def require_service_credential(request: Request) -> None:
    """A FastAPI dependency for internal routes: the request carries the service credential the app
    holds in `app.state.service_credential` (`Authorization: Bearer`, compared in constant time),
    else 401. An app without one refuses every call."""
    expected: SecretStr | None = getattr(request.app.state, "service_credential", None)
    wanted = b"" if expected is None else expected.get_secret_value().encode()
    if not wanted or not hmac.compare_digest(bearer(request).encode(), wanted):
        raise HTTPException(
            401,
            {"code": ServiceAuthError.CREDENTIAL_REQUIRED, "detail": "Authorization: Bearer <service token>"},
            headers={"WWW-Authenticate": "Bearer"},
        )


ServiceCaller = Depends(require_service_credential)
