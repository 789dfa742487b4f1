"""`lvyue bench dispatch`: paid-order event → dispatch order visible in the supplier's feed, on a
private local stack (real Kafka, FerretDB and the dispatch service, each its own process).

Open loop: `OrderPaid` events are published on `orders` at a fixed rate whatever happens downstream;
suppliers (one long-polling client each, `GET /supplier/v1/feed?wait_s=...`) record when they first
see each dispatch order, and the latency of a dispatch order is that moment minus its order's
scheduled publish time (HdrHistogram, no coordinated omission). Then, in the same run and once the
feeds are drained, the same messages are published at the same rate on a topic of their own, read
by a bare aiokafka consumer in its own process: the one-hop ceiling. (Run beside the load, it took
12-15% of a core from what it was measuring.)
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import multiprocessing
import os
import random
import re
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from multiprocessing.queues import Queue as MpQueue
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
import uvloop
from aiokafka import AIOKafkaConsumer
from hdrh.histogram import HdrHistogram
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from ops.bench import _proc_figures
from ops.loadgen import HttpClient, LoadResult, open_loop
from ops.stack import REPO_ROOT, LocalStack, StackPorts
from services.dispatch.catalog import Catalog, Supplier
from services.dispatch.domain.routing import Route
from shared.api.supplier import API_PREFIX
from shared.db import create_mongo_client, database
from shared.events.orders import OrderLine, OrderPaid, Receiver
from shared.kafka.admin import ensure_topics
from shared.kafka.producer import create_producer, event_headers
from shared.kafka.topics import ALL_TOPICS, ORDERS, TopicSpec
from shared.settings import KafkaSettings, MongoSettings

console = Console()

RESULTS = REPO_ROOT / "bench-results"
SHOP_ID = "bench-shop"
TARGET_P99_MS = 1000.0
BENCH_PROCESS = "bench process (publisher + pollers)"
# 1 µs .. 1 h, 3 significant digits: a backlog can hold dispatch orders for minutes, beyond the
# 60 s of ops.loadgen's histograms.
_HIGHEST_US = 3_600_000_000


def new_histogram() -> HdrHistogram:
    return HdrHistogram(1, _HIGHEST_US, 3)


_WARMUP_ORDERS = 60


# ---- the workload (pure) ----------------------------------------------------------------------------


def supplier_name(n: int) -> str:
    return f"bench-s{n:03d}"


@dataclass(frozen=True)
class PlannedOrder:
    order_id: str
    skus: tuple[int, ...]  # SKU numbers; SKU k is product p<k> / sku s<k>, routed to supplier k % N
    suppliers: frozenset[str]  # one dispatch order each


def plan_orders(
    count: int,
    *,
    suppliers: int,
    skus_per_supplier: int,
    first_order_id: int,
    seed: int,
    max_lines: int = 3,
) -> list[PlannedOrder]:
    """`count` orders of 1..max_lines distinct SKUs drawn uniformly; SKU k belongs to supplier k % N,
    so an order with lines of several suppliers splits into one dispatch order per supplier."""
    rng = random.Random(seed)
    skus = suppliers * skus_per_supplier
    orders = []
    for i in range(count):
        chosen = tuple(rng.sample(range(skus), rng.randint(1, min(max_lines, skus))))
        owners = frozenset(supplier_name(sku % suppliers) for sku in chosen)
        orders.append(PlannedOrder(str(first_order_id + i), chosen, owners))
    return orders


def sku_routes(suppliers: int, skus_per_supplier: int) -> list[Route]:
    return [
        Route(shop_id=SHOP_ID, supplier_id=supplier_name(k % suppliers), product_id=f"p{k}", sku_id=f"s{k}")
        for k in range(suppliers * skus_per_supplier)
    ]


def paid_event(order: PlannedOrder, now: datetime) -> OrderPaid:
    return OrderPaid(
        order_id=order.order_id,
        shop_id=SHOP_ID,
        version=int(now.timestamp()),
        paid_at=now,
        ship_by=now + timedelta(hours=48),
        lines=[
            OrderLine(
                product_id=f"p{k}",
                sku_id=f"s{k}",
                quantity=1,
                unit_sale_price_fen=1000,
                unit_paid_price_fen=900,
                title=f"商品 {k}",
            )
            for k in order.skus
        ],
        receiver=Receiver(
            name="张三",
            phone="13800000000",
            province="广东省",
            city="广州市",
            county="天河区",
            detail="天河路 1 号",
        ),
        order_price_fen=900 * len(order.skus),
    )


@dataclass(frozen=True)
class Bucket:
    start_s: int
    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float


def bucket_latencies(samples: Iterable[tuple[float, int]], width_s: int = 1) -> list[Bucket]:
    """(seconds since the start, latency µs) → per `width_s` window: count, p50, p99, max in ms.
    Windows without samples are listed too (count 0), up to the last sample."""
    histograms: dict[int, HdrHistogram] = {}
    for at_s, latency_us in samples:
        window = int(max(0.0, at_s) // width_s)
        histogram = histograms.get(window)
        if histogram is None:
            histogram = histograms[window] = new_histogram()
        histogram.record_value(min(max(1, latency_us), _HIGHEST_US))
    buckets = []
    for window in range(max(histograms, default=-1) + 1):
        h = histograms.get(window)
        if h is None:
            buckets.append(Bucket(window * width_s, 0, 0.0, 0.0, 0.0))
            continue
        buckets.append(
            Bucket(
                window * width_s,
                h.get_total_count(),
                h.get_value_at_percentile(50) / 1000,
                h.get_value_at_percentile(99) / 1000,
                h.get_max_value() / 1000,
            )
        )
    return buckets


@dataclass(frozen=True)
class GcPauses:
    """One generation's collections in a process, from its `lvyue_gc_pause_seconds` histogram."""

    count: int
    total_s: float
    over_100ms: int


