"""The supplier's two commands on every order, `accept` and `shipments`, on a fast path: pure ASGI in
front of the app, like the feed (feed_endpoint.py).

Under bench-e2e at 200 orders/s these two routed calls took 29% of dispatch's CPU (py-spy,
2026-12-03), and half of that was FastAPI's routing, dependency solving and validation around the
command. Here a well-formed, authenticated call runs the same command as the route, with the same
idempotency record, fingerprint and answer. Anything else goes on to the route, which answers it in
the API's error format: a missing or unknown key, a body that is not application/json or that the
model refuses, an estimated ship time in the past, an unusual Idempotency-Key, the app still
starting. The same RED metrics are recorded as for the route.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from services.dispatch.supplier_api import (
    ApiError,
    Decide,
    SupplierApi,
    accept_is_in_the_past,
    accepting,
    api_key_of_scope,
    error_response,
    rate_limited,
    run_command,
    shipping,
)
from shared.api.supplier import API_PREFIX, AcceptRequest, ShipRequest
from shared.asgi import is_application_json, model_body, read_body, replaying
from shared.metrics import HTTP_IN_FLIGHT, RouteMetrics

COMMAND_PATH = re.compile(
    re.escape(API_PREFIX) + r"/dispatch-orders/([0-9A-Za-z_-]{1,64})/(accept|shipments)"
)
_IDEMPOTENCY_KEY = b"idempotency-key"
_LONGEST_IDEMPOTENCY_KEY = 255


@dataclass(frozen=True)
class Command:
    """How the fast path reads one command: its body's model, and the decision the route makes of it
    (None: the route must judge the body)."""

    route: str  # the route template, the RED metrics' label
    model: type[BaseModel]
    decision: Callable[[BaseModel], Decide | None]


def _accept(body: BaseModel) -> Decide | None:
    assert isinstance(body, AcceptRequest)
    return None if accept_is_in_the_past(body) else accepting(body)


def _ship(body: BaseModel) -> Decide | None:
    assert isinstance(body, ShipRequest)
    return shipping(body)


COMMANDS = {
    "accept": Command(API_PREFIX + "/dispatch-orders/{dispatch_id}/accept", AcceptRequest, _accept),
    "shipments": Command(API_PREFIX + "/dispatch-orders/{dispatch_id}/shipments", ShipRequest, _ship),
}


def idempotency_key_of(scope: Scope) -> tuple[bool, str | None]:
    """(usable, key): unusable when repeated, too long or not ASCII (the route judges those)."""
    values = [v for k, v in scope["headers"] if k == _IDEMPOTENCY_KEY]
    if not values:
        return True, None
    if len(values) > 1 or len(values[0]) > _LONGEST_IDEMPOTENCY_KEY or not values[0].isascii():
        return False, None
    return True, values[0].decode("ascii")


class CommandEndpoint:
    def __init__(self, app: ASGIApp, *, service: str) -> None:
        self.app = app
        self._in_flight = HTTP_IN_FLIGHT.labels(service)
        self._metrics = {c.route: RouteMetrics(service, "POST", c.route) for c in COMMANDS.values()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        is_post = scope["type"] == "http" and scope["method"] == "POST"
        matched = COMMAND_PATH.fullmatch(scope["path"]) if is_post else None
        if matched is None:
            await self.app(scope, receive, send)
            return
        dispatch_id, command = matched.group(1), COMMANDS[matched.group(2)]
        api: SupplierApi | None = getattr(scope["app"].state, "supplier_api", None)
        usable_key, idempotency_key = idempotency_key_of(scope)
        token = api_key_of_scope(scope)
        supplier = await api.keys.supplier_of(token) if api is not None and token else None
        if api is None or supplier is None or not usable_key or not is_application_json(scope):
            await self.app(scope, receive, send)
            return
        raw = await read_body(receive)
        if raw is None:
            return
        body = model_body(command.model, raw)
        decide = command.decision(body) if body is not None else None
        if body is None or decide is None:
            await self.app(scope, replaying(raw, receive), send)
            return
        started = time.perf_counter()
        status = 500
        self._in_flight.inc()
        try:
            answer: Response | None = rate_limited(api, supplier)
            if answer is None:
                try:
                    answer = await run_command(
                        api, supplier, dispatch_id, idempotency_key, "POST", scope["path"], body, decide
                    )
                except ApiError as exc:  # as the app's handler answers it
                    answer = error_response(exc.status, exc.code, exc.message, headers=exc.headers)
            await answer(scope, receive, send)
            status = answer.status_code
        finally:
            self._in_flight.dec()
            self._metrics[command.route].answered(status, time.perf_counter() - started)
