"""`lvyue bench e2e`: the end-to-end sale on a private local stack with everything on it.

Every component runs as in a local production-like run (supervisord, one process each: Kafka,
FerretDB, Prometheus, the WeChat and carrier stand-ins, order_ingest's webhook and worker, dispatch,
logistics, aftersale). N shops are registered in the WeChat stand-in (callback: order_ingest's
webhook) and in our database; suppliers get API keys, SKU routes and return addresses; a fleet of
supplier bots (sim.suppliers, in its own process) long-polls the supplier API and accepts (~0.2 s)
and ships (~0.5 s after accepting) every dispatch order.

Open loop: paid orders are created in the WeChat stand-in (`POST /sim/orders {paid: true}`, which
pushes signed, encrypted webhooks to the shop's callback) at a fixed rate whatever happens
downstream. Per order the stages are timed from the order's scheduled creation time:

    created → order_paid on `orders` → dispatch_offered on `dispatch` → dispatch_shipped
            → delivery/send received by the WeChat stand-in

Kafka times are the records' own timestamps (the producing service's clock when it sent them), read
after the run by a plain aiokafka consumer without a group, so reading costs nothing during the load;
delivery/send times are the stand-in's `at` of each call (`GET /sim/calls`). All on one machine, one
clock. HdrHistogram per stage, no coordinated omission.

Before the load (and before the bots start), the stack is measured at rest for `--idle-seconds`
(30 s): CPU per process, and for the line (the services, Kafka and FerretDB; the target is 5% of one
core). CPU per order is shown gross and net of that baseline (each process's CPU at rest over the
same window subtracted).

The reference chain, run after the line on the same stack (`ops/bench_reference.py` has the details):
the line's work per order as measured in this run (HTTP exchanges, Kafka messages consumed, documents
written, per order), done bare for the same orders at the same rate: aiokafka relays (acks=all) round
a ring of topics, POSTs to a bare ASGI echo under uvicorn, `insert_many` into the same FerretDB per
consumed batch. Its CPU per order (its processes in full, Kafka's and FerretDB's above their rest)
is the yardstick of the line's (every process but the order driver): the reference gate asks the
line for at most twice the reference's. Its latency is the ceiling beside paid → supplier feed: the
message after the chain's first two relays, as the line has two consume→produce relays (the ingest
worker, dispatch) and three topics between WeChat's webhook and the dispatch event.

One simulated clock, 60× real time: the bots accept a few simulated seconds after the offer and ship
half a minute later, and the carrier stand-in scans a parcel on the same clock (picked up two
simulated hours after the waybill: two minutes into the run). In a live sale the parcels of the
spike's minute are picked up hours later; the line meanwhile carries the tracking of earlier days'
parcels, a few pushes a second. (The local stack's own 1500× would track every parcel of the run
during the spike: 25× faster than the suppliers ship.)

Why 100 orders/s by default, not the 200/s of the target: with everything on two cores each paid
order passes through every process of the line (two pushes through the webhook, the ingest worker
fetching the order from the stand-in, dispatch, the bots' long polls, accept and ship calls, logistics
and delivery/send, Kafka and FerretDB in between). The report's "work per order" table counts it:
the CPU each process spent per order, and the HTTP requests, Kafka messages and database commands
each service handled per order. Two cores at 200 orders/s give 10 ms of CPU per order; the line
spends several times that, so a run at 200/s queues for its whole length and shows little beyond
the miss. The default is half the target rate; `--rate 200` measures the target rate.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, astuple, dataclass, field
from multiprocessing.queues import Queue as MpQueue
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
import uvloop
from hdrh.histogram import HdrHistogram
from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from ops.bench import _descendants, _proc_figures
from ops.bench_dispatch import (
    _profile,
    bucket_latencies,
    histogram_series_by,
    histogram_summary,
    machine_cpu_s,
    new_histogram,
    other_busy_processes,
    scrape_metrics,
)
from ops.bench_kafka import KafkaRecord, end_offsets, read_records
from ops.bench_reference import (
    RELAYS,
    SHARED_WITH_THE_LINE,
    ReferenceRun,
    ReferenceWork,
    chain_latencies,
    charged_cpu_s,
    planned_work,
    run_reference,
)
from ops.helper_process import Helper
from ops.loadgen import HttpClient, LoadResult, http_request, open_loop
from ops.metrics_text import MetricsText, order_gets
from ops.stack import ALL_COMPONENTS, REPO_ROOT, LocalStack, StackPorts
from services.dispatch.catalog import Catalog, Supplier
from services.dispatch.domain.routing import Route
from shared.db import create_mongo_client, database, ensure_indexes
from shared.events.dispatch import ShippingAddress
from shared.kafka.admin import ensure_topics
from shared.kafka.topics import ALL_TOPICS, DISPATCH, ORDERS
from shared.settings import KafkaSettings, MongoSettings
from shared.wechat.shops import INDEXES, Shop, ShopRepository
from sim.suppliers import Behaviour, Delay, FleetSettings, SupplierConfig, SupplierFleet

console = Console()
log = logging.getLogger(__name__)

RESULTS = REPO_ROOT / "bench-results"
TARGET_P99_MS = 1000.0  # paid → supplier feed
TARGET_RATE = 200.0
CORES_OF_THE_TARGET = 2  # "the 2-core machine with everything on it"
DELIVERY_SEND = "/channels/ec/order/delivery/send"
BENCH_PROCESS = "bench process (order driver)"
FLEET_PROCESS = "supplier bots (sim.suppliers)"
PROFILED_PROCESSES = (
    "order_ingest",
    "order_ingest_worker",
    "dispatch",
    "logistics",
    "aftersale",
    "wechat_sim",
    "carrier_sim",
    FLEET_PROCESS,
)
NOT_THE_LINE = (BENCH_PROCESS,)  # left out of the CPU per order of every process (and of the reference's)
STAND_INS_AND_BOTS = ("wechat_sim", "carrier_sim", FLEET_PROCESS)
LINE_CPU_TARGET_MS = 10.0  # the line (services, Kafka, FerretDB) per order
STAND_INS_CPU_TARGET_MS = 4.0
# The line at rest (issue 22): the services, Kafka and FerretDB, with the stack up and nothing moving;
# the stand-ins, the bots and Prometheus are not ours to run in production.
LINE_AT_REST = (
    "order_ingest",
    "order_ingest_worker",
    "dispatch",
    "logistics",
    "aftersale",
    "kafka",
    "ferretdb",
)
IDLE_TARGET_PCT = 5.0  # of one core
IDLE_SETTLE_S = 10.0  # after the registrations, before the baseline: routes reloaded, writes flushed
_HIGHEST_US = 3_600_000_000
# Kafka hops between WeChat's webhook and the dispatch event: topics written, and the consume→produce
# relays between them (the ingest worker, dispatch). The ceiling beside paid → supplier feed is the
# reference chain's message after as many relays.
KAFKA_TOPIC_HOPS = 3
# The line's CPU per order against the reference chain's (the same work per order, built bare).
REFERENCE_RATIO_MAX = 2.0
CONNECTIONS = 32
WARMUP_ORDERS = 20
APP_SECRET, TOKEN = "benchsecret", "benchtoken"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
WAREHOUSE = ShippingAddress(
    name="义乌仓",
    phone="0579-85550000",
    province="浙江省",
    city="金华市",
    county="义乌市",
    detail="福田街道 88 号",
)
# Stages, in the order an order passes them: (name, from event, to event).
CREATED, PAID, OFFERED, ALL_OFFERED, SHIPPED, TOLD = (
    "created",
    "order_paid",
    "dispatch_offered",
    "all_offered",
    "dispatch_shipped",
    "delivery_send",
)
STAGES: tuple[tuple[str, str, str], ...] = (
    ("created → order_paid (webhooks, ingest worker)", CREATED, PAID),
    ("order_paid → first dispatch_offered (dispatch)", PAID, OFFERED),
    ("created → every dispatch_offered (paid → supplier feed)", CREATED, ALL_OFFERED),
    ("first dispatch_offered → first dispatch_shipped (bots: ~0.2 s + ~0.5 s)", OFFERED, SHIPPED),
    ("first dispatch_shipped → delivery/send at WeChat (logistics)", SHIPPED, TOLD),
    ("created → delivery/send at WeChat (end to end)", CREATED, TOLD),
)
TARGET_STAGE = STAGES[2][0]


# ---- the workload (pure) ----------------------------------------------------------------------------


def supplier_id(n: int) -> str:
    return f"e2e-s{n:03d}"


def shop_id(n: int) -> str:
    return f"e2e-shop{n:02d}"


def shop_appid(n: int) -> str:
    return f"wxe2ebench{n:09d}"


def product_of(sku: int) -> tuple[str, str]:
    """(product_id, sku_id) of SKU number k: WeChat ids are digits."""
    return str(5_000_000 + sku), str(6_000_000 + sku)


@dataclass(frozen=True)
class E2EOrder:
    order_id: str
    shop: int
    skus: tuple[int, ...]  # SKU k belongs to supplier k % suppliers
    suppliers: frozenset[str]


def plan_e2e_orders(
    count: int,
    *,
    shops: int,
    suppliers: int,
    skus_per_supplier: int,
    first_order_id: int,
    seed: int,
    max_lines: int = 2,
) -> list[E2EOrder]:
    """`count` orders, round-robin over the shops, of 1..max_lines distinct SKUs drawn uniformly; an
    order with lines of several suppliers splits into one dispatch order per supplier."""
    rng = random.Random(seed)
    skus = suppliers * skus_per_supplier
    orders = []
    for i in range(count):
        chosen = tuple(rng.sample(range(skus), rng.randint(1, min(max_lines, skus))))
        owners = frozenset(supplier_id(k % suppliers) for k in chosen)
        orders.append(E2EOrder(str(first_order_id + i), i % shops, chosen, owners))
    return orders


def e2e_routes(shops: int, suppliers: int, skus_per_supplier: int) -> list[Route]:
    routes = []
    for s in range(shops):
        for k in range(suppliers * skus_per_supplier):
            product, sku = product_of(k)
            routes.append(
                Route(
                    shop_id=shop_id(s), supplier_id=supplier_id(k % suppliers), product_id=product, sku_id=sku
                )
            )
    return routes


def order_body(order: E2EOrder) -> dict[str, Any]:
    products = []
    for k in order.skus:
        product, sku = product_of(k)
        products.append(
            {"product_id": product, "sku_id": sku, "sku_cnt": 1, "sale_price": 1990, "title": f"商品 {k}"}
        )
    return {"appid": shop_appid(order.shop), "order_id": order.order_id, "products": products, "paid": True}


@dataclass
class OrderTimes:
    """Wall-clock seconds of what happened to one order (None: not seen)."""

    created: float
    order_paid: float | None = None
    offered: list[float] = field(default_factory=list)  # one per dispatch order
    shipped: list[float] = field(default_factory=list)
    told: list[float] = field(default_factory=list)  # successful delivery/send calls

    def at(self, point: str, dispatch_orders: int) -> float | None:
        if point == CREATED:
            return self.created
        if point == PAID:
            return self.order_paid
        if point == ALL_OFFERED:
            return max(self.offered) if len(self.offered) >= dispatch_orders else None
        chosen = {OFFERED: self.offered, SHIPPED: self.shipped, TOLD: self.told}[point]
        return min(chosen) if chosen else None


def collect_times(
    orders: Sequence[E2EOrder],
    scheduled: Sequence[float],
    records: Iterable[KafkaRecord],
    calls: Iterable[dict[str, Any]],
) -> dict[str, OrderTimes]:
    """Per order id: its scheduled creation (wall clock) and the first time of each event (Kafka
    record timestamps; delivery/send calls answered errcode 0)."""
    times = {o.order_id: OrderTimes(created=s) for o, s in zip(orders, scheduled, strict=True)}
    for record in records:
        t = times.get(record.key)
        if t is None:
            continue
        if record.topic == ORDERS.name and record.event_type == "order_paid":
            if t.order_paid is None or record.timestamp_s < t.order_paid:
                t.order_paid = record.timestamp_s
        elif record.topic == DISPATCH.name and record.event_type == "dispatch_offered":
            t.offered.append(record.timestamp_s)
        elif record.topic == DISPATCH.name and record.event_type == "dispatch_shipped":
            t.shipped.append(record.timestamp_s)
    for call in calls:
        if call.get("path") != DELIVERY_SEND or call.get("errcode", 0) != 0:
            continue
        request = call.get("request") or {}
        t = times.get(str(request.get("order_id", "")))
        if t is not None:
            t.told.append(float(call["at"]))
    return times


@dataclass
class StageFigures:
    histogram: HdrHistogram
    missing: int
    samples: list[tuple[float, int]]  # (seconds since the first scheduled order when reached, µs)


def stage_figures(
    orders: Sequence[E2EOrder], times: dict[str, OrderTimes], t0_wall: float
) -> dict[str, StageFigures]:
    """HdrHistogram per stage (µs), orders that never reached the stage's end (missing), and samples
    for the timeline. A negative interval (clock granularity between processes) counts as 1 µs."""
    figures = {name: StageFigures(new_histogram(), 0, []) for name, _, _ in STAGES}
    for order in orders:
        t = times[order.order_id]
        for name, start, end in STAGES:
            began, reached = t.at(start, len(order.suppliers)), t.at(end, len(order.suppliers))
            if began is None or reached is None:
                figures[name].missing += 1
                continue
            latency_us = min(max(1, int((reached - began) * 1_000_000)), _HIGHEST_US)
            figures[name].histogram.record_value(latency_us)
            figures[name].samples.append((reached - t0_wall, latency_us))
    return figures


def per_second_counts(instants: Iterable[float], t0: float) -> dict[int, int]:
    counts: dict[int, int] = {}
    for at in instants:
        second = int(max(0.0, at - t0))
        counts[second] = counts.get(second, 0) + 1
    return counts


def timeline(
    figures: dict[str, StageFigures], created_per_s: dict[int, int], seconds: int
) -> list[dict[str, float | int]]:
    """Per second since the start: orders created, orders fully offered and told (by when it
    happened), and p50/p99 of created → every dispatch_offered and of end to end in that second."""
    offered = {b.start_s: b for b in bucket_latencies(figures[TARGET_STAGE].samples, 1)}
    told = {b.start_s: b for b in bucket_latencies(figures[STAGES[-1][0]].samples, 1)}
    last = max([seconds - 1, *offered, *told])
    rows: list[dict[str, float | int]] = []
    for s in range(last + 1):
        o, t = offered.get(s), told.get(s)
        rows.append(
            {
                "second": s,
                "created": created_per_s.get(s, 0),
                "offered": o.count if o else 0,
                "offered_p50_ms": o.p50_ms if o else 0.0,
                "offered_p99_ms": o.p99_ms if o else 0.0,
                "told": t.count if t else 0,
                "told_p50_ms": t.p50_ms if t else 0.0,
                "told_p99_ms": t.p99_ms if t else 0.0,
            }
        )
    return rows


def target_verdict(p99_ms: float, rate: float) -> tuple[bool, str]:
    if math.isinf(p99_ms):
        return False, "nothing reached the supplier feed: MISSED"
    at = "" if rate >= TARGET_RATE else f" (at {rate:g}/s; the target is at {TARGET_RATE:g}/s)"
    if p99_ms <= TARGET_P99_MS:
        return rate >= TARGET_RATE, (
            f"p99 {p99_ms:.0f} ms ≤ {TARGET_P99_MS:.0f} ms: "
            f"met with {TARGET_P99_MS - p99_ms:.0f} ms to spare{at}"
        )
    return False, (
        f"p99 {p99_ms:.0f} ms > {TARGET_P99_MS:.0f} ms: MISSED by {p99_ms - TARGET_P99_MS:.0f} ms "
        f"({p99_ms / TARGET_P99_MS:.1f}× the target){at}"
    )


# ---- the supplier bots' process ----------------------------------------------------------------------


def _fleet_process(settings_json: str, ready: MpEvent, stop: MpEvent, out: MpQueue[Any]) -> None:
    logging.basicConfig(level=logging.ERROR)
    os.nice(FLEET_NICENESS)  # the suppliers' own software: off our machine in production
    settings = FleetSettings.model_validate_json(settings_json)

    async def run() -> dict[str, int]:
        async with SupplierFleet(settings) as fleet:
            ready.set()
            await asyncio.to_thread(stop.wait)
            return fleet.stats().totals()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        out.put(runner.run(run()))


# ---- the run ------------------------------------------------------------------------------------------


DB_COMMANDS_SHOWN = 12


@dataclass(frozen=True)
class DbCommandFigure:
    """One service's database commands of one kind since it started (`lvyue_db_command_seconds`)."""

    service: str
    command: str
    collection: str
    result: str
    count: float
    seconds: float


