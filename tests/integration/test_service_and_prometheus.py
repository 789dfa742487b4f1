"""A real service process, run by the stack as `make up` runs it, scraped by a real Prometheus."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from ops.stack import ALERT_RULES, REPO_ROOT, LocalStack
from tests.integration.conftest import STACK_SERVICE

pytestmark = pytest.mark.integration


async def _query(stack: LocalStack, promql: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"{stack.prometheus_url}/api/v1/query", params={"query": promql})
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["data"]["result"]
    return result


async def _eventually(stack: LocalStack, promql: str, timeout_s: float = 30) -> list[dict[str, Any]]:
    async with asyncio.timeout(timeout_s):
        while not (result := await _query(stack, promql)):
            await asyncio.sleep(0.5)
    return result


async def test_service_is_ready_with_kafka_mongo_and_its_consumer(stack: LocalStack) -> None:
    async with httpx.AsyncClient(base_url=stack.service_url(STACK_SERVICE), timeout=5) as client:
        ready = await client.get("/readyz")
        docs = await client.get("/openapi.json")
    assert ready.status_code == 200, ready.text
    checks = {c["name"]: c["ok"] for c in ready.json()["checks"]}
    assert checks == {"mongo": True, "kafka": True, "faust": True}  # dispatch consumes with faust
    assert docs.status_code == 200 and "/readyz" in docs.json()["paths"]


async def test_prometheus_scrapes_the_running_service(stack: LocalStack) -> None:
    async with httpx.AsyncClient(base_url=stack.service_url(STACK_SERVICE), timeout=5) as client:
        for _ in range(3):
            assert (await client.get("/healthz")).status_code == 200
    up = await _eventually(stack, f'up{{job="{STACK_SERVICE}"}} == 1')
    assert up[0]["value"][1] == "1"
    info = await _eventually(stack, f'lvyue_service_info{{service="{STACK_SERVICE}"}}')
    assert info[0]["metric"]["version"]
    served = await _eventually(
        stack, f'lvyue_http_requests_total{{job="{STACK_SERVICE}",route="/healthz",status="200"}} >= 3'
    )
    assert float(served[0]["value"][1]) >= 3


def test_metrics_exposition_passes_promtool(stack: LocalStack) -> None:
    exposition = httpx.get(f"{stack.service_url(STACK_SERVICE)}/metrics", timeout=5).text
    checked = subprocess.run(
        [_promtool(), "check", "metrics"], input=exposition, capture_output=True, text=True, check=False
    )
    # promtool exits 1 for lint advice too; only real problems (not "counter names" advice) fail us.
    problems = [
        line for line in checked.stdout.splitlines() + checked.stderr.splitlines() if "error" in line.lower()
    ]
    assert problems == []
    assert "lvyue_http_requests_total" in exposition


def test_prometheus_configs_and_alert_rules_are_valid(stack: LocalStack) -> None:
    promtool = _promtool()
    for config in (stack.run_dir / "prometheus.yml", REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml"):
        result = subprocess.run(
            [promtool, "check", "config", "--syntax-only", str(config)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    tests = Path(__file__).resolve().parents[1] / "prometheus" / "alerts_test.yml"
    result = subprocess.run(
        [promtool, "test", "rules", str(tests)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert ALERT_RULES.exists()


def _promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool comes with Debian's prometheus package (make setup installs it)"
    return path
