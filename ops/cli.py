"""`lvyue`: the operators' command line. Each service adds its own command group here."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from ops import bench as bench_cli
from ops import dlq as dlq_cli
from ops import operator_cli
from ops.bench_dispatch import bench_dispatch
from ops.bench_e2e import bench_e2e
from ops.bench_report import bench_report
from ops.sale import default_sale, run_sale_on_stack
from ops.stack import ALL_COMPONENTS, SERVICES, ComponentHealth, LocalStack, StackError, default_stack
from services.aftersale import cli as aftersale_cli
from services.dispatch import cli as dispatch_cli
from services.logistics import cli as logistics_cli
from services.order_ingest import cli as shop_cli
from shared.kafka.admin import ensure_topics
from shared.kafka.topics import topics_to_create
from shared.settings import KafkaSettings

app = typer.Typer(
    help="Lüyue (履约) operations: the local stack, Kafka topics, shops, suppliers, routes and holds."
)
stack_app = typer.Typer(help="The embedded local stack: Kafka, FerretDB, Prometheus and the services.")
topics_app = typer.Typer(help="Kafka topics from the registry (shared/kafka/topics.py).")
app.add_typer(stack_app, name="stack")
app.add_typer(topics_app, name="topics")
app.add_typer(shop_cli.app, name="shop")
app.add_typer(dlq_cli.app, name="dlq")
app.add_typer(bench_cli.app, name="bench")
bench_cli.app.command("dispatch")(bench_dispatch)
bench_cli.app.command("e2e")(bench_e2e)
bench_cli.app.command("report")(bench_report)
app.add_typer(dispatch_cli.supplier_app, name="supplier")
app.add_typer(dispatch_cli.route_app, name="route")
app.command("holds")(dispatch_cli.holds)
app.command("late")(logistics_cli.late)
app.add_typer(logistics_cli.ewaybill_app, name="ewaybill-account")
app.add_typer(aftersale_cli.app, name="aftersale")
app.add_typer(operator_cli.operator_app, name="operator")
app.command("audit")(operator_cli.audit)

console = Console()
err_console = Console(stderr=True)

Components = Annotated[
    str, typer.Option(help="Comma-separated components to run (default: all).", show_default=False)
]


def _quiet_client_logs() -> None:
    # Health probes hit components that are still starting; their client libraries log every refusal.
    for name in ("aiokafka", "kafka", "pymongo"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _stack(components: str | None) -> LocalStack:
    if not components:
        return default_stack()
    chosen = tuple(c.strip() for c in components.split(",") if c.strip())
    ordered = tuple(c for c in ALL_COMPONENTS if c in chosen)
    return default_stack(ordered) if ordered else default_stack()


def _health_table(report: list[ComponentHealth], stack: LocalStack) -> Table:
    table = Table(title=f"Lüyue local stack ({stack.run_dir})")
    table.add_column("component")
    table.add_column("address")
    table.add_column("process")
    table.add_column("health")
    for item in report:
        address = ", ".join(f"127.0.0.1:{p}" for p in stack.ports.of(item.name))
        health = "[green]ok[/green]" if item.healthy else f"[yellow]{item.detail or 'waiting'}[/yellow]"
        table.add_row(item.name, address, item.state, health)
    return table


def _start_and_wait(
    stack: LocalStack, interrupted: Callable[[], bool] = lambda: False
) -> list[ComponentHealth]:
    _quiet_client_logs()
    started = time.monotonic()
    stack.start()

    def show(report: list[ComponentHealth]) -> None:
        live.update(_health_table(report, stack))
        if interrupted():
            raise StackError("interrupted while starting")

    with Live(console=console, refresh_per_second=4, transient=False) as live:
        report = stack.wait_healthy(on_poll=show)
    console.line()
    console.print(
        f"[green]stack healthy in {time.monotonic() - started:.1f}s[/green]; logs in {stack.logs_dir}"
    )
    return report


def _print_urls(stack: LocalStack) -> None:
    console.print(f"Prometheus:  {stack.prometheus_url}")
    for service in (c for c in stack.components if c in SERVICES):
        private = stack.private_url(service)
        public = stack.service_url(service)
        where = f"{public}, private {private}" if private != public else public
        console.print(f"{service:<12} {where}  (docs and metrics: {private}/docs, /metrics)")
    console.print(f"Kafka:       {stack.kafka_bootstrap}    MongoDB (FerretDB): {stack.mongo_uri}")
    if "wechat_sim" in stack.components:
        console.print(f"WeChat stand-in: {stack.wechat_sim_url}/docs  (control API under /sim)")
    if "carrier_sim" in stack.components:
        console.print(f"carrier stand-in: {stack.carrier_sim_url}/docs  (control API under /sim)")
    if "dispatch" in stack.components:
        console.print(f"supplier API docs: {stack.service_url('dispatch')}/docs")


@stack_app.command("up")
def stack_up(components: Components = "") -> None:
    """Start the stack in the background; return once every part answers its health check."""
    stack = _stack(components)
    if stack.supervisor_running():
        err_console.print(f"the stack in {stack.run_dir} is already running (`make status`, `make down`)")
        raise typer.Exit(1)
    try:
        _start_and_wait(stack)
    except StackError as exc:
        err_console.print(f"[red]{exc}[/red]")
        stack.stop()
        raise typer.Exit(1) from exc
    _print_urls(stack)


@stack_app.command("down")
def stack_down() -> None:
    """Stop every process of the stack; leaves no process or port behind. Data stays in the run dir."""
    stack = default_stack()
    try:
        stack.stop()
    except StackError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print("stack stopped")


@stack_app.command("status")
def stack_status() -> None:
    """Show each component's process state and health; exit 1 unless all are healthy."""
    _quiet_client_logs()
    stack = default_stack()
    if not stack.supervisor_running():
        console.print("stack is not running (`make up` starts it)")
        raise typer.Exit(1)
    report = asyncio.run(stack.health())
    console.print(_health_table(report, stack))
    if not all(c.healthy for c in report):
        raise typer.Exit(1)


