"""bench e2e's reference chain: the line's hops per order built bare, run on the same stack after the
line, at the same rate, for the same orders, so the line's CPU per order is judged against the same
work done with nothing but the libraries (target: at most twice the reference's).

Per order it does the work the line was measured doing in the same run (the work gates' counts, summed
over the services and divided by the orders; a fraction is spread over the orders so that the totals
match):
- Kafka: as many messages consumed. The driver (the bench process, as in the line's run) produces each
  order's message once, acks=all, the run's own `order_paid` value and key; RELAYS bare aiokafka
  relays, one process each like the line's four consuming services, pass it round a ring of as many
  topics (relay r consumes topic r and produces to topic r+1 mod RELAYS, acks=all), one relay per
  message consumed, then to a sink topic nobody reads. Their consumers fetch as the line's do
  (`KafkaSettings`' stream fetch size and wait, 256 KiB per partition).
- HTTP: as many exchanges as the line's (requests its services answered, their calls to the stand-ins,
  the order's creation): POSTs of the message to a bare ASGI echo under uvicorn (`ops.bare_endpoint:
  echo`, a process of its own) over keep-alive loopback connections, spread over the order's relays.
- Database: as many documents inserted as the line wrote, the message in each: one `insert_many` per
  consumed batch (pymongo's AsyncMongoClient, the same FerretDB, acknowledged writes).
A relay takes a batch, makes its HTTP exchanges, inserts its documents, then produces it and waits for
the acks before taking the next. What each message has left to do travels in its headers.

CPU per order: every reference process (relays, echo) in full, and Kafka's and FerretDB's CPU over the
reference's run less what each spends at rest in as long (at rest they serve the idle line's consumers,
which are not the reference's work), from the driver's first message to the sink holding the last. The
driver is left out, as it is of the line's figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import sys
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import astuple, dataclass, field
from multiprocessing.queues import Queue as MpQueue
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

import httpx
import uvloop
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from hdrh.histogram import HdrHistogram
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from ops.bench import _proc_figures
from ops.bench_dispatch import new_histogram
from ops.bench_kafka import KafkaRecord, assigned_consumer, end_offsets, read_records, stop_consumer
from ops.helper_process import Helper
from ops.loadgen import HttpClient, LoadResult, http_request, open_loop
from ops.stack import free_port
from shared.kafka.admin import ensure_topics
from shared.kafka.producer import create_producer
from shared.kafka.topics import TopicSpec
from shared.settings import KafkaSettings

RELAYS = 4  # the line's consuming services: the ingest worker, dispatch, logistics, aftersale
ECHO_PROCESS = "reference HTTP echo (bare ASGI, uvicorn)"
ECHO_PATH = "/echo"
ECHO_CONNECTIONS = 16  # keep-alive connections per relay, opened before the clock starts
SHARED_WITH_THE_LINE = ("kafka", "ferretdb")
# A message's work still to do: "<HTTP exchanges>.<documents>" for each relay it has left to pass.
PLAN_HEADER = "reference_plan"
HOP_HEADER = "reference_hop"  # relays passed (0: the driver's message)
DRAIN_TIMEOUT_S = 120.0
_HIGHEST_US = 3_600_000_000


def relay_process_name(relay: int) -> str:
    return f"reference relay {relay} (bare aiokafka, pymongo)"


# ---- the plan (pure) -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceWork:
    """Work per order: the line's (measured) that the reference copies, or what the reference did."""

    http_exchanges: float = 0.0
    kafka_consumed: float = 0.0
    documents_written: float = 0.0

    def per(self, orders: int) -> ReferenceWork:
        return ReferenceWork(*(v / max(1, orders) for v in astuple(self)))


@dataclass(frozen=True)
class Hop:
    """One relay's work on one message: HTTP exchanges, documents inserted."""

    http: int
    documents: int


def spread(per_order: float, orders: int) -> list[int]:
    """Whole counts for `orders` orders adding up to `per_order` × `orders` (rounded), none more than
    one apart: order i gets round((i+1)·x) − round(i·x)."""
    rounded = [int(per_order * i + 0.5) for i in range(orders + 1)]
    return [b - a for a, b in itertools.pairwise(rounded)]


def share(total: int, parts: int, index: int) -> int:
    """Part `index` of `total` cut into `parts` parts as even as whole numbers allow, the larger first."""
    return total // parts + (1 if index < total % parts else 0)


def plan_chain(work: ReferenceWork, orders: int) -> list[tuple[Hop, ...]]:
    """Each order's relays (at least one: its HTTP and documents need a relay to do them), its HTTP
    exchanges and documents spread over them."""
    hops = spread(work.kafka_consumed, orders)
    http = spread(work.http_exchanges, orders)
    documents = spread(work.documents_written, orders)
    plans = []
    for k, h, d in zip(hops, http, documents, strict=True):
        k = max(1, k)
        plans.append(tuple(Hop(share(h, k, j), share(d, k, j)) for j in range(k)))
    return plans


