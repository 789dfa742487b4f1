"""Operator tokens: their form, the roles' ranks, and the cache that checks them against the store."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydantic import SecretStr

from shared.operators import Operator, OperatorAuth, OperatorRole, bearer_token, operator_token, parse_token
from shared.settings import OperatorClientSettings

ALICE = Operator("a1b2c3d4e5f60718", "alice", OperatorRole.DECIDER)
ALICE_TOKEN = "lvop_a1b2c3d4e5f60718_secret"


@dataclass
class Tokens:
    """The store's answers, counting the reads."""

    valid: dict[str, Operator] = field(default_factory=lambda: {ALICE_TOKEN: ALICE})
    reads: list[str] = field(default_factory=list)

    async def authenticate(self, token: str) -> Operator | None:
        self.reads.append(token)
        return self.valid.get(token)


@pytest.mark.parametrize(
    ("held", "needed", "allowed"),
    [
        (OperatorRole.VIEWER, OperatorRole.VIEWER, True),
        (OperatorRole.VIEWER, OperatorRole.DECIDER, False),
        (OperatorRole.DECIDER, OperatorRole.VIEWER, True),
        (OperatorRole.DECIDER, OperatorRole.ADMIN, False),
        (OperatorRole.ADMIN, OperatorRole.DECIDER, True),
    ],
)
def test_a_role_allows_its_own_and_lower_ones(
    held: OperatorRole, needed: OperatorRole, allowed: bool
) -> None:
    assert held.allows(needed) is allowed


def test_tokens_and_bearer_headers_are_parsed_strictly() -> None:
    assert parse_token(ALICE_TOKEN) == ("a1b2c3d4e5f60718", "secret")
    for malformed in ("", "lvop", "lvop__secret", "lvk_a1_secret", "lvop_a1_b_c", "lvop_a1_" + "x" * 300):
        assert parse_token(malformed) is None
    assert bearer_token(f"Bearer {ALICE_TOKEN}") == ALICE_TOKEN
    assert bearer_token(f"bearer  {ALICE_TOKEN} ") == ALICE_TOKEN
    assert bearer_token(f"Basic {ALICE_TOKEN}") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None


async def test_a_token_is_read_once_per_ttl_and_a_revoked_one_stops_after_it() -> None:
    tokens = Tokens()
    auth = OperatorAuth(tokens, ttl_s=3600)
    assert await auth.operator_of(ALICE_TOKEN) == ALICE
    assert await auth.operator_of(ALICE_TOKEN) == ALICE
    assert tokens.reads == [ALICE_TOKEN]

    tokens.valid.clear()  # revoked (or expired) in the store
    expiring = OperatorAuth(tokens, ttl_s=0)
    assert await expiring.operator_of(ALICE_TOKEN) is None


async def test_made_up_tokens_never_push_a_known_one_out() -> None:
    tokens = Tokens()
    auth = OperatorAuth(tokens, ttl_s=3600, capacity=10)
    assert await auth.operator_of(ALICE_TOKEN) == ALICE
    for n in range(100):
        assert await auth.operator_of(f"lvop_{n:016x}_guess") is None
    reads = len(tokens.reads)
    assert await auth.operator_of(ALICE_TOKEN) == ALICE
    assert len(tokens.reads) == reads  # still cached: the guesses filled their own cache only
    assert await auth.operator_of("lvop_0000000000000063_guess") is None
    assert len(tokens.reads) == reads  # a recent refusal is cached too


async def test_requests_with_the_same_token_share_one_read() -> None:
    tokens = Tokens()
    auth = OperatorAuth(tokens, ttl_s=3600)
    answers = await asyncio.gather(*(auth.operator_of(ALICE_TOKEN) for _ in range(20)))
    assert answers == [ALICE] * 20
    assert tokens.reads == [ALICE_TOKEN]


def test_the_command_line_sends_the_token_given_or_the_first_line_of_its_file(tmp_path: Path) -> None:
    given = OperatorClientSettings(token=SecretStr(ALICE_TOKEN), token_file=None)
    assert operator_token(given) == ALICE_TOKEN
    file = tmp_path / "token"
    file.write_text(f"{ALICE_TOKEN}\nignored\n")
    assert operator_token(OperatorClientSettings(token=None, token_file=str(file))) == ALICE_TOKEN
    assert operator_token(OperatorClientSettings(token=None, token_file=str(tmp_path / "none"))) is None
    assert operator_token(OperatorClientSettings(token=None, token_file=None)) is None
