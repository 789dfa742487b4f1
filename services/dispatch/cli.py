"""`lvyue supplier|route|holds`: suppliers and their API keys, SKU routes, and orders on hold."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError
from pymongo.asynchronous.database import AsyncDatabase
from rich.console import Console
from rich.table import Table

from services.dispatch.catalog import INDEXES, Catalog, CatalogError, Supplier
from services.dispatch.domain.plan import OrderPlan, PlanStatus
from services.dispatch.domain.routing import Route
from services.dispatch.store import PLAN_VERSIONS
from shared.db import Document, create_mongo_client, database, ensure_indexes
from shared.events.dispatch import ShippingAddress
from shared.settings import DispatchSettings

supplier_app = typer.Typer(help="Suppliers (drop-ship fulfilment partners) and their API keys.")
key_app = typer.Typer(help="Supplier API keys: several per supplier, revocable, shown once.")
supplier_app.add_typer(key_app, name="key")
route_app = typer.Typer(help="SKU routes: which supplier fulfils which product of which shop.")
console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")


def _run(action: Callable[[Catalog, AsyncDatabase[Document]], Awaitable[T]]) -> T:
    settings = DispatchSettings()

    async def run() -> T:
        client = create_mongo_client(settings.mongo, app_name="lvyue-cli")
        try:
            db = database(client, settings.mongo)
            await ensure_indexes(db, INDEXES)
            return await action(Catalog(db), db)
        finally:
            await client.close()

    try:
        return asyncio.run(run())
    except CatalogError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc


@supplier_app.command("add")
def add_supplier(
    supplier_id: Annotated[
        str, typer.Option(help="Our id for the supplier: lowercase letters, digits, - and _.")
    ],
    name: Annotated[str, typer.Option(help="Display name.")],
    return_name: Annotated[str | None, typer.Option(help="Return address: contact name.")] = None,
    return_phone: Annotated[str | None, typer.Option(help="Return address: phone.")] = None,
    return_address: Annotated[
        str | None, typer.Option(help="Return address: 'province|city|county|detail'.")
    ] = None,
    wechat_supplier_appid: Annotated[
        str | None,
        typer.Option(
            help="The supplier's WeChat supplier appid (供货商 appid), for shops that mirror dispatch "
            "orders into WeChat's drop-ship orders (`lvyue shop dropship`)."
        ),
    ] = None,
) -> None:
    """Register a supplier (active). Create an API key for it with `lvyue supplier key create`."""
    try:
        address = None
        if return_address:
            province, city, county, detail = (part.strip() for part in return_address.split("|"))
            address = ShippingAddress(
                name=return_name or name,
                phone=return_phone or "",
                province=province,
                city=city,
                county=county,
                detail=detail,
            )
        supplier = Supplier(
            supplier_id=supplier_id,
            name=name,
            return_address=address,
            wechat_supplier_appid=wechat_supplier_appid,
        )
    except (ValidationError, ValueError) as exc:
        err_console.print(f"[red]invalid supplier:[/red] {exc}")
        raise typer.Exit(2) from exc
    _run(lambda catalog, _: catalog.add_supplier(supplier))
    console.print(f"supplier {supplier_id} added")


@supplier_app.command("list")
def list_suppliers() -> None:
    """Every supplier with its key count and return address."""

    async def collect(catalog: Catalog, _: AsyncDatabase[Document]) -> list[tuple[Supplier, int]]:
        keys = await catalog.keys()
        return [
            (s, sum(1 for k in keys if k.supplier_id == s.supplier_id and k.revoked_at is None))
            for s in await catalog.suppliers()
        ]

    table = Table(title="Suppliers")
    for column in ("supplier", "name", "active", "live keys", "return address", "WeChat supplier appid"):
        table.add_column(column)
    for supplier, keys in _run(collect):
        address = supplier.return_address
        table.add_row(
            supplier.supplier_id,
            supplier.name,
            "yes" if supplier.active else "no",
            str(keys),
            f"{address.province}{address.city}{address.county}{address.detail}" if address else "",
            supplier.wechat_supplier_appid or "",
        )
    console.print(table)


@supplier_app.command("wechat-appid")
def set_wechat_appid(
    supplier_id: Annotated[str, typer.Argument()],
    appid: Annotated[str | None, typer.Argument(help="The WeChat supplier appid (供货商 appid).")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove it: no longer mirrored.")] = False,
) -> None:
    """Set a supplier's WeChat supplier appid: its dispatch orders of shops with the drop-ship mirror on
    are then assigned to it in WeChat (new dispatch orders; the service re-reads it within 30 s)."""
    if (appid is None) == (not clear):
        err_console.print("[red]give an appid, or --clear[/red]")
        raise typer.Exit(2)
    _run(lambda catalog, _: catalog.set_wechat_supplier_appid(supplier_id, None if clear else appid))
    console.print(f"supplier {supplier_id}: WeChat supplier appid {'cleared' if clear else appid}")


@supplier_app.command("deactivate")
def deactivate(supplier_id: Annotated[str, typer.Argument()]) -> None:
    """Stop routing new work to a supplier (fallback routes take over); its open work stays."""
    _run(lambda catalog, _: catalog.set_supplier(supplier_id, active=False))
    console.print(f"supplier {supplier_id} deactivated")


@supplier_app.command("activate")
def activate(supplier_id: Annotated[str, typer.Argument()]) -> None:
    _run(lambda catalog, _: catalog.set_supplier(supplier_id, active=True))
    console.print(f"supplier {supplier_id} active")


@key_app.command("create")
def create_key(
    supplier_id: Annotated[str, typer.Option(help="The supplier.")],
    label: Annotated[str, typer.Option(help="What the key is for (shown in lists).")] = "",
) -> None:
    """Create an API key. It is printed once; only its hash is stored."""
    issued = _run(lambda catalog, _: catalog.create_key(supplier_id, label=label))
    console.print(f"key id {issued.key_id} for {supplier_id}; keep it secret, it is not shown again:")
    console.print(issued.token, soft_wrap=True, highlight=False)


@key_app.command("revoke")
def revoke_key(key_id: Annotated[str, typer.Argument(help="The key id (the part after lvk_).")]) -> None:
    """Revoke a key: requests with it are refused within seconds."""
    _run(lambda catalog, _: catalog.revoke_key(key_id))
    console.print(f"key {key_id} revoked")


@key_app.command("list")
def list_keys(supplier_id: Annotated[str | None, typer.Option(help="Only this supplier.")] = None) -> None:
    table = Table(title="Supplier API keys")
    for column in ("key id", "supplier", "label", "created", "revoked"):
        table.add_column(column)
    for key in _run(lambda catalog, _: catalog.keys(supplier_id)):
        table.add_row(
            key.key_id,
            key.supplier_id,
            key.label,
            key.created_at.isoformat(),
            key.revoked_at.isoformat() if key.revoked_at else "",
        )
    console.print(table)


@route_app.command("set")
def set_route(
    shop_id: Annotated[str, typer.Option(help="The shop.")],
    supplier_id: Annotated[str, typer.Option(help="The supplier that fulfils it.")],
    product_id: Annotated[str, typer.Option(help="WeChat product_id (with --sku-id).")] = "",
    sku_id: Annotated[str, typer.Option(help="WeChat sku_id (with --product-id).")] = "",
    sku_code: Annotated[str, typer.Option(help="The merchant's sku_code (商家编码).")] = "",
    priority: Annotated[int, typer.Option(help="Lower first; higher ones are fallbacks.")] = 100,
    stock_cap: Annotated[int | None, typer.Option(help="Units this route may take in all.")] = None,
) -> None:
    """Add or change a route. With no product, SKU or code it is the shop's default route."""
    try:
        route = Route(
            shop_id=shop_id,
            supplier_id=supplier_id,
            priority=priority,
            product_id=product_id,
            sku_id=sku_id,
            sku_code=sku_code,
            stock_cap=stock_cap,
        )
    except ValueError as exc:
        err_console.print(f"[red]invalid route:[/red] {exc}")
        raise typer.Exit(2) from exc

    async def save(catalog: Catalog, _: AsyncDatabase[Document]) -> None:
        if await catalog.get_supplier(supplier_id) is None:
            raise CatalogError(f"no supplier {supplier_id}: add it first")
        await catalog.set_route(route)

    _run(save)
    console.print(f"route {route.route_id} set")