def planned_work(plans: Sequence[tuple[Hop, ...]]) -> ReferenceWork:
    """The work a plan asks for, in total."""
    return ReferenceWork(
        float(sum(h.http for plan in plans for h in plan)),
        float(sum(len(plan) for plan in plans)),
        float(sum(h.documents for plan in plans for h in plan)),
    )


def encode_plan(hops: Sequence[Hop]) -> bytes:
    return ",".join(f"{h.http}.{h.documents}" for h in hops).encode()


def decode_plan(raw: bytes) -> list[Hop]:
    hops = []
    for part in raw.decode().split(","):
        if part:
            http, _, documents = part.partition(".")
            hops.append(Hop(int(http), int(documents)))
    return hops


# ---- the figures (pure) ----------------------------------------------------------------------------------


@dataclass
class ChainLatency:
    histogram: HdrHistogram
    missing: int
    samples: list[tuple[float, int]]  # (seconds since the first scheduled message when reached, µs)


def hop_times(records: Iterable[KafkaRecord]) -> dict[str, dict[int, float]]:
    """Per order (record key): when its message left each relay (0: the driver), by record timestamp."""
    times: dict[str, dict[int, float]] = {}
    for record in records:
        hop = record.header(HOP_HEADER)
        if hop is None:
            continue
        by_hop = times.setdefault(record.key, {})
        at = by_hop.get(int(hop))
        by_hop[int(hop)] = record.timestamp_s if at is None else min(at, record.timestamp_s)
    return times


def chain_latency(
    scheduled: Sequence[float], reached: Sequence[float | None], t0_wall: float
) -> ChainLatency:
    """From each message's scheduled send to when it reached a point (None: never); a negative interval
    (clock granularity between processes) counts as 1 µs."""
    figures = ChainLatency(new_histogram(), 0, [])
    for began, at in zip(scheduled, reached, strict=True):
        if at is None:
            figures.missing += 1
            continue
        latency_us = min(max(1, int((at - began) * 1_000_000)), _HIGHEST_US)
        figures.histogram.record_value(latency_us)
        figures.samples.append((at - t0_wall, latency_us))
    return figures


def chain_latencies(
    keys: Sequence[str],
    plans: Sequence[tuple[Hop, ...]],
    records: Iterable[KafkaRecord],
    t0_wall: float,
    rate: float,
    ceiling_relays: int,
) -> tuple[ChainLatency, ChainLatency]:
    """Each order's message from its scheduled send (one every 1/rate s from `t0_wall`) to when it left
    relay `ceiling_relays` (its last, if it had fewer), and to when it left its last relay."""
    times = hop_times(records)
    scheduled = [t0_wall + i / rate for i in range(len(keys))]
    ceiling = [times.get(k, {}).get(min(ceiling_relays, len(p))) for k, p in zip(keys, plans, strict=True)]
    whole = [times.get(k, {}).get(len(p)) for k, p in zip(keys, plans, strict=True)]
    return chain_latency(scheduled, ceiling, t0_wall), chain_latency(scheduled, whole, t0_wall)


def charged_cpu_s(
    cpu_s: dict[str, float], own: Iterable[str], idle_pct: dict[str, float], window_s: float
) -> dict[str, float]:
    """The CPU seconds charged to the reference per process: its own processes' in full, Kafka's and
    FerretDB's less their CPU at rest over as long (never below zero; in full without a baseline)."""
    charged = {name: cpu_s.get(name, 0.0) for name in own}
    for name in SHARED_WITH_THE_LINE:
        at_rest = idle_pct.get(name, 0.0) / 100 * window_s
        charged[name] = max(0.0, cpu_s.get(name, 0.0) - at_rest)
    return charged


# ---- a relay (its own process) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RelayConfig:
    relay: int
    bootstrap: str
    topic: str
    next_topic: str
    sink_topic: str
    mongo_uri: str
    database: str
    collection: str
    echo_port: int
    fetch_min_bytes: int
    fetch_max_wait_ms: int
    max_partition_fetch_bytes: int


@dataclass(frozen=True)
class RelayCounts:
    batches: int = 0
    consumed: int = 0
    produced: int = 0
    http_ok: int = 0
    http_failed: int = 0
    documents: int = 0
    inserts: int = 0

    def __add__(self, other: RelayCounts) -> RelayCounts:
        return RelayCounts(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))