def db_command_figures(metrics_by_service: dict[str, str]) -> list[DbCommandFigure]:
    """The services' database commands from their /metrics texts, most client-side time first."""
    figures = [
        DbCommandFigure(service, command, collection, result, t.get("count", 0.0), t.get("sum", 0.0))
        for service, text in metrics_by_service.items()
        for (command, collection, result), t in histogram_series_by(
            text, "lvyue_db_command_seconds", ("command", "collection", "result")
        ).items()
    ]
    return sorted(figures, key=lambda f: f.seconds, reverse=True)


# Requests that are not the line's work: Prometheus' scrapes and the stack's health checks.
HOUSEKEEPING_ROUTES = frozenset({"/metrics", "/healthz", "/readyz"})
OUTSIDE_CALL_COUNTERS = ("lvyue_wechat_api_calls", "lvyue_logistics_aggregator_calls")
DOCUMENT_WRITES = frozenset({"insert", "update", "findAndModify"})
# The line's work per paid order, as gates of the bench's own check (issue: "consume only what you
# act on", "once per order"): at most this many, or (order/get) exactly this many on the happy path.
KAFKA_HANDLED_MAX = 8.0
DOCUMENTS_WRITTEN_MAX = 8.0
ORDER_GETS_EXACT = 1.0
HTTP_EXCHANGES_MAX = 12.0


