"""`lvyue supplier|route|holds` against the real database: suppliers, API keys (hashed, revocable),
routes set and imported from CSV (all-or-nothing), and the holds list."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient
from typer.testing import CliRunner

from ops.cli import app
from ops.stack import LocalStack
from services.dispatch.catalog import SUPPLIER_KEYS, Catalog
from services.dispatch.domain.plan import OrderPlan, PlanStatus
from services.dispatch.store import PLAN_VERSIONS
from shared.db import Document
from shared.events.dispatch import DispatchLine, HoldReason

pytestmark = pytest.mark.integration

runner = CliRunner()


def env(stack: LocalStack, database: str) -> dict[str, str]:
    return {**stack.client_environment(), "MONGO_DATABASE": database, "COLUMNS": "250"}


def test_suppliers_keys_routes_and_holds(stack: LocalStack, tmp_path: Path) -> None:
    database = f"t_{uuid.uuid4().hex[:10]}"
    e = env(stack, database)

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, list(args), env=e)
        return result.exit_code, result.output

    code, out = run(
        "supplier",
        "add",
        "--supplier-id",
        "alpha",
        "--name",
        "Alpha 供应链",
        "--return-address",
        "浙江省|杭州市|余杭区|仓前街道 1 号",
        "--return-phone",
        "0571-0000",
    )
    assert code == 0, out
    assert run("supplier", "add", "--supplier-id", "alpha", "--name", "again")[0] == 1
    assert run("supplier", "add", "--supplier-id", "Bad Id!", "--name", "x")[0] == 2

    code, out = run("supplier", "key", "create", "--supplier-id", "alpha", "--label", "erp")
    assert code == 0, out
    token = next(word for word in out.split() if word.startswith("lvk_"))
    key_id = token.split("_")[1]

    async def check_keys() -> tuple[str | None, list[Document]]:
        client: AsyncMongoClient[Document] = AsyncMongoClient(stack.mongo_uri, tz_aware=True)
        try:
            db = client[database]
            return await Catalog(db).authenticate(token), [d async for d in db[SUPPLIER_KEYS].find({})]
        finally:
            await client.close()

    supplier, stored = asyncio.run(check_keys())
    assert supplier == "alpha"
    assert token.split("_")[2] not in str(stored)  # only the hash is stored

    code, out = run("supplier", "list")
    assert code == 0 and "alpha" in out and "杭州市" in out and token not in out

    assert run("route", "set", "--shop-id", "s1", "--supplier-id", "alpha", "--sku-code", "TEE-RED-M")[0] == 0
    assert run("route", "set", "--shop-id", "s1", "--supplier-id", "nobody")[0] == 1
    assert run("route", "set", "--shop-id", "s1", "--supplier-id", "alpha", "--product-id", "p1")[0] == 2

    good = tmp_path / "routes.csv"
    good.write_text(
        "shop_id,supplier_id,priority,product_id,sku_id,sku_code,stock_cap\n"
        "s1,alpha,10,p1,k1,,\ns1,alpha,20,,,,500\n",
        encoding="utf-8",
    )
    code, out = run("route", "import", str(good))
    assert code == 0 and "2 routes imported" in out, out
    bad = tmp_path / "bad.csv"
    bad.write_text("shop_id,supplier_id,priority\ns2,alpha,10\ns2,,x\n", encoding="utf-8")
    code, out = run("route", "import", str(bad))
    assert code == 1 and "line 3" in out, out
    code, out = run("route", "list", "--shop-id", "s2")
    assert "s2" not in out.split("Routes")[1].replace("--shop-id", "")  # nothing of the bad file written
    code, out = run("route", "list", "--shop-id", "s1")
    assert (
        code == 0
        and "code TEE-RED-M" in out
        and "sku p1/k1" in out
        and "shop default" in out
        and "500" in out
    )

    assert run("supplier", "key", "revoke", key_id)[0] == 0
    assert asyncio.run(check_keys())[0] is None
    assert run("supplier", "key", "revoke", "nokey")[0] == 1

    async def hold_one() -> None:
        plan = OrderPlan(
            order_id="9007199254740993",
            shop_id="s1",
            version=1,
            status=PlanStatus.HELD,
            lines=[DispatchLine(line_no=0, product_id="p9", sku_id="k9", sku_code="X-9", quantity=1)],
            hold_reason=HoldReason.NO_ROUTE,
            held_line_nos=[0],
            held_since=datetime.now(UTC),
        )
        client: AsyncMongoClient[Document] = AsyncMongoClient(stack.mongo_uri, tz_aware=True)
        try:
            await client[database][PLAN_VERSIONS].insert_one(
                {
                    "_id": "plan:9007199254740993#000001",
                    "order_id": plan.order_id,
                    "revision": 1,
                    "plan": plan.model_dump(mode="json"),
                    "events": [],
                }
            )
        finally:
            await client.close()

    asyncio.run(hold_one())
    code, out = run("holds")
    assert code == 0 and "9007199254740993" in out and "no_route" in out and "p9/k9 (X-9)" in out, out
