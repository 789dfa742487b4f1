"""`lvyue bench ingest`: signed, encrypted WeChat webhooks per second and ack latency on a private
local stack (real Kafka, FerretDB, the WeChat stand-in and order_ingest, each its own process, at the
stack's own priorities), next to a bare FastAPI endpoint with the webhook's worker count measured in
the same run. Open loop: arrivals at a fixed rate whatever the answers, latency from each request's
scheduled start (HdrHistogram). Every push is of an order of its own, which the ingest worker fetches
from the WeChat stand-in and stores while the webhook is measured: the bench waits for the worker to
drain and prints its fetch rate."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

import httpx
import typer
import uvloop
from pydantic import SecretStr
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from ops.loadgen import SUSTAINED_DRAIN_S, HttpClient, LoadResult, http_request, open_loop, sustained
from ops.metrics_text import MetricsText, order_gets
from ops.stack import REPO_ROOT, WEB_WORKERS, LocalStack, StackPorts, free_port
from shared.db import create_mongo_client, database, ensure_indexes
from shared.settings import MongoSettings
from shared.wechat.crypto import MessageCipher
from shared.wechat.push import build_push
from shared.wechat.shops import INDEXES, Shop, ShopRepository

app = typer.Typer(help="Benchmarks on a private local stack; they print figures.")
console = Console()

APPID, TOKEN = "wxbench000000000001", "benchtoken"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
SHOP_ID = "bench-shop"
RESULTS = REPO_ROOT / "bench-results"
LOAD_GENERATOR = "load generator (bench)"
PUSHED_EVENT = "channels_ec_order_pay"
WARMUP_PUSHES = 500
# Keep-alive connections opened before each run (more only if all are busy): WeChat pushes from many.
CONNECTIONS = 64


def _one_process(pid: int) -> tuple[float, float]:
    """(CPU seconds used, peak RSS MiB) of one live process, from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
        peak_kib = next(
            int(line.split()[1])
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if line.startswith("VmHWM:")
        )
    except (FileNotFoundError, StopIteration, IndexError, ValueError):
        return 0.0, 0.0
    return cpu, peak_kib / 1024


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        queue.extend(children.get(current, []))
    return found


def _proc_figures(pid: int) -> tuple[float, float]:
    """(CPU seconds, peak RSS MiB of the largest process) for a process and its children (uvicorn
    workers, `nice` wrappers); this process alone (the load generator, not its profiler)."""
    if pid == os.getpid():
        return _one_process(pid)
    figures = [_one_process(p) for p in _descendants(pid)]
    return sum(c for c, _ in figures), max((r for _, r in figures), default=0.0)


async def _prepare(stack: LocalStack, orders: int) -> list[int]:
    mongo = create_mongo_client(MongoSettings(uri=stack.mongo_uri), app_name="bench")
    try:
        db = database(mongo, MongoSettings(uri=stack.mongo_uri))
        await ensure_indexes(db, INDEXES)
        await ShopRepository(db).add(
            Shop(
                shop_id=SHOP_ID,
                appid=APPID,
                app_secret=SecretStr("benchsecret"),
                token=SecretStr(TOKEN),
                encoding_aes_key=SecretStr(AES_KEY),
            )
        )
    finally:
        await mongo.close()
    async with httpx.AsyncClient(base_url=stack.wechat_sim_url, timeout=30) as sim:
        shop = {"appid": APPID, "secret": "benchsecret", "token": TOKEN, "encoding_aes_key": AES_KEY}
        (await sim.post("/sim/shops", json=shop)).raise_for_status()  # no callback: we push ourselves
        at_once = asyncio.Semaphore(16)

        async def create(_: int) -> int:
            async with at_once:
                reply = await sim.post("/sim/orders", json={"appid": APPID, "paid": True})
                reply.raise_for_status()
                return int(reply.json()["order_id"])

        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"creating {orders} paid orders in the WeChat stand-in", total=orders)

            async def counted(i: int) -> int:
                order_id = await create(i)
                progress.advance(task)
                return order_id

            return list(await asyncio.gather(*(counted(i) for i in range(orders))))


