import asyncio

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY

from shared.health import HealthChecks
from shared.metrics import REDMetricsMiddleware, RouteMetrics, metrics_endpoint


def _app(checks: HealthChecks) -> FastAPI:
    app = FastAPI()
    app.add_middleware(REDMetricsMiddleware, service="unit")
    app.include_router(checks.router())
    app.add_route("/metrics", metrics_endpoint(None))

    @app.get("/orders/{order_id}")
    async def get_order(order_id: str) -> dict[str, str]:
        return {"order_id": order_id}

    return app


async def _ok() -> None:
    return None


async def _broken() -> None:
    raise ConnectionError("refused")


async def _slow() -> None:
    await asyncio.sleep(10)


async def test_readyz_is_503_with_reasons_when_a_dependency_fails_or_hangs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    checks = HealthChecks("unit", timeout_s=0.1)
    checks.add("mongo", _ok)
    checks.add("kafka", _broken)
    checks.add("faust", _slow)
    transport = httpx.ASGITransport(app=_app(checks))
    async with httpx.AsyncClient(transport=transport, base_url="http://unit") as client:
        alive = await client.get("/healthz")
        ready = await client.get("/readyz")
    assert alive.status_code == 200 and alive.json()["status"] == "ok"
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "unavailable"
    by_name = {c["name"]: c for c in body["checks"]}
    assert by_name["mongo"]["ok"] is True
    # The error's kind only: its text (hosts, addresses) is logged, never answered.
    assert by_name["kafka"] == {"name": "kafka", "ok": False, "detail": "ConnectionError"}
    assert "refused" not in ready.text
    assert "ConnectionError: refused" in caplog.text
    assert "no answer within 0.1s" in by_name["faust"]["detail"]


async def test_readyz_is_200_when_every_check_passes() -> None:
    checks = HealthChecks("unit")
    checks.add("mongo", _ok)
    transport = httpx.ASGITransport(app=_app(checks))
    async with httpx.AsyncClient(transport=transport, base_url="http://unit") as client:
        assert (await client.get("/readyz")).status_code == 200


def _sample(name: str, labels: dict[str, str]) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_red_metrics_label_by_route_template_not_raw_path() -> None:
    transport = httpx.ASGITransport(app=_app(HealthChecks("unit")))
    labels = {"service": "unit", "method": "GET", "route": "/orders/{order_id}", "status": "200"}
    before = _sample("lvyue_http_requests_total", labels)
    async with httpx.AsyncClient(transport=transport, base_url="http://unit") as client:
        for order_id in ("1", "2", "3"):
            assert (await client.get(f"/orders/{order_id}")).status_code == 200
        assert (await client.get("/nowhere")).status_code == 404
        exposition = (await client.get("/metrics")).text
    assert _sample("lvyue_http_requests_total", labels) == before + 3
    unmatched = {"service": "unit", "method": "GET", "route": "<unmatched>", "status": "404"}
    assert _sample("lvyue_http_requests_total", unmatched) >= 1
    assert 'route="/orders/1"' not in exposition
    # A plain Starlette route (no FastAPI `route` in the scope) is labelled by its template too.
    assert _sample("lvyue_http_requests_total", {**labels, "route": "/metrics"}) >= 1
    duration = {"service": "unit", "method": "GET", "route": "/orders/{order_id}"}
    assert _sample("lvyue_http_request_duration_seconds_count", duration) >= 3


def test_a_faust_app_without_agents_is_refused() -> None:
    from shared.kafka.faust_app import create_faust_app
    from shared.service import create_service_app
    from shared.settings import DispatchSettings

    settings = DispatchSettings()
    try:
        create_service_app(settings, title="t", faust_app=create_faust_app(settings))
    except ValueError as exc:
        assert "without agents" in str(exc)
    else:
        raise AssertionError("a faust app without agents was accepted")


def test_route_metrics_count_and_time_a_fast_path_as_the_middleware_does_a_route() -> None:
    def sample(name: str, **labels: str) -> float:
        value = REGISTRY.get_sample_value(
            name, {"service": "t-fast", "method": "POST", "route": "/x", **labels}
        )
        return value or 0.0

    metrics = RouteMetrics("t-fast", "POST", "/x")
    metrics.answered(200, 0.002)
    metrics.answered(200, 0.004)
    metrics.answered(409, 0.5)

    assert sample("lvyue_http_requests_total", status="200") == 2
    assert sample("lvyue_http_requests_total", status="409") == 1
    assert sample("lvyue_http_request_duration_seconds_count") == 3
    assert abs(sample("lvyue_http_request_duration_seconds_sum") - 0.506) < 1e-9
