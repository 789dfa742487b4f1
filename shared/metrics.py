"""Prometheus: `/metrics` on every service and the standard RED metrics for HTTP."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_REQUESTS = Counter(
    "lvyue_http_requests_total",
    "HTTP requests answered, by route template and status.",
    ["service", "method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "lvyue_http_request_duration_seconds",
    "HTTP request latency, by route template.",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
# multiprocess_mode applies when a service runs several worker processes (PROMETHEUS_MULTIPROC_DIR).
HTTP_IN_FLIGHT = Gauge(
    "lvyue_http_requests_in_flight", "HTTP requests being handled.", ["service"], multiprocess_mode="livesum"
)
SERVICE_INFO = Gauge(
    "lvyue_service_info",
    "Always 1; labels say what is running.",
    ["service", "version"],
    multiprocess_mode="max",
)

UNMATCHED_ROUTE = "<unmatched>"


class RouteMetrics:
    """HTTP_REQUESTS and HTTP_DURATION of one route, each label child looked up once: the fast paths
    answering in front of the framework count their requests as its routes do, without a `.labels()`
    per request."""

    def __init__(self, service: str, method: str, route: str) -> None:
        self._labels = (service, method, route)
        self._duration = HTTP_DURATION.labels(service, method, route)
        self._answered: dict[int, Any] = {}

    def answered(self, status: int, seconds: float) -> None:
        counter = self._answered.get(status)
        if counter is None:
            counter = self._answered[status] = HTTP_REQUESTS.labels(*self._labels, str(status))
        counter.inc()
        self._duration.observe(seconds)


def _paths_by_endpoint(router: Any) -> dict[Any, str]:
    """endpoint -> path template of a router's routes."""
    return {
        route.endpoint: str(route.path)
        for route in getattr(router, "routes", ())
        if getattr(route, "endpoint", None) is not None and hasattr(route, "path")
    }


class REDMetricsMiddleware:
    """Rate, errors and duration for every HTTP request (pure ASGI: no per-request task overhead)."""

    def __init__(self, app: ASGIApp, *, service: str) -> None:
        self.app = app
        self.service = service
        self._paths: dict[Any, str] | None = None  # built on the first request, routes are final then

    def _route_template(self, scope: Scope) -> str:
        """The route template (`/orders/{order_id}`), never the raw path: bounded label cardinality.

        Read from what the router left in the scope (FastAPI's `route`, or Starlette's `endpoint`),
        so no request pays for matching the routes a second time.
        """
        matched = scope.get("route")  # FastAPI sets it for an APIRoute
        if matched is not None:
            return str(getattr(matched, "path", UNMATCHED_ROUTE))
        endpoint = scope.get("endpoint")  # Starlette sets it for any matched route
        if endpoint is None:
            return UNMATCHED_ROUTE
        if self._paths is None:
            self._paths = _paths_by_endpoint(getattr(scope.get("app"), "router", None))
        return self._paths.get(endpoint, UNMATCHED_ROUTE)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        in_flight = HTTP_IN_FLIGHT.labels(self.service)
        in_flight.inc()
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            in_flight.dec()
            route = self._route_template(scope)
            method = scope.get("method", "")
            HTTP_REQUESTS.labels(self.service, method, route, str(status)).inc()
            HTTP_DURATION.labels(self.service, method, route).observe(time.perf_counter() - started)


def metrics_endpoint(multiprocess_dir: str | None) -> Callable[[Request], Awaitable[Response]]:
    """`/metrics`: this process's registry, or every worker process's when the service runs several
    (prometheus_client's multiprocess mode, files in `multiprocess_dir`)."""

    async def metrics(_: Request) -> Response:
        if multiprocess_dir:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return metrics
