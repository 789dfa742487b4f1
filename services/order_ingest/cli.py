"""`lvyue shop ...`: register WeChat shops, list them (secrets masked), rotate the EncodingAESKey, turn
the WeChat drop-ship mirror of their dispatch orders on or off."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from pydantic import SecretStr, ValidationError
from rich.console import Console
from rich.table import Table

from shared.db import create_mongo_client, database, ensure_indexes
from shared.settings import OrderIngestSettings
from shared.wechat.shops import INDEXES, Shop, ShopExistsError, ShopNotFoundError, ShopRepository

app = typer.Typer(help="WeChat shops: credentials for the webhook and the API client.")
console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")


def _with_repository(action: Callable[[ShopRepository], Awaitable[T]]) -> T:
    settings = OrderIngestSettings()

    async def run() -> T:
        client = create_mongo_client(settings.mongo, app_name="lvyue-cli")
        try:
            db = database(client, settings.mongo)
            await ensure_indexes(db, INDEXES)
            return await action(ShopRepository(db))
        finally:
            await client.close()

    return asyncio.run(run())


@app.command("add")
def add(
    shop_id: Annotated[str, typer.Option(help="Our id for the shop; part of its callback URL.")],
    appid: Annotated[str, typer.Option(help="The shop's appid.")],
    secret: Annotated[str, typer.Option(help="The app secret.", prompt=True, hide_input=True)],
    token: Annotated[str, typer.Option(help="The message-push Token.", prompt=True, hide_input=True)],
    aes_key: Annotated[
        str, typer.Option(help="The 43-character EncodingAESKey.", prompt=True, hide_input=True)
    ],
    api_base: Annotated[str | None, typer.Option(help="API base URL (default: WECHAT_API_BASE).")] = None,
) -> None:
    """Register a shop. Its callback URL is /wechat/callback/SHOP_ID on order_ingest."""
    try:
        shop = Shop(
            shop_id=shop_id,
            appid=appid,
            app_secret=SecretStr(secret),
            token=SecretStr(token),
            encoding_aes_key=SecretStr(aes_key),
            api_base=api_base,
        )
    except ValidationError as exc:
        err_console.print(f"[red]invalid shop:[/red] {_errors(exc)}")
        raise typer.Exit(2) from exc
    try:
        _with_repository(lambda repo: repo.add(shop))
    except ShopExistsError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"shop {shop_id} registered; callback path /wechat/callback/{shop_id}")


@app.command("list")
def list_shops() -> None:
    """Every shop, secrets masked."""
    shops = _with_repository(lambda repo: repo.list())
    table = Table(title="WeChat shops")
    for column in (
        "shop",
        "appid",
        "api base",
        "token",
        "aes key",
        "rotating",
        "drop-ship mirror",
        "updated",
    ):
        table.add_column(column)
    for shop in shops:
        public = shop.public()
        table.add_row(
            public.shop_id,
            public.appid,
            public.api_base or "(WECHAT_API_BASE)",
            public.token,
            public.encoding_aes_key,
            "yes" if public.rotating_key else "",
            "on" if public.dropship_mirror else "",
            public.updated_at.isoformat(),
        )
    console.print(table)


@app.command("rotate-key")
def rotate_key(
    shop_id: Annotated[str, typer.Option(help="The shop.")],
    aes_key: Annotated[str, typer.Option(help="The new EncodingAESKey.", prompt=True, hide_input=True)],
) -> None:
    """Make a new EncodingAESKey current; the old one keeps opening pushes sent before the switch."""
    try:
        _with_repository(lambda repo: repo.rotate_key(shop_id, aes_key))
    except ShopNotFoundError as exc:
        err_console.print(f"[red]no shop {shop_id}[/red]")
        raise typer.Exit(1) from exc
    except ValidationError as exc:
        err_console.print(f"[red]invalid key:[/red] {_errors(exc)}")
        raise typer.Exit(2) from exc
    console.print(f"shop {shop_id}: new key current, previous key kept for in-flight pushes")


@app.command("dropship")
def dropship(
    shop_id: Annotated[str, typer.Option(help="The shop.")],
    on: Annotated[bool, typer.Option("--on/--off", help="Mirror into WeChat's drop-ship orders, or stop.")],
) -> None:
    """Mirror the shop's dispatch orders into WeChat's drop-ship (代发) orders, so suppliers with a
    WeChat supplier appid (`lvyue supplier wechat-appid`) can print WeChat e-waybills for them. Off by
    default; dispatch picks the change up within 30 s. Turned off, what was mirrored is still cancelled
    in WeChat when its dispatch order is."""
    try:
        _with_repository(lambda repo: repo.set_dropship_mirror(shop_id, on=on))
    except ShopNotFoundError as exc:
        err_console.print(f"[red]no shop {shop_id}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"shop {shop_id}: drop-ship mirror {'on' if on else 'off'}")


def _errors(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
