"""Operators: who may use the operators' APIs, and what they did there.

An operator token looks like `lvop_<token id>_<secret>`; only a SHA-256 of the secret is stored (the
secret is 32 random bytes: a fast hash is enough, there is nothing to brute-force). A token has a
role, an expiry and may be revoked (`lvyue operator token create|list|revoke`). Roles are ranked:
a viewer reads, a decider also decides cases and re-ships, an admin also changes shop policies.
Every decision is recorded with the operator who made it (`lvyue audit`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Protocol

from fastapi import Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field
from pymongo import DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

from shared.db import Document, IndexSpec
from shared.events.base import utc_now
from shared.settings import OperatorClientSettings

OPERATOR_TOKENS = "operator_tokens"
OPERATOR_AUDIT = "operator_audit"
INDEXES = [IndexSpec(OPERATOR_AUDIT, [("at", DESCENDING)])]
TOKEN_PREFIX = "lvop"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"
DEFAULT_LIFETIME = timedelta(days=90)
# Where the command line finds the operator's token: the variable itself, or a file it names.
TOKEN_VARIABLE = "LVYUE_OPERATOR_TOKEN"
TOKEN_FILE_VARIABLE = "LVYUE_OPERATOR_TOKEN_FILE"


class OperatorRole(StrEnum):
    VIEWER = "viewer"
    DECIDER = "decider"
    ADMIN = "admin"

    def allows(self, needed: OperatorRole) -> bool:
        return _RANK[self] >= _RANK[needed]


_RANK = {OperatorRole.VIEWER: 0, OperatorRole.DECIDER: 1, OperatorRole.ADMIN: 2}


class OperatorAuthError(StrEnum):
    TOKEN_REQUIRED = "operator_token_required"  # none, malformed, unknown, revoked or expired
    ROLE_TOO_LOW = "role_too_low"


class OperatorTokenRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    token_id: str
    name: str = Field(pattern=NAME_PATTERN)
    role: OperatorRole
    secret_sha256: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None

    def valid_at(self, now: datetime) -> bool:
        return self.revoked_at is None and now < self.expires_at


@dataclass(frozen=True)
class Operator:
    """Who is asking: the token's name and role (the name goes in the audit trail)."""

    token_id: str
    name: str
    role: OperatorRole

    @property
    def label(self) -> str:
        return f"{self.name} ({self.token_id})"


@dataclass(frozen=True)
class IssuedToken:
    record: OperatorTokenRecord
    token: str  # shown once


class AuditEntry(BaseModel):
    """One operator action: what, on what, by whom, and how it ended."""

    model_config = ConfigDict(extra="ignore")

    at: datetime
    operator: str
    token_id: str
    role: OperatorRole
    action: str
    target: str
    outcome: str  # "ok" or the HTTP status it ended with
    details: dict[str, Any] = Field(default_factory=dict)


class OperatorTokenError(Exception):
    pass


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_token(token: str) -> tuple[str, str] | None:
    """(token id, secret) of a well-formed token, else None."""
    parts = token.split("_")
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or not parts[1] or not parts[2] or len(token) > 200:
        return None
    return parts[1], parts[2]


