"""A consumer that commits an offset only after its handler's effect is durable.

Handlers are idempotent (redelivery after a crash or rebalance is normal). A handler signals a
permanent failure with `PermanentFailure`; anything else is treated as transient and retried with
exponential backoff, a bounded number of times, after which the message is dead-lettered so one bad
order cannot stall its partition forever.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from prometheus_client import Counter, Histogram
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from shared.events.dead_letter import DeadLetter, DeadLetterReason
from shared.settings import KafkaSettings

log = logging.getLogger(__name__)

MESSAGES_PROCESSED = Counter(
    "lvyue_kafka_messages_processed_total",
    "Kafka messages handled by a consumer, by outcome (ok, dead_lettered).",
    ["consumer", "topic", "outcome"],
)
HANDLER_RETRIES = Counter(
    "lvyue_kafka_handler_retries_total",
    "Transient handler failures that were retried.",
    ["consumer", "topic"],
)
PROCESSING_SECONDS = Histogram(
    "lvyue_kafka_processing_seconds",
    "Time from fetch to committed-ready for one message, retries included.",
    ["consumer", "topic"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

Handler = Callable[[ConsumerRecord[bytes, bytes]], Awaitable[None]]


class PermanentFailure(Exception):
    """Raised by a handler for a message that can never be processed as it is."""

    def __init__(self, reason: DeadLetterReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 5.0


def dead_letter_for(
    record: ConsumerRecord[bytes, bytes],
    *,
    consumer: str,
    reason: DeadLetterReason,
    detail: str,
    attempts: int,
) -> DeadLetter:
    key = record.key
    order_id = key.decode() if key is not None and key.isdigit() else None
    return DeadLetter(
        order_id=order_id,
        consumer=consumer,
        reason=reason,
        detail=detail[:4_000],
        attempts=attempts,
        source_topic=record.topic,
        source_partition=record.partition,
        source_offset=record.offset,
        source_timestamp=datetime.fromtimestamp(record.timestamp / 1000, UTC) if record.timestamp else None,
        key_b64=None if key is None else base64.b64encode(key).decode(),
        value_b64=base64.b64encode(record.value or b"").decode(),
        headers=[(k, v.decode(errors="replace")) for k, v in (record.headers or ())],
    )


class DurableConsumer:
    """Consumes `topics` in consumer group `group_id`; commits after each fetched batch is handled."""

    def __init__(
        self,
        *,
        topics: list[str],
        group_id: str,
        settings: KafkaSettings,
        handler: Handler,
        dead_letter_producer: AIOKafkaProducer,
        consumer_name: str | None = None,
        retry: RetryPolicy | None = None,
        max_records: int = 500,
    ) -> None:
        self._topics = topics
        self._handler = handler
        self._producer = dead_letter_producer
        self._name = consumer_name or group_id
        self._retry = retry or RetryPolicy()
        self._max_records = max_records
        self._stopping = asyncio.Event()
        self._consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=settings.bootstrap_servers,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            request_timeout_ms=max(settings.request_timeout_ms, 40_000),
        )

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        self._stopping.set()
        await self._consumer.stop()

    def request_stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Fetch, handle, commit; until `request_stop()`. The batch in hand is finished first."""
        while not self._stopping.is_set():
            batches = await self._consumer.getmany(timeout_ms=200, max_records=self._max_records)
            for tp, records in batches.items():
                for record in records:
                    await self._process(record)
                await self._consumer.commit({tp: records[-1].offset + 1})

    async def committed(self, tp: TopicPartition) -> int | None:
        offset: int | None = await self._consumer.committed(tp)
        return offset

    async def _process(self, record: ConsumerRecord[bytes, bytes]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        attempts = 0
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self._retry.max_attempts),
                wait=wait_exponential_jitter(
                    multiplier=self._retry.initial_backoff_s,
                    max=self._retry.max_backoff_s,
                    jitter=self._retry.initial_backoff_s,
                ),
                # Only ordinary errors are retried: cancellation (shutdown) must propagate at once.
                retry=retry_if_exception_type(Exception) & retry_if_not_exception_type(PermanentFailure),
                reraise=False,
            ):
                with attempt:
                    attempts += 1
                    if attempts > 1:
                        HANDLER_RETRIES.labels(self._name, record.topic).inc()
                    await self._handler(record)
            MESSAGES_PROCESSED.labels(self._name, record.topic, "ok").inc()
        except PermanentFailure as failure:
            await self._dead_letter(record, failure.reason, failure.detail, attempts)
        except RetryError as exhausted:
            cause = exhausted.last_attempt.exception()
            await self._dead_letter(record, DeadLetterReason.RETRIES_EXHAUSTED, repr(cause), attempts)
        finally:
            PROCESSING_SECONDS.labels(self._name, record.topic).observe(loop.time() - started)

    async def _dead_letter(
        self, record: ConsumerRecord[bytes, bytes], reason: DeadLetterReason, detail: str, attempts: int
    ) -> None:
        letter = dead_letter_for(record, consumer=self._name, reason=reason, detail=detail, attempts=attempts)
        log.warning(
            "dead-lettered a message",
            extra={"topic": record.topic, "offset": record.offset, "reason": reason.value, "detail": detail},
        )
        # Same key as the source, so a replay lands on the same partition order.
        await self._producer.send_and_wait(
            f"{record.topic}.dlq", value=letter.model_dump_json().encode(), key=record.key
        )
        MESSAGES_PROCESSED.labels(self._name, record.topic, "dead_lettered").inc()
