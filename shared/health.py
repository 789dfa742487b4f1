"""`/healthz` (the process is alive) and `/readyz` (its dependencies answer) for every service."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

Check = Callable[[], Awaitable[None]]
log = logging.getLogger(__name__)


class CheckResult(BaseModel):
    name: str
    ok: bool
    detail: str = ""


class HealthReport(BaseModel):
    service: str
    status: str  # "ok" or "unavailable"
    checks: list[CheckResult] = []


class HealthChecks:
    """Named readiness checks; each must finish within `timeout_s` to count as passing."""

    def __init__(self, service: str, *, timeout_s: float = 2.0) -> None:
        self.service = service
        self.timeout_s = timeout_s
        self._checks: dict[str, Check] = {}

    def add(self, name: str, check: Check) -> None:
        self._checks[name] = check

    async def _run(self, name: str, check: Check) -> CheckResult:
        try:
            await asyncio.wait_for(check(), timeout=self.timeout_s)
        except TimeoutError:
            return CheckResult(name=name, ok=False, detail=f"no answer within {self.timeout_s}s")
        except Exception as exc:  # a failing dependency is a report, not a crash
            # The error's text (addresses, hosts, queries) goes to the log, not to whoever asks.
            log.warning("readiness check %s failed: %s: %s", name, type(exc).__name__, exc)
            return CheckResult(name=name, ok=False, detail=type(exc).__name__)
        return CheckResult(name=name, ok=True)

    async def report(self) -> HealthReport:
        results = await asyncio.gather(*(self._run(n, c) for n, c in self._checks.items()))
        status = "ok" if all(r.ok for r in results) else "unavailable"
        return HealthReport(service=self.service, status=status, checks=list(results))

    def router(self) -> APIRouter:
        router = APIRouter(tags=["health"])

        @router.get("/healthz", response_model=HealthReport)
        async def healthz() -> HealthReport:
            return HealthReport(service=self.service, status="ok")

        @router.get("/readyz", response_model=HealthReport, responses={503: {"model": HealthReport}})
        async def readyz() -> JSONResponse:
            report = await self.report()
            return JSONResponse(report.model_dump(), status_code=200 if report.status == "ok" else 503)

        return router