@dataclass(frozen=True)
class WorkGate:
    """One gate of the line's work per order: its value, its bound (`exact`: = rather than ≤)."""

    name: str
    value: float
    bound: float
    exact: bool = False
    unit: str = " per order"

    @property
    def met(self) -> bool:
        return abs(self.value - self.bound) < 0.01 if self.exact else self.value <= self.bound

    @property
    def verdict(self) -> str:
        relation = "=" if self.exact else "≤"
        judged = "met" if self.met else "MISSED"
        return f"{self.name}: {self.value:.2f}{self.unit}, {judged} ({relation} {self.bound:g})"


def work_gates(line: WorkCounts) -> list[WorkGate]:
    """The line's work per order (`line`, summed over the services and divided by the orders) against
    the gates. HTTP exchanges: each request a service answered (pushes, the bots' calls, carrier
    callbacks), each call a service made to a stand-in, and the order's creation at the stand-in."""
    return [
        WorkGate("Kafka messages consumed", line.kafka_handled, KAFKA_HANDLED_MAX),
        WorkGate("documents written", line.documents_written, DOCUMENTS_WRITTEN_MAX),
        WorkGate("order/get", line.order_gets, ORDER_GETS_EXACT, exact=True),
        WorkGate("HTTP exchanges", reference_work(line).http_exchanges, HTTP_EXCHANGES_MAX),
    ]


def reference_gate(line_ms: float, reference_ms: float) -> WorkGate:
    """The line's CPU per order against the reference chain's: at most REFERENCE_RATIO_MAX times it (a
    reference that spent nothing cannot be met)."""
    ratio = line_ms / reference_ms if reference_ms > 0 else math.inf
    return WorkGate("CPU per order, the line ÷ the reference chain", ratio, REFERENCE_RATIO_MAX, unit="×")


def reference_work(line: WorkCounts) -> ReferenceWork:
    """What the reference chain does per order: the line's HTTP exchanges (as its gate counts them),
    Kafka messages consumed and documents written per order."""
    return ReferenceWork(
        http_exchanges=line.http_answered + line.outside_calls + 1,
        kafka_consumed=line.kafka_handled,
        documents_written=line.documents_written,
    )


@dataclass(frozen=True)
class WorkCounts:
    """What one service has done, from its /metrics: HTTP requests it answered (housekeeping left out),
    Kafka messages its consumers handled, database commands it sent, and calls it made to the outside
    world (WeChat's API, the carrier aggregator)."""

    http_answered: float = 0.0
    kafka_handled: float = 0.0
    db_commands: float = 0.0
    outside_calls: float = 0.0
    documents_written: float = 0.0  # inserted or updated (deletes of superseded revisions left out)
    order_gets: float = 0.0  # of the outside calls: WeChat's order/get

    def since(self, earlier: WorkCounts) -> WorkCounts:
        return WorkCounts(*(a - b for a, b in zip(astuple(self), astuple(earlier), strict=True)))

    def per(self, orders: int) -> WorkCounts:
        return WorkCounts(*(v / max(1, orders) for v in astuple(self)))

    @staticmethod
    def total(counts: Iterable[WorkCounts]) -> WorkCounts:
        return WorkCounts(*(sum(column) for column in zip(*map(astuple, counts), strict=True)))


def work_counts(metrics_text: str) -> WorkCounts:
    """A service's work so far, from its /metrics text (counters' `_total` samples, the database
    command histogram's `_count`)."""
    metrics = MetricsText.parse(metrics_text)
    return WorkCounts(
        http_answered=metrics.total(
            "lvyue_http_requests", lambda labels: labels.get("route") not in HOUSEKEEPING_ROUTES
        ),
        kafka_handled=metrics.total("lvyue_kafka_messages_processed"),
        db_commands=metrics.count("lvyue_db_command_seconds"),
        outside_calls=sum(metrics.total(family) for family in OUTSIDE_CALL_COUNTERS),
        documents_written=metrics.total(
            "lvyue_db_documents_written", lambda labels: labels.get("command") in DOCUMENT_WRITES
        ),
        order_gets=order_gets(metrics),
    )


def work_between(before: dict[str, str], after: dict[str, str]) -> dict[str, WorkCounts]:
    """Each service's work between two scrapes of every service's /metrics (a service missing from
    either scrape is left out rather than counted from zero)."""
    return {
        service: work_counts(text).since(work_counts(before[service]))
        for service, text in after.items()
        if service in before
    }


