"""The supplier API (`/supplier/v1`): the change feed, lists, and the actions on a dispatch order.

A supplier authenticates with its API key and sees only its own dispatch orders: any other id is a
404, exactly like an id that does not exist. Every POST takes an `Idempotency-Key`; a repeat with
the same key and body within a day returns the first answer (idempotency.py keeps them).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Protocol

import httpx
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.types import Scope

from services.dispatch.catalog import Catalog
from services.dispatch.domain import dispatch_order as dispatch
from services.dispatch.domain.dispatch_order import DispatchError, DispatchOrder, ParcelShipment
from services.dispatch.handlers import Dispatcher, DispatchNotFound
from services.dispatch.idempotency import IdempotencyStore, StoredAnswer
from services.dispatch.store import IdempotentRequest, within_reads
from shared.api.logistics import INTERNAL_PREFIX, GoodsLine, ParcelToIssue, WaybillIssueRequest
from shared.api.supplier import (
    API_PREFIX,
    AcceptRequest,
    ChangeAnswer,
    DispatchOrderList,
    DispatchOrderPublic,
    ErrorBody,
    FeedPage,
    FieldError,
    RejectRequest,
    ReturnReceipt,
    ShipRequest,
    SupplierErrorCode,
    WaybillRequest,
    WaybillResponse,
)
from shared.events.base import utc_now
from shared.events.dispatch import DispatchState
from shared.settings import DispatchSettings

log = logging.getLogger(__name__)
ACCEPT_CLOCK_SKEW = timedelta(minutes=5)  # a supplier's clock may lag ours a little
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "missing, malformed or revoked API key"},
    404: {"model": ErrorBody, "description": "no such dispatch order for this supplier"},
    409: {"model": ErrorBody, "description": "the dispatch order's state does not allow this"},
    422: {"model": ErrorBody, "description": "invalid request; `fields` has each field's path"},
    429: {"model": ErrorBody, "description": "rate limited; see Retry-After"},
}


class ApiError(Exception):
    def __init__(
        self, status: int, code: SupplierErrorCode, message: str, headers: dict[str, str] | None = None
    ):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def error_response(status: int, code: SupplierErrorCode, message: str, **extra: Any) -> JSONResponse:
    headers = extra.pop("headers", None)
    body = ErrorBody(code=code, message=message, **extra)
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


class TokenBucket:
    def __init__(self, rate: float, burst: int) -> None:
        self._rate, self._burst = rate, burst
        self._state: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """0 if allowed, else the seconds until a token is available."""
        now = time.monotonic()
        tokens, last = self._state.get(key, (float(self._burst), now))
        tokens = min(float(self._burst), tokens + (now - last) * self._rate)
        if tokens >= 1:
            self._state[key] = (tokens - 1, now)
            return 0.0
        self._state[key] = (tokens, now)
        return (1 - tokens) / self._rate


class KeyCache:
    """Which supplier a key belongs to, read again after `ttl_s`. Requests that find no entry share one
    read (a bot's calls arrive together). An expired entry still answers for up to `stale_s` while one
    background read refreshes it: a slow database must not hold every supplier call (under a backlog,
    all of a bot's calls waited on the read, timed out together and were retried together). A revoked
    key therefore stops working once the read after its expiry lands, within `ttl_s + stale_s` even
    while reads fail."""

    def __init__(self, catalog: Catalog, ttl_s: float, stale_s: float = 0.0) -> None:
        self._catalog, self._ttl, self._stale = catalog, ttl_s, stale_s
        self._cache: dict[str, tuple[str | None, float]] = {}  # token -> (supplier, read at)
        self._reading: dict[str, asyncio.Task[str | None]] = {}

    async def supplier_of(self, token: str) -> str | None:
        hit = self._cache.get(token)
        if hit is not None:
            supplier, read_at = hit
            age = time.monotonic() - read_at
            if age < self._ttl:
                return supplier
            if age < self._ttl + self._stale:
                self._read_once(token)
                return supplier
        return await asyncio.shield(self._read_once(token))

    def _read_once(self, token: str) -> asyncio.Task[str | None]:
        reading = self._reading.get(token)
        if reading is None:
            reading = asyncio.create_task(self._read(token))
            self._reading[token] = reading
            reading.add_done_callback(lambda task: self._read_done(token, task))
        return reading

    def _read_done(self, token: str, task: asyncio.Task[str | None]) -> None:
        self._reading.pop(token, None)
        if not task.cancelled() and task.exception() is not None:  # retrieved: callers may all be gone
            log.warning("reading supplier key failed: %r", task.exception())

    async def _read(self, token: str) -> str | None:
        read_at = time.monotonic()
        supplier = await self._catalog.authenticate(token)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[token] = (supplier, read_at)
        return supplier


class DropshipLookup(Protocol):
    def ds_order_id(self, dispatch_id: str) -> str | None: ...


@dataclass
class SupplierApi:
    settings: DispatchSettings
    dispatcher: Dispatcher
    keys: KeyCache
    limiter: TokenBucket
    idempotency: IdempotencyStore
    logistics: httpx.AsyncClient
    catalog: Catalog
    dropship: DropshipLookup | None = None  # the WeChat drop-ship mirror (dropship.py)

    def public(self, order: DispatchOrder) -> DispatchOrderPublic:
        """The supplier's view, with the WeChat drop-ship order when the dispatch order is mirrored."""
        ds_order_id = self.dropship.ds_order_id(order.dispatch_id) if self.dropship else None
        view = order.public()
        return view if ds_order_id is None else view.model_copy(update={"wechat_ds_order_id": ds_order_id})


async def _api(request: Request) -> SupplierApi:  # async: no thread-pool hop per request
    api: SupplierApi = request.app.state.supplier_api
    return api


def api_key_of(authorization: str | None, x_api_key: str | None) -> str | None:
    """The API key of a request: `X-Api-Key`, or `Authorization: Bearer <key>`."""
    if x_api_key:
        return x_api_key
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return None


def api_key_of_scope(scope: Scope) -> str | None:
    """The API key of a raw ASGI request (for the middlewares in front of the routes)."""
    authorization = next((v for k, v in scope["headers"] if k == b"authorization"), None)
    x_api_key = next((v for k, v in scope["headers"] if k == b"x-api-key"), None)  # the first, as the route
    return api_key_of(
        None if authorization is None else authorization.decode("latin-1"),
        None if x_api_key is None else x_api_key.decode("latin-1"),
    )


def rate_limited(api: SupplierApi, supplier: str) -> JSONResponse | None:
    """Takes one request from the supplier's budget; the 429 to answer when it is spent."""
    wait_s = api.limiter.take(supplier)
    if wait_s <= 0:
        return None
    return error_response(
        429,
        SupplierErrorCode.RATE_LIMITED,
        "too many requests",
        headers={"Retry-After": str(max(1, math.ceil(wait_s)))},
    )


async def authenticated_supplier(
    request: Request,
    authorization: Annotated[str | None, Header(description="Bearer <API key>")] = None,
    x_api_key: Annotated[str | None, Header(description="or the API key alone")] = None,
) -> str:
    api = await _api(request)
    token = api_key_of(authorization, x_api_key)
    supplier = await api.keys.supplier_of(token) if token else None
    if supplier is None:
        raise ApiError(
            401,
            SupplierErrorCode.UNAUTHENTICATED,
            "a valid API key is required",
            {"WWW-Authenticate": "Bearer"},
        )
    refusal = rate_limited(api, supplier)
    if refusal is not None:
        raise ApiError(
            429,
            SupplierErrorCode.RATE_LIMITED,
            "too many requests",
            {"Retry-After": refusal.headers["retry-after"]},
        )
    return supplier


SupplierId = Annotated[str, Depends(authenticated_supplier)]
Api = Annotated[SupplierApi, Depends(_api)]
DispatchIdPath = Annotated[str, Path(max_length=64, pattern=r"^[0-9A-Za-z_-]+$")]
IdempotencyKey = Annotated[
    str | None,
    Header(max_length=255, description="retry-safe: a repeat within a day returns the first answer"),
]

router = APIRouter(prefix=API_PREFIX, tags=["supplier"], responses=ERROR_RESPONSES)


FEED_PATH = API_PREFIX + "/feed"  # also served on a fast path: see feed_endpoint.py


class ClientHungUp(Exception):
    """The client of a long poll disconnected while it waited."""


async def feed_body(
    api: SupplierApi,
    supplier: str,
    after: int,
    wait_s: float,
    limit: int,
    *,
    hang_up: Callable[[], Awaitable[None]] | None = None,
) -> bytes:
    """A FeedPage as JSON, built from the entries' stored JSON (no model per change). `hang_up`: makes
    an awaitable that ends when the client disconnects; a poll that parks ends with ClientHungUp then,
    instead of waiting out its time for nobody (watched only once it parks: most polls do not)."""
    store = api.dispatcher.store
    limit = min(limit, api.settings.feed_max_page)
    entries = store.feed.after(supplier, after, limit)
    if not entries and wait_s > 0:
        parked = store.feed.wait(supplier, after, min(wait_s, api.settings.feed_max_wait_s))
        if hang_up is None:
            await parked
        elif not await finished_first(parked, hang_up()):
            raise ClientHungUp
        if api.settings.feed_linger_s > 0:
            # Woken by one change: a moment more gathers the ones right behind it (fewer polls).
            await asyncio.sleep(api.settings.feed_linger_s)
        entries = store.feed.after(supplier, after, limit)
    entries = within_reads(entries, api.settings.feed_max_reads)
    next_cursor = entries[-1].seq if entries else max(after, 0)
    bodies = await store.feed_bodies(entries)
    body = b'{"schema_version":1,"changes":[' + b",".join(bodies) + b'],"next_cursor":'
    return body + str(next_cursor).encode() + b"}"


async def finished_first(work: Awaitable[None], other: Awaitable[None]) -> bool:
    """Run both until one ends; True when `work` did, False (with `work` cancelled) when `other` ended
    first. A failure of either is raised; both tasks are finished before this returns or raises."""
    first = asyncio.ensure_future(work)
    second = asyncio.ensure_future(other)
    stopped_first = False
    try:
        await asyncio.wait((first, second), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not first.done():
            stopped_first = first.cancel()
        second.cancel()
        await asyncio.gather(first, second, return_exceptions=True)
    if not stopped_first:
        first.result()  # its failure (or its cancellation by someone else), if any
        return True
    failure = None if second.cancelled() else second.exception()
    if failure is not None:
        raise failure
    return False


@router.get("/feed", response_model=FeedPage, summary="Changes after a cursor, long-polling")
async def feed(
    supplier: SupplierId,
    api: Api,
    after: Annotated[int, Query(ge=0, description="the last cursor seen (0: from the start)")] = 0,
    wait_s: Annotated[float, Query(ge=0, le=60, description="wait up to this long for a change")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    return Response(await feed_body(api, supplier, after, wait_s, limit), media_type="application/json")


@router.get("/dispatch-orders", response_model=DispatchOrderList, summary="List with filters")
async def list_dispatch_orders(
    supplier: SupplierId,
    api: Api,
    state: Annotated[DispatchState | None, Query()] = None,
    order_id: Annotated[str | None, Query(pattern=r"^[0-9]{1,20}$")] = None,
    updated_since: Annotated[datetime | None, Query()] = None,
    page_after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DispatchOrderList:
    store = api.dispatcher.store
    gists = store.supplier_gists(supplier)
    if page_after is not None:
        ids = [dispatch_id for dispatch_id, _ in gists]
        gists = gists[ids.index(page_after) + 1 :] if page_after in ids else []
    since = _aware(updated_since) if updated_since is not None else None
    chosen: list[str] = []
    for dispatch_id, gist in gists:
        if state is not None and gist.state != state:
            continue
        if order_id is not None and gist.order_id != order_id:
            continue
        if since is not None and gist.updated_at < since:
            continue
        chosen.append(dispatch_id)
        if len(chosen) > limit:
            break
    more = len(chosen) > limit
    page = chosen[:limit]
    return DispatchOrderList(
        items=[api.public(o) for o in await store.orders(page)],
        next_page_after=page[-1] if more and page else None,
    )


@router.get(
    "/dispatch-orders/{dispatch_id}", response_model=DispatchOrderPublic, summary="One dispatch order"
)
async def get_dispatch_order(
    supplier: SupplierId, api: Api, dispatch_id: DispatchIdPath
) -> DispatchOrderPublic:
    return api.public(await api.dispatcher.get_for_supplier(supplier, dispatch_id))


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    # A change's answer, held by the version document that carries the request (its idempotency
    # record, written with the change): nothing more to store.
    by_change: bool = False


Run = Callable[[IdempotentRequest | None], Awaitable[Answer]]


async def _idempotent(
    api: SupplierApi, supplier: str, key: str | None, request_fingerprint: str, run: Run
) -> Response:
    if key is None:
        answer = await _answer(run, None)
        return Response(answer.body, status_code=answer.status, media_type="application/json")
    scoped = f"{supplier}:{key}"
    async with api.idempotency.lock(scoped):
        stored = await api.idempotency.get(scoped)
        if stored is not None:
            if stored.fingerprint != request_fingerprint:
                raise ApiError(
                    422,
                    SupplierErrorCode.IDEMPOTENCY_KEY_REUSED,
                    "this Idempotency-Key was used for a different request",
                )
            return Response(
                stored.body,
                status_code=stored.status,
                media_type="application/json",
                headers={"Idempotent-Replayed": "true"},
            )
        answer = await _answer(run, IdempotentRequest(scoped, request_fingerprint))
        kept = StoredAnswer(request_fingerprint, answer.status, answer.body)
        if answer.by_change:
            api.idempotency.answered_by_change(scoped, kept)
        elif answer.status < 500 and answer.status != 429:
            await api.idempotency.put(scoped, kept)
        return Response(answer.body, status_code=answer.status, media_type="application/json")


async def _answer(run: Run, request: IdempotentRequest | None) -> Answer:
    """Domain refusals are answers too (stored under the key, like a success)."""
    try:
        return await run(request)
    except DispatchError as exc:
        status = 404 if exc.code == SupplierErrorCode.NOT_FOUND else 409
        return Answer(status, ErrorBody(code=exc.code, message=exc.message).model_dump_json().encode())
    except DispatchNotFound:
        return Answer(
            404,
            ErrorBody(code=SupplierErrorCode.NOT_FOUND, message="no such dispatch order")
            .model_dump_json()
            .encode(),
        )


def _fingerprint(request: Request, body: bytes) -> str:
    return fingerprint_of(request.method, request.url.path, body)


def fingerprint_of(method: str, path: str, body: bytes) -> str:
    """What a repeat under the same Idempotency-Key must match: the method, path and body."""
    return hashlib.sha256(method.encode() + path.encode() + b"\n" + body).hexdigest()


Decide = Callable[[DispatchOrder, datetime], dispatch.Transition]


async def _command(
    request: Request,
    api: SupplierApi,
    supplier: str,
    dispatch_id: str,
    idempotency_key: str | None,
    body: BaseModel,
    decide: Decide,
) -> Response:
    return await run_command(
        api, supplier, dispatch_id, idempotency_key, request.method, request.url.path, body, decide
    )


async def run_command(
    api: SupplierApi,
    supplier: str,
    dispatch_id: str,
    idempotency_key: str | None,
    method: str,
    path: str,
    body: BaseModel,
    decide: Decide,
) -> Response:
    """A command on one dispatch order, answered with its new public view (the routes and the
    command fast path in command_endpoint.py both run it)."""

    async def run(request: IdempotentRequest | None) -> Answer:
        cause = f"api:{uuid.uuid4()}"
        done = await api.dispatcher.run_command(supplier, dispatch_id, decide, cause=cause, request=request)
        return Answer(200, done.public_json, by_change=done.committed and request is not None)

    fingerprint = fingerprint_of(method, path, body.model_dump_json().encode())
    return await _idempotent(api, supplier, idempotency_key, fingerprint, run)


def accept_is_in_the_past(body: AcceptRequest) -> bool:
    return body.estimated_ship_at is not None and body.estimated_ship_at < utc_now() - ACCEPT_CLOCK_SKEW


def accepting(body: AcceptRequest) -> Decide:
    def decide(order: DispatchOrder, now: datetime) -> dispatch.Transition:
        return dispatch.accept(order, estimated_ship_at=body.estimated_ship_at, now=now)

    return decide


def shipping(body: ShipRequest) -> Decide:
    parcels = [ParcelShipment(p.carrier_code, p.waybill_no, list(p.lines)) for p in body.parcels]

    def decide(order: DispatchOrder, now: datetime) -> dispatch.Transition:
        return dispatch.ship(order, parcels=parcels, now=now)

    return decide


@router.post("/dispatch-orders/{dispatch_id}/accept", response_model=DispatchOrderPublic, summary="Accept")
async def accept(
    request: Request,
    supplier: SupplierId,
    api: Api,
    dispatch_id: DispatchIdPath,
    body: AcceptRequest,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    if accept_is_in_the_past(body):
        raise RequestValidationError(
            [{"loc": ("body", "estimated_ship_at"), "msg": "must not be in the past", "type": "value_error"}]
        )
    return await _command(request, api, supplier, dispatch_id, idempotency_key, body, accepting(body))


@router.post("/dispatch-orders/{dispatch_id}/reject", response_model=DispatchOrderPublic, summary="Reject")
async def reject(
    request: Request,
    supplier: SupplierId,
    api: Api,
    dispatch_id: DispatchIdPath,
    body: RejectRequest,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    def decide(order: DispatchOrder, now: datetime) -> dispatch.Transition:
        return dispatch.reject(order, reason=body.reason, text=body.text, now=now)

    return await _command(request, api, supplier, dispatch_id, idempotency_key, body, decide)


@router.post(
    "/dispatch-orders/{dispatch_id}/shipments",
    response_model=DispatchOrderPublic,
    summary="Report parcels shipped (one or more; partial and split shipments)",
)
async def ship(
    request: Request,
    supplier: SupplierId,
    api: Api,
    dispatch_id: DispatchIdPath,
    body: ShipRequest,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    return await _command(request, api, supplier, dispatch_id, idempotency_key, body, shipping(body))


@router.post(
    "/dispatch-orders/{dispatch_id}/change-requests/{request_id}/answer",
    response_model=DispatchOrderPublic,
    summary="Confirm or refuse a cancellation or change request",
)
async def answer_change_request(
    request: Request,
    supplier: SupplierId,
    api: Api,
    dispatch_id: DispatchIdPath,
    request_id: Annotated[str, Path(max_length=80, pattern=r"^[0-9A-Za-z_-]+$")],
    answer: ChangeAnswer,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    def decide(order: DispatchOrder, now: datetime) -> dispatch.Transition:
        return dispatch.answer_change(
            order,
            request_id=request_id,
            decision=answer.decision,
            refusal=answer.refusal,
            text=answer.text,
            now=now,
        )

    return await _command(request, api, supplier, dispatch_id, idempotency_key, answer, decide)


@router.post(
    "/dispatch-orders/{dispatch_id}/aftersale/{case_id}/receipt",
    response_model=DispatchOrderPublic,
    summary="Confirm that goods an after-sale case sent back have arrived",
)
async def confirm_return_receipt(
    request: Request,
    supplier: SupplierId,
    api: Api,
    dispatch_id: DispatchIdPath,
    case_id: Annotated[str, Path(max_length=64, pattern=r"^[0-9A-Za-z_-]+$")],
    body: ReturnReceipt,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    condition = body.condition if not body.note else f"{body.condition}: {body.note}"

    def decide(order: DispatchOrder, now: datetime) -> dispatch.Transition:
        return dispatch.confirm_return(order, case_id=case_id, condition=condition, now=now)

    return await _command(request, api, supplier, dispatch_id, idempotency_key, body, decide)


@router.post(
    "/dispatch-orders/{dispatch_id}/waybills",
    response_model=WaybillResponse,
    summary="Request waybill numbers and labels for parcels (issued by logistics)",
)
async def request_waybills(
    request: Request,
    supplier: SupplierId,
    api: Api,
    dispatch_id: DispatchIdPath,
    body: WaybillRequest,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    raw = body.model_dump_json().encode()

    async def run(_: IdempotentRequest | None) -> Answer:
        order = await api.dispatcher.get_for_supplier(supplier, dispatch_id)
        dispatch.check_can_request_waybills(order, [p.lines for p in body.parcels])
        profile = await api.catalog.get_supplier(supplier)
        if profile is None or profile.return_address is None:
            raise DispatchError(
                SupplierErrorCode.SENDER_ADDRESS_MISSING,
                "the supplier has no warehouse address for the label (lvyue supplier add --return-address)",
            )
        # Our key per request makes logistics' issuing idempotent: a retry never mints new numbers.
        issue_key = hashlib.sha256(
            f"{supplier}:{idempotency_key or uuid.uuid4()}:{raw!r}".encode()
        ).hexdigest()
        by_line = {line.line_no: line for line in order.lines}
        issue = WaybillIssueRequest(
            issue_key=issue_key,
            shop_id=order.shop_id,
            order_id=order.order_id,
            dispatch_id=order.dispatch_id,
            supplier_id=supplier,
            supplier_name=profile.name,
            carrier_code=body.carrier_code,
            sender=profile.return_address,
            receiver=order.receiver,
            parcels=[
                ParcelToIssue(
                    weight_grams=parcel.weight_grams,
                    lines=[
                        GoodsLine(
                            line_no=item.line_no,
                            product_id=by_line[item.line_no].product_id,
                            sku_id=by_line[item.line_no].sku_id,
                            title=by_line[item.line_no].title,
                            sku_attrs=by_line[item.line_no].sku_attrs,
                            quantity=item.quantity,
                        )
                        for item in parcel.lines
                    ],
                )
                for parcel in body.parcels
            ],
        )
        answer = await _logistics(
            api, "POST", f"{INTERNAL_PREFIX}/waybills", json=issue.model_dump(mode="json")
        )
        if answer.status_code == 409:
            raise DispatchError(SupplierErrorCode.CARRIER_REFUSED, answer.json().get("message", "refused"))
        if answer.status_code == 422:
            raise DispatchError(SupplierErrorCode.UNKNOWN_CARRIER, f"unknown carrier {body.carrier_code}")
        return Answer(answer.status_code, answer.content)

    return await _idempotent(api, supplier, idempotency_key, _fingerprint(request, raw), run)


async def _logistics(api: SupplierApi, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """A call to logistics; its absence or failure is a 503 the supplier retries."""
    try:
        answer = await api.logistics.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise ApiError(
            503,
            SupplierErrorCode.LOGISTICS_UNAVAILABLE,
            f"logistics did not answer: {exc}",
            {"Retry-After": "5"},
        ) from exc
    if answer.status_code >= 500:
        raise ApiError(
            503,
            SupplierErrorCode.LOGISTICS_UNAVAILABLE,
            "logistics failed; retry later",
            {"Retry-After": "5"},
        )
    return answer


@router.get(
    "/dispatch-orders/{dispatch_id}/labels/{carrier_code}/{waybill_no}.pdf",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}, "description": "100x150 mm label"}},
    summary="A parcel's label (PDF) for a waybill issued through this API",
)
async def label(
    supplier: SupplierId,
    api: Api,
    dispatch_id: DispatchIdPath,
    carrier_code: Annotated[str, Path(max_length=32, pattern=r"^[A-Za-z0-9_-]+$")],
    waybill_no: Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9-]+$")],
) -> Response:
    await api.dispatcher.get_for_supplier(supplier, dispatch_id)  # 404 for another supplier's order
    answer = await _logistics(
        api,
        "GET",
        f"{INTERNAL_PREFIX}/labels/{carrier_code}/{waybill_no}.pdf",
        params={"dispatch_id": dispatch_id},
    )
    if answer.status_code != 200:
        raise DispatchError(SupplierErrorCode.NOT_FOUND, f"no label for {carrier_code} {waybill_no}")
    return Response(answer.content, media_type="application/pdf")


def install(app: FastAPI) -> None:
    """The supplier API's error format on the whole app."""

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, headers=exc.headers)

    @app.exception_handler(DispatchNotFound)
    async def not_found(_: Request, exc: DispatchNotFound) -> JSONResponse:
        return error_response(404, SupplierErrorCode.NOT_FOUND, "no such dispatch order")

    @app.exception_handler(DispatchError)
    async def refused(_: Request, exc: DispatchError) -> JSONResponse:
        return error_response(404 if exc.code == SupplierErrorCode.NOT_FOUND else 409, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [
            FieldError(path=".".join(str(p) for p in e.get("loc", ())), message=str(e.get("msg", "")))
            for e in exc.errors()
        ]
        return error_response(422, SupplierErrorCode.VALIDATION_FAILED, "invalid request", fields=fields)

    app.include_router(router)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
