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
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import CommitFailedError, IllegalStateError
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
from shared.kafka.topics import dead_letter_topic
from shared.settings import KafkaSettings

log = logging.getLogger(__name__)

MESSAGES_PROCESSED = Counter(
    "lvyue_kafka_messages_processed_total",
    "Kafka messages handled by a consumer, by outcome (ok, dead_lettered).",
    ["consumer", "topic", "outcome"],
)
DEAD_LETTERS = Counter(
    "lvyue_dead_letters_total",
    "Messages parked on a dead-letter topic, by reason.",
    ["consumer", "topic", "reason"],
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


@dataclass(frozen=True)
class InboundMessage:
    """One Kafka message, whichever client fetched it (aiokafka consumer or faust stream)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()

    def header(self, name: str) -> str | None:
        """A header's value (the first of that name), e.g. `event_type` to skip before decoding."""
        for key, value in self.headers:
            if key == name:
                return value.decode(errors="replace")
        return None

    def skippable(self, wanted: frozenset[str]) -> bool:
        """True when the message's `event_type` header names a type not in `wanted` (without the
        header the body must be decoded to tell)."""
        event_type = self.header("event_type")
        return event_type is not None and event_type not in wanted

    @classmethod
    def from_record(cls, record: ConsumerRecord[bytes, bytes]) -> InboundMessage:
        return cls(
            record.topic,
            record.partition,
            record.offset,
            record.key,
            record.value or b"",
            record.timestamp,
            tuple(record.headers or ()),
        )

    @classmethod
    def from_faust(cls, message: Any) -> InboundMessage:
        """From a faust `Event.message` (faust.types.tuples.Message)."""
        headers = message.headers or ()
        if isinstance(headers, dict):
            headers = tuple(headers.items())
        timestamp = message.timestamp
        return cls(
            message.topic,
            message.partition,
            message.offset,
            message.key,
            message.value or b"",
            int(timestamp * 1000) if timestamp else None,
            tuple(headers),
        )


Handler = Callable[[InboundMessage], Awaitable[None]]


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
    message: InboundMessage, *, consumer: str, reason: DeadLetterReason, detail: str, attempts: int
) -> DeadLetter:
    key = message.key
    order_id = key.decode() if key is not None and key.isdigit() and len(key) <= 20 else None
    return DeadLetter(
        order_id=order_id,
        consumer=consumer,
        reason=reason,
        detail=detail[:4_000],
        attempts=attempts,
        source_topic=message.topic,
        source_partition=message.partition,
        source_offset=message.offset,
        source_timestamp=datetime.fromtimestamp(message.timestamp_ms / 1000, UTC)
        if message.timestamp_ms
        else None,
        key_b64=None if key is None else base64.b64encode(key).decode(),
        value_b64=base64.b64encode(message.value).decode(),
        headers=[(k, (v or b"").decode(errors="replace")) for k, v in message.headers],
    )


class MessageProcessor:
    """Runs a handler on one message with the retry policy; dead-letters what cannot be processed.

    Returns normally once the message is either handled or parked on `<topic>.dlq`, so the caller
    may commit its offset. Cancellation propagates (nothing is committed for that message).
    """

    def __init__(self, *, name: str, producer: AIOKafkaProducer, retry: RetryPolicy | None = None) -> None:
        self.name = name
        self._producer = producer
        self._retry = retry or RetryPolicy()

    async def process(self, message: InboundMessage, handler: Handler) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        attempts = 1
        try:
            try:
                await handler(message)  # the common case, without building the retry machinery
            except PermanentFailure:
                raise
            except Exception:  # transient: retried with backoff (cancellation is not an Exception)
                attempts = await self._retry_transient(message, handler)
            MESSAGES_PROCESSED.labels(self.name, message.topic, "ok").inc()
        except PermanentFailure as failure:
            await self._dead_letter(message, failure.reason, failure.detail, attempts)
        except RetryError as exhausted:
            cause = exhausted.last_attempt.exception()
            await self._dead_letter(
                message, DeadLetterReason.RETRIES_EXHAUSTED, repr(cause), self._retry.max_attempts
            )
        finally:
            PROCESSING_SECONDS.labels(self.name, message.topic).observe(loop.time() - started)

    async def _retry_transient(self, message: InboundMessage, handler: Handler) -> int:
        """Attempts 2.. after a transient failure; returns how many attempts it took in all."""
        attempts = 1
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self._retry.max_attempts - 1),
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
                if attempts == 1:  # the wait before the second attempt, as before every later one
                    await asyncio.sleep(self._retry.initial_backoff_s)
                attempts += 1
                HANDLER_RETRIES.labels(self.name, message.topic).inc()
                await handler(message)
        return attempts

    async def _dead_letter(
        self, message: InboundMessage, reason: DeadLetterReason, detail: str, attempts: int
    ) -> None:
        letter = dead_letter_for(message, consumer=self.name, reason=reason, detail=detail, attempts=attempts)
        log.warning(
            "dead-lettered a message",
            extra={
                "topic": message.topic,
                "offset": message.offset,
                "reason": reason.value,
                "detail": detail,
            },
        )
        await send_dead_letter(self._producer, letter, key=message.key)
        MESSAGES_PROCESSED.labels(self.name, message.topic, "dead_lettered").inc()


async def send_dead_letter(producer: AIOKafkaProducer, letter: DeadLetter, *, key: bytes | None) -> None:
    """Parks `letter` on its source topic's dead-letter topic (replayable with `lvyue dlq replay`)."""
    # Same key as the source, so a replay lands on the same partition.
    await producer.send_and_wait(
        dead_letter_topic(letter.source_topic), value=letter.model_dump_json().encode(), key=key
    )
    DEAD_LETTERS.labels(letter.consumer, letter.source_topic, letter.reason.value).inc()


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
        max_records: int = 100,
    ) -> None:
        self._topics = topics
        self._handler = handler
        self._processor = MessageProcessor(
            name=consumer_name or group_id, producer=dead_letter_producer, retry=retry
        )
        self._max_records = max_records
        self._stopping = asyncio.Event()
        self._running: asyncio.Event | None = None
        self._consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=settings.bootstrap_servers,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            request_timeout_ms=max(settings.request_timeout_ms, 40_000),
            # A batch may hold retries with backoff: leave room before the group evicts us.
            max_poll_interval_ms=900_000,
        )

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        """Finish the batch in hand (if `run()` is going), commit it, then leave the group."""
        self._stopping.set()
        if self._running is not None:
            await self._running.wait()
        await self._consumer.stop()

    def request_stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Fetch, handle, commit; until `request_stop()`. The batch in hand is finished first."""
        self._running = asyncio.Event()
        try:
            while not self._stopping.is_set():
                batches = await self._consumer.getmany(timeout_ms=200, max_records=self._max_records)
                for tp, records in batches.items():
                    for record in records:
                        await self._processor.process(InboundMessage.from_record(record), self._handler)
                    try:
                        await self._consumer.commit({tp: records[-1].offset + 1})
                    except (CommitFailedError, IllegalStateError) as exc:
                        # Rebalanced away: the new owner gets these again; handlers are idempotent.
                        log.warning(
                            "commit refused after a rebalance",
                            extra={"partition": str(tp), "error": str(exc)},
                        )
        finally:
            self._running.set()