def relay_process(config: RelayConfig, ready: MpEvent, stop: MpEvent, out: MpQueue[Any]) -> None:
    logging.basicConfig(level=logging.ERROR)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        out.put(runner.run(_relay(config, ready, stop)))


async def _relay(config: RelayConfig, ready: MpEvent, stop: MpEvent) -> RelayCounts:
    settings = KafkaSettings(bootstrap_servers=config.bootstrap)
    consumer = await assigned_consumer(
        config.bootstrap,
        [config.topic],
        fetch_min_bytes=config.fetch_min_bytes,
        fetch_max_wait_ms=config.fetch_max_wait_ms,
        max_partition_fetch_bytes=config.max_partition_fetch_bytes,
    )
    producer = create_producer(settings, client_id=f"bench-reference-relay-{config.relay}")
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        config.mongo_uri, appname=f"bench-reference-relay-{config.relay}"
    )
    collection = mongo[config.database][config.collection]
    echo = HttpClient("127.0.0.1", config.echo_port, max_connections=ECHO_CONNECTIONS, timeout_s=10)
    counts = RelayCounts()
    try:
        await producer.start()
        await mongo.admin.command("ping")
        await echo.open(ECHO_CONNECTIONS)
        partitions = sorted(consumer.assignment())
        await consumer.seek_to_end(*partitions)
        for tp in partitions:
            await consumer.position(tp)
        ready.set()
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=500)
            messages = [m for batch in batches.values() for m in batch]
            if messages:
                counts += await _relay_batch(config, messages, echo, collection, producer)
    finally:
        await stop_consumer(consumer)
        await producer.stop()
        echo.close()
        await mongo.close()
    return counts


async def _relay_batch(
    config: RelayConfig,
    messages: list[ConsumerRecord],
    echo: HttpClient,
    collection: AsyncCollection[dict[str, Any]],
    producer: AIOKafkaProducer,
) -> RelayCounts:
    plans, hops = [], []
    for m in messages:
        headers = dict(m.headers)
        plans.append(decode_plan(headers.get(PLAN_HEADER, b"")) or [Hop(0, 0)])
        hops.append(int(headers.get(HOP_HEADER, b"0")) + 1)
    exchanges = []
    for m, plan in zip(messages, plans, strict=True):
        request = http_request("127.0.0.1", config.echo_port, ECHO_PATH, m.value or b"", "application/json")
        exchanges += [echo.send(request) for _ in range(plan[0].http)]
    answers = await asyncio.gather(*exchanges, return_exceptions=True)
    http_ok = sum(1 for a in answers if isinstance(a, tuple) and a[0] == 200)
    documents = [
        {"_id": f"{m.key.decode()}#{hop}#{n}", "order_id": m.key.decode(), "hop": hop, "message": m.value}
        for m, plan, hop in zip(messages, plans, hops, strict=True)
        for n in range(plan[0].documents)
    ]
    if documents:
        await collection.insert_many(documents)
    sent = []
    for m, plan, hop in zip(messages, plans, hops, strict=True):
        rest = plan[1:]
        sent.append(
            await producer.send(
                config.next_topic if rest else config.sink_topic,
                value=m.value,
                key=m.key,
                headers=[(PLAN_HEADER, encode_plan(rest)), (HOP_HEADER, str(hop).encode())],
            )
        )
    await asyncio.gather(*sent)
    return RelayCounts(
        batches=1,
        consumed=len(messages),
        produced=len(sent),
        http_ok=http_ok,
        http_failed=len(answers) - http_ok,
        documents=len(documents),
        inserts=1 if documents else 0,
    )


# ---- the run ---------------------------------------------------------------------------------------------


@dataclass
class ReferenceRun:
    keys: list[str]
    plans: list[tuple[Hop, ...]]
    copied: ReferenceWork  # per order: the line's work the reference was planned from
    done: RelayCounts  # by the relays, in total
    t0_wall: float
    load: LoadResult  # the driver's produce acks
    records: list[KafkaRecord]
    cpu_s: dict[str, float]  # every process's CPU over the reference's run
    peak_rss: dict[str, float]  # of the reference's own processes
    window_s: float
    not_in_sink: int
    own: tuple[str, ...] = field(default_factory=tuple)  # the reference's processes

    def work_done(self) -> ReferenceWork:
        return ReferenceWork(
            float(self.done.http_ok), float(self.done.consumed), float(self.done.documents)
        ).per(len(self.plans))