async def _scrape_services(stack: LocalStack) -> dict[str, str]:
    texts: dict[str, str] = {}
    for service in stack.ports.services:
        try:
            texts[service] = await scrape_metrics(stack.private_url(service))
        except httpx.HTTPError as exc:
            log.warning("bench e2e: no metrics from %s: %s", service, exc)
    return texts


@dataclass
class Prepared:
    keys: dict[str, str]
    routes: int


async def _prepare(stack: LocalStack, shops: int, suppliers: int, skus_per_supplier: int) -> Prepared:
    settings = MongoSettings(uri=stack.mongo_uri)
    mongo = create_mongo_client(settings, app_name="bench-e2e")
    try:
        db = database(mongo, settings)
        await ensure_indexes(db, INDEXES)
        repository = ShopRepository(db)
        for n in range(shops):
            await repository.add(
                Shop(
                    shop_id=shop_id(n),
                    appid=shop_appid(n),
                    app_secret=SecretStr(APP_SECRET),
                    token=SecretStr(TOKEN),
                    encoding_aes_key=SecretStr(AES_KEY),
                )
            )
        catalog = Catalog(db)
        keys = {}
        for n in range(suppliers):
            name = supplier_id(n)
            await catalog.add_supplier(
                Supplier(supplier_id=name, name=f"{name} 供应链", return_address=WAREHOUSE)
            )
            keys[name] = (await catalog.create_key(name, label="bench-e2e")).token
        routes = e2e_routes(shops, suppliers, skus_per_supplier)
        for route in routes:
            await catalog.set_route(route)
    finally:
        await mongo.close()
    callback = stack.service_url("order_ingest")
    async with httpx.AsyncClient(base_url=stack.wechat_sim_url, timeout=10) as sim:
        for n in range(shops):
            shop = {
                "appid": shop_appid(n),
                "secret": APP_SECRET,
                "token": TOKEN,
                "encoding_aes_key": AES_KEY,
                "callback_url": f"{callback}/wechat/callback/{shop_id(n)}",
            }
            (await sim.post("/sim/shops", json=shop)).raise_for_status()
    return Prepared(keys, len(routes))


# Simulated seconds per real second, for the bots and the carrier stand-in alike (see the docstring).
TIME_SCALE = 60
FLEET_NICENESS = 10  # as the stack's downstream processes (ops.stack.PROCESS_NICENESS)


def supplier_call_rate(rate: float, suppliers: int) -> int:
    """Calls per second per supplier key in this scenario: dispatch's rate limit and the bots' pacing
    alike. Each paid order makes up to two dispatch orders (two lines, two suppliers), each accepted
    and shipped (two calls), plus a few long polls a second; twice that, for the spike's unevenness,
    and never under the API's default of 20. A fleet beyond the limit is refused with 429 and falls
    behind its feed, which the bench would then measure instead of the line (at 200/s and 20 calls/s
    per key, 3,640 orders were never told to WeChat)."""
    return max(20, math.ceil(2 * (rate * 2 * 2 / suppliers + 3)))


def fleet_settings(
    dispatch_url: str, keys: dict[str, str], seed: int, *, requests_per_s: float
) -> FleetSettings:
    """Suppliers that accept ~0.2 s after the offer and ship ~0.5 s after accepting: delays in supplier
    time (6-18 s, 24-36 s) divided by TIME_SCALE; no rejections, splits or partial shipments."""
    return FleetSettings(
        api_url=dispatch_url,
        suppliers=[SupplierConfig(supplier_id=s, api_key=k) for s, k in keys.items()],
        behaviour=Behaviour(
            accept_delay=Delay(min_s=6, max_s=18),
            ship_delay=Delay(min_s=24, max_s=36),
            reject_share=0,
            split_share=0,
            partial_share=0,
        ),
        time_scale=TIME_SCALE,
        seed=seed,
        feed_wait_s=20,
        requests_per_s=requests_per_s,
    )


async def _delivery_calls(sim: httpx.AsyncClient, after: int = 0) -> list[dict[str, Any]]:
    """The stand-in's delivery/send calls, those numbered after `after` only when given."""
    reply = await sim.get("/sim/calls", params={"path": DELIVERY_SEND, "after": after})
    reply.raise_for_status()
    calls: list[dict[str, Any]] = reply.json()
    return calls


def _told_orders(calls: Iterable[dict[str, Any]]) -> dict[str, int]:
    told: dict[str, int] = {}
    for call in calls:
        if call.get("errcode", 0) == 0:
            key = str((call.get("request") or {}).get("order_id", ""))
            told[key] = told.get(key, 0) + 1
    return told


async def _wait_told(
    sim: httpx.AsyncClient, orders: Sequence[E2EOrder], timeout_s: float, every_s: float = 2.0
) -> int:
    """Wait until every dispatch order of `orders` was told to WeChat; returns how many orders are not.
    Each look asks only for the calls since the last: the whole log is 12,000 calls by the end of a
    200/s run, and serving it every 2 s took the stand-in's CPU from the line it measures."""
    deadline = time.monotonic() + timeout_s
    told: dict[str, int] = {}
    seen = 0
    while True:
        newer = await _delivery_calls(sim, after=seen)
        seen = max((int(call["seq"]) for call in newer), default=seen)
        for order_id, count in _told_orders(newer).items():
            told[order_id] = told.get(order_id, 0) + count
        left = sum(1 for o in orders if told.get(o.order_id, 0) < len(o.suppliers))
        console.print(f"  orders not yet told to WeChat: {left}   ", end="\r")
        if not left or time.monotonic() > deadline:
            console.print()
            return left
        await asyncio.sleep(every_s)


def _order_requests(stack: LocalStack, orders: Sequence[E2EOrder]) -> list[bytes]:
    port = stack.ports.wechat_sim
    return [
        http_request("127.0.0.1", port, "/sim/orders", json.dumps(order_body(o)).encode(), "application/json")
        for o in orders
    ]


@dataclass
class Measured:
    load: LoadResult
    orders: list[E2EOrder]
    t0_wall: float
    records: list[KafkaRecord]
    calls: list[dict[str, Any]]
    not_told: int
    drain_s: float
    reference: ReferenceRun
    cpu_load: dict[str, float]
    peak_rss: dict[str, float]
    fleet_totals: dict[str, int]
    other_busy: list[int]
    other_cpu_s: float
    window_s: float
    profiles: dict[str, str]
    db_commands: list[DbCommandFigure]
    work: dict[str, WorkCounts]
    idle_pct: dict[str, float]  # CPU % of one core per process at rest, before the load
    idle_s: float


async def _go_profile(port: int, output: Path, delay: float, seconds: int) -> int:
    """FerretDB's CPU profile (Go's pprof; read it with `go tool pprof -top BINARY FILE`). Returns 0
    when written, like the py-spy runs."""
    await asyncio.sleep(delay)
    url = f"http://127.0.0.1:{port}/debug/pprof/profile"
    try:
        async with httpx.AsyncClient(timeout=seconds + 30) as client:
            answer = await client.get(url, params={"seconds": seconds})
    except httpx.HTTPError as exc:  # a profile missing is not a failed run
        log.warning("bench e2e: no FerretDB profile: %s", exc)
        return 1
    if answer.status_code != 200:
        return answer.status_code
    await asyncio.to_thread(output.write_bytes, answer.content)
    return 0


