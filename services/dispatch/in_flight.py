"""At most so many supplier API calls in flight per API key; beyond them, a 429 at once.

A call in flight holds memory here: its request, the coroutines of the middleware stack and the
route, the dispatch order it changes. The rate limit (calls per second) does not bound that: when
dispatch is slow, the same rate means more calls in flight. At 200 orders/s, 20 supplier bots with
32 connections each had 600 calls in flight at once (17,000 coroutines), and dispatch went over its
memory target. Counted per API key as sent, before it is checked (no lookup on this path); an
unknown key is refused by the route right after. Feed long polls are not counted: a parked poll is
one wait on an event, and a client that dropped one must not find its commands refused until the
poll times out.
"""

from __future__ import annotations

from prometheus_client import Counter
from starlette.types import ASGIApp, Receive, Scope, Send

from services.dispatch.supplier_api import FEED_PATH, api_key_of_scope, error_response
from shared.api.supplier import API_PREFIX, SupplierErrorCode

REFUSED = Counter(
    "lvyue_dispatch_supplier_calls_over_in_flight_total",
    "Supplier API calls refused (429) because the key had its limit of calls in flight.",
)


class InFlightPerKey:
    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self._limit = limit
        self._in_flight: dict[str, int] = {}  # only keys with a call in flight

    def in_flight(self, key: str) -> int:
        return self._in_flight.get(key, 0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        if not path.startswith(API_PREFIX) or path == FEED_PATH:
            await self.app(scope, receive, send)
            return
        key = api_key_of_scope(scope)
        if key is None:  # refused by the route (401)
            await self.app(scope, receive, send)
            return
        taken = self._in_flight.get(key, 0)
        if taken >= self._limit:
            REFUSED.inc()
            refusal = error_response(
                429,
                SupplierErrorCode.TOO_MANY_IN_FLIGHT,
                f"at most {self._limit} calls in flight per API key",
                headers={"Retry-After": "1"},
            )
            await refusal(scope, receive, send)
            return
        self._in_flight[key] = taken + 1
        try:
            await self.app(scope, receive, send)
        finally:
            left = self._in_flight[key] - 1
            if left:
                self._in_flight[key] = left
            else:
                del self._in_flight[key]
