"""The faust app factory: durable producer defaults, co-hosted in the service's FastAPI process.

faust's aiokafka producer uses `acks=all` + idempotence only inside transactions; our transport
(registered as the `lvyue://` broker scheme through faust's `faust.transports` entry point) uses them
always. Topics are created from the registry before the app starts (`topic_allow_declare=False`).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import faust
from faust.transport.consumer import CONSUMER_WAIT_EMPTY
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode import Service

from shared.kafka.topics import TopicSpec
from shared.settings import ServiceSettings

BROKER_SCHEME = "lvyue"

log = logging.getLogger(__name__)


class DurableProducer(faust_aiokafka.Producer):
    def _settings_extra(self) -> Mapping[str, Any]:
        return {"acks": "all", "enable_idempotence": True}


def head_is_missing(acked: Sequence[int], committed: int | None) -> bool:
    """True when the oldest acknowledged offset is beyond the committed one (the next to read): a
    message before it is still being processed, so nothing may be committed yet."""
    return bool(acked) and committed is not None and min(acked) > committed


class BatchingConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """The worker consumer with the app's fetch batching (faust hard-codes aiokafka's defaults)."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        fetch: tuple[int, int] | None = getattr(self.app, "lvyue_fetch", None)
        if fetch is not None:  # read by aiokafka when the consumer starts
            consumer._fetch_min_bytes, consumer._fetch_max_wait_ms = fetch
        return consumer


class GaplessConsumer(faust_aiokafka.Consumer):
    """faust 0.15 commits past a gap of exactly one unacknowledged message at the head (its check is
    `min(acked) - committed > 1`, faust-streaming#606): with agents taking batches concurrently, a
    crash could then lose that message. Nothing is committed while the head is missing."""

    def _new_offset(self, tp: Any) -> int | None:
        if not self._gap[tp] and head_is_missing(self._acked[tp], self._committed_offset[tp]):
            return None
        offset: int | None = super()._new_offset(tp)
        return offset

    @Service.transitions_to(CONSUMER_WAIT_EMPTY)
    async def wait_empty(self) -> None:
        """faust's version waits for in-flight events without limit, and neither its stop timeout nor
        a cancellation ends it (it swallows CancelledError; mode stops children under a shield). After
        the app's grace, what is unfinished is left uncommitted, for the partitions' next owner to
        process again (consumers are idempotent)."""
        grace_s: float = getattr(self.app, "lvyue_stop_grace_s", 15.0)
        deadline = self.loop.time() + grace_s
        while not self.should_stop and self._unacked_messages:
            if self.loop.time() >= deadline:
                log.warning(
                    "stopped waiting for in-flight events: they stay uncommitted and will be redelivered",
                    extra={"unfinished": len(self._unacked_messages), "grace_s": grace_s},
                )
                break
            await self.commit()
            if not self._unacked_messages:
                break
            await self._wait_for_ack(timeout=1)  # woken by any ack; faust caps the wait at 1 s
            self._clean_unacked_messages()
        await self.commit_and_end_transactions()

    def _new_consumer_thread(self) -> BatchingConsumerThread:
        return BatchingConsumerThread(self, loop=self.loop, beacon=self.beacon)


class DurableTransport(faust_aiokafka.Transport):
    Producer = DurableProducer
    Consumer = GaplessConsumer


def broker_urls(bootstrap_servers: str) -> str:
    return ";".join(f"{BROKER_SCHEME}://{server.strip()}" for server in bootstrap_servers.split(","))


def create_faust_app(settings: ServiceSettings, *, app_id: str | None = None, **overrides: Any) -> faust.App:
    """`app_id` is the consumer group; it defaults to the service's (`lvyue-<service>`)."""
    kafka = settings.kafka
    datadir_root = Path(tempfile.gettempdir()) / "lvyue-faust"
    datadir_root.mkdir(parents=True, exist_ok=True)  # faust makes only the last level
    options: dict[str, Any] = {
        "broker": broker_urls(kafka.bootstrap_servers),
        "web_enabled": False,  # FastAPI serves HTTP; see shared.service
        "topic_allow_declare": False,
        "topic_disable_leader": True,
        "topic_partitions": kafka.default_partitions,
        "producer_acks": -1,
        "producer_linger_ms": kafka.producer_linger_ms,
        "consumer_auto_offset_reset": kafka.consumer_offset_reset,
        "broker_commit_interval": 0.5,
        "broker_session_timeout": 10.0,
        "broker_heartbeat_interval": 1.0,
        "broker_request_timeout": 40.0,
        "consumer_max_fetch_size": kafka.consumer_max_fetch_bytes,
        "stream_wait_empty": True,  # finish in-flight events before committing on shutdown
        "store": "memory://",
        "autodiscover": False,
        # faust makes `<app_id>-data/` in the working directory even with the memory store.
        "datadir": str(datadir_root / "{conf.name}-data"),
    }
    options.update(overrides)
    app = faust.App(app_id or settings.consumer_group, **options)
    app.lvyue_fetch = (kafka.stream_fetch_min_bytes, kafka.stream_fetch_max_wait_ms)  # type: ignore[attr-defined]
    app.lvyue_stop_grace_s = kafka.stop_grace_s  # type: ignore[attr-defined]
    return app


def faust_topic(app: faust.App, spec: TopicSpec, settings: ServiceSettings, **kwargs: Any) -> faust.TopicT:
    """A faust topic bound to the registry's spec (partition count included); values as raw bytes."""
    return app.topic(
        spec.name,
        partitions=spec.partitions or settings.kafka.default_partitions,
        key_type=bytes,
        value_type=bytes,
        value_serializer="raw",
        key_serializer="raw",
        internal=False,
        **kwargs,
    )