@route_app.command("list")
def list_routes(shop_id: Annotated[str | None, typer.Option(help="Only this shop.")] = None) -> None:
    table = Table(title="Routes (most specific first, then by priority)")
    for column in ("shop", "match", "supplier", "priority", "stock cap"):
        table.add_column(column)
    for route in _run(lambda catalog, _: catalog.routes(shop_id)):
        match = (
            f"sku {route.product_id}/{route.sku_id}"
            if route.product_id
            else f"code {route.sku_code}"
            if route.sku_code
            else "shop default"
        )
        table.add_row(
            route.shop_id,
            match,
            route.supplier_id,
            str(route.priority),
            "" if route.stock_cap is None else str(route.stock_cap),
        )
    console.print(table)


@route_app.command("import")
def import_routes(file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)]) -> None:
    """Routes from a CSV: shop_id,supplier_id,priority,product_id,sku_id,sku_code,stock_cap.
    Every row is checked first; nothing is written if one is wrong."""
    count = _run(lambda catalog, _: catalog.import_routes(file.read_text(encoding="utf-8-sig")))
    console.print(f"{count} routes imported")


@route_app.command("remove")
def remove_route(
    route_id: Annotated[str, typer.Argument(help="As `route list` shows: shop|match|supplier.")],
) -> None:
    _run(lambda catalog, _: catalog.remove_route(route_id))
    console.print(f"route {route_id} removed")


