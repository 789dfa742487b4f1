"""`GET /supplier/v1/feed` on a fast path: pure ASGI in front of the app.

Every supplier long-polls the feed, so it is the request we serve most (100 suppliers polling is
the benchmark). Through FastAPI, each poll paid for route matching, dependency solving and the
middleware stack: a third of dispatch's CPU in the profile. Here a well-formed, authenticated poll
is answered directly; anything else (a missing or unknown key, a query the route would refuse, the
app still starting) goes on to the FastAPI route, which answers it in the API's error format and
documents the feed in `/docs`. The same RED metrics are recorded as for every other route.

A parked long poll ends early when its client hangs up (recorded as 499, nginx's "client closed
request"): otherwise it would hold its waiter, and build and send a page, for nobody, until its wait
ran out. The hang-up is watched only once a poll parks: under load most polls find changes at once,
and watching every one of them cost bench-dispatch's p99 about 2 s (4.0 s against 1.8).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from services.dispatch.supplier_api import (
    FEED_PATH,
    ClientHungUp,
    SupplierApi,
    api_key_of_scope,
    feed_body,
    rate_limited,
)
from shared.metrics import HTTP_IN_FLIGHT, RouteMetrics

_DIGITS = re.compile(r"[0-9]{1,15}")
_DECIMAL = re.compile(r"[0-9]{1,6}(\.[0-9]{1,6})?")
_JSON_HEADERS = [(b"content-type", b"application/json")]
CLIENT_CLOSED_REQUEST = 499


@dataclass(frozen=True)
class FeedQuery:
    after: int = 0
    wait_s: float = 0.0
    limit: int = 100


def parse_feed_query(query_string: bytes) -> FeedQuery | None:
    """The feed's query, or None when the route's own validation should judge it (a value out of
    range, not a number, or anything unusual): this parser accepts a subset of what the route does."""
    try:
        params = dict(parse_qsl(query_string.decode("ascii"), keep_blank_values=True, strict_parsing=False))
    except (UnicodeDecodeError, ValueError):
        return None
    after, wait_s, limit = params.get("after", "0"), params.get("wait_s", "0"), params.get("limit", "100")
    if not (_DIGITS.fullmatch(after) and _DECIMAL.fullmatch(wait_s) and _DIGITS.fullmatch(limit)):
        return None
    query = FeedQuery(int(after), float(wait_s), int(limit))
    if query.wait_s > 60 or not 1 <= query.limit <= 1000:
        return None
    return query


class FeedEndpoint:
    def __init__(self, app: ASGIApp, *, service: str) -> None:
        self.app = app
        self._in_flight = HTTP_IN_FLIGHT.labels(service)
        self._metrics = RouteMetrics(service, "GET", FEED_PATH)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope["path"] != FEED_PATH:
            await self.app(scope, receive, send)
            return
        api: SupplierApi | None = getattr(scope["app"].state, "supplier_api", None)
        query = parse_feed_query(scope.get("query_string", b""))
        token = api_key_of_scope(scope)
        supplier = await api.keys.supplier_of(token) if api is not None and token else None
        if api is None or query is None or supplier is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        self._in_flight.inc()
        try:
            refusal = rate_limited(api, supplier)
            if refusal is not None:
                await refusal(scope, receive, send)
                status = refusal.status_code
                return
            try:
                body = await feed_body(
                    api,
                    supplier,
                    query.after,
                    query.wait_s,
                    query.limit,
                    hang_up=lambda: disconnected(receive),
                )
            except ClientHungUp:
                status = CLIENT_CLOSED_REQUEST
                return
            answer_headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": answer_headers})
            await send({"type": "http.response.body", "body": body})
            status = 200
        finally:
            self._in_flight.dec()
            self._metrics.answered(status, time.perf_counter() - started)


async def disconnected(receive: Receive) -> None:
    """Returns when the client disconnects; for a GET before its answer starts (the server's first
    message is the empty body, and the next comes when the client disconnects or the answer is done)."""
    while (await receive())["type"] != "http.disconnect":
        pass
