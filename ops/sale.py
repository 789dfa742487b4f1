"""`make run`'s main job: a live-stream sale driven through the running local stack, with live
progress per stage and the report (orders per stage, latency per stage, holds, dead letters,
after-sale outcomes, invariants checked against the stand-ins' records)."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

from rich.console import Console
from rich.live import Live
from rich.table import Table

from ops.stack import LocalStack
from services.dispatch.catalog import INDEXES as CATALOG_INDEXES
from services.dispatch.catalog import Catalog, Supplier
from services.dispatch.domain.routing import Route
from shared.db import create_mongo_client, database, ensure_indexes
from shared.events.dispatch import ShippingAddress
from shared.operators import OperatorRole, OperatorTokens
from shared.settings import MongoSettings
from shared.wechat.shops import INDEXES as SHOP_INDEXES
from shared.wechat.shops import ShopRepository
from sim.sale.driver import SaleProgress
from sim.sale.report import SaleReport
from sim.sale.run import SaleUrls, run_sale
from sim.sale.settings import SaleSettings, with_short_aftermath
from sim.sale.world import RouteSpec

SUPPLIER_CURSORS = "supplier-cursors.json"  # in the stack's run directory: `make clean` forgets it


class CatalogRegistrar:
    """The sale's suppliers, keys and routes, registered as `lvyue supplier` and `lvyue route` do, and
    its after-sale desk's operator token, as `lvyue operator token create` makes one."""

    def __init__(self, catalog: Catalog, operators: OperatorTokens) -> None:
        self._catalog = catalog
        self._operators = operators

    async def operator_token(self, name: str) -> str:
        issued = await self._operators.create(name, OperatorRole.ADMIN, lifetime=timedelta(days=1))
        return issued.token

    async def add_supplier(self, supplier_id: str, name: str, return_address: ShippingAddress) -> None:
        if await self._catalog.get_supplier(supplier_id) is None:  # a second `make run` reuses them
            await self._catalog.add_supplier(
                Supplier(supplier_id=supplier_id, name=name, return_address=return_address)
            )

    async def create_key(self, supplier_id: str) -> str:
        return (await self._catalog.create_key(supplier_id, label="make run")).token

    async def set_route(self, route: RouteSpec) -> None:
        await self._catalog.set_route(Route(**dataclasses.asdict(route)))


def default_sale() -> SaleSettings:
    """About 5,000 orders: the stream's hour and a half runs in a minute and a half (60x), and what
    follows each order (shipping, deliveries, confirmations, after-sales) is shortened to minutes,
    so every order's story ends within the settle time."""
    return with_short_aftermath(SaleSettings(time_scale=60))


def _progress_table(progress: SaleProgress) -> Table:
    table = Table(title=f"live sale: {progress.elapsed_s:.0f} s, {progress.due} orders due")
    table.add_column("stage")
    table.add_column("count", justify="right")
    for stage, count in progress.counts.items():
        table.add_row(stage, str(count))
    table.add_row("driver request p99 ms", f"{progress.request_p99_ms:.0f}")
    return table


def run_sale_on_stack(stack: LocalStack, settings: SaleSettings, console: Console) -> SaleReport:
    async def run() -> SaleReport:
        mongo_settings = MongoSettings(uri=stack.mongo_uri)
        client = create_mongo_client(mongo_settings, app_name="lvyue-sale")
        try:
            db = database(client, mongo_settings)
            await ensure_indexes(db, [*CATALOG_INDEXES, *SHOP_INDEXES])
            urls = SaleUrls(
                wechat=stack.wechat_sim_url,
                carriers=stack.carrier_sim_url,
                ingest=stack.service_url("order_ingest"),
                dispatch=stack.service_url("dispatch"),
                aftersale=stack.service_url("aftersale"),
                kafka_bootstrap=stack.kafka_bootstrap,
            )
            with Live(console=console, refresh_per_second=2, transient=True) as live:
                return await run_sale(
                    settings,
                    urls,
                    CatalogRegistrar(Catalog(db), OperatorTokens(db)),
                    shops=ShopRepository(db),
                    on_progress=lambda progress: live.update(_progress_table(progress)),
                    supplier_cursor_file=stack.run_dir / SUPPLIER_CURSORS,
                )
        finally:
            await client.close()

    return asyncio.run(run())