async def current_plans(db: AsyncDatabase[Document]) -> list[OrderPlan]:
    newest: dict[str, tuple[int, Document]] = {}
    async for document in db[PLAN_VERSIONS].find({}):
        key = document["order_id"]
        if key not in newest or document["revision"] > newest[key][0]:
            newest[key] = (document["revision"], document["plan"])
    return [OrderPlan.model_validate(plan) for _, plan in newest.values()]


def holds(shop_id: Annotated[str | None, typer.Option(help="Only this shop.")] = None) -> None:
    """Orders waiting for a route, oldest first. They are released automatically when a route or a
    supplier that can take them is added."""

    async def held(_: Catalog, db: AsyncDatabase[Document]) -> list[OrderPlan]:
        plans = await current_plans(db)
        return [p for p in plans if p.status == PlanStatus.HELD and (shop_id is None or p.shop_id == shop_id)]

    plans = sorted(_run(held), key=lambda p: p.held_since.isoformat() if p.held_since else "")
    table = Table(title=f"Orders on hold: {len(plans)}")
    for column in ("order", "shop", "reason", "lines held", "held since", "ship by"):
        table.add_column(column)
    for plan in plans:
        by_no = {line.line_no: line for line in plan.lines}
        lines = ", ".join(
            f"{by_no[n].product_id}/{by_no[n].sku_id}"
            + (f" ({by_no[n].sku_code})" if by_no[n].sku_code else "")
            for n in plan.held_line_nos
            if n in by_no
        )
        table.add_row(
            plan.order_id,
            plan.shop_id,
            plan.hold_reason or "",
            lines,
            plan.held_since.isoformat() if plan.held_since else "",
            plan.ship_by.isoformat() if plan.ship_by else "",
        )
    console.print(table)
