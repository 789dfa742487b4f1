"""Producers with durable defaults: acks from every in-sync replica, idempotent retries."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Protocol
from uuid import UUID

from aiokafka import AIOKafkaProducer

from shared.kafka.topics import TopicSpec
from shared.settings import KafkaSettings


def create_producer(settings: KafkaSettings, *, client_id: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=settings.producer_linger_ms,
        request_timeout_ms=settings.request_timeout_ms,
    )


class KafkaMessage(Protocol):
    """What every message model offers: `Event` subclasses and the raw `WeChatPushReceived`."""

    @property
    def event_type(self) -> str: ...

    @property
    def schema_version(self) -> int: ...

    @property
    def event_id(self) -> UUID: ...

    @property
    def kafka_key(self) -> bytes: ...

    def to_kafka_value(self) -> bytes: ...


def event_headers(event: KafkaMessage) -> list[tuple[str, bytes]]:
    return [
        ("event_type", event.event_type.encode()),
        ("schema_version", str(event.schema_version).encode()),
        ("event_id", str(event.event_id).encode()),
    ]


async def publish(producer: AIOKafkaProducer, topic: TopicSpec, event: KafkaMessage) -> None:
    """Send one message under its key (the order id) and wait until the broker has it durably."""
    await publish_all(producer, [(topic, event)])


async def publish_all(producer: AIOKafkaProducer, messages: Iterable[tuple[TopicSpec, KafkaMessage]]) -> None:
    """Send messages in this order, then wait once until the broker has them all durably: they share
    the producer's batches (one linger, one round trip), and one key's messages keep their order."""
    delivered = [
        await producer.send(
            topic.name, value=event.to_kafka_value(), key=event.kafka_key, headers=event_headers(event)
        )
        for topic, event in messages
    ]
    if delivered:
        await asyncio.gather(*delivered)
