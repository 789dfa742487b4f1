"""An operators' API app with tokens and an audit trail in memory, for route tests without I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, FastAPI

from shared.operators import Operator, OperatorAuth, OperatorRole

TOKENS = {
    role: (f"lvop_{n:016x}_secret-of-{role}", Operator(f"{n:016x}", f"op-{role}", role))
    for n, role in enumerate(OperatorRole, start=1)
}
NOBODY = "lvop_00000000000000ff_made-up"


def bearer(role: OperatorRole | None) -> dict[str, str]:
    return {} if role is None else {"Authorization": f"Bearer {TOKENS[role][0]}"}


@dataclass
class Tokens:
    async def authenticate(self, token: str) -> Operator | None:
        return next((operator for known, operator in TOKENS.values() if known == token), None)


@dataclass
class Audit:
    entries: list[tuple[str, str, str, str, dict[str, Any]]] = field(default_factory=list)

    async def record(
        self,
        operator: Operator,
        action: str,
        target: str,
        outcome: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.entries.append((operator.name, action, target, outcome, details or {}))


def operators_app(*routers: APIRouter) -> tuple[FastAPI, Audit]:
    api = FastAPI()
    for router in routers:
        api.include_router(router)
    audit = Audit()
    api.state.operator_auth = OperatorAuth(Tokens())
    api.state.audit = audit
    return api, audit