@contextlib.asynccontextmanager
async def echo_server() -> AsyncIterator[tuple[int, int]]:
    """The bare echo under uvicorn (one process, uvloop, httptools), ready to answer: (port, pid)."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "uvicorn",
        "ops.bare_endpoint:echo",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--lifespan",
        "off",
        "--no-access-log",
        "--log-level",
        "warning",
    )
    url = f"http://127.0.0.1:{port}{ECHO_PATH}"
    try:
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                try:
                    (await client.post(url, content=b"ok")).raise_for_status()
                    break
                except httpx.HTTPError:
                    if process.returncode is not None or time.monotonic() > deadline:
                        raise RuntimeError("the reference's HTTP echo did not start") from None
                    await asyncio.sleep(0.2)
        yield port, process.pid
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


async def run_reference(
    *,
    bootstrap: str,
    mongo_uri: str,
    database: str,
    keys: Sequence[str],
    payloads: dict[str, bytes],
    copied: ReferenceWork,
    rate: float,
    duration: float,
    pids: dict[str, int],
    run: str,
) -> ReferenceRun:
    """The reference chain for the orders `keys` (their messages `payloads`, the largest for a key
    without one) at `rate` over `duration`; `pids` are the stack's processes, measured beside it."""
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    plans = plan_chain(copied, len(keys))
    ring = [f"bench.e2e.reference.{run}.ring{r}" for r in range(RELAYS)]
    sink = f"bench.e2e.reference.{run}.sink"
    await ensure_topics(
        kafka, tuple(TopicSpec(t, "bench e2e reference chain", has_dead_letter=False) for t in [*ring, sink])
    )
    fallback = max(payloads.values(), key=len, default=b"{}" * 400)
    messages = [
        (
            key.encode(),
            payloads.get(key, fallback),
            [(PLAN_HEADER, encode_plan(plan)), (HOP_HEADER, b"0")],
        )
        for key, plan in zip(keys, plans, strict=True)
    ]
    own = (ECHO_PROCESS, *(relay_process_name(r) for r in range(RELAYS)))
    producer = create_producer(kafka, client_id="bench-reference-driver")
    async with echo_server() as (echo_port, echo_pid):
        relays = [
            Helper(
                relay_process,
                (
                    RelayConfig(
                        relay=r,
                        bootstrap=bootstrap,
                        topic=ring[r],
                        next_topic=ring[(r + 1) % RELAYS],
                        sink_topic=sink,
                        mongo_uri=mongo_uri,
                        database=database,
                        collection=f"bench_reference_{run}",
                        echo_port=echo_port,
                        fetch_min_bytes=kafka.stream_fetch_min_bytes,
                        fetch_max_wait_ms=kafka.stream_fetch_max_wait_ms,
                        max_partition_fetch_bytes=kafka.consumer_max_fetch_bytes,
                    ),
                ),
                f"bench-e2e-reference-relay-{r}",
            )
            for r in range(RELAYS)
        ]
        counts: list[Any] = []
        await producer.start()
        sink_watch = await assigned_consumer(bootstrap, [sink])
        sink_watch.pause(*sink_watch.assignment())  # for its end offsets only: it fetches nothing
        try:
            await asyncio.gather(*(relay.start(wait_ready=True) for relay in relays))
            measured = {**pids, ECHO_PROCESS: echo_pid}
            measured.update({relay_process_name(r): relay.pid for r, relay in enumerate(relays)})
            start = await end_offsets(bootstrap, [*ring, sink])

            async def in_sink() -> int:
                ends = await sink_watch.end_offsets(list(sink_watch.assignment()))
                return sum(ends[tp] - start.get(tp, 0) for tp in ends)

            async def send(i: int) -> bool:
                key, value, headers = messages[i]
                await producer.send_and_wait(ring[0], value=value, key=key, headers=headers)
                return True

            cpu_a = {name: _proc_figures(pid)[0] for name, pid in measured.items()}
            began, t0_wall = time.perf_counter(), time.time()
            load = await open_loop("reference chain: driver's produce", send, rate=rate, duration_s=duration)
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            arrived = await in_sink()
            while arrived < len(messages) and time.monotonic() < deadline:
                await asyncio.sleep(0.25)
                arrived = await in_sink()
            window_s = time.perf_counter() - began
            figures = {name: _proc_figures(pid) for name, pid in measured.items()}  # before they exit
        finally:
            counts = [await relay.stop() for relay in relays]
            await stop_consumer(sink_watch)
            await producer.stop()
    records = await read_records(bootstrap, start)
    return ReferenceRun(
        keys=list(keys),
        plans=plans,
        copied=copied,
        done=sum((c for c in counts if isinstance(c, RelayCounts)), RelayCounts()),
        t0_wall=t0_wall,
        load=load,
        records=records,
        cpu_s={name: cpu - cpu_a.get(name, 0.0) for name, (cpu, _) in figures.items()},
        peak_rss={name: figures[name][1] for name in own},
        window_s=window_s,
        not_in_sink=max(0, len(messages) - arrived),
        own=own,
    )