def histogram_series(metrics_text: str, family_name: str, label: str) -> dict[str, dict[str, float]]:
    """A histogram of a service's /metrics, per value of `label`: "count", "sum" and "le=<bound>"."""
    by_labels = histogram_series_by(metrics_text, family_name, (label,))
    return {values[0]: series for values, series in by_labels.items()}


def histogram_series_by(
    metrics_text: str, family_name: str, labels: Sequence[str]
) -> dict[tuple[str, ...], dict[str, float]]:
    """A histogram of a service's /metrics, per combination of `labels`' values: "count", "sum" and
    "le=<bound>"."""
    found: dict[tuple[str, ...], dict[str, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(metrics_text):
        if family.name != family_name:
            continue
        for sample in family.samples:
            series = found[tuple(sample.labels[label] for label in labels)]
            if sample.name.endswith("_count"):
                series["count"] = sample.value
            elif sample.name.endswith("_sum"):
                series["sum"] = sample.value
            elif sample.name.endswith("_bucket"):
                series[f"le={sample.labels['le']}"] = sample.value
    return dict(sorted(found.items()))


def gc_pauses(metrics_text: str) -> dict[str, GcPauses]:
    """Generation -> collections so far, parsed from a service's /metrics."""
    return {
        generation: GcPauses(
            int(f.get("count", 0)), f.get("sum", 0.0), int(f.get("count", 0) - f.get("le=0.1", 0))
        )
        for generation, f in histogram_series(metrics_text, "lvyue_gc_pause_seconds", "generation").items()
    }


def gc_pauses_between(before: dict[str, GcPauses], after: dict[str, GcPauses]) -> dict[str, GcPauses]:
    zero = GcPauses(0, 0.0, 0)
    return {
        generation: GcPauses(
            a.count - before.get(generation, zero).count,
            a.total_s - before.get(generation, zero).total_s,
            a.over_100ms - before.get(generation, zero).over_100ms,
        )
        for generation, a in after.items()
    }


def insert_batches(metrics_text: str) -> dict[str, tuple[int, float]]:
    """Collection -> (insert_many calls, documents) of dispatch's insert batchers so far."""
    series = histogram_series(metrics_text, "lvyue_db_insert_batch_documents", "collection")
    return {collection: (int(f.get("count", 0)), f.get("sum", 0.0)) for collection, f in series.items()}


async def scrape_metrics(service_url: str) -> str:
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.get(f"{service_url}/metrics")
        answer.raise_for_status()
        return answer.text


def histogram_summary(h: HdrHistogram) -> dict[str, float | int]:
    if h.get_total_count() == 0:
        return {"count": 0}
    return {
        "count": h.get_total_count(),
        **{
            f"p{str(p).replace('.', '')}_ms": round(h.get_value_at_percentile(p) / 1000, 2)
            for p in (50, 90, 99, 99.9)
        },
        "max_ms": round(h.get_max_value() / 1000, 2),
    }


def speedscope_top(profile: dict[str, Any], n: int = 20) -> tuple[list[tuple[str, float, float]], int]:
    """Functions of a py-spy speedscope profile (every thread), by self share, with their inclusive
    share: ([(function (file:line), self fraction, inclusive fraction)], samples). py-spy's idle
    detection is not exact: waits (selectors' select, Condition.wait) can appear among them."""
    frames = profile["shared"]["frames"]
    self_weight: dict[int, float] = defaultdict(float)
    total_weight: dict[int, float] = defaultdict(float)
    total, samples = 0.0, 0
    for thread in profile["profiles"]:
        if thread.get("type") != "sampled":
            continue
        samples += len(thread["samples"])
        for stack, weight in zip(thread["samples"], thread["weights"], strict=True):
            total += weight
            if stack:
                self_weight[stack[-1]] += weight  # speedscope: root first, leaf last
            for frame in set(stack):
                total_weight[frame] += weight

    def label(index: int) -> str:
        frame = frames[index]
        where = str(frame.get("file", ""))
        for marker in ("site-packages/", "lib/python3.11/", str(REPO_ROOT) + "/"):
            where = where.split(marker, 1)[-1]
        return f"{frame['name']} ({where}:{frame.get('line', '?')})"

    ranked = sorted(self_weight, key=lambda f: -self_weight[f])[:n]
    rows = [(label(f), self_weight[f] / total, total_weight[f] / total) for f in ranked] if total else []
    return rows, samples


def speedscope_inclusive(profile: dict[str, Any], n: int = 20) -> list[tuple[str, float]]:
    """The project's own functions (services/, shared/) by inclusive share: where the time goes."""
    frames = profile["shared"]["frames"]
    weight: dict[str, float] = defaultdict(float)
    total = 0.0
    for thread in profile["profiles"]:
        if thread.get("type") != "sampled":
            continue
        for stack, w in zip(thread["samples"], thread["weights"], strict=True):
            total += w
            names = set()
            for index in stack:
                frame = frames[index]
                path = str(frame.get("file", ""))
                if "/services/" in path or "/shared/" in path:
                    names.add(f"{frame['name']} ({path.split(str(REPO_ROOT) + '/', 1)[-1]})")
            for name in names:
                weight[name] += w
    ranked = sorted(weight.items(), key=lambda item: -item[1])[:n]
    return [(name, w / total) for name, w in ranked] if total else []


# ---- the suppliers' long-polling clients ---------------------------------------------------------------


@dataclass
class PollStats:
    polls: int = 0  # answered 200
    with_changes: int = 0
    empty: int = 0  # the wait ended with nothing new
    changes: int = 0
    rate_limited: int = 0  # 429
    errors: int = 0  # other statuses, timeouts, broken connections
    per_supplier: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def copy(self) -> PollStats:
        return replace(self, per_supplier=defaultdict(int, self.per_supplier))

    def since(self, before: PollStats, seconds: float, suppliers: int) -> dict[str, float | int]:
        polls = self.polls - before.polls
        with_changes = self.with_changes - before.with_changes
        changes = self.changes - before.changes
        busiest = max(
            (n - before.per_supplier.get(s, 0) for s, n in self.per_supplier.items()),
            default=0,
        )
        return {
            "window_s": round(seconds, 1),
            "polls_answered": polls,
            "polls_with_changes": with_changes,
            "empty_polls": self.empty - before.empty,
            "changes": changes,
            "mean_changes_per_poll": round(changes / polls, 2) if polls else 0.0,
            "mean_changes_per_nonempty_poll": round(changes / with_changes, 2) if with_changes else 0.0,
            "polls_per_s": round(polls / seconds, 1) if seconds else 0.0,
            "polls_per_s_per_supplier": round(polls / seconds / suppliers, 2) if seconds else 0.0,
            "busiest_supplier_polls_per_s": round(busiest / seconds, 2) if seconds else 0.0,
            "rate_limited_429": self.rate_limited - before.rate_limited,
            "errors": self.errors - before.errors,
        }


class FeedWatchers:
    """One long-polling loop per supplier on a shared pool of keep-alive connections (the lean client
    of ops.loadgen: the pollers share the machine with what they measure). Records, per
    (order id, supplier), when the supplier first saw a dispatch order of that order."""

    def __init__(self, base_url: str, tokens: dict[str, str], *, wait_s: float, limit: int = 500) -> None:
        host_port = base_url.split("://", 1)[1]
        self._host, port = host_port.rsplit(":", 1)
        self._port = int(port)
        self._tokens = tokens
        self._wait_s, self._limit = wait_s, limit
        self._client = HttpClient(
            self._host, self._port, max_connections=len(tokens) + 8, timeout_s=wait_s + 15
        )
        self._tasks: list[asyncio.Task[None]] = []
        self.seen: dict[tuple[str, str], float] = {}  # (order id, supplier) -> perf_counter when first seen
        # (order id, supplier) -> the dispatch order's created_at (dispatch's clock), parsed after the run
        self.created: dict[tuple[str, str], str] = {}
        self.stats = PollStats()

    async def start(self) -> None:
        await self._client.open(len(self._tokens))
        self._tasks = [asyncio.create_task(self._poll(s, t)) for s, t in self._tokens.items()]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._client.close()

    def _request(self, token: str, after: int) -> bytes:
        return (
            f"GET {API_PREFIX}/feed?after={after}&wait_s={self._wait_s:g}&limit={self._limit} HTTP/1.1\r\n"
            f"host: {self._host}:{self._port}\r\nauthorization: Bearer {token}\r\n\r\n"
        ).encode("latin-1")

    async def _poll(self, supplier: str, token: str) -> None:
        after = 0
        stats, seen = self.stats, self.seen
        while True:
            try:
                status, body = await self._client.send(self._request(token, after))
            except Exception:  # a broken or timed-out poll is counted, then retried
                stats.errors += 1
                await asyncio.sleep(0.5)
                continue
            now = time.perf_counter()
            if status == 429:
                stats.rate_limited += 1
                await asyncio.sleep(1.0)
                continue
            if status != 200:
                stats.errors += 1
                await asyncio.sleep(0.5)
                continue
            page = json.loads(body)
            changes = page["changes"]
            stats.polls += 1
            stats.per_supplier[supplier] += 1
            if changes:
                stats.with_changes += 1
                stats.changes += len(changes)
            else:
                stats.empty += 1
            for change in changes:
                key = (change["dispatch_order"]["order_id"], supplier)
                if key not in seen:
                    seen[key] = now
                    self.created[key] = change["dispatch_order"]["created_at"]
            after = page["next_cursor"]

    def missing(self, expected: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        return [key for key in expected if key not in self.seen]

    async def wait_for(self, expected: Sequence[tuple[str, str]], timeout_s: float) -> list[tuple[str, str]]:
        """Wait until every expected (order, supplier) was seen; returns what is still missing."""
        deadline = time.perf_counter() + timeout_s
        missing = self.missing(expected)
        while missing and time.perf_counter() < deadline:
            await asyncio.sleep(0.1)
            missing = self.missing(missing)
        return missing


# ---- the ceiling: a bare aiokafka consumer of the same messages, in its own process --------------------


def _ceiling_consumer(
    bootstrap: str, topic: str, fetch_max_wait_ms: int, ready: MpEvent, stop: MpEvent, out: MpQueue[Any]
) -> None:
    """Reads `topic` from its end; sends [(key, perf_counter when the batch arrived)] to `out`."""

    async def run() -> list[tuple[str, float]]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=None,  # no group: every partition, no rebalance
            enable_auto_commit=False,
            fetch_max_wait_ms=fetch_max_wait_ms,
        )
        await consumer.start()
        received: list[tuple[str, float]] = []
        try:
            for _ in range(600):  # the assignment follows the first metadata answer
                if consumer.assignment():
                    break
                await asyncio.sleep(0.1)
            partitions = sorted(consumer.assignment())
            await consumer.seek_to_end(*partitions)
            for partition in partitions:
                await consumer.position(partition)
            ready.set()
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=2000)
                now = time.perf_counter()
                for messages in batches.values():
                    received.extend((m.key.decode(), now) for m in messages)
        finally:
            await consumer.stop()
        return received

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        out.put(runner.run(run()))


CEILING_TOPIC = TopicSpec(
    "bench.dispatch-ceiling",
    "bench-dispatch's ceiling phase: the load's OrderPaid messages again, for a bare consumer.",
    retention_ms=3_600_000,
    has_dead_letter=False,
)


class Ceiling:
    def __init__(self, bootstrap: str, fetch_max_wait_ms: int, topic: str = CEILING_TOPIC.name) -> None:
        context = multiprocessing.get_context("spawn")
        self._ready, self._stop = context.Event(), context.Event()
        self._out: MpQueue[Any] = context.Queue()
        self.process = context.Process(
            target=_ceiling_consumer,
            args=(bootstrap, topic, fetch_max_wait_ms, self._ready, self._stop, self._out),
            name="bench-ceiling",
            daemon=True,
        )

    async def start(self) -> None:
        self.process.start()
        deadline = time.perf_counter() + 60
        while not await asyncio.to_thread(self._ready.wait, 0.5):
            if not self.process.is_alive() or time.perf_counter() > deadline:
                raise RuntimeError("the ceiling consumer did not get its partitions")

    async def stop(self) -> dict[str, float]:
        """key -> first time the bare consumer had the message."""
        self._stop.set()
        received: list[tuple[str, float]] = await asyncio.to_thread(self._out.get, True, 60)
        await asyncio.to_thread(self.process.join, 10)
        first: dict[str, float] = {}
        for key, at in received:
            first.setdefault(key, at)
        return first


# ---- the run ------------------------------------------------------------------------------------------


_BUSY_COMMAND = re.compile(
    rb"bench[ _-](ingest|store|dispatch|e2e)|ops\.bench|pytest|sim\.sale|sim\.suppliers"
)


def other_busy_processes(own_pids: Iterable[int], own_run_dir: Path | None = None) -> list[int]:
    """Pids of other benchmarks and test runs on this machine (not this process, its ancestors, or
    the processes of its own stack, whose command lines name its run directory)."""
    mine, pid = set(own_pids), os.getpid()
    while pid > 1:
        mine.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, IndexError, ValueError):
            break
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            other = int(cmdline.parent.name)
            if other in mine:
                continue
            command = cmdline.read_bytes().replace(b"\0", b" ")
            if own_run_dir is not None and str(own_run_dir).encode() in command:
                continue
            if _BUSY_COMMAND.search(command):
                found.append(other)
        except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError):
            continue
    return found