def _worker_progress(worker_url: str) -> tuple[float, float]:
    return worker_progress(httpx.get(f"{worker_url}/metrics", timeout=10).text)


def worker_progress(metrics_text: str) -> tuple[float, float]:
    """(pushes the ingest worker finished, order/get calls it made), from its /metrics text."""
    metrics = MetricsText.parse(metrics_text)
    done = metrics.total("lvyue_ingest_pushes", lambda labels: labels.get("event") == PUSHED_EVENT)
    return done, order_gets(metrics)


@dataclass(frozen=True)
class WorkerDrain:
    """How the ingest worker kept up: pushes it finished and orders it fetched while the webhook was
    measured, and how long after the load it took to finish every push."""

    pushes: int
    done_during_load: float
    fetched: float
    finished: float
    load_s: float
    waited_s: float  # after the load, until every push was done or the timeout

    @property
    def drain_s(self) -> float | None:
        """Seconds after the load until every push was done; None if they were not by the timeout."""
        return self.waited_s if self.finished >= self.pushes else None

    @property
    def fetch_rate(self) -> float:
        """order/get per second over the load and the wait after it."""
        return self.fetched / max(1e-9, self.load_s + self.waited_s)


def _wait_for_worker(
    worker_url: str, pushes: int, before: tuple[float, float], *, timeout_s: float, load_s: float
) -> WorkerDrain:
    during = _worker_progress(worker_url)
    started = time.monotonic()
    done = during
    while done[0] - before[0] < pushes and time.monotonic() - started < timeout_s:
        console.print(f"  worker: {done[0] - before[0]:.0f} of {pushes} pushes done", end="\r")
        time.sleep(1.0)
        done = _worker_progress(worker_url)
    console.print()
    finished = done[0] - before[0]
    return WorkerDrain(
        pushes=pushes,
        done_during_load=during[0] - before[0],
        fetched=done[1] - before[1],
        finished=finished,
        load_s=load_s,
        waited_s=time.monotonic() - started,
    )