async def _measure(
    stack: LocalStack,
    prepared: Prepared,
    *,
    rate: float,
    duration: float,
    shops: int,
    skus_per_supplier: int,
    drain_timeout: float,
    seed: int,
    profile: bool,
    stamp: str,
    idle_seconds: float,
) -> Measured:
    kafka = KafkaSettings(bootstrap_servers=stack.kafka_bootstrap)
    await ensure_topics(kafka, ALL_TOPICS)
    suppliers = len(prepared.keys)
    base_id = random.Random(seed).randrange(10**17, 9 * 10**17) * 10
    plan = dict(shops=shops, suppliers=suppliers, skus_per_supplier=skus_per_supplier)
    warmup = plan_e2e_orders(WARMUP_ORDERS, first_order_id=base_id, seed=seed, **plan)
    orders = plan_e2e_orders(
        int(rate * duration), first_order_id=base_id + WARMUP_ORDERS, seed=seed + 1, **plan
    )
    requests = _order_requests(stack, [*warmup, *orders])  # built before the clock starts

    fleet = Helper(
        _fleet_process,
        (
            fleet_settings(
                stack.service_url("dispatch"),
                prepared.keys,
                seed,
                requests_per_s=supplier_call_rate(rate, suppliers),
            ).model_dump_json(),
        ),
        "bench-e2e-suppliers",
    )
    idle_pct: dict[str, float] = {}
    if idle_seconds > 0:
        console.print(f"at rest: {idle_seconds:g} s with the stack up and nothing moving ...")
        await asyncio.sleep(IDLE_SETTLE_S)
        idle_pct = await measure_at_rest(stack.process_ids(), idle_seconds)
    client = HttpClient("127.0.0.1", stack.ports.wechat_sim, timeout_s=30)
    sim = httpx.AsyncClient(base_url=stack.wechat_sim_url, timeout=60)
    pids = {**stack.process_ids(), BENCH_PROCESS: os.getpid()}
    profiles: dict[str, str] = {}
    profilers: list[asyncio.Task[int]] = []
    try:
        await fleet.start(wait_ready=False)
        pids[FLEET_PROCESS] = fleet.pid
        await client.open(CONNECTIONS)

        async def send(i: int) -> bool:
            status, _ = await client.send(requests[i])
            return status == 200

        console.print(f"warm-up: {WARMUP_ORDERS} orders, each until told to WeChat ...")
        await open_loop("warm-up", send, rate=10, duration_s=WARMUP_ORDERS / 10)
        if await _wait_told(sim, warmup, timeout_s=180, every_s=1.0):
            raise RuntimeError(f"warm-up: not every order reached delivery/send; logs: {stack.logs_dir}")

        start_offsets = await end_offsets(stack.kafka_bootstrap, [ORDERS.name, DISPATCH.name])
        own = {q for p in pids.values() for q in _descendants(p)}
        others = set(other_busy_processes(own, stack.run_dir))
        metrics_a = await _scrape_services(stack)
        cpu_a = {n: _proc_figures(p)[0] for n, p in pids.items()}
        machine_a = machine_cpu_s()
        if profile:
            for name in PROFILED_PROCESSES:
                path = RESULTS / f"e2e-profile-{name}-{stamp}.speedscope.json"
                profiles[name] = str(path)
                seconds = int(min(30, duration))
                profilers.append(
                    asyncio.create_task(_profile(pids[name], path, max(0.0, duration - seconds - 2), seconds))
                )
            path = RESULTS / f"e2e-profile-ferretdb-{stamp}.pprof"
            profiles["ferretdb"] = str(path)
            profilers.append(
                asyncio.create_task(
                    _go_profile(stack.ports.ferretdb_debug, path, max(0.0, duration - seconds - 2), seconds)
                )
            )

        def tick(result: LoadResult) -> None:
            console.print(f"  created {result.sent}, answered {result.ok}, failed {result.failed}", end="\r")
            if int(result.sent / rate) % 10 == 0:
                others.update(other_busy_processes(own, stack.run_dir))

        console.print(f"load: {rate:g} paid orders/s for {duration:g} s (open loop) ...")
        t0_wall, t0 = time.time(), time.perf_counter()
        load = await open_loop(
            "create paid order",
            lambda i: send(WARMUP_ORDERS + i),
            rate=rate,
            duration_s=duration,
            on_tick=tick,
        )
        console.print()
        console.print(f"draining: until every order was told to WeChat (at most {drain_timeout:g} s) ...")
        not_told = await _wait_told(sim, orders, timeout_s=drain_timeout)
        window_s = time.perf_counter() - t0
        drain_s = max(0.0, window_s - duration)
        cpu_b = {n: _proc_figures(p)[0] for n, p in pids.items()}
        machine_b = machine_cpu_s()
        metrics_b = await _scrape_services(stack)
        db_commands = db_command_figures(metrics_b)
        others.update(other_busy_processes(own, stack.run_dir))
        for task in profilers:
            await asyncio.wait_for(task, timeout=duration + 90)
        calls = await _delivery_calls(sim)
        records = await read_records(stack.kafka_bootstrap, start_offsets)

        # The reference chain: the line's work per order, built bare, for the same orders at the same rate.
        work = work_between(metrics_a, metrics_b)
        copied = reference_work(WorkCounts.total(work.values()).per(len(orders)))
        payloads = {r.key: r.value for r in records if r.event_type == "order_paid"}
        console.print(
            f"reference chain: {len(orders)} orders at {rate:g}/s, each {copied.kafka_consumed:.2f} Kafka "
            f"messages consumed, {copied.http_exchanges:.2f} HTTP exchanges, "
            f"{copied.documents_written:.2f} documents inserted (the line's, per order) ..."
        )
        reference = await run_reference(
            bootstrap=stack.kafka_bootstrap,
            mongo_uri=stack.mongo_uri,
            database=MongoSettings(uri=stack.mongo_uri).database,
            keys=[o.order_id for o in orders],
            payloads=payloads,
            copied=copied,
            rate=rate,
            duration=duration,
            pids=pids,
            run=uuid_suffix(),
        )
        others.update(other_busy_processes(own, stack.run_dir))
        figures = {n: _proc_figures(p) for n, p in pids.items()}
    finally:
        client.close()
        await sim.aclose()
        fleet_totals = await fleet.stop() or {}
    return Measured(
        load=load,
        orders=orders,
        t0_wall=t0_wall,
        records=records,
        calls=calls,
        not_told=not_told,
        drain_s=drain_s,
        reference=reference,
        cpu_load={n: cpu_b[n] - cpu_a.get(n, 0.0) for n in cpu_b},
        peak_rss={**{n: r for n, (_, r) in figures.items()}, **reference.peak_rss},
        fleet_totals=fleet_totals,
        other_busy=sorted(others),
        other_cpu_s=max(0.0, (machine_b - machine_a) - sum(cpu_b[n] - cpu_a.get(n, 0.0) for n in cpu_b)),
        window_s=window_s,
        profiles=profiles,
        db_commands=db_commands,
        work=work,
        idle_pct=idle_pct,
        idle_s=idle_seconds,
    )


def uuid_suffix() -> str:
    return f"{random.SystemRandom().getrandbits(32):08x}"


# ---- the report ----------------------------------------------------------------------------------------


def _row(h: HdrHistogram) -> list[str]:
    if h.get_total_count() == 0:
        return ["0", "-", "-", "-", "-", "-"]
    return [
        str(h.get_total_count()),
        *(f"{h.get_value_at_percentile(p) / 1000:.1f}" for p in (50, 90, 99, 99.9)),
        f"{h.get_max_value() / 1000:.1f}",
    ]


