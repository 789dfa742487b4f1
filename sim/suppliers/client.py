"""The supplier API as a supplier's software calls it: bearer key, Idempotency-Key on every POST, and
retries with backoff on network errors, 5xx and 429 (Retry-After honoured).

Answers below 500 other than 429 are returned, not raised: a 409 is the dispatch order's state
speaking, and the bot decides what to do about it.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import httpx
from aiolimiter import AsyncLimiter
from pydantic import BaseModel
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from shared.api.supplier import API_PREFIX, DispatchOrderPublic, FeedPage, SupplierErrorCode
from sim.http import OutboundHttp, Reply
from sim.suppliers.settings import FleetSettings, RetryPolicy

log = logging.getLogger(__name__)
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})


class RetryableAnswer(Exception):
    """A 5xx or 429: worth another try, after Retry-After when the server gave one."""

    def __init__(self, status: int, code: str | None, retry_after_s: float | None) -> None:
        super().__init__(f"HTTP {status} {code or ''}".strip())
        self.status, self.code, self.retry_after_s = status, code, retry_after_s


@dataclass(frozen=True)
class ApiAnswer:
    status: int
    raw: bytes  # the body as received
    replayed: bool = False  # the server answered from its idempotency store

    @cached_property
    def body(self) -> Any:
        """The JSON body, or its text when it is not JSON."""
        try:
            return json.loads(self.raw)
        except ValueError:
            return self.raw.decode(errors="replace")

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def code(self) -> str | None:
        return self.body.get("code") if isinstance(self.body, dict) else None

    def error_code(self) -> SupplierErrorCode | None:
        try:
            return SupplierErrorCode(self.code) if self.code else None
        except ValueError:
            return None

    def dispatch_order(self) -> DispatchOrderPublic:
        # From the bytes: pydantic's own JSON parser, without a dict of the whole order first.
        return DispatchOrderPublic.model_validate_json(self.raw)


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds, or as an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class _WaitRetryAfter:
    """The server's Retry-After when it sent one (capped), else exponential backoff with jitter."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._cap = policy.max_retry_after_s
        self._backoff = wait_exponential_jitter(
            multiplier=policy.initial_backoff_s, max=policy.max_backoff_s, jitter=policy.initial_backoff_s
        )

    def __call__(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        if isinstance(error, RetryableAnswer) and error.retry_after_s is not None:
            return min(self._cap, error.retry_after_s)
        return float(self._backoff(state))


class SupplierApiClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        policy: RetryPolicy,
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
        requests_per_s: float | None = None,
        connections: int = FleetSettings.model_fields["connections"].default,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        on_retry: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        self._http = OutboundHttp(
            base_url=base_url.rstrip("/") + API_PREFIX,
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": "lvyue-supplier-sim/1"},
            timeout_s=timeout_s,
            # Calls beyond the pool wait here for a connection, without a time limit: in flight at the
            # API, each call holds memory there (32 each once took dispatch over its memory target at
            # 200 orders/s).
            connections=connections,
            transport=transport,
        )
        self._policy = policy
        self._timeout_s = timeout_s
        # At most `requests_per_s` requests in any second, retries included (None: unpaced).
        self._pace = AsyncLimiter(requests_per_s, 1.0) if requests_per_s is not None else None
        self._sleep: Callable[[float], Awaitable[None]] = sleep or asyncio.sleep
        self._on_retry = on_retry

    async def aclose(self) -> None:
        await self._http.aclose()

    async def feed(self, after: int, wait_s: float, limit: int) -> FeedPage:
        answer = await self._call(
            "feed",
            lambda: self._http.request(
                "GET",
                "/feed",
                params={"after": after, "wait_s": wait_s, "limit": limit},
                timeout_s=self._timeout_s + wait_s,
            ),
        )
        if not answer.ok:
            raise RuntimeError(f"feed answered {answer.status}: {answer.body}")
        return FeedPage.model_validate_json(answer.raw)

    async def get_order(self, dispatch_id: str) -> DispatchOrderPublic | None:
        answer = await self._call("get", lambda: self._http.request("GET", f"/dispatch-orders/{dispatch_id}"))
        return answer.dispatch_order() if answer.ok else None

    async def post(
        self,
        path: str,
        body: BaseModel,
        *,
        idempotency_key: str,
        no_retry: Collection[int] = (),
    ) -> ApiAnswer:
        """One command; every attempt carries the same key, so a retry can never apply it twice.
        Statuses in `no_retry` are returned at once (the caller has a better plan than waiting)."""
        # As httpx writes a `json=` body.
        content = json.dumps(
            body.model_dump(mode="json", exclude_none=True),
            ensure_ascii=False,
            separators=(",", ":"),
            allow_nan=False,
        ).encode()
        headers = {"Idempotency-Key": idempotency_key, "Content-Type": "application/json"}
        return await self._call(
            path.rsplit("/", 1)[-1],
            lambda: self._http.request("POST", path, content=content, headers=headers),
            no_retry=no_retry,
        )

    async def _call(
        self, name: str, send: Callable[[], Awaitable[Reply]], *, no_retry: Collection[int] = ()
    ) -> ApiAnswer:
        """The first attempt on its own (most calls need no other); the retries, when it fails, as
        tenacity runs them, counting that attempt and the time it took."""
        started = time.monotonic()
        try:
            return await self._attempt(send, no_retry)
        except (httpx.TransportError, RetryableAnswer) as error:
            first: BaseException | None = error
        policy = self._policy
        retrying = AsyncRetrying(
            retry=retry_if_exception_type((httpx.TransportError, RetryableAnswer)),
            wait=_WaitRetryAfter(policy),
            stop=stop_after_attempt(policy.max_attempts)
            | stop_after_delay(policy.max_elapsed_s - (time.monotonic() - started)),
            before_sleep=self._before_sleep(name),
            reraise=True,
            sleep=self._sleep,
        )
        async for attempt in retrying:
            with attempt:
                if first is not None:  # tenacity's attempt 1: the one made above
                    failed, first = first, None
                    raise failed
                return await self._attempt(send, no_retry)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    async def _attempt(self, send: Callable[[], Awaitable[Reply]], no_retry: Collection[int]) -> ApiAnswer:
        if self._pace is not None:
            await self._pace.acquire()
        reply = await send()
        answer = ApiAnswer(reply.status, reply.body, reply.headers.get("Idempotent-Replayed") == "true")
        if reply.status in RETRIED_STATUSES and reply.status not in no_retry:
            raise RetryableAnswer(
                reply.status, answer.code, retry_after_seconds(reply.headers.get("Retry-After"))
            )
        return answer

    def _before_sleep(self, name: str) -> Callable[[RetryCallState], None]:
        def note(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            if error is None:
                return
            log.debug("retrying %s after %r (attempt %d)", name, error, state.attempt_number)
            if self._on_retry is not None:
                self._on_retry(name, error)

        return note