class OperatorTokens:
    """The tokens, in the database every service reads."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._tokens = db[OPERATOR_TOKENS]

    async def create(
        self, name: str, role: OperatorRole, *, lifetime: timedelta = DEFAULT_LIFETIME
    ) -> IssuedToken:
        if lifetime <= timedelta(0):
            raise OperatorTokenError("a token's lifetime must be positive")
        token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32).replace("_", "-")
        now = utc_now()
        record = OperatorTokenRecord(
            token_id=token_id,
            name=name,
            role=role,
            secret_sha256=_hash(secret),
            created_at=now,
            expires_at=now + lifetime,
        )
        await self._tokens.insert_one({"_id": token_id, **record.model_dump(mode="json")})
        return IssuedToken(record, f"{TOKEN_PREFIX}_{token_id}_{secret}")

    async def revoke(self, token_id: str) -> None:
        result = await self._tokens.update_one(
            {"_id": token_id}, {"$set": {"revoked_at": utc_now().isoformat()}}
        )
        if result.matched_count == 0:
            raise OperatorTokenError(f"no operator token {token_id}")

    async def every(self) -> list[OperatorTokenRecord]:
        records = [OperatorTokenRecord.model_validate(d) async for d in self._tokens.find({})]
        return sorted(records, key=lambda r: r.created_at)

    async def authenticate(self, token: str) -> Operator | None:
        """The operator of a valid token (well formed, known, unrevoked, unexpired), else None."""
        parsed = parse_token(token)
        if parsed is None:
            return None
        token_id, secret = parsed
        document = await self._tokens.find_one({"_id": token_id})
        if document is None:
            return None
        record = OperatorTokenRecord.model_validate(document)
        if not record.valid_at(utc_now()) or not hmac.compare_digest(record.secret_sha256, _hash(secret)):
            return None
        return Operator(record.token_id, record.name, record.role)


class TokenReader(Protocol):
    async def authenticate(self, token: str) -> Operator | None: ...


class OperatorAuth:
    """Tokens checked against the database at most once per `ttl_s` each: a revoked or expired token
    stops working within `ttl_s`. Known tokens and refused ones are cached apart, each bounded, so a
    stream of made-up tokens never pushes a real operator's out."""

    def __init__(self, tokens: TokenReader, *, ttl_s: float = 30.0, capacity: int = 1_000) -> None:
        self._tokens, self._ttl, self._capacity = tokens, ttl_s, capacity
        self._known: OrderedDict[str, tuple[Operator, float]] = OrderedDict()
        self._refused: OrderedDict[str, float] = OrderedDict()
        self._reading: dict[str, asyncio.Future[Operator | None]] = {}

    async def operator_of(self, token: str) -> Operator | None:
        now = time.monotonic()
        known = self._known.get(token)
        if known is not None and now - known[1] < self._ttl:
            return known[0]
        refused_at = self._refused.get(token)
        if refused_at is not None and now - refused_at < self._ttl:
            return None
        reading = self._reading.get(token)
        if reading is None:  # requests with the same token share one read
            reading = asyncio.ensure_future(self._read(token, now))
            self._reading[token] = reading
            reading.add_done_callback(lambda _: self._reading.pop(token, None))
        return await asyncio.shield(reading)

    async def _read(self, token: str, now: float) -> Operator | None:
        operator = await self._tokens.authenticate(token)
        self._known.pop(token, None)
        self._refused.pop(token, None)
        if operator is None:
            _put(self._refused, token, now, self._capacity)
        else:
            _put(self._known, token, (operator, now), self._capacity)
        return operator


def _put(cache: OrderedDict[str, Any], key: str, value: Any, capacity: int) -> None:
    cache[key] = value
    while len(cache) > capacity:
        cache.popitem(last=False)  # the oldest read


class AuditTrail:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._audit = db[OPERATOR_AUDIT]

    async def record(
        self,
        operator: Operator,
        action: str,
        target: str,
        outcome: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        entry = AuditEntry(
            at=utc_now(),
            operator=operator.name,
            token_id=operator.token_id,
            role=operator.role,
            action=action,
            target=target,
            outcome=outcome,
            details=details or {},
        )
        await self._audit.insert_one(entry.model_dump(mode="json"))

    async def entries(
        self, *, operator: str | None = None, target: str | None = None, limit: int = 100
    ) -> list[AuditEntry]:
        query: dict[str, Any] = {}
        if operator is not None:
            query["operator"] = operator
        if target is not None:
            query["target"] = target
        cursor = self._audit.find(query).sort("at", DESCENDING).limit(limit)
        return [AuditEntry.model_validate(d) async for d in cursor]


def operator_token(settings: OperatorClientSettings | None = None) -> str | None:
    """The token the command line sends: `LVYUE_OPERATOR_TOKEN`, else the first line of the file
    named by `LVYUE_OPERATOR_TOKEN_FILE`."""
    settings = settings or OperatorClientSettings()
    if settings.token is not None and settings.token.get_secret_value().strip():
        return settings.token.get_secret_value().strip()
    if not settings.token_file:
        return None
    try:
        lines = Path(settings.token_file).read_text().strip().splitlines()
    except OSError:
        return None
    return lines[0].strip() or None if lines else None


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def operator_auth_of(request: Request) -> OperatorAuth:
    auth: OperatorAuth = request.app.state.operator_auth
    return auth


def require_operator(role: OperatorRole) -> Any:
    """A FastAPI dependency: the operator of the request's bearer token, who must hold `role` (401
    without a valid token, 403 with a lower role)."""

    async def dependency(request: Request) -> Operator:
        token = bearer_token(request.headers.get("authorization"))
        operator = None if token is None else await operator_auth_of(request).operator_of(token)
        if operator is None:
            raise HTTPException(
                401,
                {"code": OperatorAuthError.TOKEN_REQUIRED, "detail": "Authorization: Bearer lvop_…"},
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not operator.role.allows(role):
            detail = f"needs {role}, the token is {operator.role}"
            raise HTTPException(403, {"code": OperatorAuthError.ROLE_TOO_LOW, "detail": detail})
        return operator

    return Depends(dependency)


Viewer = Annotated[Operator, require_operator(OperatorRole.VIEWER)]
Decider = Annotated[Operator, require_operator(OperatorRole.DECIDER)]
Admin = Annotated[Operator, require_operator(OperatorRole.ADMIN)]