def cpu_ms_per_order(cpu_s: dict[str, float], orders: int, leave_out: Iterable[str] = ()) -> float:
    """CPU milliseconds per order summed over the processes, those named in `leave_out` not counted."""
    skipped = set(leave_out)
    return 1000 * sum(s for name, s in cpu_s.items() if name not in skipped) / max(1, orders)


def line_and_stand_ins_ms(cpu_s: dict[str, float], orders: int) -> tuple[float, float]:
    """CPU ms per order of the line (LINE_AT_REST: the services, Kafka, FerretDB) and, apart, of the
    stand-ins and supplier bots; the order driver, Prometheus and the reference are in neither."""
    line = {name: spent for name, spent in cpu_s.items() if name in LINE_AT_REST}
    outside = {name: spent for name, spent in cpu_s.items() if name in STAND_INS_AND_BOTS}
    return cpu_ms_per_order(line, orders), cpu_ms_per_order(outside, orders)


def idle_percent(cpu_s: dict[str, float], seconds: float) -> dict[str, float]:
    """CPU % of one core per process from its CPU seconds over `seconds`."""
    return {name: 100 * spent / seconds if seconds > 0 else 0.0 for name, spent in cpu_s.items()}


def line_at_rest(idle_pct: dict[str, float]) -> float:
    """The line's CPU % of one core at rest: the processes of LINE_AT_REST, summed."""
    return sum(idle_pct.get(name, 0.0) for name in LINE_AT_REST)


def net_of_idle(cpu_s: dict[str, float], idle_pct: dict[str, float], window_s: float) -> dict[str, float]:
    """Each process's CPU seconds over `window_s` less what it spends at rest in as long (never below
    zero): the CPU the load itself cost. A process without a baseline keeps all of its CPU."""
    return {name: max(0.0, spent - idle_pct.get(name, 0.0) / 100 * window_s) for name, spent in cpu_s.items()}


def idle_verdict(line_pct: float) -> tuple[bool, str]:
    if line_pct <= IDLE_TARGET_PCT:
        return True, f"the line at rest {line_pct:.1f}% ≤ {IDLE_TARGET_PCT:g}% of one core"
    return False, (
        f"the line at rest {line_pct:.1f}% > {IDLE_TARGET_PCT:g}% of one core: "
        f"MISSED by {line_pct - IDLE_TARGET_PCT:.1f} points"
    )


