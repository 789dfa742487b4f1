"""`lvyue late`: every fulfilment deadline that has passed and is not resolved."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from services.logistics.domain.deadlines import DueAlert
from services.logistics.handlers import deadline_policy, due_alerts
from services.logistics.store import open_state
from shared.db import create_mongo_client, database
from shared.settings import LogisticsSettings

console = Console()


def late(
    kind: Annotated[str | None, typer.Option(help="Only this kind, e.g. ship_by_breached.")] = None,
    shop_id: Annotated[str | None, typer.Option(help="Only this shop.")] = None,
) -> None:
    """Late orders and parcels: ship-by warnings and breaches, pickups overdue, stalled parcels,
    delivered but not confirmed. Read from the logistics records, against the current time."""
    settings = LogisticsSettings()

    async def collect() -> list[DueAlert]:
        client = create_mongo_client(settings.mongo, app_name="lvyue-cli")
        try:
            state = open_state(database(client, settings.mongo))
            await state.load()
            now = datetime.now(UTC)
            return due_alerts(
                state.ship_by, state.parcels, state.confirmed_orders, now, deadline_policy(settings)
            )
        finally:
            await client.close()

    alerts = [
        a
        for a in asyncio.run(collect())
        if (kind is None or a.kind == kind) and (shop_id is None or a.shop_id == shop_id)
    ]
    now = datetime.now(UTC)
    table = Table(title=f"Late: {len(alerts)}")
    for column in ("kind", "shop", "order", "subject", "due", "overdue by"):
        table.add_column(column)
    for alert in alerts:
        overdue = now - alert.due_at
        table.add_row(
            alert.kind,
            alert.shop_id,
            alert.order_id,
            alert.subject,
            alert.due_at.isoformat(timespec="minutes"),
            f"{overdue.days}d {overdue.seconds // 3600}h {overdue.seconds % 3600 // 60}m",
        )
    console.print(table)
