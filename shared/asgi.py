"""Helpers for the pure-ASGI fast paths that answer a hot request in front of FastAPI and pass
anything unusual on to the route behind them."""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import BaseModel
from starlette.types import Message, Receive, Scope

M = TypeVar("M", bound=BaseModel)


async def read_body(receive: Receive) -> bytes | None:
    """The request's body; None when the client disconnects first (nothing is done or answered then,
    as Starlette drops a request whose client is gone while its body is read)."""
    raw = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        raw += message.get("body", b"")
        if not message.get("more_body", False):
            return bytes(raw)


def replaying(raw: bytes, receive: Receive) -> Receive:
    """`receive` for the app behind a fast path that read the body and passed the request on."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": raw, "more_body": False}

    return replay


def is_application_json(scope: Scope) -> bool:
    content_type = next((v for k, v in scope["headers"] if k == b"content-type"), b"")
    return content_type.split(b";", 1)[0].strip().lower() == b"application/json"


def model_body(model: type[M], raw: bytes) -> M | None:
    """The body as FastAPI reads a model body (JSON, then the model in Python mode); None when the
    route should answer it (not JSON, too deep to parse, or refused by the model)."""
    try:
        return model.model_validate(json.loads(raw))
    except (ValueError, RecursionError):  # ValidationError and JSONDecodeError are ValueErrors
        return None
