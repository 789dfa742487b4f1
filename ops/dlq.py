"""`lvyue dlq list|show|replay`: what consumers could not process, why, and sending it back.

A dead letter is named `<dlq topic>:<partition>:<offset>`. Replaying re-sends the original key,
value and headers to the source topic (consumers are idempotent) and records the replay, so a second
replay of the same letter needs --force.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from rich.console import Console
from rich.table import Table

from shared.db import create_mongo_client, database, insert_once
from shared.events.base import utc_now
from shared.events.dead_letter import DeadLetter, DeadLetterReason
from shared.kafka.producer import create_producer
from shared.kafka.topics import ALL_TOPICS
from shared.settings import KafkaSettings, MongoSettings

app = typer.Typer(help="Dead letters: list, inspect and replay messages consumers could not process.")
console = Console()
err_console = Console(stderr=True)

REPLAYS = "dead_letter_replays"


async def read_dead_letters(settings: KafkaSettings, topics: list[str]) -> list[tuple[str, DeadLetter]]:
    """Every letter on the given dead-letter topics, oldest first, without joining a consumer group."""
    letters: list[tuple[str, DeadLetter]] = []
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    partitions = [TopicPartition(d["topic"], p["partition"]) for d in described for p in d["partitions"]]
    if not partitions:
        return letters
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if ends[tp] > 0}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000)
            if not batches:
                break
            for tp, records in batches.items():
                for record in records:
                    name = f"{tp.topic}:{tp.partition}:{record.offset}"
                    letters.append((name, DeadLetter.model_validate_json(record.value or b"")))
                if records and records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    letters.sort(key=lambda item: item[1].occurred_at)
    return letters


def _dead_letter_topics(topic: str | None) -> list[str]:
    names = [t.dead_letter_name for t in ALL_TOPICS if t.has_dead_letter]
    if topic:
        wanted = topic if topic.endswith(".dlq") else f"{topic}.dlq"
        if wanted not in names:
            raise typer.BadParameter(f"no dead-letter topic for {topic!r}; known: {', '.join(names)}")
        return [wanted]
    return names


TopicOption = Annotated[str | None, typer.Option(help="Source topic (e.g. wechat.shop-events).")]
ReasonOption = Annotated[DeadLetterReason | None, typer.Option(help="Only letters with this reason.")]


@app.command("list")
def list_letters(topic: TopicOption = None, reason: ReasonOption = None) -> None:
    """Dead letters with their reason, order and consumer."""
    letters = asyncio.run(read_dead_letters(KafkaSettings(), _dead_letter_topics(topic)))
    table = Table(title="Dead letters")
    for column in ("id", "when", "reason", "order", "consumer", "attempts", "detail"):
        table.add_column(column, overflow="fold")
    shown = 0
    for name, letter in letters:
        if reason and letter.reason is not reason:
            continue
        shown += 1
        table.add_row(
            name,
            letter.occurred_at.strftime("%Y-%m-%d %H:%M:%S"),
            letter.reason.value,
            letter.order_id or "-",
            letter.consumer,
            str(letter.attempts),
            letter.detail[:120],
        )
    console.print(table)
    console.print(f"{shown} dead letter(s)")


@app.command("show")
def show(letter_id: Annotated[str, typer.Argument(help="<dlq topic>:<partition>:<offset>")]) -> None:
    """One dead letter in full, with the original message decoded where it is text."""
    letter = _find(letter_id)
    document = letter.model_dump(mode="json")
    try:
        document["original_value"] = json.loads(letter.original_value)
    except ValueError:
        document["original_value_b64"] = letter.value_b64
    console.print_json(json.dumps(document, ensure_ascii=False))


@app.command("replay")
def replay(
    letter_ids: Annotated[list[str] | None, typer.Argument(help="Letters to replay.")] = None,
    topic: TopicOption = None,
    reason: ReasonOption = None,
    all_matching: Annotated[
        bool, typer.Option("--all", help="Replay every letter matching the filters.")
    ] = False,
    force: Annotated[bool, typer.Option(help="Replay letters that were replayed before.")] = False,
) -> None:
    """Send letters back to their source topic (after the cause is fixed)."""
    if not letter_ids and not all_matching:
        err_console.print("name the letters to replay, or pass --all with --topic/--reason filters")
        raise typer.Exit(2)
    replayed, skipped = asyncio.run(_replay(letter_ids or [], topic, reason, force))
    console.print(f"replayed {replayed}; skipped {skipped} already replayed (use --force to resend)")


def _find(letter_id: str) -> DeadLetter:
    topic = letter_id.split(":", 1)[0]
    for name, letter in asyncio.run(read_dead_letters(KafkaSettings(), [topic])):
        if name == letter_id:
            return letter
    err_console.print(f"[red]no dead letter {letter_id}[/red]")
    raise typer.Exit(1)


async def _replay(
    letter_ids: list[str], topic: str | None, reason: DeadLetterReason | None, force: bool
) -> tuple[int, int]:
    kafka, mongo_settings = KafkaSettings(), MongoSettings()
    topics = sorted({i.split(":", 1)[0] for i in letter_ids}) if letter_ids else _dead_letter_topics(topic)
    letters = [
        (name, letter)
        for name, letter in await read_dead_letters(kafka, topics)
        if (name in letter_ids if letter_ids else (reason is None or letter.reason is reason))
    ]
    missing = set(letter_ids) - {name for name, _ in letters}
    if missing:
        err_console.print(f"[red]no such dead letters: {', '.join(sorted(missing))}[/red]")
        raise typer.Exit(1)
    producer: AIOKafkaProducer = create_producer(kafka, client_id="lvyue-dlq-replay")
    mongo = create_mongo_client(mongo_settings, app_name="lvyue-cli")
    replayed = skipped = 0
    await producer.start()
    try:
        replays = database(mongo, mongo_settings)[REPLAYS]
        for name, letter in letters:
            first = await insert_once(
                replays, {"_id": name, "replayed_at": utc_now(), "reason": letter.reason.value}
            )
            if not first and not force:
                skipped += 1
                continue
            headers = [(k, v.encode()) for k, v in letter.headers] + [("replayed_from", name.encode())]
            await producer.send_and_wait(
                letter.source_topic, value=letter.original_value, key=letter.original_key, headers=headers
            )
            replayed += 1
    finally:
        await producer.stop()
        await mongo.close()
    return replayed, skipped


__all__ = ["app", "read_dead_letters"]