@stack_app.command("run")
def stack_run(
    once: Annotated[
        bool, typer.Option("--once", help="Exit after the sale's report (non-zero if an invariant fails).")
    ] = False,
    sale: Annotated[bool, typer.Option(help="Drive a live-stream sale through the stack first.")] = True,
    orders: Annotated[
        int,
        typer.Option(
            help="Orders in the sale: the full live-stream sale by default (about 13 minutes on a "
            "2-core machine running every service and stand-in at once; see the README)."
        ),
    ] = 5000,
    time_scale: Annotated[float, typer.Option(help="How much faster than real time the sale runs.")] = 60,
    components: Components = "",
) -> None:
    """Start the stack in the foreground, run a live-stream sale through it and report, then keep
    serving until Ctrl-C, which stops everything."""
    stack = _stack(components)
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    if stack.supervisor_running():
        err_console.print(f"the stack in {stack.run_dir} is already running (`make down` stops it)")
        raise typer.Exit(1)
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    exit_code = 0
    try:
        _start_and_wait(stack, lambda: stopping)
        if sale and set(SERVICES) | {"wechat_sim", "carrier_sim"} <= set(stack.components):
            settings = default_sale().model_copy(update={"time_scale": time_scale})
            settings = settings.model_copy(
                update={"profile": settings.profile.model_copy(update={"total_orders": orders})}
            )
            console.print(f"live-stream sale: {orders} orders, {time_scale:g}x real time ...")
            report = run_sale_on_stack(stack, settings, console)
            console.print(report.render())
            (stack.run_dir / "sale-report.json").write_text(report.to_json())
            console.print(f"report: {stack.run_dir / 'sale-report.json'}")
            if not report.ok:
                exit_code = 3
        _print_urls(stack)
        if not once:
            console.print("serving; Ctrl-C stops everything")
            while not stopping:
                time.sleep(0.5)
    except StackError as exc:
        err_console.print(f"[red]{exc}[/red]")
        exit_code = 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        console.print("stopping the stack ...")
        stack.stop()
        console.print("stopped")
    raise typer.Exit(exit_code)


@topics_app.command("create")
def topics_create() -> None:
    """Create every registry topic (and its dead-letter topic) that does not exist yet."""
    created = asyncio.run(ensure_topics(KafkaSettings()))
    console.print(f"created: {', '.join(created) if created else 'nothing (all exist)'}")


@topics_app.command("list")
def topics_list() -> None:
    """The registry: every topic, its partitions, retention and cleanup policy."""
    settings = KafkaSettings()
    table = Table(title="Kafka topics (key: order id)")
    for column in ("topic", "partitions", "retention (days)", "cleanup", "purpose"):
        table.add_column(column)
    for spec in topics_to_create():
        table.add_row(
            spec.name,
            str(spec.partitions or settings.default_partitions),
            f"{spec.retention_ms / 86_400_000:g}",
            spec.cleanup_policy.value,
            spec.description,
        )
    console.print(table)


if __name__ == "__main__":
    app()