async def measure_at_rest(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """CPU % of one core per process over `seconds` with nothing sent."""
    before = {name: _proc_figures(pid)[0] for name, pid in pids.items()}
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    after = {name: _proc_figures(pid)[0] for name, pid in pids.items()}
    spent = {name: after[name] - before[name] for name in pids}
    return idle_percent(spent, time.perf_counter() - started)


def _idle_table(idle_pct: dict[str, float], seconds: float) -> Table:
    table = Table(title=f"At rest: {seconds:g} s with the stack up and nothing moving, before the load")
    for column in ("process", "CPU % of one core", "the line"):
        table.add_column(column, justify="right")
    for name in sorted(idle_pct, key=lambda n: idle_pct[n], reverse=True):
        table.add_row(name, f"{idle_pct[name]:.2f}", "yes" if name in LINE_AT_REST else "")
    table.add_row("the line (services, Kafka, FerretDB)", f"{line_at_rest(idle_pct):.2f}", "")
    return table


def _work_table(m: Measured, spent_ms: float, net_ms: float) -> Table:
    orders = len(m.orders)
    table = Table(title=f"Work per order over the load and drain ({orders} orders)")
    columns = (
        "process",
        "CPU ms",
        "CPU ms net of idle",
        "HTTP answered",
        "Kafka handled",
        "DB commands",
        "outside calls",
        "docs written",
        "order/get",
    )
    net = net_of_idle(m.cpu_load, m.idle_pct, m.window_s)
    for column in columns:
        table.add_column(column, justify="right")
    for name in sorted(m.cpu_load, key=lambda n: m.cpu_load[n], reverse=True):
        if name in NOT_THE_LINE:
            continue
        work = m.work.get(name)
        counts = [f"{v:.1f}" for v in astuple(work.per(orders))] if work is not None else [""] * 6
        table.add_row(
            name,
            f"{cpu_ms_per_order({name: m.cpu_load[name]}, orders):.1f}",
            f"{cpu_ms_per_order({name: net[name]}, orders):.1f}",
            *counts,
        )
    table.add_row(
        "the line (every process above)",
        f"{spent_ms:.1f}",
        f"{net_ms:.1f}",
        *(f"{v:.1f}" for v in astuple(WorkCounts.total(m.work.values()).per(orders))),
    )
    return table


def _reference_table(m: Measured, line_ms: float, charged: dict[str, float]) -> Table:
    ref = m.reference
    orders = len(ref.keys)
    table = Table(title=f"The reference chain: the line's work per order, bare ({orders} orders)")
    for column in ("per order", "the line", "the reference chain"):
        table.add_column(column, justify="right")
    copied, done = ref.copied, ref.work_done()
    for name, line, reference in (
        ("HTTP exchanges", copied.http_exchanges, done.http_exchanges),
        ("Kafka messages consumed", copied.kafka_consumed, done.kafka_consumed),
        ("documents written", copied.documents_written, done.documents_written),
    ):
        table.add_row(name, f"{line:.2f}", f"{reference:.2f}")
    for name in sorted(charged, key=lambda n: charged[n], reverse=True):
        above = " (above its rest)" if name in SHARED_WITH_THE_LINE and m.idle_pct else ""
        table.add_row(f"CPU ms: {name}{above}", "", f"{cpu_ms_per_order({name: charged[name]}, orders):.2f}")
    table.add_row("CPU ms, in all", f"{line_ms:.1f}", f"{cpu_ms_per_order(charged, orders):.1f}")
    return table


def _report(
    m: Measured,
    *,
    rate: float,
    duration: float,
    shops: int,
    suppliers: int,
    routes: int,
    stamp: str,
) -> Path:
    scheduled = [m.t0_wall + i / rate for i in range(len(m.orders))]
    times = collect_times(m.orders, scheduled, m.records, m.calls)
    figures = stage_figures(m.orders, times, m.t0_wall)
    ref = m.reference
    ceiling_figures, chain_figures = chain_latencies(
        ref.keys, ref.plans, ref.records, ref.t0_wall, rate, KAFKA_TOPIC_HOPS - 1
    )
    ceiling = ceiling_figures.histogram

    table = Table(title=f"End-to-end sale at {rate:g} paid orders/s for {duration:g} s (open loop)")
    for column in ("stage", "count", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "missing"):
        table.add_column(column, justify="right" if column != "stage" else "left")
    for name, f in figures.items():
        table.add_row(name, *_row(f.histogram), str(f.missing))
    table.add_row(
        f"ceiling: the reference chain's first {KAFKA_TOPIC_HOPS - 1} relays (bare)",
        *_row(ceiling),
        str(ceiling_figures.missing),
    )
    table.add_row(
        "the reference chain: send → its last relay",
        *_row(chain_figures.histogram),
        str(chain_figures.missing),
    )
    table.add_row("create order at the stand-in (answer)", *_row(m.load.histogram), str(m.load.failed))
    console.print(table)

    target = figures[TARGET_STAGE].histogram
    p99 = target.get_value_at_percentile(99) / 1000 if target.get_total_count() else math.inf
    met, verdict = target_verdict(p99, rate)
    if figures[TARGET_STAGE].missing:
        met = False
        verdict += f"; {figures[TARGET_STAGE].missing} orders never fully offered"
    console.print(f"[{'green' if met else 'red'}]target {'met' if met else 'MISSED'}[/]: {verdict}")
    ceiling_p99 = ceiling.get_value_at_percentile(99) / 1000 if ceiling.get_total_count() else 0.0
    ratio = p99 / ceiling_p99 if ceiling_p99 and not math.isinf(p99) else None
    if ratio is not None:
        console.print(
            f"p99 paid → supplier feed is {ratio:.1f}× the ceiling's p99 ({ceiling_p99:.0f} ms: the "
            f"reference chain's first {KAFKA_TOPIC_HOPS - 1} relays, with their HTTP exchanges and inserts)"
        )

    processes = Table(title="Processes (CPU seconds, peak RSS)")
    for column in (
        "process",
        "CPU s load + drain",
        "CPU % of one core",
        "CPU s reference run",
        "peak RSS MiB",
    ):
        processes.add_column(column, justify="right")
    for name in sorted(m.peak_rss):
        load_cpu = m.cpu_load.get(name, 0.0)
        processes.add_row(
            name,
            f"{load_cpu:.1f}",
            f"{100 * load_cpu / m.window_s:.0f}" if m.window_s else "-",
            f"{ref.cpu_s.get(name, 0.0):.1f}",
            f"{m.peak_rss[name]:.0f}",
        )
    console.print(processes)
    budget_ms = CORES_OF_THE_TARGET * 1000 / TARGET_RATE
    spent_ms = cpu_ms_per_order(m.cpu_load, len(m.orders), leave_out=NOT_THE_LINE)
    net_ms = cpu_ms_per_order(
        net_of_idle(m.cpu_load, m.idle_pct, m.window_s), len(m.orders), leave_out=NOT_THE_LINE
    )
    console.print(_work_table(m, spent_ms, net_ms))
    line_ms, outside_ms = line_and_stand_ins_ms(m.cpu_load, len(m.orders))
    gates = work_gates(WorkCounts.total(m.work.values()).per(len(m.orders)))
    for gate in gates:
        colour = "green" if gate.met else "red"
        console.print(f"[{colour}]work gate {'met' if gate.met else 'MISSED'}[/]: {gate.verdict}")
    console.print(
        f"every process spent {spent_ms:.1f} ms of CPU per order ({net_ms:.1f} ms net of its CPU at rest); "
        f"two cores at the target's {TARGET_RATE:g} orders/s give {budget_ms:.1f} ms "
        f"({spent_ms / budget_ms:.1f}× that)"
    )
    for what, ms, target in (
        ("the line (services, Kafka, FerretDB)", line_ms, LINE_CPU_TARGET_MS),
        ("the stand-ins and bots", outside_ms, STAND_INS_CPU_TARGET_MS),
    ):
        colour, judged = ("green", "met") if ms <= target else ("red", "MISSED")
        console.print(f"[{colour}]CPU target {judged}[/]: {what} {ms:.1f} ms per order (≤ {target:g} ms)")
    charged = charged_cpu_s(ref.cpu_s, ref.own, m.idle_pct, ref.window_s)
    reference_ms = cpu_ms_per_order(charged, len(ref.keys))
    console.print(_reference_table(m, line_ms, charged))
    reference_check = reference_gate(line_ms, reference_ms)
    colour, judged = ("green", "met") if reference_check.met else ("red", "MISSED")
    console.print(
        f"[{colour}]reference gate {judged}[/]: {reference_check.verdict} "
        f"(the line {line_ms:.1f} ms of CPU per order, the reference chain {reference_ms:.1f} ms)"
    )
    if ref.not_in_sink or ref.done.http_failed or ref.load.failed:
        console.print(
            f"[yellow]the reference chain fell short: {ref.not_in_sink} orders never left its last relay, "
            f"{ref.done.http_failed} HTTP exchanges failed, {ref.load.failed} driver sends failed[/]"
        )
    idle_line = line_at_rest(m.idle_pct)
    idle_met, idle_says = (
        idle_verdict(idle_line) if m.idle_pct else (False, "not measured (--idle-seconds 0)")
    )
    if m.idle_pct:
        console.print(_idle_table(m.idle_pct, m.idle_s))
    console.print(
        f"[{'green' if idle_met else 'red'}]idle target {'met' if idle_met else 'MISSED'}[/]: {idle_says}"
    )
    quiet = not m.other_busy
    share = 100 * m.other_cpu_s / m.window_s if m.window_s else 0.0
    others = f"other processes used {m.other_cpu_s:.1f} CPU s ({share:.0f}% of a core)"
    console.print(
        f"machine: no other benchmark or test run seen; {others}"
        if quiet
        else f"[yellow]machine: NOT quiet: other benchmark/test processes {m.other_busy}; {others}[/]"
    )

    commands = Table(title=f"Database commands by client-side time (top {DB_COMMANDS_SHOWN})")
    for column in ("service", "command", "collection", "result", "count", "seconds", "mean ms"):
        commands.add_column(column, justify="right")
    for c in m.db_commands[:DB_COMMANDS_SHOWN]:
        mean_ms = 1000 * c.seconds / c.count if c.count else 0.0
        commands.add_row(
            c.service,
            c.command,
            c.collection,
            c.result,
            f"{c.count:.0f}",
            f"{c.seconds:.1f}",
            f"{mean_ms:.1f}",
        )
    console.print(commands)

    told_times = [at for t in times.values() if (at := t.at(TOLD, 1)) is not None]
    created_per_s = {s: c for s, c, _ in m.load.timeline}
    rows = timeline(figures, created_per_s, int(duration))
    told_per_s = per_second_counts(told_times, m.t0_wall)
    split = sum(1 for o in m.orders if len(o.suppliers) > 1)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"e2e-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "scenario": "e2e",
                "config": {
                    "rate_per_s": rate,
                    "duration_s": duration,
                    "shops": shops,
                    "suppliers": suppliers,
                    "routes": routes,
                    "lines_per_order": "1-2 distinct SKUs, uniform",
                    "supplier_delays": "accept 0.1-0.3 s after the offer, ship 0.4-0.6 s after accepting",
                    "time_scale": TIME_SCALE,
                    "supplier_calls_per_s": supplier_call_rate(rate, suppliers),
                    "carrier_scans": "on the same clock: pickup 2 simulated hours (2 min) after the waybill",
                    "kafka_topic_hops_to_dispatch": KAFKA_TOPIC_HOPS,
                    "cpus": os.cpu_count(),
                },
                "orders": {
                    "planned": len(m.orders),
                    "created": m.load.ok,
                    "failed": m.load.failed,
                    "split_across_suppliers": split,
                    "dispatch_orders": sum(len(o.suppliers) for o in m.orders),
                    "not_told_at_end": m.not_told,
                    "drain_s": round(m.drain_s, 2),
                    "create_answer": m.load.summary(),
                },
                "stages": {
                    name: {**histogram_summary(f.histogram), "missing": f.missing}
                    for name, f in figures.items()
                },
                "target_stage": TARGET_STAGE,
                "target": {
                    "p99_ms": TARGET_P99_MS,
                    "rate_per_s": TARGET_RATE,
                    "met": met,
                    "verdict": verdict,
                },
                "ceiling": {
                    "what": (
                        f"the reference chain's message after its first {KAFKA_TOPIC_HOPS - 1} relays (bare "
                        "aiokafka, each with its HTTP exchanges and inserts); the run's order_paid messages, "
                        "same rate, count"
                    ),
                    **histogram_summary(ceiling),
                    "missing": ceiling_figures.missing,
                    "ratio_p99_to_ceiling": round(ratio, 2) if ratio is not None else None,
                },
                "reference": {
                    "what": (
                        f"the line's work per order built bare: {RELAYS} aiokafka relays round a ring of "
                        f"{RELAYS} topics (acks=all), POSTs to a bare ASGI echo under uvicorn, insert_many "
                        "into the same FerretDB per consumed batch; same orders, same rate, after the line"
                    ),
                    "work_per_order": {
                        "the_line": asdict(ref.copied),
                        "planned": asdict(planned_work(ref.plans).per(len(ref.keys))),
                        "done": asdict(ref.work_done()),
                    },
                    "relays": RELAYS,
                    "relay_counts": asdict(ref.done),
                    "driver_produce_ack": ref.load.summary(),
                    "not_in_sink": ref.not_in_sink,
                    "window_s": round(ref.window_s, 2),
                    "chain_latency": {
                        **histogram_summary(chain_figures.histogram),
                        "missing": chain_figures.missing,
                    },
                    "processes": {
                        n: {"cpu_s": round(ref.cpu_s.get(n, 0.0), 2), "peak_rss_mib": round(m.peak_rss[n], 1)}
                        for n in ref.own
                    },
                    "cpu_s_charged": {n: round(v, 3) for n, v in sorted(charged.items())},
                    "cpu_charged": (
                        "its own processes in full; Kafka and FerretDB less their CPU at rest over as long"
                    ),
                    "cpu_ms_per_order": round(reference_ms, 2),
                    "line_cpu_ms_per_order": round(line_ms, 2),
                    "ratio_line_to_reference": (
                        round(reference_check.value, 2) if math.isfinite(reference_check.value) else None
                    ),
                    "gate": {
                        **asdict(reference_check),
                        "met": reference_check.met,
                        "verdict": reference_check.verdict,
                    },
                },
                "throughput": {
                    "created_per_s": round(m.load.ok / duration, 1) if duration else 0.0,
                    "told_per_s_over_window": round(len(told_times) / m.window_s, 1) if m.window_s else 0.0,
                    "peak_told_per_s": max(told_per_s.values(), default=0),
                },
                "timeline_per_s": rows,
                "ceiling_timeline_per_s": [b.__dict__ for b in bucket_latencies(ceiling_figures.samples, 1)],
                "supplier_bots": m.fleet_totals,
                "processes": {
                    n: {
                        "cpu_s_load_and_drain": round(m.cpu_load.get(n, 0.0), 2),
                        "cpu_s_reference_run": round(ref.cpu_s.get(n, 0.0), 2),
                        "peak_rss_mib": round(m.peak_rss[n], 1),
                    }
                    for n in sorted(m.peak_rss)
                    if n not in ref.own
                },
                "machine": {
                    "no_other_benchmark": quiet,
                    "other_benchmark_pids": m.other_busy,
                    "other_processes_cpu_s": round(m.other_cpu_s, 1),
                    "window_s": round(m.window_s, 1),
                    "load_average_at_end": os.getloadavg(),
                },
                "profiles": m.profiles,
                "db_commands": [c.__dict__ for c in m.db_commands],
                "idle": {
                    "seconds": m.idle_s,
                    "cpu_pct_of_one_core": {n: round(v, 3) for n, v in sorted(m.idle_pct.items())},
                    "line_processes": list(LINE_AT_REST),
                    "line_pct_of_one_core": round(idle_line, 3),
                    "target_pct": IDLE_TARGET_PCT,
                    "met": idle_met,
                    "verdict": idle_says,
                },
                "work_per_order": {
                    "cpu_ms_all_processes": round(spent_ms, 2),
                    "cpu_ms_all_processes_net_of_idle": round(net_ms, 2),
                    "cpu_ms_line": round(line_ms, 2),
                    "cpu_ms_line_target": LINE_CPU_TARGET_MS,
                    "cpu_ms_stand_ins_and_bots": round(outside_ms, 2),
                    "cpu_ms_stand_ins_and_bots_target": STAND_INS_CPU_TARGET_MS,
                    "cpu_ms_budget_at_target": budget_ms,
                    "gates": [{**asdict(gate), "met": gate.met, "verdict": gate.verdict} for gate in gates],
                    "by_service": {
                        service: {k: round(v, 2) for k, v in asdict(work.per(len(m.orders))).items()}
                        for service, work in sorted(m.work.items())
                    },
                },
            },
            indent=2,
        )
    )
    console.print(f"results: {out}")
    return out


