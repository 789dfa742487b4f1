"""Creates the registry's topics (idempotently) and checks existing ones match it."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, TopicAlreadyExistsError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from shared.kafka.topics import ALL_TOPICS, TopicSpec, topics_to_create
from shared.settings import KafkaSettings

log = logging.getLogger(__name__)


class TopicMismatchError(RuntimeError):
    """An existing topic has fewer partitions than the registry asks for."""


class TopicCreationError(RuntimeError):
    """The broker refused to create a topic (bad replication factor or config): not retried."""


class TopicsNotReadyError(RuntimeError):
    """Created topics whose partitions the broker's metadata does not show yet."""


async def ensure_topics(
    settings: KafkaSettings,
    topics: tuple[TopicSpec, ...] = ALL_TOPICS,
    *,
    wait_for_broker_s: float = 90,
) -> list[str]:
    """Create missing topics; return the names created. Safe to run from every service at start-up,
    concurrently, and while the broker is still starting (it is retried until `wait_for_broker_s`)."""
    async for attempt in AsyncRetrying(
        stop=stop_after_delay(wait_for_broker_s),
        wait=wait_exponential(multiplier=0.2, max=3),
        retry=retry_if_exception_type((KafkaConnectionError, KafkaTimeoutError, TopicsNotReadyError)),
        reraise=True,
    ):
        with attempt:
            return await _ensure_topics_once(settings, topics_to_create(topics))
    raise AssertionError("unreachable: tenacity reraises")


async def _ensure_topics_once(settings: KafkaSettings, specs: list[TopicSpec]) -> list[str]:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=settings.request_timeout_ms
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        created: list[str] = []
        if missing:
            new_topics = [
                NewTopic(
                    name=s.name,
                    num_partitions=s.partitions or settings.default_partitions,
                    replication_factor=settings.replication_factor,
                    topic_configs=s.config(),
                )
                for s in missing
            ]
            # One request per topic: a race with another service creating the same topic is normal.
            for topic in new_topics:
                response = await admin.create_topics([topic])
                for name, code, *rest in response.topic_errors:
                    if code == 0:
                        created.append(name)
                    elif code != TopicAlreadyExistsError.errno:
                        message = rest[0] if rest else ""
                        raise TopicCreationError(f"creating {name} failed: error {code} {message}")
        described = await admin.describe_topics([s.name for s in specs])
        counts = {d["topic"]: len(d["partitions"]) for d in described}
        for spec in specs:
            wanted = spec.partitions or settings.default_partitions
            have = counts.get(spec.name, 0)
            if have == 0:
                raise TopicsNotReadyError(spec.name)  # just created: metadata not propagated yet
            if have < wanted:
                raise TopicMismatchError(
                    f"topic {spec.name} has {have} partitions, the registry wants {wanted}"
                )
        if created:
            log.info("created topics", extra={"topics": created})
        return created
    finally:
        await admin.close()
