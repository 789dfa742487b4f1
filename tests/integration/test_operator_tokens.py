"""Operator tokens and the audit trail on the real FerretDB: stored hashed, refused once revoked or
expired, and the operators' actions read back newest first; `lvyue operator token` and `lvyue audit`
against the same database."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from shared.db import Document, ensure_indexes
from shared.operators import (
    INDEXES,
    OPERATOR_TOKENS,
    AuditTrail,
    Operator,
    OperatorRole,
    OperatorTokens,
)

pytestmark = pytest.mark.integration


async def test_a_token_works_until_it_is_revoked_and_only_its_hash_is_stored(
    mongo_db: AsyncDatabase[Document],
) -> None:
    tokens = OperatorTokens(mongo_db)
    issued = await tokens.create("alice", OperatorRole.DECIDER)
    assert issued.token.startswith(f"lvop_{issued.record.token_id}_")
    assert await tokens.authenticate(issued.token) == Operator(
        issued.record.token_id, "alice", OperatorRole.DECIDER
    )

    stored = await mongo_db[OPERATOR_TOKENS].find_one({"_id": issued.record.token_id})
    assert stored is not None
    secret = issued.token.rsplit("_", 1)[1]
    assert secret not in str(stored)

    wrong_secret = issued.token[:-4] + ("AAAA" if not issued.token.endswith("AAAA") else "BBBB")
    assert await tokens.authenticate(wrong_secret) is None
    assert await tokens.authenticate("lvop_0123456789abcdef_unknown") is None

    await tokens.revoke(issued.record.token_id)
    assert await tokens.authenticate(issued.token) is None
    [listed] = await tokens.every()
    assert listed.revoked_at is not None


async def test_an_expired_token_is_refused(mongo_db: AsyncDatabase[Document]) -> None:
    tokens = OperatorTokens(mongo_db)
    issued = await tokens.create("bob", OperatorRole.VIEWER, lifetime=timedelta(seconds=1))
    assert await tokens.authenticate(issued.token) is not None
    await asyncio.sleep(1.2)
    assert await tokens.authenticate(issued.token) is None


async def test_the_audit_trail_reads_back_newest_first_by_operator_and_target(
    mongo_db: AsyncDatabase[Document],
) -> None:
    await ensure_indexes(mongo_db, INDEXES)
    trail = AuditTrail(mongo_db)
    alice = Operator("a1", "alice", OperatorRole.DECIDER)
    admin = Operator("a2", "carol", OperatorRole.ADMIN)
    await trail.record(alice, "approve", "case:1", "ok", {"reason": "质量问题"})
    await trail.record(admin, "set_policy", "shop:s1", "ok", {"auto_approve_under_fen": 100})
    await trail.record(alice, "reject", "case:2", "409")

    newest_first = await trail.entries()
    assert [(e.operator, e.action, e.target, e.outcome) for e in newest_first] == [
        ("alice", "reject", "case:2", "409"),
        ("carol", "set_policy", "shop:s1", "ok"),
        ("alice", "approve", "case:1", "ok"),
    ]
    assert [e.target for e in await trail.entries(operator="alice")] == ["case:2", "case:1"]
    [policy] = await trail.entries(target="shop:s1")
    assert policy.details == {"auto_approve_under_fen": 100} and policy.role == OperatorRole.ADMIN