def _prebuild(url: str, push: Callable[[int], tuple[dict[str, str], bytes, str]], count: int) -> list[bytes]:
    """Every request of a run as bytes on the wire, signed and encrypted before the clock starts:
    the load generator shares the machine, so it must not spend CPU per request on building them."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    requests = []
    for i in range(count):
        query, body, content_type = push(i)
        requests.append(http_request(host, port, f"{parts.path}?{urlencode(query)}", body, content_type))
    return requests


def _run_load(
    url: str,
    push: Callable[[int], tuple[dict[str, str], bytes, str]],
    rate: float,
    duration: float,
    name: str,
) -> LoadResult:
    requests = _prebuild(url, push, int(rate * duration))
    parts = urlsplit(url)

    async def run() -> LoadResult:
        client = HttpClient(parts.hostname or "127.0.0.1", parts.port or 80, timeout_s=10)
        await client.open(CONNECTIONS)

        async def send(i: int) -> bool:
            status, body = await client.send(requests[i])
            return status == 200 and body == b"success"

        def tick(result: LoadResult) -> None:
            console.print(f"  {name}: sent {result.sent}, ok {result.ok}, failed {result.failed}", end="\r")

        try:
            return await open_loop(name, send, rate=rate, duration_s=duration, on_tick=tick)
        finally:
            client.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # uvloop: less CPU per request
        result = runner.run(run())
    console.print()
    return result


@app.command("ingest")
def bench_ingest(
    rate: Annotated[float, typer.Option(help="Webhooks per second.")] = 1000,
    duration: Annotated[float, typer.Option(help="Seconds of load per scenario.")] = 60,
    profile: Annotated[bool, typer.Option(help="py-spy profile of order_ingest during the run.")] = False,
    with_worker: Annotated[bool, typer.Option(help="Run the ingest worker beside the webhook.")] = True,
    drain_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the worker after the load.")
    ] = 900,
) -> None:
    """Webhook ack latency vs a bare FastAPI endpoint while the ingest worker fetches and stores every
    pushed order (target: 1,000/s all acked, p99 ≤ 100 ms, none over 5 s)."""
    bare_port = free_port()
    run_dir = Path(tempfile.mkdtemp(prefix="lvyue-bench-"))
    stack = LocalStack(
        run_dir=run_dir,
        ports=StackPorts.free(services=["order_ingest", "order_ingest_worker"]),
        components=(
            "kafka",
            "ferretdb",
            "wechat_sim",
            "order_ingest",
            *(["order_ingest_worker"] if with_worker else []),
            "bare_http",
        ),
        extra_programs={
            "bare_http": (
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "ops.bare_endpoint:app",
                    "--workers",
                    str(WEB_WORKERS["order_ingest"]),  # the webhook's worker count
                    "--port",
                    str(bare_port),
                    "--no-access-log",
                    "--log-level",
                    "warning",
                ],
                bare_port,
                "/healthz",
            )
        },
    )
    console.print(f"starting a private stack in {run_dir} ...")
    stack.start()
    try:
        stack.wait_healthy(timeout_s=240)
        pushes = int(rate * duration)
        # An order of its own for every push of the webhook's run (and of its warm-up): each one a
        # fetch and a write for the worker, as in a sale. The bare endpoint's run pushes the same.
        order_ids = asyncio.run(_prepare(stack, WARMUP_PUSHES + pushes))
        cipher = MessageCipher(AES_KEY, APPID)

        def push(i: int) -> tuple[dict[str, str], bytes, str]:
            order_id = order_ids[i % len(order_ids)]
            now = int(time.time())
            event = {
                "ToUserName": "gh_bench",
                "FromUserName": "o_bench",
                "CreateTime": now,
                "MsgType": "event",
                "Event": PUSHED_EVENT,
                "order_info": {"order_id": order_id, "pay_time": now},
            }
            signed = build_push(event, token=TOKEN, cipher=cipher, nonce=str(i))
            return signed.query, signed.body, signed.content_type

        ingest_url = f"{stack.service_url('order_ingest')}/wechat/callback/{SHOP_ID}"
        bare_url = f"http://127.0.0.1:{bare_port}/wechat/callback/{SHOP_ID}"
        worker_url = stack.service_url("order_ingest_worker")

        def warm_push(i: int) -> tuple[dict[str, str], bytes, str]:
            return push(pushes + i)  # the warm-up's own orders, after the run's

        _run_load(ingest_url, warm_push, min(rate, 100), WARMUP_PUSHES / min(rate, 100), "warm-up")
        if with_worker:
            _wait_for_worker(worker_url, WARMUP_PUSHES, (0.0, 0.0), timeout_s=drain_timeout, load_s=0)
        pids = {**stack.process_ids(), LOAD_GENERATOR: os.getpid()}
        cpu_before = {name: _proc_figures(pid)[0] for name, pid in pids.items()}
        bare = _run_load(bare_url, push, rate, duration, "bare FastAPI endpoint")
        cpu_between = {name: _proc_figures(pid)[0] for name, pid in pids.items()}
        worker_before = _worker_progress(worker_url) if with_worker else (0.0, 0.0)
        profiler = _start_profiler(pids["order_ingest"], duration) if profile else None
        ingest = _run_load(ingest_url, push, rate, duration, "order_ingest webhook")
        if profiler is not None:
            profiler.wait(timeout=60)
            console.print(f"profile (flame graph): {RESULTS / 'ingest-profile.svg'}")
        drain = (
            _wait_for_worker(
                worker_url, ingest.ok, worker_before, timeout_s=drain_timeout, load_s=ingest.elapsed_s
            )
            if with_worker
            else None
        )
        figures = {name: _proc_figures(pid) for name, pid in pids.items()}
    finally:
        console.print("stopping the private stack ...")
        stack.stop()
    _report(bare, ingest, drain, figures, cpu_before, cpu_between, rate, duration)


def _start_profiler(pid: int, duration: float) -> subprocess.Popen[bytes]:
    RESULTS.mkdir(exist_ok=True)
    py_spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen(
        [
            str(py_spy),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(duration)),
            "--rate",
            "200",
            "--output",
            str(RESULTS / "ingest-profile.svg"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _report(
    bare: LoadResult,
    ingest: LoadResult,
    drain: WorkerDrain | None,
    figures: dict[str, tuple[float, float]],
    cpu_before: dict[str, float],
    cpu_between: dict[str, float],
    rate: float,
    duration: float,
) -> None:
    table = Table(title=f"Webhook ingest at {rate:g}/s for {duration:g} s (open loop)")
    for column in (
        "scenario",
        "ok/s",
        "failed",
        "drain s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "over 5 s",
    ):
        table.add_column(column, justify="right")
    for result in (bare, ingest):
        table.add_row(
            result.name,
            f"{result.achieved_rate:.0f}",
            str(result.failed),
            f"{result.drain_s:.2f}",
            f"{result.percentile_ms(50):.1f}",
            f"{result.percentile_ms(99):.1f}",
            f"{result.percentile_ms(99.9):.1f}",
            f"{result.max_ms:.1f}",
            str(result.over_deadline),
        )
    console.print(table)
    ratio = ingest.achieved_rate / bare.achieved_rate if bare.achieved_rate else 0
    p99_ratio = ingest.percentile_ms(99) / max(1e-9, bare.percentile_ms(99))
    console.print(
        f"ack p99 {ingest.percentile_ms(99):.1f} ms against the bare endpoint's "
        f"{bare.percentile_ms(99):.1f} ms: {p99_ratio:.1f}×"
    )
    if drain is not None:
        drained = (
            f"drained {drain.drain_s:.1f} s after the load"
            if drain.drain_s is not None
            else (f"NOT drained: {drain.finished:.0f} of {drain.pushes} pushes done")
        )
        console.print(
            f"ingest worker: {drain.done_during_load:.0f} of {drain.pushes} pushes done during the load, "
            f"{drained}; {drain.fetched:.0f} order/get, {drain.fetch_rate:.0f}/s over the load and drain"
        )
    # Sustained: every request of the fixed-rate schedule answered OK, none left queueing after it.
    held = sustained(failed=ingest.failed, sent=ingest.sent, planned=rate * duration, drain_s=ingest.drain_s)
    targets = {
        f"sustained {rate:g}/s (all answered, drain < {SUSTAINED_DRAIN_S:g} s)": held and rate >= 1000,
        "p99 ack ≤ 100 ms": ingest.percentile_ms(99) <= 100,
        "no ack over 5 s": ingest.over_deadline == 0,
        "the worker fetched and stored every pushed order": drain is not None and drain.drain_s is not None,
    }
    for name, met in targets.items():
        console.print(f"  {'met ' if met else 'MISSED'} {name}")
    processes = Table(title="Processes (CPU seconds during each measured run, peak RSS)")
    for column in ("process", "CPU s, bare run", "CPU s, webhook run", "peak RSS MiB"):
        processes.add_column(column, justify="right")
    for name, (cpu, rss) in sorted(figures.items()):
        between = cpu_between.get(name, 0)
        processes.add_row(
            name, f"{between - cpu_before.get(name, 0):.1f}", f"{cpu - between:.1f}", f"{rss:.0f}"
        )
    console.print(processes)
    console.print(
        f"load generator CPU during the timed runs (requests prebuilt before them): "
        f"bare {bare.generator_cpu_s:.1f} s, webhook {ingest.generator_cpu_s:.1f} s"
    )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"ingest-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {
                "bare": bare.summary(),
                "ingest": ingest.summary(),
                "ratio_to_bare": round(ratio, 3),
                "p99_ratio_to_bare": round(p99_ratio, 2),
                "worker": None
                if drain is None
                else {
                    "pushes": drain.pushes,
                    "done_during_load": drain.done_during_load,
                    "order_get": drain.fetched,
                    "drain_s": drain.drain_s,
                    "fetch_rate_per_s": round(drain.fetch_rate, 1),
                },
                "targets_met": targets,
                "processes": {
                    n: {
                        "cpu_s_bare_run": round(cpu_between.get(n, 0) - cpu_before.get(n, 0), 2),
                        "cpu_s_webhook_run": round(c - cpu_between.get(n, 0), 2),
                        "peak_rss_mib": round(r, 1),
                    }
                    for n, (c, r) in figures.items()
                },
                "timeline": {"bare": bare.timeline, "ingest": ingest.timeline},
            },
            indent=2,
        )
    )
    console.print(f"results: {out}")


@app.command("store")
def bench_store(
    documents: Annotated[int, typer.Option(help="Order-sized documents in the collection.")] = 1000,
    operations: Annotated[int, typer.Option(help="Operations timed per kind.")] = 100,
) -> None:
    """Cost of each MongoDB operation the services use, on the local FerretDB (CPU ms per operation)."""
    from pymongo import AsyncMongoClient

    from shared.db import versioned_upsert

    stack = LocalStack(
        run_dir=Path(tempfile.mkdtemp(prefix="lvyue-bench-store-")),
        ports=StackPorts.free(services=[]),
        components=("ferretdb",),
    )
    stack.start()
    try:
        stack.wait_healthy(timeout_s=60)
        pid = stack.process_ids()["ferretdb"]

        async def run() -> list[tuple[str, float, float]]:
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack.mongo_uri)
            coll = client["bench"]["orders"]
            body = {"version": 1, "order": {"title": "x" * 1500, "lines": [{"sku": i} for i in range(5)]}}
            await coll.insert_many([{"_id": f"o{i}", **body} for i in range(documents)])
            kinds: list[tuple[str, Any]] = [
                ("insert_one", lambda i: coll.insert_one({"_id": f"n{i}", **body})),
                # Oldest and newest: a lookup that scans meets the oldest documents first (FerretDB's
                # unpatched `_id` lookup looked cheap here while it scanned; see deploy/ferretdb/build.sh).
                ("find_one {_id}, oldest", lambda i: coll.find_one({"_id": f"o{i}"})),
                ("find_one {_id}, newest", lambda i: coll.find_one({"_id": f"o{documents - 1 - i}"})),
                ("find_one {_id}, missing", lambda i: coll.find_one({"_id": f"missing{i}"})),
                ("find_one {_id, version}", lambda i: coll.find_one({"_id": f"o{i}", "version": 1})),
                ("update_one {_id}", lambda i: coll.update_one({"_id": f"o{i}"}, {"$set": {"p": 1}})),
                (
                    "versioned_upsert (newer)",
                    lambda i: versioned_upsert(coll, f"o{i}", version=2, fields={"p": 2}),
                ),
                (
                    "versioned_upsert (stale)",
                    lambda i: versioned_upsert(coll, f"o{i}", version=2, fields={"p": 3}),
                ),
            ]
            rows = []
            for name, operation in kinds:
                cpu_before, started = _proc_figures(pid)[0], time.perf_counter()
                for i in range(operations):
                    await operation(i)
                elapsed = time.perf_counter() - started
                rows.append(
                    (name, operations / elapsed, 1000 * (_proc_figures(pid)[0] - cpu_before) / operations)
                )
            await client.close()
            return rows

        rows = asyncio.run(run())
    finally:
        stack.stop()
    table = Table(title=f"FerretDB (SQLite) with {documents} order-sized documents")
    for column in ("operation", "ops/s (one client)", "FerretDB CPU ms/op"):
        table.add_column(column, justify="right")
    for name, per_second, cpu_ms in rows:
        table.add_row(name, f"{per_second:.0f}", f"{cpu_ms:.1f}")
    console.print(table)
