"""The faust app factory: durable producer defaults, co-hosted in the service's FastAPI process.

faust's aiokafka producer uses `acks=all` + idempotence only inside transactions; our transport
(registered as the `lvyue://` broker scheme through faust's `faust.transports` entry point) uses them
always. Topics are created from the registry before the app starts (`topic_allow_declare=False`).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import faust
from faust.streams import _tracks_buffer_agen
from faust.transport.consumer import CONSUMER_WAIT_EMPTY
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import ChannelT, EventT
from mode import Seconds, Service, want_seconds
from mode.utils.aiter import aiter
from mode.utils.futures import notify
from mode.utils.locks import Event

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


@dataclass(frozen=True)
class FetchWaits:
    """What a fetch asks the broker for: (min bytes, max wait ms). While records arrive, a fetch waits
    a little for a batch to fill; after one came back empty, the next asks for any byte and waits long,
    answered as soon as a record arrives (no latency added, and an idle consumer seldom fetches)."""

    min_bytes: int
    max_wait_ms: int
    idle_wait_ms: int

    def after(self, got_records: bool) -> tuple[int, int]:
        return (self.min_bytes, self.max_wait_ms) if got_records else (1, self.idle_wait_ms)


def follow_activity(fetcher: Any, waits: FetchWaits) -> None:
    """Sets each next fetch of aiokafka's `fetcher` by whether the last one returned records (its fetch
    loop builds every request from `_fetch_min_bytes` and `_fetch_max_wait_ms`)."""
    fetch = fetcher._proc_fetch_request

    async def fetch_then_adapt(assignment: Any, node_id: int, request: Any) -> bool:
        got_records = bool(await fetch(assignment, node_id, request))
        fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms = waits.after(got_records)
        return got_records

    fetcher._proc_fetch_request = fetch_then_adapt


class BatchingConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """The worker consumer with the app's fetch waits (faust hard-codes aiokafka's defaults)."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        waits: FetchWaits | None = getattr(self.app, "lvyue_fetch", None)
        if waits is not None:  # read by aiokafka when the consumer starts; the first fetch finds it idle
            consumer._fetch_min_bytes, consumer._fetch_max_wait_ms = waits.after(got_records=False)
            # aiokafka's fetch loop wakes for every fetch answered, batch taken and assignment change,
            # and besides polls every 200 ms (`consumer_timeout_ms`): here as seldom as an idle fetch.
            consumer._consumer_timeout = waits.idle_wait_ms / 1000
        return consumer

    async def on_start(self) -> None:
        await super().on_start()
        waits: FetchWaits | None = getattr(self.app, "lvyue_fetch", None)
        if waits is not None and self._consumer is not None and self._consumer._fetcher is not None:
            follow_activity(self._consumer._fetcher, waits)


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


def idle_wait_s(waited_s: float, within_s: float) -> float:
    """How long a batch that got its first value `waited_s` into an idle stream's wait still waits:
    to the next multiple of `within_s`, as faust's take_events (which wakes every `within_s` whether
    or not anything came) would have sent it."""
    return within_s - waited_s % within_s


class QuietStream(faust.Stream[Any]):
    """faust's stream, whose `take_events` sleeps while nothing comes. faust's wakes every `within`
    (the agents' batches: 20 ms in dispatch, 50 ms elsewhere) to find an empty buffer, which kept each
    service's event loop busy at rest; here an empty stream waits for its first value, then sends the
    batch when faust's would have, so batches and their latency stay as they were."""

    @_tracks_buffer_agen
    async def take_events(self, max_: int, within: Seconds) -> AsyncGenerator[Sequence[EventT[Any]], None]:
        buffer: list[Any] = []
        events: list[EventT[Any]] = []
        buffer_full, buffer_consumed, has_values = Event(), Event(), Event()
        timeout = want_seconds(within) if within else None
        stream_enable_acks: bool = self.enable_acks
        buffer_consuming: asyncio.Future[None] | None = None

        async def add_to_buffer(value: Any) -> Any:  # faust's, and `has_values` is set
            try:
                nonlocal buffer_consuming
                if buffer_consuming is not None:
                    try:
                        await buffer_consuming
                    finally:
                        buffer_consuming = None
                buffer.append(value)
                has_values.set()
                event = self.current_event
                if event is None:
                    raise RuntimeError("Take buffer found current_event is None")
                events.append(event)
                if len(buffer) >= max_:
                    buffer_full.set()
                    buffer_consumed.clear()
                    await self.wait(buffer_consumed)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.exception("Error adding to take buffer: %r", exc)
                await self.crash(exc)
            return value

        self.enable_acks = False
        self.add_processor(add_to_buffer)
        self._enable_passive(cast(ChannelT[Any], aiter(self.channel)))
        try:
            while not self.should_stop:
                if timeout is None:
                    await self.wait_for_stopped(buffer_full)
                elif buffer:
                    await self.wait_for_stopped(buffer_full, timeout=timeout)
                else:
                    started = self.loop.time()
                    await self.wait_for_stopped(has_values)
                    left = idle_wait_s(self.loop.time() - started, timeout)
                    await self.wait_for_stopped(buffer_full, timeout=left)
                if buffer:
                    buffer_consuming = self.loop.create_future()
                    try:
                        yield list(events)
                    finally:
                        buffer.clear()
                        has_values.clear()
                        for event in events:
                            await self.ack(event)
                        events.clear()
                        notify(buffer_consuming)
                        buffer_full.clear()
                        buffer_consumed.set()
        finally:
            self.enable_acks = stream_enable_acks
            self._processors.remove(add_to_buffer)


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
        # Offsets are committed apart from processing (consumers are idempotent, a crash redelivers at
        # most this much); faust checks every partition for livelock every 2.5 intervals.
        "broker_commit_interval": 2.0,
        "broker_session_timeout": 10.0,
        "broker_heartbeat_interval": 3.0,  # a third of the session timeout, as Kafka's clients
        "broker_request_timeout": 40.0,
        "consumer_max_fetch_size": kafka.consumer_max_fetch_bytes,
        "stream_wait_empty": True,
        "Stream": QuietStream,  # finish in-flight events before committing on shutdown
        "store": "memory://",
        "autodiscover": False,
        # faust makes `<app_id>-data/` in the working directory even with the memory store.
        "datadir": str(datadir_root / "{conf.name}-data"),
    }
    options.update(overrides)
    app = faust.App(app_id or settings.consumer_group, **options)
    app.lvyue_fetch = FetchWaits(  # type: ignore[attr-defined]
        kafka.stream_fetch_min_bytes, kafka.stream_fetch_max_wait_ms, kafka.stream_idle_fetch_wait_ms
    )
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
