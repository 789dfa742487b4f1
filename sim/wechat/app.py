"""The stand-in's HTTP face: WeChat's open API (real paths, field names and errcodes; HTTP 200 with
errcode/errmsg even on errors) and the control API under /sim/ for tests and the sale simulator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qsl

import httpx
from fastapi import APIRouter, Body, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.asgi import is_application_json, model_body, read_body, replaying
from shared.wechat.api import ErrCode
from shared.wechat.crypto import WeChatCryptoError, aes_key_from_encoding_key
from sim.asgi import JsonCall, JsonCallsFastPath, StandInApp
from sim.wechat import openapi
from sim.wechat.errors import WeChatApiError, errmsg_for
from sim.wechat.orders import AfterSaleRecord, AfterSaleStatus, NewProduct, OrderError, OrderErrorCode
from sim.wechat.pusher import Pusher
from sim.wechat.schemas import (
    AcceptApplyRequest,
    AcceptExchangeReshipRequest,
    AddressIn,
    AfterSaleIn,
    AfterSaleRequest,
    BusyFault,
    BuyerReturnIn,
    CallOut,
    CancelIn,
    ClearFaults,
    CompleteIn,
    DelayFault,
    DeliveryCompanyListRequest,
    DeliverySendRequest,
    DropshipAssignRequest,
    DropshipCancelRequest,
    DropshipGetRequest,
    DropshipListRequest,
    DuplicatePushesFault,
    ErrcodeFault,
    EwaybillBalanceIn,
    EwaybillCancelRequest,
    EwaybillCreateRequest,
    EwaybillGetRequest,
    EwaybillPathIn,
    EwaybillPrecreateRequest,
    EwaybillPrintRequest,
    ExpireTokensFault,
    FaultIn,
    HoldPushesFault,
    OrderGetRequest,
    OrderIn,
    OrderListRequest,
    PayIn,
    PushAttemptOut,
    PushOut,
    RateLimitFault,
    RejectApplyRequest,
    RejectExchangeReshipRequest,
    ReleasePushesFault,
    ShopIn,
    ShopOut,
    StableTokenRequest,
)
from sim.wechat.settings import WeChatSimSettings
from sim.wechat.state import CallRecord, PushRecord, PushStatus, Shop, SimState, UnknownShopError

RequestT = TypeVar("RequestT", bound=BaseModel)
TokenHandler = Callable[[SimState, str, RequestT], dict[str, Any]]

# ---- WeChat's API: the plumbing every endpoint shares ----------------------------------------------


def _parse_json(raw: bytes) -> tuple[Any, WeChatApiError | None]:
    """The body as sent (big integers stay exact ints), or the 47001 WeChat answers for bad JSON."""
    if not raw.strip():
        return {}, None
    try:
        return json.loads(raw), None
    except (ValueError, UnicodeDecodeError):
        return raw[:2000].decode(errors="replace"), WeChatApiError(ErrCode.INVALID_JSON_TYPES, "invalid json")


def _validate(model: type[RequestT], body: Any) -> RequestT:
    if not isinstance(body, dict):
        raise WeChatApiError(ErrCode.INVALID_JSON_TYPES, "body is not a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        kind = first["type"]
        errcode = (
            ErrCode.INVALID_JSON_TYPES
            if kind == "missing" or kind.endswith("_type") or kind.endswith("_parsing")
            else ErrCode.INVALID_ARGS
        )
        raise WeChatApiError(errcode, f"{where}: {first['msg']}") from exc


def _error_body(exc: WeChatApiError) -> dict[str, Any]:
    return {"errcode": exc.errcode, "errmsg": errmsg_for(exc.errcode, exc.detail), **exc.extra}


async def _answer(
    state: SimState,
    request: Request,
    recorded_request: Any,
    appid_hint: str | None,
    answer: Callable[[Callable[[str], None]], dict[str, Any]],
) -> JSONResponse:
    """Apply the scripted delay, run `answer` (which reports the caller's appid once known), turn a
    WeChatApiError into errcode/errmsg, record the call."""
    body = await _answer_call(state, request.method, request.url.path, recorded_request, appid_hint, answer)
    return JSONResponse(body)


async def _answer_call(
    state: SimState,
    method: str,
    path: str,
    recorded_request: Any,
    appid_hint: str | None,
    answer: Callable[[Callable[[str], None]], dict[str, Any]],
) -> dict[str, Any]:
    received_at = state.clock()
    delay_ms = state.faults.take_delay_ms(path)
    if delay_ms:
        await asyncio.sleep(delay_ms / 1000)
    caller: list[str | None] = [appid_hint]

    def identify(appid: str) -> None:
        caller[0] = appid

    try:
        body = answer(identify)
    except WeChatApiError as exc:
        body = _error_body(exc)
    state.calls.record(
        CallRecord(
            at=received_at,
            method=method,
            path=path,
            appid=caller[0],
            request=recorded_request,
            errcode=int(body.get("errcode", 0)),
            errmsg=str(body.get("errmsg", "ok")),
        )
    )
    return body


def _scripted_errcode(state: SimState, path: str) -> None:
    errcode = state.faults.take_errcode(path)
    if errcode is not None:
        raise WeChatApiError(errcode, "scripted fault")


TokenCall = Callable[[str, str | None, bytes], Awaitable[dict[str, Any]]]


def _token_call(state: SimState, model: type[RequestT], handler: TokenHandler[RequestT]) -> TokenCall:
    """A POST ...?access_token= call: token check (41001/40001/42001), faults, JSON body, handler; from
    the path, the access_token and the raw body to the answer's JSON object."""

    async def call(path: str, access_token: str | None, raw_body: bytes) -> dict[str, Any]:
        body, parse_error = _parse_json(raw_body)

        def answer(identify: Callable[[str], None]) -> dict[str, Any]:
            token = state.tokens.resolve(access_token)
            identify(token.appid)
            _scripted_errcode(state, path)
            if parse_error is not None:
                raise parse_error
            return handler(state, token.appid, _validate(model, body))

        return await _answer_call(state, "POST", path, body, None, answer)

    return call


def _token_endpoint(call: TokenCall) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def endpoint(request: Request) -> JSONResponse:
        body = await call(request.url.path, request.query_params.get("access_token"), await request.body())
        return JSONResponse(body)

    return endpoint


class TokenCallsFastPath(JsonCallsFastPath):
    """The POST ...?access_token= endpoints answered in front of FastAPI, the same way as its routes
    (which stay, for the OpenAPI page): the stand-in plays WeChat on the bench's two cores, where
    FastAPI's middleware and routing were two thirds of the cost of each order/get it answered."""

    def __init__(self, app: ASGIApp, calls: dict[str, TokenCall]) -> None:
        super().__init__(app, {path: _from_scope(call) for path, call in calls.items()})


def _from_scope(call: TokenCall) -> JsonCall:
    async def answer(scope: Scope, raw: bytes) -> dict[str, Any]:
        # Starlette's reading of the query: the last of repeated names, blank values kept.
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        return await call(scope["path"], query.get("access_token"), raw)

    return answer


def token_calls(state: SimState) -> dict[str, TokenCall]:
    """WeChat's POST ...?access_token= endpoints, by path."""
    calls: list[tuple[str, TokenCall]] = [
        (openapi.ORDER_GET_PATH, _token_call(state, OrderGetRequest, openapi.get_order)),
        (openapi.ORDER_LIST_PATH, _token_call(state, OrderListRequest, openapi.list_orders)),
        (openapi.DELIVERY_SEND_PATH, _token_call(state, DeliverySendRequest, openapi.send_delivery)),
        (
            openapi.DELIVERY_COMPANIES_PATH,
            _token_call(state, DeliveryCompanyListRequest, openapi.list_delivery_companies),
        ),
        (
            openapi.EWAYBILL_PRECREATE_PATH,
            _token_call(state, EwaybillPrecreateRequest, openapi.precreate_ewaybill),
        ),
        (
            openapi.EWAYBILL_CREATE_PATH,
            _token_call(state, EwaybillCreateRequest, openapi.create_ewaybill),
        ),
        (
            openapi.EWAYBILL_CANCEL_PATH,
            _token_call(state, EwaybillCancelRequest, openapi.cancel_ewaybill),
        ),
        (openapi.EWAYBILL_GET_PATH, _token_call(state, EwaybillGetRequest, openapi.get_ewaybill)),
        (openapi.EWAYBILL_PRINT_PATH, _token_call(state, EwaybillPrintRequest, openapi.get_print_info)),
        (openapi.AFTERSALE_GET_PATH, _token_call(state, AfterSaleRequest, openapi.get_aftersale)),
        (openapi.AFTERSALE_ACCEPT_PATH, _token_call(state, AcceptApplyRequest, openapi.accept_aftersale)),
        (openapi.AFTERSALE_REJECT_PATH, _token_call(state, RejectApplyRequest, openapi.reject_aftersale)),
        (
            openapi.EXCHANGE_RESHIP_ACCEPT_PATH,
            _token_call(state, AcceptExchangeReshipRequest, openapi.accept_exchange_reship),
        ),
        (
            openapi.EXCHANGE_RESHIP_REJECT_PATH,
            _token_call(state, RejectExchangeReshipRequest, openapi.reject_exchange_reship),
        ),
        (
            openapi.DROPSHIP_ASSIGN_PATH,
            _token_call(state, DropshipAssignRequest, openapi.assign_dropship),
        ),
        (
            openapi.DROPSHIP_CANCEL_PATH,
            _token_call(state, DropshipCancelRequest, openapi.cancel_dropship),
        ),
        (openapi.DROPSHIP_GET_PATH, _token_call(state, DropshipGetRequest, openapi.get_dropship)),
        (openapi.DROPSHIP_LIST_PATH, _token_call(state, DropshipListRequest, openapi.list_dropships)),
    ]
    return dict(calls)


def wechat_router(state: SimState, calls: dict[str, TokenCall] | None = None) -> APIRouter:
    """WeChat's open API as FastAPI routes; `calls` are the token calls (made here when not given)."""
    router = APIRouter(tags=["WeChat open API"])

    @router.get(openapi.TOKEN_PATH)
    async def token(request: Request) -> JSONResponse:
        query = dict(request.query_params)

        def answer(identify: Callable[[str], None]) -> dict[str, Any]:
            _scripted_errcode(state, openapi.TOKEN_PATH)
            return openapi.get_token(
                state,
                grant_type=query.get("grant_type", ""),
                appid=query.get("appid", ""),
                secret=query.get("secret", ""),
            )

        recorded = {k: ("***" if k == "secret" else v) for k, v in query.items()}
        return await _answer(state, request, recorded, query.get("appid"), answer)

    @router.post(openapi.STABLE_TOKEN_PATH)
    async def stable_token(request: Request) -> JSONResponse:
        body, parse_error = _parse_json(await request.body())
        appid = body.get("appid") if isinstance(body, dict) else None

        def answer(identify: Callable[[str], None]) -> dict[str, Any]:
            _scripted_errcode(state, openapi.STABLE_TOKEN_PATH)
            if parse_error is not None:
                raise parse_error
            return openapi.get_stable_token(state, _validate(StableTokenRequest, body))

        recorded = {**body, "secret": "***"} if isinstance(body, dict) and "secret" in body else body
        return await _answer(state, request, recorded, appid if isinstance(appid, str) else None, answer)

    for path, call in (calls if calls is not None else token_calls(state)).items():
        router.add_api_route(path, _token_endpoint(call), methods=["POST"], response_class=JSONResponse)
    return router


# ---- the control API (not WeChat's) ---------------------------------------------------------------

SIM_NOW_HEADER = "X-Sim-Now"

_CONTROL_STATUS = {
    OrderErrorCode.UNKNOWN_ORDER: 404,
    OrderErrorCode.UNKNOWN_AFTERSALE: 404,
    OrderErrorCode.UNKNOWN_EWAYBILL: 404,
    OrderErrorCode.UNKNOWN_PRODUCT: 422,
    OrderErrorCode.ORDER_EXISTS: 409,
    OrderErrorCode.INVALID_TRANSITION: 409,
}


def _control(action: Callable[[], Any]) -> Any:
    """Run a state change; domain refusals become 4xx with a code and a reason."""
    try:
        return action()
    except OrderError as exc:
        raise HTTPException(
            _CONTROL_STATUS[exc.code], {"code": exc.code.value, "reason": exc.detail}
        ) from exc
    except UnknownShopError as exc:
        raise HTTPException(404, {"code": "unknown_shop", "reason": str(exc)}) from exc


def _shop_out(shop: Shop) -> ShopOut:
    return ShopOut(
        appid=shop.appid,
        username=shop.username,
        callback_url=shop.callback_url,
        push_format=shop.push_format,
        encrypted=shop.encrypted,
    )


def _push_out(push: PushRecord) -> PushOut:
    return PushOut(
        push_id=push.push_id,
        appid=push.appid,
        event=push.event,
        subject_id=push.subject_id,
        duplicate_of=push.duplicate_of,
        status=push.status,
        queued_at=push.queued_at,
        document=push.document,
        attempts=[
            PushAttemptOut(
                number=a.number,
                at=a.at,
                outcome=a.outcome,
                status_code=a.status_code,
                answer=a.answer,
                error=a.error,
                duration_ms=a.duration_ms,
            )
            for a in push.attempts
        ],
    )


def apply_fault(state: SimState, fault: FaultIn) -> dict[str, Any]:
    """Script one fault; returns what it did (plus the plan now in force)."""
    done: dict[str, Any] = {}
    match fault:
        case ExpireTokensFault(appid=appid):
            done["tokens_expired"] = state.tokens.expire_all(appid)
        case BusyFault(count=count, path=path):
            state.faults.add_errcode(ErrCode.SYSTEM_BUSY, count=count, path=path)
        case RateLimitFault(count=count, path=path):
            state.faults.add_errcode(ErrCode.MINUTE_QUOTA, count=count, path=path)
        case ErrcodeFault(errcode=errcode, count=count, path=path):
            state.faults.add_errcode(errcode, count=count, path=path)
        case DelayFault(ms=ms, count=count, path=path):
            state.faults.add_delay(ms, count=count, path=path)
        case DuplicatePushesFault(times=times, count=count):
            state.faults.set_duplicate(times, count=count)
        case HoldPushesFault(count=count):
            state.pushes.hold(count)
        case ReleasePushesFault():
            done["released"] = state.pushes.release_held()
        case ClearFaults():
            done["released"] = state.pushes.release_held()
            state.faults.clear()
    return {**done, "plan": state.faults.snapshot()}


def _create_order(state: SimState, body: OrderIn) -> dict[str, Any]:
    """POST /sim/orders: a new order (paid at once when asked); its document."""
    products = [
        NewProduct(
            product_id=p.product_id,
            sku_id=p.sku_id,
            sku_cnt=p.sku_cnt,
            sale_price=p.sale_price,
            real_price=p.real_price,
            title=p.title,
            thumb_img=p.thumb_img,
            sku_code=p.sku_code,
            out_product_id=p.out_product_id,
            out_sku_id=p.out_sku_id,
            sku_attrs=tuple((a.attr_key, a.attr_value) for a in p.sku_attrs),
        )
        for p in body.products
    ]
    record = state.create_order(
        body.appid,
        products=products,
        address=body.address.model_dump(),
        order_id=body.order_id,
        openid=body.openid,
        freight=body.freight,
        customer_notes=body.customer_notes,
        merchant_notes=body.merchant_notes,
    )
    if body.paid:
        record = state.pay_order(record.order_id)
    return record.doc


CREATE_ORDER_PATH = "/sim/orders"


class OrderCreationFastPath:
    """POST /sim/orders answered in front of FastAPI, as its route does (which stays, for the OpenAPI
    page): the bench drives hundreds of orders a second through it, and FastAPI's routing and
    validation around the call cost the stand-in about a quarter of its CPU under bench-e2e (py-spy,
    2026-12-03), two and a half times the order's creation itself. A body the model refuses goes on
    to the route, which answers it with FastAPI's own 422; so does any body not sent as application/json."""

    def __init__(self, app: ASGIApp, state: SimState) -> None:
        self.app = app
        self._state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != CREATE_ORDER_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        raw = await read_body(receive)
        if raw is None:
            return
        # FastAPI's rules for types other than application/json: its route's to apply.
        body = model_body(OrderIn, raw) if is_application_json(scope) else None
        if body is None:
            await self.app(scope, replaying(raw, receive), send)
            return
        try:
            answer = JSONResponse(_control(lambda: _create_order(self._state, body)))
        except HTTPException as refusal:  # as FastAPI's own handler answers it
            answer = JSONResponse({"detail": refusal.detail}, refusal.status_code, refusal.headers)
        await answer(scope, receive, send)


def control_router(state: SimState) -> APIRouter:
    router = APIRouter(prefix="/sim", tags=["stand-in control"])

    @router.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.post("/shops", response_model=ShopOut)
    async def register_shop(body: ShopIn) -> ShopOut:
        try:
            aes_key_from_encoding_key(body.encoding_aes_key)
        except WeChatCryptoError as exc:
            raise HTTPException(422, {"code": exc.code.value, "reason": exc.detail}) from exc
        shop = state.register_shop(
            Shop(
                appid=body.appid,
                secret=body.secret,
                token=body.token,
                encoding_aes_key=body.encoding_aes_key,
                callback_url=body.callback_url,
                push_format=body.push_format,
                encrypted=body.encrypted,
                username=body.username,
            )
        )
        return _shop_out(shop)

    @router.get("/shops", response_model=list[ShopOut])
    async def list_shops() -> list[ShopOut]:
        return [_shop_out(shop) for shop in state.shops.values()]

    @router.post("/orders", response_model=dict[str, Any])
    async def create_order(body: OrderIn) -> dict[str, Any]:
        result: dict[str, Any] = _control(lambda: _create_order(state, body))
        return result

    @router.get("/orders", response_model=list[dict[str, Any]])
    async def list_orders(
        response: Response,
        appid: Annotated[str | None, Query()] = None,
        since: Annotated[int | None, Query(description="update_time at or after (unix s)")] = None,
    ) -> list[dict[str, Any]]:
        """Every order (of one shop), or those changed since a time: what the sale simulator watches.
        `X-Sim-Now` is the stand-in's clock when the list was taken: ask `since` it next time (an
        order's update_time can run ahead of the clock, so the newest one seen is not a safe mark)."""
        response.headers[SIM_NOW_HEADER] = str(state.now())
        return [
            r.doc
            for r in state.orders.orders.values()
            if (appid is None or r.appid == appid) and (since is None or int(r.doc["update_time"]) >= since)
        ]

    @router.get("/orders/{order_id}", response_model=dict[str, Any])
    async def get_order(order_id: str) -> dict[str, Any]:
        result: dict[str, Any] = _control(lambda: state.orders.find(order_id).doc)
        return result

    @router.post("/orders/{order_id}/pay", response_model=dict[str, Any])
    async def pay(order_id: str, body: Annotated[PayIn | None, Body()] = None) -> dict[str, Any]:
        pay_time = body.pay_time if body else None
        result: dict[str, Any] = _control(lambda: state.pay_order(order_id, pay_time=pay_time).doc)
        return result

    @router.post("/orders/{order_id}/cancel", response_model=dict[str, Any])
    async def cancel(order_id: str, body: Annotated[CancelIn | None, Body()] = None) -> dict[str, Any]:
        cancel_type = body.cancel_type if body else 1
        result: dict[str, Any] = _control(lambda: state.cancel_order(order_id, cancel_type=cancel_type).doc)
        return result

    @router.post("/orders/{order_id}/address", response_model=dict[str, Any])
    async def change_address(order_id: str, body: AddressIn) -> dict[str, Any]:
        result: dict[str, Any] = _control(lambda: state.change_address(order_id, body.model_dump()).doc)
        return result

    @router.post("/orders/{order_id}/urge", response_model=dict[str, Any])
    async def urge(order_id: str) -> dict[str, Any]:
        result: dict[str, Any] = _control(lambda: state.urge_order(order_id).doc)
        return result

    @router.post("/orders/{order_id}/complete", response_model=dict[str, Any])
    async def complete(order_id: str, body: Annotated[CompleteIn | None, Body()] = None) -> dict[str, Any]:
        confirm_type = body.confirm_type if body else 1
        result: dict[str, Any] = _control(
            lambda: state.complete_order(order_id, confirm_type=confirm_type).doc
        )
        return result

    @router.post("/orders/{order_id}/aftersale", response_model=dict[str, Any])
    async def open_aftersale(
        order_id: str, body: Annotated[AfterSaleIn | None, Body()] = None
    ) -> dict[str, Any]:
        spec = body or AfterSaleIn()

        def open_case() -> AfterSaleRecord:
            return state.open_aftersale(
                order_id,
                kind=spec.type,
                product_id=spec.product_id,
                sku_id=spec.sku_id,
                count=spec.count,
                reason=spec.reason,
                refund_amount=spec.refund_amount,
            )

        aftersale: AfterSaleRecord = _control(open_case)
        return aftersale.doc

    @router.get("/aftersales", response_model=list[dict[str, Any]])
    async def list_aftersales(
        response: Response,
        appid: Annotated[str | None, Query()] = None,
        order_id: Annotated[str | None, Query()] = None,
        since: Annotated[int | None, Query(description="update_time at or after (unix s)")] = None,
    ) -> list[dict[str, Any]]:
        """Every after-sale case (of one shop or order), or those changed since a time (`X-Sim-Now`:
        as for /sim/orders)."""
        response.headers[SIM_NOW_HEADER] = str(state.now())
        return [
            a.doc
            for a in state.orders.aftersales.values()
            if (appid is None or a.appid == appid)
            and (order_id is None or a.order_id == order_id)
            and (since is None or int(a.doc["update_time"]) >= since)
        ]

    @router.get("/aftersales/{after_sale_order_id}", response_model=dict[str, Any])
    async def get_aftersale(after_sale_order_id: str) -> dict[str, Any]:
        result: dict[str, Any] = _control(lambda: state.orders.find_aftersale(after_sale_order_id).doc)
        return result

    @router.post("/aftersales/{after_sale_order_id}/cancel", response_model=dict[str, Any])
    async def withdraw_aftersale(after_sale_order_id: str) -> dict[str, Any]:
        """The buyer withdraws the case (USER_CANCELD): the order can ship again."""

        def withdraw() -> dict[str, Any]:
            aftersale = state.orders.find_aftersale(after_sale_order_id)
            if not aftersale.is_open:
                raise OrderError(OrderErrorCode.INVALID_TRANSITION, f"case is {aftersale.status.value}")
            return state.set_aftersale_status(after_sale_order_id, AfterSaleStatus.USER_CANCELD).doc

        result: dict[str, Any] = _control(withdraw)
        return result

    @router.post("/aftersales/{after_sale_order_id}/return", response_model=dict[str, Any])
    async def buyer_returns(
        after_sale_order_id: str, body: Annotated[BuyerReturnIn | None, Body()] = None
    ) -> dict[str, Any]:
        """The buyer sends the goods back (an approved return or exchange)."""
        spec = body or BuyerReturnIn()

        def send_back() -> dict[str, Any]:
            return state.buyer_returns(
                after_sale_order_id, delivery_id=spec.delivery_id, waybill_id=spec.waybill_id
            ).doc

        result: dict[str, Any] = _control(send_back)
        return result

    @router.get("/ewaybills/{ewaybill_order_id}", response_model=dict[str, Any])
    async def get_ewaybill(ewaybill_order_id: str) -> dict[str, Any]:
        record = state.ewaybills.records.get(ewaybill_order_id)
        if record is None:
            raise HTTPException(
                404, {"code": OrderErrorCode.UNKNOWN_EWAYBILL.value, "reason": ewaybill_order_id}
            )
        return record.doc

    @router.post("/ewaybills/{ewaybill_order_id}/path", response_model=dict[str, Any])
    async def ewaybill_path(ewaybill_order_id: str, body: EwaybillPathIn) -> dict[str, Any]:
        """The carrier reports progress: path_info grows and ewaybill_push_path is pushed."""
        result: dict[str, Any] = _control(
            lambda: state.ewaybill_path(ewaybill_order_id, status=body.status, desc=body.desc).doc
        )
        return result

    @router.post("/ewaybill/balance")
    async def ewaybill_balance(body: EwaybillBalanceIn) -> dict[str, Any]:
        """Waybill numbers left for a shop and carrier; at 0, order/create answers 10025005."""
        key = (body.appid, body.delivery_id)
        if body.available is None:
            state.ewaybills.balance.pop(key, None)
        else:
            state.ewaybills.balance[key] = body.available
        return {"appid": body.appid, "delivery_id": body.delivery_id, "available": body.available}

    @router.get("/dropships", response_model=list[dict[str, Any]])
    async def dropships(order_id: Annotated[str | None, Query()] = None) -> list[dict[str, Any]]:
        return [d for d in state.orders.dropships.values() if order_id is None or d["order_id"] == order_id]

    @router.get("/calls", response_model=list[CallOut])
    async def calls(
        path: Annotated[str | None, Query()] = None,
        appid: Annotated[str | None, Query()] = None,
        after: Annotated[
            int, Query(ge=0, description="only the calls numbered after this `seq` (a watcher's mark)")
        ] = 0,
    ) -> list[CallOut]:
        return [
            CallOut(
                seq=c.seq,
                at=c.at,
                method=c.method,
                path=c.path,
                appid=c.appid,
                request=c.request,
                errcode=c.errcode,
                errmsg=c.errmsg,
            )
            for c in state.calls.calls(path=path, appid=appid, after=after)
        ]

    @router.delete("/calls")
    async def clear_calls() -> dict[str, str]:
        state.calls.clear()
        return {"status": "cleared"}

    @router.post("/faults", response_model=dict[str, Any])
    async def script_fault(body: Annotated[FaultIn, Body()]) -> dict[str, Any]:
        return apply_fault(state, body)

    @router.get("/faults", response_model=dict[str, Any])
    async def faults() -> dict[str, Any]:
        return state.faults.snapshot()

    @router.get("/pushes", response_model=list[PushOut])
    async def pushes(
        event: Annotated[str | None, Query()] = None,
        order_id: Annotated[str | None, Query()] = None,
        status: Annotated[PushStatus | None, Query()] = None,
    ) -> list[PushOut]:
        return [_push_out(p) for p in state.pushes.find(event=event, subject_id=order_id, status=status)]

    return router


def create_app(
    state: SimState | None = None,
    settings: WeChatSimSettings | None = None,
    *,
    push_transport: httpx.AsyncBaseTransport | None = None,
) -> StandInApp:
    """The stand-in. `state` defaults to a fresh SimState on the real clock; `push_transport` replaces
    the network for pushes (tests mount the receiver in-process). The pusher runs with the lifespan."""
    settings = settings or WeChatSimSettings()
    state = state or SimState(
        token_ttl_s=settings.token_ttl_s, old_token_overlap_s=settings.old_token_overlap_s
    )
    pusher = Pusher(state, settings, transport=push_transport)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await pusher.start()
        try:
            yield
        finally:
            await pusher.stop()

    app = StandInApp(title="WeChat Shop stand-in", lifespan=lifespan)
    app.state.sim = state
    app.state.pusher = pusher
    calls = token_calls(state)  # one set, for the routes and the fast path in front of them
    app.include_router(wechat_router(state, calls))
    app.add_fast_path(TokenCallsFastPath, calls=calls)
    app.add_fast_path(OrderCreationFastPath, state=state)
    app.include_router(control_router(state))
    return app
