"""The private listener's gate and the service credential: what the public port answers, and who may
call an internal route."""

from __future__ import annotations

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from pydantic import SecretStr

from shared.listeners import ListenerGate, ServiceCaller

PUBLIC, PRIVATE = 8003, 8013
TOKEN = "a-service-token"


def _app() -> FastAPI:
    api = FastAPI()
    internal = APIRouter(prefix="/internal/v1", dependencies=[ServiceCaller])

    @internal.get("/waybills")
    async def waybills() -> dict[str, str]:
        return {"ok": "internal"}

    @api.post("/callbacks/kdniao")
    async def callback() -> dict[str, str]:
        return {"ok": "callback"}

    @api.get("/callbacksfoo")
    async def lookalike() -> dict[str, str]:
        return {"ok": "not a callback"}

    @api.get("/readyz")
    async def ready() -> dict[str, str]:
        return {"ok": "ready"}

    @api.get("/metrics")
    async def metrics() -> dict[str, str]:
        return {"ok": "metrics"}

    api.include_router(internal)
    api.add_middleware(ListenerGate, internal_port=PRIVATE, public_prefixes=["/callbacks"])
    api.state.service_credential = SecretStr(TOKEN)
    return api


async def _status(port: int, method: str, path: str, token: str | None = None) -> int:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=_app()), base_url=f"http://svc:{port}"
    ) as client:
        return (await client.request(method, path, headers=headers)).status_code


@pytest.mark.parametrize(
    ("method", "path", "public", "private"),
    [
        ("POST", "/callbacks/kdniao", 200, 200),
        ("GET", "/readyz", 200, 200),
        ("GET", "/metrics", 404, 200),
        ("GET", "/docs", 404, 200),
        ("GET", "/openapi.json", 404, 200),
        ("GET", "/callbacksfoo", 404, 200),  # a prefix is a whole path segment
        ("GET", "/internal/v1/waybills", 404, 200),
    ],
)
async def test_the_public_port_answers_only_public_routes(
    method: str, path: str, public: int, private: int
) -> None:
    assert await _status(PUBLIC, method, path, TOKEN) == public
    assert await _status(PRIVATE, method, path, TOKEN) == private


@pytest.mark.parametrize("token", [None, "", "wrong", TOKEN + "x", TOKEN[:-1]])
async def test_an_internal_route_needs_the_service_credential(token: str | None) -> None:
    assert await _status(PRIVATE, "GET", "/internal/v1/waybills", token) == 401


async def test_an_app_without_a_credential_refuses_every_internal_call() -> None:
    api = _app()
    del api.state.service_credential
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api), base_url=f"http://svc:{PRIVATE}"
    ) as client:
        answer = await client.get("/internal/v1/waybills", headers={"Authorization": "Bearer "})
    assert answer.status_code == 401
    assert answer.json()["detail"]["code"] == "service_credential_required"
