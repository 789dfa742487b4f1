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
from services.logistics.waybills import EWAYBILL_ACCOUNTS, EwaybillAccount, account_key
from shared.db import create_mongo_client, database
from shared.settings import LogisticsSettings
from shared.versioned import VersionedProjection

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


ewaybill_app = typer.Typer(
    help="WeChat e-waybill (电子面单) accounts: waybills through WeChat instead of the aggregator."
)


@ewaybill_app.command("set")
def set_account(
    shop_id: Annotated[str, typer.Option(help="The shop.")],
    carrier_code: Annotated[str, typer.Option(help="WeChat delivery_id, e.g. ZTO.")],
    acct_id: Annotated[str, typer.Option(help="ewaybill_acct_id (account/get lists them).")],
    template_id: Annotated[str, typer.Option(help="The print template.")] = "",
    site_code: Annotated[str, typer.Option(help="The carrier outlet, when the carrier needs one.")] = "",
) -> None:
    """Issue this shop's waybills with this carrier through WeChat's e-waybill service (the running
    logistics service picks it up within a scan interval)."""
    settings = LogisticsSettings()
    account = EwaybillAccount(
        shop_id=shop_id,
        carrier_code=carrier_code,
        acct_id=acct_id,
        template_id=template_id,
        site_code=site_code,
    )

    async def save() -> None:
        client = create_mongo_client(settings.mongo, app_name="lvyue-cli")
        try:
            accounts = VersionedProjection(
                database(client, settings.mongo), EWAYBILL_ACCOUNTS, EwaybillAccount
            )
            await accounts.load()
            await accounts.save(
                account_key(shop_id, carrier_code), account, cause=f"cli:{account.model_dump_json()}"
            )
        finally:
            await client.close()

    asyncio.run(save())
    console.print(f"{shop_id}: {carrier_code} waybills through WeChat e-waybill account {acct_id}")


@ewaybill_app.command("list")
def list_accounts() -> None:
    settings = LogisticsSettings()

    async def load() -> list[EwaybillAccount]:
        client = create_mongo_client(settings.mongo, app_name="lvyue-cli")
        try:
            accounts = VersionedProjection(
                database(client, settings.mongo), EWAYBILL_ACCOUNTS, EwaybillAccount
            )
            await accounts.load()
            return list(accounts)
        finally:
            await client.close()

    table = Table(title="WeChat e-waybill accounts")
    for column in ("shop", "carrier", "account", "template", "site"):
        table.add_column(column)
    for account in asyncio.run(load()):
        table.add_row(
            account.shop_id, account.carrier_code, account.acct_id, account.template_id, account.site_code
        )
    console.print(table)
