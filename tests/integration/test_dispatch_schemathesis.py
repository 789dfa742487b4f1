"""Property-based run of schemathesis against the supplier API's own OpenAPI spec, with the whole
line behind it (logistics for waybills and labels, the stand-ins): whatever a client sends, the API
answers with a 4xx it documents, never a 5xx."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from ops.stack import LocalStack
from tests.integration.pipeline import APPID, fulfilment_line

pytestmark = pytest.mark.integration


async def test_no_input_makes_the_supplier_api_fail(stack: LocalStack, tmp_path: Path) -> None:
    overrides = {
        "supplier_rate_per_s": 10_000,
        "supplier_burst": 10_000,
        "feed_max_wait_s": 0.2,  # generated wait_s values would otherwise hold each call up to 30 s
    }
    async with fulfilment_line(stack, dispatch_overrides=overrides) as line:
        await line.add_supplier("alpha")
        orders = [
            await line.sim("POST", "/orders", appid=APPID, paid=True, products=[{"sku_cnt": 2}])
            for _ in range(3)
        ]
        wanted = {str(o["order_id"]) for o in orders}
        async with line.supplier("alpha") as client:  # real dispatch orders, so calls reach the state machine

            async def all_offered() -> bool:
                page: dict[str, Any] = (await client.get("/feed", params={"wait_s": 1})).json()
                return wanted <= {c["dispatch_order"]["order_id"] for c in page["changes"]}

            await line.until(all_offered, timeout_s=90)
        st = Path(sys.executable).with_name("st")
        process = await asyncio.create_subprocess_exec(
            str(st), "run", f"{line.dispatch_url}/openapi.json",
            "--checks", "not_a_server_error",
            "--header", f"Authorization: Bearer {line.keys['alpha']}",
            "--phases", "examples,coverage,fuzzing",
            "--max-examples", "40",
            "--seed", "20261122",
            "--report-dir", str(tmp_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await asyncio.wait_for(process.communicate(), timeout=600)
        text = output.decode(errors="replace")
        assert process.returncode == 0, text[-6000:]
        summary = re.findall(r"(\d+) passed", text)  # the last one is the run's total
        assert summary and int(summary[-1]) >= 100, text[-3000:]  # it really ran cases