def bench_e2e(
    rate: Annotated[float, typer.Option(help="Paid orders per second (open loop).")] = 100,
    duration: Annotated[float, typer.Option(help="Seconds of load.")] = 60,
    shops: Annotated[int, typer.Option(help="Shops, registered in the WeChat stand-in and our DB.")] = 5,
    suppliers: Annotated[int, typer.Option(help="Suppliers, each a bot long-polling its feed.")] = 20,
    skus_per_supplier: Annotated[int, typer.Option(help="SKUs (routes per shop) per supplier.")] = 2,
    drain_timeout: Annotated[float, typer.Option(help="Seconds to wait for the last orders.")] = 300,
    seed: Annotated[int, typer.Option(help="Seed of the order mix and the bots.")] = 11,
    profile: Annotated[
        bool, typer.Option(help="py-spy (speedscope) of every Python process that spends CPU per order.")
    ] = False,
    idle_seconds: Annotated[
        float, typer.Option(help="Seconds of the stack at rest measured before the load (0: none).")
    ] = 30,
) -> None:
    """Paid order at WeChat → supplier feed → shipped → WeChat told, on a stack with everything (target:
    paid → supplier feed p99 ≤ 1 s at 200 orders/s), then a reference chain doing the line's work per order
    bare (target: the line's CPU per order ≤ 2× the reference's)."""
    run_dir = Path(tempfile.mkdtemp(prefix="lvyue-bench-e2e-"))
    stamp = time.strftime("%Y%m%dT%H%M%S")
    calls_per_s = supplier_call_rate(rate, suppliers)
    stack = LocalStack(
        run_dir=run_dir,
        ports=StackPorts.free(),
        components=ALL_COMPONENTS,
        component_env={
            "carrier_sim": {"CARRIER_SIM_TIME_SCALE": str(TIME_SCALE)},
            "dispatch": {
                "DISPATCH_SUPPLIER_RATE_PER_S": str(calls_per_s),
                "DISPATCH_SUPPLIER_BURST": str(2 * calls_per_s),
            },
        },
    )
    busy = other_busy_processes([])
    if busy:
        console.print(
            f"[yellow]other benchmarks or test runs running (pids {busy}): figures will be noisy[/]"
        )
    for name in ("aiokafka", "kafka", "pymongo"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    console.print(f"starting a private stack with everything in {run_dir} ...")
    stack.start()
    try:
        stack.wait_healthy(timeout_s=300)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            console.print(f"registering {shops} shops, {suppliers} suppliers with keys and routes ...")
            prepared = runner.run(_prepare(stack, shops, suppliers, skus_per_supplier))
            measured = runner.run(
                _measure(
                    stack,
                    prepared,
                    rate=rate,
                    duration=duration,
                    shops=shops,
                    skus_per_supplier=skus_per_supplier,
                    drain_timeout=drain_timeout,
                    seed=seed,
                    profile=profile,
                    stamp=stamp,
                    idle_seconds=idle_seconds,
                )
            )
    finally:
        console.print("stopping the private stack ...")
        stack.stop()
    _report(
        measured,
        rate=rate,
        duration=duration,
        shops=shops,
        suppliers=suppliers,
        routes=prepared.routes,
        stamp=stamp,
    )
