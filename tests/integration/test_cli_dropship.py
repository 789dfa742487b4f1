"""`lvyue shop dropship` and the suppliers' WeChat supplier appid against the real database: off by
default, documents written before the switches existed read as off / none."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from pymongo import AsyncMongoClient
from typer.testing import CliRunner

from ops.cli import app
from ops.stack import LocalStack
from services.dispatch.catalog import SUPPLIERS, Catalog
from shared.db import Document
from shared.wechat.shops import SHOPS, ShopRepository

pytestmark = pytest.mark.integration

runner = CliRunner()
AES_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"


def test_the_drop_ship_switch_and_supplier_appids(stack: LocalStack) -> None:
    database = f"t_{uuid.uuid4().hex[:10]}"
    env = {**stack.client_environment(), "MONGO_DATABASE": database, "COLUMNS": "250"}

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, list(args), env=env)
        return result.exit_code, result.output

    shop = ["--shop-id", "shop-1", "--appid", "wx5823bf96d3bd56c7", "--secret", "s", "--token", "t"]
    assert run("shop", "add", *shop, "--aes-key", AES_KEY)[0] == 0
    assert run("shop", "dropship", "--shop-id", "nope", "--on")[0] == 1
    code, out = run("shop", "dropship", "--shop-id", "shop-1", "--on")
    assert code == 0 and "on" in out, out
    assert " on " in run("shop", "list")[1]

    code, out = run(
        "supplier", "add", "--supplier-id", "alpha", "--name", "A", "--wechat-supplier-appid", "wxs1"
    )
    assert code == 0, out
    assert run("supplier", "add", "--supplier-id", "beta", "--name", "B")[0] == 0
    assert "wxs1" in run("supplier", "list")[1]
    assert run("supplier", "wechat-appid", "beta", "wxs2")[0] == 0
    assert run("supplier", "wechat-appid", "beta")[0] == 2  # an appid, or --clear
    assert run("supplier", "wechat-appid", "beta", "not an appid")[0] == 1
    assert run("supplier", "wechat-appid", "nobody", "wxs3")[0] == 1
    assert run("supplier", "wechat-appid", "alpha", "--clear")[0] == 0

    async def check() -> None:
        client: AsyncMongoClient[Document] = AsyncMongoClient(stack.mongo_uri, tz_aware=True)
        try:
            db = client[database]
            shops = ShopRepository(db)
            stored = await shops.get("shop-1")
            assert stored is not None and stored.dropship_mirror
            await shops.set_dropship_mirror("shop-1", on=False)
            stored = await shops.get("shop-1")
            assert stored is not None and not stored.dropship_mirror
            catalog = Catalog(db)
            alpha, beta = await catalog.get_supplier("alpha"), await catalog.get_supplier("beta")
            assert alpha is not None and alpha.wechat_supplier_appid is None
            assert beta is not None and beta.wechat_supplier_appid == "wxs2"
            # Written before the switches existed: off, and no appid.
            document = await db[SHOPS].find_one({"_id": "shop-1"})
            assert document is not None
            old_shop = {k: v for k, v in document.items() if k != "dropship_mirror"} | {"_id": "old-shop"}
            await db[SHOPS].insert_one(old_shop | {"appid": "wxold"})
            old = await shops.get("old-shop")
            assert old is not None and not old.dropship_mirror
            await db[SUPPLIERS].insert_one({"_id": "old", "name": "Old", "active": True})
            legacy = await catalog.get_supplier("old")
            assert legacy is not None and legacy.wechat_supplier_appid is None
        finally:
            await client.drop_database(database)
            await client.close()

    asyncio.run(check())
