"""The WeChat Shop open API, as every service uses it: per-shop access tokens shared by every process
(cached in the database, refreshed before expiry), one refresh-and-retry on a rejected token, backoff
on "busy" and minute-quota answers, and a circuit breaker per shop when WeChat keeps failing."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

import httpx
from prometheus_client import Counter, Histogram
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState
from pymongo.asynchronous.database import AsyncDatabase
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from shared.db import Document, insert_once
from shared.http import kept_alive_transport
from shared.settings import WeChatSettings
from shared.wechat.api import (
    RETRYABLE_ERRCODES,
    TOKEN_ERRCODES,
    ErrCode,
    Order,
    OrderGetResponse,
    OrderListRequest,
    OrderListResponse,
    TimeRange,
    TokenResponse,
)
from shared.wechat.shops import Shop, ShopCache

log = logging.getLogger(__name__)

# httpcore asks `import sniffio` each time it makes a lock (several per request). sniffio is not
# installed (anyio 4 no longer needs it) and Python does not remember a failed import, so every ask
# searched sys.path again: ~13% of the ingest worker's CPU. Recorded as absent, the ask fails at once
# (httpcore, anyio and tenacity all treat a missing sniffio as "asyncio").
if importlib.util.find_spec("sniffio") is None:
    sys.modules["sniffio"] = None  # type: ignore[assignment]

TOKENS = "wechat_tokens"
TOKEN_LOCKS = "wechat_token_locks"

API_CALLS = Counter(
    "lvyue_wechat_api_calls_total",
    "Calls to the WeChat Shop API, by endpoint and errcode.",
    ["endpoint", "errcode"],
)
API_SECONDS = Histogram(
    "lvyue_wechat_api_seconds",
    "WeChat Shop API latency, by endpoint.",
    ["endpoint"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
TOKEN_REFRESHES = Counter(
    "lvyue_wechat_token_refreshes_total", "Access tokens fetched from WeChat.", ["shop"]
)


class WeChatApiError(Exception):
    """WeChat answered with a non-zero errcode."""

    def __init__(self, endpoint: str, errcode: int, errmsg: str) -> None:
        super().__init__(f"{endpoint}: errcode {errcode} {errmsg}")
        self.endpoint = endpoint
        self.errcode = errcode
        self.errmsg = errmsg

    @property
    def transient(self) -> bool:
        return self.errcode in RETRYABLE_ERRCODES


class WeChatUnavailableError(Exception):
    """Transport failure or 5xx: WeChat could not be reached; worth retrying later."""


class WeChatCircuitOpen(WeChatUnavailableError):
    """The shop's circuit breaker is open (WeChat kept failing): no call is made until it closes."""

    def __init__(self, shop_id: str, retry_after_s: float) -> None:
        super().__init__(f"circuit for shop {shop_id} is open; retry in {retry_after_s:.1f} s")
        self.retry_after_s = retry_after_s