def machine_cpu_s() -> float:
    """CPU seconds every process of the machine has used since boot (busy time, /proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


@dataclass
class Prepared:
    tokens: dict[str, str]
    routes: int


async def _prepare(stack: LocalStack, suppliers: int, skus_per_supplier: int) -> Prepared:
    settings = MongoSettings(uri=stack.mongo_uri)
    mongo = create_mongo_client(settings, app_name="bench-dispatch")
    try:
        catalog = Catalog(database(mongo, settings))
        tokens = {}
        for n in range(suppliers):
            name = supplier_name(n)
            await catalog.add_supplier(Supplier(supplier_id=name, name=name.upper()))
            tokens[name] = (await catalog.create_key(name, label="bench")).token
        routes = sku_routes(suppliers, skus_per_supplier)
        for route in routes:
            await catalog.set_route(route)
    finally:
        await mongo.close()
    return Prepared(tokens, len(routes))


@dataclass
class Measured:
    load: LoadResult
    orders: list[PlannedOrder]
    t0: float
    wall_minus_perf: float  # time.time() - time.perf_counter(): perf_counter moments as wall-clock time
    seen: dict[tuple[str, str], float]
    created: dict[tuple[str, str], str]
    missing: list[tuple[str, str]]
    drain_s: float
    ceiling_seen: dict[str, float]
    ceiling_t0: float  # the ceiling phase's order i was scheduled at ceiling_t0 + i / rate
    poll_load: dict[str, float | int]
    poll_idle: dict[str, float | int]
    cpu_idle: dict[str, float]
    cpu_load: dict[str, float]
    peak_rss: dict[str, float]
    idle_s: float
    other_benchmarks: list[int]
    other_cpu_s: float  # CPU used during load + drain by processes that are not this benchmark's
    profile_path: Path | None
    gc_load: dict[str, GcPauses]  # dispatch's collections during load + drain, by generation
    inserts_load: dict[str, tuple[int, float]]  # collection -> (insert_many calls, documents) in that time


async def _measure(
    stack: LocalStack,
    prepared: Prepared,
    *,
    rate: float,
    duration: float,
    wait_s: float,
    idle: float,
    drain_timeout: float,
    skus_per_supplier: int,
    seed: int,
    profile: bool,
    profile_seconds: int,
    stamp: str,
) -> Measured:
    suppliers = len(prepared.tokens)
    kafka = KafkaSettings(bootstrap_servers=stack.kafka_bootstrap)
    await ensure_topics(kafka, (*ALL_TOPICS, CEILING_TOPIC))
    base_id = random.Random(seed).randrange(10**17, 9 * 10**17) * 10
    total = int(rate * duration)
    warmup = plan_orders(
        _WARMUP_ORDERS,
        suppliers=suppliers,
        skus_per_supplier=skus_per_supplier,
        first_order_id=base_id,
        seed=seed,
    )
    orders = plan_orders(
        total,
        suppliers=suppliers,
        skus_per_supplier=skus_per_supplier,
        first_order_id=base_id + _WARMUP_ORDERS,
        seed=seed + 1,
    )
    now = datetime.now(UTC)
    messages: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = []
    for order in [*warmup, *orders]:  # serialized before the clock starts
        event = paid_event(order, now)
        messages.append((event.kafka_key, event.to_kafka_value(), event_headers(event)))

    producer = create_producer(kafka, client_id="bench-dispatch-orders")
    await producer.start()
    watchers = FeedWatchers(stack.service_url("dispatch"), prepared.tokens, wait_s=wait_s)
    ceiling = Ceiling(stack.kafka_bootstrap, kafka.fetch_max_wait_ms)
    pids = {**stack.process_ids(), BENCH_PROCESS: os.getpid()}
    profiler: asyncio.Task[int] | None = None
    profile_path = RESULTS / f"dispatch-profile-{stamp}.speedscope.json" if profile else None
    try:
        await watchers.start()

        async def send(i: int, topic: str = ORDERS.name) -> bool:
            key, value, headers = messages[i]
            await producer.send_and_wait(topic, value=value, key=key, headers=headers)
            return True

        # Warm-up: connections, routes loaded, consumer group assigned; every dispatch order seen.
        console.print(f"warm-up: {_WARMUP_ORDERS} orders ...")
        await open_loop("warm-up", send, rate=20, duration_s=_WARMUP_ORDERS / 20)
        expected_warmup = [(o.order_id, s) for o in warmup for s in o.suppliers]
        left = await watchers.wait_for(expected_warmup, timeout_s=120)
        if left:
            raise RuntimeError(
                f"warm-up: {len(left)} dispatch orders never reached the feeds, e.g. {left[:3]}"
            )

        # Idle: every supplier parked in a long poll, no orders.
        console.print(f"idle: {suppliers} suppliers long-polling, no orders, {idle:g} s ...")
        cpu_a = {n: _proc_figures(p)[0] for n, p in pids.items()}
        polls_a, idle_start = watchers.stats.copy(), time.perf_counter()
        await asyncio.sleep(idle)
        idle_s = time.perf_counter() - idle_start
        poll_idle = watchers.stats.since(polls_a, idle_s, suppliers)

        others = set(other_busy_processes((), stack.run_dir))
        cpu_b = {n: _proc_figures(p)[0] for n, p in pids.items()}
        metrics_b = await scrape_metrics(stack.service_url("dispatch"))
        machine_b = machine_cpu_s()
        polls_b = watchers.stats.copy()
        if profile_path is not None:
            # The last `profile_seconds` of the load: the largest state, the steady queue.
            delay = max(0.0, duration - profile_seconds - 2)
            profiler = asyncio.create_task(_profile(pids["dispatch"], profile_path, delay, profile_seconds))

        def tick(result: LoadResult) -> None:
            if int(time.perf_counter() - t0) % 10 == 0:
                others.update(other_busy_processes((), stack.run_dir))
            console.print(
                f"  published {result.sent}, acked {result.ok}, failed {result.failed}; "
                f"dispatch orders seen {len(watchers.seen) - len(expected_warmup)}",
                end="\r",
            )

        console.print(f"load: {rate:g} paid orders/s for {duration:g} s (open loop) ...")
        # open_loop's clock starts within microseconds of this one (the coroutine runs at once):
        # order i is scheduled at t0 + i / rate.
        t0 = time.perf_counter()
        wall_minus_perf = time.time() - t0
        load = await open_loop(
            "publish OrderPaid",
            lambda i: send(len(warmup) + i),
            rate=rate,
            duration_s=duration,
            on_tick=tick,
        )
        console.print()
        expected = [(o.order_id, s) for o in orders for s in o.suppliers]
        console.print(f"draining: waiting for the last of {len(expected)} dispatch orders ...")
        missing = await watchers.wait_for(expected, timeout_s=drain_timeout)
        end = time.perf_counter()
        drain_s = max(0.0, end - t0 - duration)
        figures = {n: _proc_figures(p) for n, p in pids.items()}
        metrics_end = await scrape_metrics(stack.service_url("dispatch"))
        gc_load = gc_pauses_between(gc_pauses(metrics_b), gc_pauses(metrics_end))
        batches_b = insert_batches(metrics_b)
        inserts_load = {
            collection: (
                calls - batches_b.get(collection, (0, 0.0))[0],
                documents - batches_b.get(collection, (0, 0.0))[1],
            )
            for collection, (calls, documents) in insert_batches(metrics_end).items()
        }
        machine_used = machine_cpu_s() - machine_b
        poll_load = watchers.stats.since(polls_b, end - t0, suppliers)
        others.update(other_busy_processes((), stack.run_dir))
        if profiler is not None:
            await asyncio.wait_for(profiler, timeout=duration + profile_seconds + 60)

        console.print(
            f"ceiling: the same {len(orders)} messages at {rate:g}/s to a bare aiokafka consumer "
            f"({CEILING_TOPIC.name}) ..."
        )
        await ceiling.start()
        ceiling_t0 = time.perf_counter()
        await open_loop(
            "publish (ceiling)",
            lambda i: send(len(warmup) + i, CEILING_TOPIC.name),
            rate=rate,
            duration_s=duration,
        )
        await asyncio.sleep(2)  # the last fetches
        ceiling_seen = await ceiling.stop()
    finally:
        await watchers.stop()
        if ceiling.process.is_alive():
            await ceiling.stop()
        await producer.stop()
    return Measured(
        load=load,
        orders=orders,
        t0=t0,
        wall_minus_perf=wall_minus_perf,
        seen=dict(watchers.seen),
        created=dict(watchers.created),
        missing=missing,
        drain_s=drain_s,
        ceiling_seen=ceiling_seen,
        ceiling_t0=ceiling_t0,
        poll_load=poll_load,
        poll_idle=poll_idle,
        cpu_idle={n: cpu_b[n] - cpu_a.get(n, 0.0) for n in cpu_b},
        cpu_load={n: figures[n][0] - cpu_b.get(n, 0.0) for n in figures},
        peak_rss={n: figures[n][1] for n in figures},
        idle_s=idle_s,
        other_benchmarks=sorted(others),
        other_cpu_s=max(0.0, machine_used - sum(figures[n][0] - cpu_b.get(n, 0.0) for n in figures)),
        profile_path=profile_path,
        gc_load=gc_load,
        inserts_load=inserts_load,
    )


async def _profile(pid: int, output: Path, delay: float, seconds: int) -> int:
    """py-spy on a process and its children, `delay` seconds from now, for `seconds` (non-blocking sampling:
    the profiled process is not paused)."""
    await asyncio.sleep(delay)
    RESULTS.mkdir(exist_ok=True)
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("py-spy")),
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(seconds),
        "--rate",
        "100",
        "--nonblocking",
        "--subprocesses",  # a uvicorn master's workers
        "--format",
        "speedscope",
        "--output",
        str(output),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await process.wait()


# ---- the report ----------------------------------------------------------------------------------------


def _ms(h: HdrHistogram, percentile: float) -> float:
    return float(h.get_value_at_percentile(percentile)) / 1000


def _report(
    measured: Measured,
    *,
    rate: float,
    duration: float,
    suppliers: int,
    routes: int,
    wait_s: float,
    stamp: str,
) -> Path:
    m = measured
    rate_of = 1.0 / rate
    feed = new_histogram()
    ceiling = new_histogram()
    # The feed latency in two stages, split at the dispatch order's created_at (dispatch's clock,
    # the same machine's): consumed and planned, then stored, announced and polled.
    to_created = new_histogram()
    created_to_seen = new_histogram()
    samples: list[tuple[float, int]] = []
    expected = 0
    ceiling_missing = 0
    for i, order in enumerate(m.orders):
        scheduled = m.t0 + i * rate_of
        for supplier in order.suppliers:
            expected += 1
            seen = m.seen.get((order.order_id, supplier))
            if seen is None:
                continue
            latency_us = max(1, int((seen - scheduled) * 1_000_000))
            feed.record_value(min(latency_us, _HIGHEST_US))
            samples.append((seen - m.t0, latency_us))
            created = datetime.fromisoformat(m.created[(order.order_id, supplier)]).timestamp()
            created_perf = created - m.wall_minus_perf
            for stage, start, end in (
                (to_created, scheduled, created_perf),
                (created_to_seen, created_perf, seen),
            ):
                stage.record_value(min(max(1, int((end - start) * 1_000_000)), _HIGHEST_US))
        consumed = m.ceiling_seen.get(order.order_id)
        if consumed is None:
            ceiling_missing += 1
        else:
            ceiling_scheduled = m.ceiling_t0 + i * rate_of
            ceiling.record_value(min(max(1, int((consumed - ceiling_scheduled) * 1_000_000)), _HIGHEST_US))
    seen_count = feed.get_total_count()
    load = m.load

    table = Table(title=f"Paid order → supplier feed at {rate:g} orders/s for {duration:g} s (open loop)")
    for column in ("path", "count", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"):
        table.add_column(column, justify="right")
    for name, h in (
        ("dispatch order in the supplier's feed", feed),
        ("  stage 1: published → dispatch order created", to_created),
        ("  stage 2: created → stored, announced, polled", created_to_seen),
        ("ceiling (own phase): bare aiokafka consumer, one hop", ceiling),
        ("publish ack (acks=all)", load.histogram),
    ):
        if h.get_total_count() == 0:
            table.add_row(name, "0", "-", "-", "-", "-", "-")
            continue
        table.add_row(
            name,
            str(h.get_total_count()),
            *(f"{_ms(h, p):.1f}" for p in (50, 90, 99, 99.9)),
            f"{h.get_max_value() / 1000:.1f}",
        )
    console.print(table)
    split = sum(1 for o in m.orders if len(o.suppliers) > 1)
    console.print(
        f"orders published {load.sent} (acked {load.ok}, failed {load.failed}, "
        f"{split} split across suppliers); dispatch orders expected {expected}, seen {seen_count}, "
        f"missing {len(m.missing)}; drain after the last publish {m.drain_s:.2f} s; "
        f"bare consumer missed {ceiling_missing}"
    )
    p99 = _ms(feed, 99) if seen_count else math.inf
    met = bool(seen_count) and not m.missing and p99 <= TARGET_P99_MS
    if p99 <= TARGET_P99_MS:
        verdict = f"p99 {p99:.0f} ms ≤ {TARGET_P99_MS:.0f} ms: met with {TARGET_P99_MS - p99:.0f} ms to spare"
    else:
        verdict = (
            f"p99 {p99:.0f} ms > {TARGET_P99_MS:.0f} ms: MISSED by {p99 - TARGET_P99_MS:.0f} ms "
            f"({p99 / TARGET_P99_MS:.1f}× the target)"
        )
    all_seen = "every dispatch order seen" if not m.missing else f"{len(m.missing)} dispatch orders MISSING"
    console.print(
        f"[{'green' if met else 'red'}]target {'met' if met else 'MISSED'}[/]: {verdict}; {all_seen}"
    )

    buckets = bucket_latencies(samples, 5)
    acked_per_s = {second: count for second, count, _ in load.timeline}
    timeline = Table(title="Over time (5 s windows, by when the dispatch order was seen)")
    for column in ("from s", "acked/s", "seen/s", "p50 ms", "p99 ms", "max ms"):
        timeline.add_column(column, justify="right")
    for b in buckets:
        acked = sum(acked_per_s.get(s, 0) for s in range(b.start_s, b.start_s + 5))
        timeline.add_row(
            str(b.start_s),
            f"{acked / 5:.0f}",
            f"{b.count / 5:.0f}",
            f"{b.p50_ms:.0f}",
            f"{b.p99_ms:.0f}",
            f"{b.max_ms:.0f}",
        )
    console.print(timeline)

    polls = Table(title=f"Long polls ({suppliers} suppliers, wait_s={wait_s:g})")
    polls.add_column("figure")
    polls.add_column(f"idle {m.idle_s:.0f} s", justify="right")
    polls.add_column("load + drain", justify="right")
    for key in m.poll_load:
        polls.add_row(key, str(m.poll_idle.get(key, "")), str(m.poll_load[key]))
    console.print(polls)

    collections = Table(
        title="dispatch's garbage collections during load + drain (the event loop stands still)"
    )
    for column in ("generation", "collections", "total s", "over 100 ms"):
        collections.add_column(column, justify="right")
    for generation, pauses in m.gc_load.items():
        collections.add_row(generation, str(pauses.count), f"{pauses.total_s:.2f}", str(pauses.over_100ms))
    console.print(collections)

    inserts = Table(title="dispatch's batched inserts during load + drain")
    for column in ("collection", "insert_many calls", "documents", "documents per call"):
        inserts.add_column(column, justify="right")
    for collection, (calls, documents) in m.inserts_load.items():
        inserts.add_row(
            collection, str(calls), f"{documents:.0f}", f"{documents / calls:.1f}" if calls else "-"
        )
    console.print(inserts)

    processes = Table(title="Processes (CPU seconds, peak RSS)")
    for column in (
        "process",
        f"CPU s idle {m.idle_s:.0f} s",
        "CPU s load + drain",
        "CPU % of one core",
        "peak RSS MiB",
    ):
        processes.add_column(column, justify="right")
    window = duration + m.drain_s
    for name in sorted(m.cpu_load):
        processes.add_row(
            name,
            f"{m.cpu_idle.get(name, 0.0):.1f}",
            f"{m.cpu_load[name]:.1f}",
            f"{100 * m.cpu_load[name] / window:.0f}",
            f"{m.peak_rss[name]:.0f}",
        )
    console.print(processes)
    quiet = not m.other_benchmarks
    others = f"other processes used {m.other_cpu_s:.1f} CPU s ({100 * m.other_cpu_s / window:.0f}% of a core)"
    console.print(
        f"machine: no other benchmark seen during the run; {others}"
        if quiet
        else f"[yellow]machine: NOT quiet: other benchmark processes {m.other_benchmarks}; {others}[/]"
    )

    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"dispatch-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "config": {
                    "rate_per_s": rate,
                    "duration_s": duration,
                    "suppliers": suppliers,
                    "routes": routes,
                    "wait_s": wait_s,
                    "lines_per_order": "1-3, distinct SKUs, uniform",
                    "cpus": os.cpu_count(),
                },
                "orders": {
                    "published": load.sent,
                    "acked": load.ok,
                    "failed": load.failed,
                    "split_across_suppliers": split,
                    "publish_ack": load.summary(),
                },
                "dispatch_orders": {
                    "expected": expected,
                    "seen": seen_count,
                    "missing": len(m.missing),
                    "missing_examples": m.missing[:20],
                    "drain_s": round(m.drain_s, 2),
                },
                "feed_latency": histogram_summary(feed),
                "feed_latency_stages": {
                    "published_to_created": histogram_summary(to_created),
                    "created_to_seen": histogram_summary(created_to_seen),
                },
                "ceiling_one_hop": {**histogram_summary(ceiling), "missed": ceiling_missing},
                "target": {"p99_ms": TARGET_P99_MS, "met": met, "verdict": verdict},
                "long_polls": {"idle": m.poll_idle, "load_and_drain": m.poll_load},
                "dispatch_gc_load_and_drain": {g: asdict(p) for g, p in m.gc_load.items()},
                "dispatch_inserts_load_and_drain": {
                    c: {"calls": calls, "documents": documents}
                    for c, (calls, documents) in m.inserts_load.items()
                },
                "processes": {
                    n: {
                        "cpu_s_idle": round(m.cpu_idle.get(n, 0.0), 2),
                        "cpu_s_load_and_drain": round(m.cpu_load[n], 2),
                        "peak_rss_mib": round(m.peak_rss[n], 1),
                    }
                    for n in m.cpu_load
                },
                "timeline_per_s": [b.__dict__ for b in bucket_latencies(samples, 1)],
                "publish_timeline_per_s": load.timeline,
                "machine": {
                    "no_other_benchmark": quiet,
                    "other_benchmark_pids": m.other_benchmarks,
                    "other_processes_cpu_s": round(m.other_cpu_s, 1),
                    "load_average_at_end": os.getloadavg(),
                },
                "profile": str(m.profile_path) if m.profile_path else None,
            },
            indent=2,
        )
    )
    console.print(f"results: {out}")
    return out


def _print_profile(path: Path) -> None:
    if not path.exists():
        console.print(f"[yellow]no profile at {path} (py-spy failed?)[/]")
        return
    profile = json.loads(path.read_text())
    rows, samples = speedscope_top(profile)
    table = Table(title=f"dispatch process, py-spy ({samples} samples): top functions by self time")
    for column in ("function", "self %", "incl. %"):
        table.add_column(column, justify="right" if column != "function" else "left")
    for name, own, inclusive in rows:
        table.add_row(name, f"{100 * own:.1f}", f"{100 * inclusive:.1f}")
    console.print(table)
    ours = Table(title="the project's functions by inclusive time")
    ours.add_column("function")
    ours.add_column("incl. %", justify="right")
    for name, share in speedscope_inclusive(profile):
        ours.add_row(name, f"{100 * share:.1f}")
    console.print(ours)
    console.print(f"profile (open in https://www.speedscope.app): {path}")


def bench_dispatch(
    rate: Annotated[float, typer.Option(help="Paid orders per second (open loop).")] = 200,
    duration: Annotated[float, typer.Option(help="Seconds of load.")] = 60,
    suppliers: Annotated[int, typer.Option(help="Suppliers, each long-polling its feed.")] = 100,
    skus_per_supplier: Annotated[int, typer.Option(help="SKU routes per supplier.")] = 5,
    wait_s: Annotated[float, typer.Option(help="Long-poll wait_s of every feed request.")] = 20,
    idle: Annotated[float, typer.Option(help="Seconds of parked long polls measured before the load.")] = 10,
    drain_timeout: Annotated[float, typer.Option(help="Seconds to wait for the last dispatch orders.")] = 120,
    seed: Annotated[int, typer.Option(help="Seed of the order mix.")] = 7,
    profile: Annotated[bool, typer.Option(help="py-spy (speedscope) of dispatch during the load.")] = False,
    profile_seconds: Annotated[int, typer.Option(help="Seconds profiled, at the end of the load.")] = 20,
) -> None:
    """Paid-order event → dispatch order in the supplier's feed (target: p99 ≤ 1 s at 200 orders/s),
    with every supplier long-polling; a bare aiokafka consumer of the same messages is the ceiling."""
    run_dir = Path(tempfile.mkdtemp(prefix="lvyue-bench-dispatch-"))
    stamp = time.strftime("%Y%m%dT%H%M%S")
    stack = LocalStack(
        run_dir=run_dir,
        ports=StackPorts.free(services=["dispatch"]),
        components=("kafka", "ferretdb", "dispatch"),
    )
    busy = other_busy_processes(())
    if busy:
        console.print(f"[yellow]another benchmark is running (pids {busy}): figures will be noisy[/]")
    console.print(f"starting a private stack in {run_dir} ...")
    for name in ("aiokafka", "kafka", "pymongo"):  # health probes of starting components
        logging.getLogger(name).setLevel(logging.CRITICAL)
    stack.start()
    try:
        stack.wait_healthy(timeout_s=240)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            console.print(
                f"registering {suppliers} suppliers with keys and {suppliers * skus_per_supplier} routes ..."
            )
            prepared = runner.run(_prepare(stack, suppliers, skus_per_supplier))
            measured = runner.run(
                _measure(
                    stack,
                    prepared,
                    rate=rate,
                    duration=duration,
                    wait_s=wait_s,
                    idle=idle,
                    drain_timeout=drain_timeout,
                    skus_per_supplier=skus_per_supplier,
                    seed=seed,
                    profile=profile,
                    profile_seconds=min(profile_seconds, int(duration)),
                    stamp=stamp,
                )
            )
    finally:
        console.print("stopping the private stack ...")
        stack.stop()
    _report(
        measured,
        rate=rate,
        duration=duration,
        suppliers=suppliers,
        routes=prepared.routes,
        wait_s=wait_s,
        stamp=stamp,
    )
    if measured.profile_path is not None:
        _print_profile(measured.profile_path)
