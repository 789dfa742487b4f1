"""The operators' CLI against the real database and broker: shops and dead letters."""

from __future__ import annotations

import asyncio
import base64
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from typer.testing import CliRunner

from ops.cli import app
from ops.stack import LocalStack
from shared.events.dead_letter import DeadLetter, DeadLetterReason
from shared.kafka.topics import ORDERS
from tests.integration.helpers import read_topic

pytestmark = pytest.mark.integration

runner = CliRunner()
KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
NEW_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"


def env(stack: LocalStack, database: str) -> dict[str, str]:
    return {**stack.client_environment(), "MONGO_DATABASE": database, "COLUMNS": "250"}


def test_shops_are_added_listed_masked_and_rotated(stack: LocalStack) -> None:
    e = env(stack, f"t_{uuid.uuid4().hex[:10]}")
    add = [
        "shop",
        "add",
        "--shop-id",
        "s1",
        "--appid",
        "wx0000000000000001",
        "--secret",
        "topsecretvalue",
        "--token",
        "pushtoken123",
        "--aes-key",
        KEY,
    ]
    added = runner.invoke(app, add, env=e)
    assert added.exit_code == 0, added.output
    assert "/wechat/callback/s1" in added.output

    again = runner.invoke(app, add, env=e)
    assert again.exit_code == 1 and "already registered" in again.output

    bad = runner.invoke(app, [*add[:3], "s2", *add[4:-1], "too-short"], env=e)
    assert bad.exit_code == 2 and "encoding_aes_key" in bad.output

    listed = runner.invoke(app, ["shop", "list"], env=e)
    assert listed.exit_code == 0 and "wx0000000000000001" in listed.output
    for secret in ("topsecretvalue", "pushtoken123", KEY):
        assert secret not in listed.output

    rotated = runner.invoke(app, ["shop", "rotate-key", "--shop-id", "s1", "--aes-key", NEW_KEY], env=e)
    assert rotated.exit_code == 0, rotated.output
    assert "yes" in runner.invoke(app, ["shop", "list"], env=e).output  # rotating: previous key kept
    missing = runner.invoke(app, ["shop", "rotate-key", "--shop-id", "nope", "--aes-key", NEW_KEY], env=e)
    assert missing.exit_code == 1


def test_dead_letters_are_listed_shown_and_replayed_once(stack: LocalStack) -> None:
    e = env(stack, f"t_{uuid.uuid4().hex[:10]}")
    order_id = str(3705115058471208928 + uuid.uuid4().int % 10**6)
    original = f'{{"marker":"{uuid.uuid4().hex}"}}'.encode()
    letter = DeadLetter(
        order_id=order_id,
        consumer="dispatch",
        reason=DeadLetterReason.VALIDATION_FAILED,
        detail="line without a route",
        attempts=1,
        source_topic=ORDERS.name,
        source_partition=0,
        source_offset=7,
        key_b64=base64.b64encode(order_id.encode()).decode(),
        value_b64=base64.b64encode(original).decode(),
        headers=[("event_type", "order_paid")],
    )

    async def park() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(
                ORDERS.dead_letter_name, letter.model_dump_json().encode(), order_id.encode()
            )
        finally:
            await producer.stop()

    asyncio.run(park())
    listed = runner.invoke(
        app, ["dlq", "list", "--topic", ORDERS.name, "--reason", "validation_failed"], env=e
    )
    assert listed.exit_code == 0, listed.output
    assert order_id in listed.output and "line without a route" in listed.output
    row = next(line for line in listed.output.splitlines() if order_id in line)
    target = next(word for word in row.split() if word.startswith(f"{ORDERS.dead_letter_name}:"))
    shown = runner.invoke(app, ["dlq", "show", target], env=e)
    assert shown.exit_code == 0 and "marker" in shown.output and "line without a route" in shown.output
    first = runner.invoke(app, ["dlq", "replay", target], env=e)
    assert first.exit_code == 0 and "replayed 1" in first.output, first.output
    second = runner.invoke(app, ["dlq", "replay", target], env=e)
    assert "replayed 0; skipped 1" in second.output
    forced = runner.invoke(app, ["dlq", "replay", target, "--force"], env=e)
    assert "replayed 1" in forced.output

    records = asyncio.run(
        read_topic(
            stack.kafka_bootstrap, ORDERS.name, until=lambda rs: sum(r.value == original for r in rs) >= 2
        )
    )
    replays = [r for r in records if r.value == original]
    assert len(replays) == 2 and all(r.key == order_id.encode() for r in replays)
    assert ("replayed_from", target.encode()) in replays[0].headers


def test_operator_tokens_are_created_once_listed_without_secrets_and_revoked(
    stack: LocalStack, tmp_path: Path
) -> None:
    e = env(stack, f"t_{uuid.uuid4().hex[:10]}")
    created = runner.invoke(
        app, ["operator", "token", "create", "--name", "alice", "--role", "decider"], env=e
    )
    assert created.exit_code == 0, created.output
    token = next(line for line in created.output.splitlines() if line.startswith("lvop_"))
    token_id = token.split("_")[1]

    to_file = tmp_path / "token"
    written = runner.invoke(
        app,
        ["operator", "token", "create", "--name", "bob", "--role", "viewer", "--to-file", str(to_file)],
        env=e,
    )
    assert written.exit_code == 0, written.output
    assert to_file.read_text().startswith("lvop_") and to_file.stat().st_mode & 0o777 == 0o600
    assert to_file.read_text().strip() not in written.output

    bad_name = runner.invoke(app, ["operator", "token", "create", "--name", "a b", "--role", "viewer"], env=e)
    assert bad_name.exit_code == 2

    listed = runner.invoke(app, ["operator", "token", "list"], env=e)
    assert listed.exit_code == 0 and token_id in listed.output and "alice" in listed.output
    assert token.split("_")[2] not in listed.output

    revoked = runner.invoke(app, ["operator", "token", "revoke", token_id], env=e)
    assert revoked.exit_code == 0, revoked.output
    unknown = runner.invoke(app, ["operator", "token", "revoke", "0000000000000000"], env=e)
    assert unknown.exit_code == 1 and "no operator token" in unknown.output

    audit = runner.invoke(app, ["audit"], env=e)
    assert audit.exit_code == 0 and "Operator actions: 0" in audit.output