def wechat_http_client(settings: WeChatSettings) -> httpx.AsyncClient:
    """The HTTP client for WeChat's API. Waiting for one of our own pooled connections has no time
    limit: a burst queued behind the pool is not WeChat failing (a pool timeout counted as one
    dead-lettered pushes and could open the circuit breaker); each request still has its timeout."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.request_timeout_s, pool=None),
        transport=kept_alive_transport(settings.pool_connections),
    )


class TokenSource(Protocol):
    async def token(self, shop: Shop, *, rejected: str | None = None) -> str: ...


class AccessTokenManager:
    """One token per shop for every process of the service: the database holds it, a lease document
    (unique `_id`, so only one process inserts it) makes sure only one process refreshes it."""

    def __init__(
        self,
        db: AsyncDatabase[Document],
        http: httpx.AsyncClient,
        settings: WeChatSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._tokens = db[TOKENS]
        self._locks = db[TOKEN_LOCKS]
        self._http = http
        self._settings = settings
        self._clock = clock
        self._cache: dict[str, tuple[str, float]] = {}

    def _usable(self, token: str, expires_at: float, rejected: str | None) -> bool:
        fresh = expires_at - self._settings.token_refresh_margin_s > self._clock()
        return fresh and token != rejected

    async def token(self, shop: Shop, *, rejected: str | None = None) -> str:
        """A valid token; `rejected` is one WeChat just refused (it will not be returned again)."""
        cached = self._cache.get(shop.appid)
        if cached and self._usable(*cached, rejected):
            return cached[0]
        deadline = self._clock() + self._settings.token_lock_lease_s * 2
        while True:
            stored = await self._tokens.find_one({"_id": shop.appid})
            if stored and self._usable(stored["access_token"], stored["expires_at"], rejected):
                self._cache[shop.appid] = (stored["access_token"], stored["expires_at"])
                return str(stored["access_token"])
            now = self._clock()
            if await insert_once(
                self._locks, {"_id": shop.appid, "until": now + self._settings.token_lock_lease_s}
            ):
                try:
                    return await self._refresh(shop, rejected)
                finally:
                    await self._locks.delete_one({"_id": shop.appid})
            lock = await self._locks.find_one({"_id": shop.appid})
            if lock and lock["until"] < now:  # its holder died: take the lease over
                await self._locks.delete_one({"_id": shop.appid, "until": lock["until"]})
                continue
            if now > deadline:
                raise WeChatUnavailableError(f"token refresh for {shop.shop_id} did not finish in time")
            await asyncio.sleep(0.05)

    async def _refresh(self, shop: Shop, rejected: str | None) -> str:
        response = await self._stable_token(shop, force_refresh=False)
        if response.access_token == rejected:
            # WeChat still hands out the token it refuses: ask for a new one (limited to 20 a day).
            response = await self._stable_token(shop, force_refresh=True)
        expires_at = self._clock() + response.expires_in
        await self._tokens.replace_one(
            {"_id": shop.appid},
            {"_id": shop.appid, "access_token": response.access_token, "expires_at": expires_at},
            upsert=True,
        )
        self._cache[shop.appid] = (response.access_token, expires_at)
        TOKEN_REFRESHES.labels(shop.shop_id).inc()
        return response.access_token

    async def _stable_token(self, shop: Shop, *, force_refresh: bool) -> TokenResponse:
        body = {
            "grant_type": "client_credential",
            "appid": shop.appid,
            "secret": shop.app_secret.get_secret_value(),
            "force_refresh": force_refresh,
        }
        data = await _post(self._http, _base(shop, self._settings), "/cgi-bin/stable_token", body, None)
        response = TokenResponse.model_validate(data)
        if response.errcode != ErrCode.OK or not response.access_token:
            raise WeChatApiError("/cgi-bin/stable_token", response.errcode, response.errmsg)
        return response


def _base(shop: Shop, settings: WeChatSettings) -> str:
    return (shop.api_base or settings.api_base).rstrip("/")


async def _post(
    http: httpx.AsyncClient, base: str, path: str, body: dict[str, Any], access_token: str | None
) -> dict[str, Any]:
    params = {"access_token": access_token} if access_token else None
    started = time.perf_counter()
    try:
        reply = await http.post(f"{base}{path}", json=body, params=params)
    except httpx.HTTPError as exc:
        API_CALLS.labels(path, "transport_error").inc()
        raise WeChatUnavailableError(f"{path}: {type(exc).__name__}: {exc}") from exc
    finally:
        API_SECONDS.labels(path).observe(time.perf_counter() - started)
    if reply.status_code >= 500:
        API_CALLS.labels(path, f"http_{reply.status_code}").inc()
        raise WeChatUnavailableError(f"{path}: HTTP {reply.status_code}")
    try:
        data: dict[str, Any] = reply.json()  # json keeps 64-bit integers exact
    except ValueError as exc:
        API_CALLS.labels(path, "bad_json").inc()
        raise WeChatUnavailableError(f"{path}: answer is not JSON") from exc
    API_CALLS.labels(path, str(data.get("errcode", 0))).inc()
    return data


class WeChatShopClient:
    def __init__(
        self,
        http: httpx.AsyncClient,
        tokens: TokenSource,
        settings: WeChatSettings,
    ) -> None:
        self._http = http
        self._tokens = tokens
        self._settings = settings
        # Only "WeChat is unwell" opens the breaker, not an order that does not exist.
        self._breakers = AsyncCircuitBreakerFactory(
            default_threshold=settings.breaker_failure_threshold,
            default_ttl=settings.breaker_reset_timeout_s,
            exclude=[(WeChatApiError, lambda exc: not exc.transient)],
        )

    async def call(
        self, shop: Shop, path: str, body: dict[str, Any], *, idempotent: bool = True
    ) -> dict[str, Any]:
        """POST with the shop's token; raises WeChatApiError for a non-zero errcode.

        `idempotent=False` for a call WeChat does not deduplicate (dropship/assign): an answer that may
        have been lost after WeChat acted (transport error, 5xx, -1 busy) is raised at once, not sent
        again, so the caller can find out what happened first; only the minute quota is waited out."""
        retry = (
            retry_if_exception_type(WeChatUnavailableError) | retry_if_exception_type(_TransientApiError)
            if idempotent
            else retry_if_exception(_refused_for_quota)
        )
        breaker = await self._breakers.get_breaker(f"wechat:{shop.shop_id}")
        try:
            async with breaker:  # raises OpenedState on entry while open; nothing inside raises it
                async for attempt in AsyncRetrying(
                    stop=stop_after_attempt(self._settings.api_max_attempts),
                    wait=wait_exponential_jitter(
                        multiplier=self._settings.api_backoff_initial_s,
                        max=5,
                        jitter=self._settings.api_backoff_initial_s,
                    ),
                    retry=retry,
                    reraise=True,
                ):
                    with attempt:
                        return await self._call_once(shop, path, body)
        except OpenedState as exc:
            retry_after = exc.opened_at + self._settings.breaker_reset_timeout_s - time.time()
            raise WeChatCircuitOpen(shop.shop_id, max(0.0, retry_after)) from exc
        raise AssertionError("unreachable: tenacity reraises")

    async def _call_once(self, shop: Shop, path: str, body: dict[str, Any]) -> dict[str, Any]:
        base = _base(shop, self._settings)
        token = await self._tokens.token(shop)
        data = await _post(self._http, base, path, body, token)
        if data.get("errcode", 0) in TOKEN_ERRCODES:
            token = await self._tokens.token(shop, rejected=token)  # one refresh, one retry
            data = await _post(self._http, base, path, body, token)
        errcode = int(data.get("errcode", 0))
        if errcode in RETRYABLE_ERRCODES:
            raise _TransientApiError(path, errcode, str(data.get("errmsg", "")))
        if errcode != ErrCode.OK:
            raise WeChatApiError(path, errcode, str(data.get("errmsg", "")))
        return data

    async def get_order(self, shop: Shop, order_id: str) -> Order:
        data = await self.call(shop, "/channels/ec/order/get", {"order_id": order_id})
        order = OrderGetResponse.model_validate(data).order
        if order is None:
            raise WeChatApiError("/channels/ec/order/get", ErrCode.ORDER_NOT_FOUND, "answer without order")
        return order

    async def list_updated_orders(
        self, shop: Shop, start: int, end: int, next_key: str = ""
    ) -> OrderListResponse:
        request = OrderListRequest(
            update_time_range=TimeRange(start_time=start, end_time=end), next_key=next_key
        )
        data = await self.call(shop, "/channels/ec/order/list/get", request.model_dump(exclude_none=True))
        return OrderListResponse.model_validate(data)


class _TransientApiError(WeChatApiError):
    """-1 busy or 45011 minute quota: retried with backoff."""


def _refused_for_quota(exc: BaseException) -> bool:
    """The minute quota: WeChat did not act on the call, so even a non-idempotent one may be sent again."""
    return isinstance(exc, _TransientApiError) and exc.errcode == ErrCode.MINUTE_QUOTA


class ShopApi:
    """The WeChat API by our shop id: the shop's credentials and its token shared by every service."""

    def __init__(self, client: WeChatShopClient, shops: ShopCache) -> None:
        self._client = client
        self._shops = shops

    async def call(
        self, shop_id: str, path: str, body: dict[str, Any], *, idempotent: bool = True
    ) -> dict[str, Any]:
        shop = await self._shops.get(shop_id)
        if shop is None:
            raise WeChatApiError(path, 41001, f"shop {shop_id} is not registered (lvyue shop add)")
        return await self._client.call(shop, path, body, idempotent=idempotent)
