"""WeChat's open API as the stand-in answers it: one pure function per endpoint, taking the parsed
request and returning the JSON body, or raising WeChatApiError. HTTP plumbing lives in app.py."""

from __future__ import annotations

from typing import Any

from shared.wechat.api import MAX_LIST_WINDOW_S, ErrCode
from sim.wechat.errors import SimErrCode, WeChatApiError
from sim.wechat.orders import DELIVERY_COMPANIES, Parcel, ShipLine
from sim.wechat.schemas import (
    AcceptApplyRequest,
    AcceptExchangeReshipRequest,
    AfterSaleRequest,
    DeliveryCompanyListRequest,
    DeliverySendRequest,
    DropshipAssignRequest,
    DropshipCancelRequest,
    DropshipGetRequest,
    DropshipListRequest,
    EwaybillCancelRequest,
    EwaybillCreateRequest,
    EwaybillGetRequest,
    EwaybillPrecreateRequest,
    EwaybillPrintRequest,
    OrderGetRequest,
    OrderListRequest,
    RejectApplyRequest,
    RejectExchangeReshipRequest,
    StableTokenRequest,
    TimeRangeIn,
)
from sim.wechat.state import SimState

TOKEN_PATH = "/cgi-bin/token"
STABLE_TOKEN_PATH = "/cgi-bin/stable_token"
ORDER_GET_PATH = "/channels/ec/order/get"
ORDER_LIST_PATH = "/channels/ec/order/list/get"
DELIVERY_SEND_PATH = "/channels/ec/order/delivery/send"
DELIVERY_COMPANIES_PATH = "/channels/ec/order/deliverycompanylist/new/get"
EWAYBILL_PRECREATE_PATH = "/channels/ec/logistics/ewaybill/biz/order/precreate"
EWAYBILL_CREATE_PATH = "/channels/ec/logistics/ewaybill/biz/order/create"
EWAYBILL_CANCEL_PATH = "/channels/ec/logistics/ewaybill/biz/order/cancel"
EWAYBILL_GET_PATH = "/channels/ec/logistics/ewaybill/biz/order/get"
EWAYBILL_PRINT_PATH = "/channels/ec/logistics/ewaybill/biz/print/get"
AFTERSALE_GET_PATH = "/channels/ec/aftersale/getaftersaleorder"
AFTERSALE_ACCEPT_PATH = "/channels/ec/aftersale/acceptapply"
AFTERSALE_REJECT_PATH = "/channels/ec/aftersale/rejectapply"
EXCHANGE_RESHIP_ACCEPT_PATH = "/channels/ec/aftersale/acceptexchangereship"
EXCHANGE_RESHIP_REJECT_PATH = "/channels/ec/aftersale/rejectexchangereship"
DROPSHIP_ASSIGN_PATH = "/channels/ec/order/dropship/assign"
DROPSHIP_CANCEL_PATH = "/channels/ec/order/dropship/cancel"
DROPSHIP_GET_PATH = "/channels/ec/order/dropship/get"
DROPSHIP_LIST_PATH = "/channels/ec/order/dropship/list"
MAX_PAGE_SIZE = 100
OK: dict[str, Any] = {"errcode": 0, "errmsg": "ok"}


def _check_credentials(state: SimState, grant_type: str, appid: str, secret: str) -> None:
    if grant_type != "client_credential":
        raise WeChatApiError(SimErrCode.INVALID_GRANT_TYPE)
    if not appid:
        raise WeChatApiError(SimErrCode.APPID_MISSING)
    if not secret:
        raise WeChatApiError(SimErrCode.SECRET_MISSING)
    shop = state.shops.get(appid)
    if shop is None:
        raise WeChatApiError(ErrCode.INVALID_APPID)
    if secret != shop.secret:
        raise WeChatApiError(ErrCode.INVALID_CREDENTIAL, "AppSecret error")


def get_token(state: SimState, *, grant_type: str, appid: str, secret: str) -> dict[str, Any]:
    """GET /cgi-bin/token. Like WeChat, a success carries no errcode: just the token and expires_in."""
    _check_credentials(state, grant_type, appid, secret)
    token = state.tokens.issue_basic(appid)
    return {"access_token": token.value, "expires_in": token.expires_in(state.clock())}


def get_stable_token(state: SimState, request: StableTokenRequest) -> dict[str, Any]:
    _check_credentials(state, request.grant_type, request.appid, request.secret)
    token = state.tokens.issue_stable(request.appid, force_refresh=request.force_refresh)
    return {"access_token": token.value, "expires_in": token.expires_in(state.clock())}


def get_order(state: SimState, appid: str, request: OrderGetRequest) -> dict[str, Any]:
    record = state.orders.get(request.order_id, appid=appid)
    return {**OK, "order": record.doc}


def _check_range(name: str, window: TimeRangeIn) -> None:
    if window.start_time > window.end_time:
        raise WeChatApiError(ErrCode.INVALID_ARGS, f"{name}: start_time after end_time")
    if window.end_time - window.start_time > MAX_LIST_WINDOW_S:
        raise WeChatApiError(ErrCode.INVALID_ARGS, f"{name} longer than 7 days")


def list_orders(state: SimState, appid: str, request: OrderListRequest) -> dict[str, Any]:
    ranges = [
        (name, window)
        for name, window in (
            ("create_time", request.create_time_range),
            ("update_time", request.update_time_range),
        )
        if window is not None
    ]
    if not ranges:
        raise WeChatApiError(ErrCode.INVALID_ARGS, "create_time_range or update_time_range is required")
    for name, window in ranges:
        _check_range(f"{name}_range", window)
    if request.page_size is None or not 1 <= request.page_size <= MAX_PAGE_SIZE:
        raise WeChatApiError(ErrCode.INVALID_ARGS, "page_size must be 1 to 100")
    (field, window), *rest = ranges
    also = (rest[0][0], rest[0][1].start_time, rest[0][1].end_time) if rest else None
    ids, next_key, has_more = state.orders.list_ids(
        appid,
        time_field=field,
        start_time=window.start_time,
        end_time=window.end_time,
        status=request.status,
        page_size=request.page_size,
        next_key=request.next_key,
        also=also,
    )
    return {**OK, "order_id_list": ids, "next_key": next_key, "has_more": has_more}


def send_delivery(state: SimState, appid: str, request: DeliverySendRequest) -> dict[str, Any]:
    parcels = [
        Parcel(
            delivery_id=d.delivery_id,
            waybill_id=d.waybill_id,
            deliver_type=d.deliver_type,
            lines=tuple(ShipLine(p.product_id, p.sku_id, p.product_cnt) for p in d.product_infos),
        )
        for d in request.delivery_list
    ]
    state.ship(appid, request.order_id, parcels)
    return dict(OK)


def list_delivery_companies(
    state: SimState, appid: str, request: DeliveryCompanyListRequest
) -> dict[str, Any]:
    companies = [{"delivery_id": code, "delivery_name": name} for code, name in DELIVERY_COMPANIES]
    return {**OK, "company_list": companies}


# ---- e-waybills ----------------------------------------------------------------------------------


def precreate_ewaybill(state: SimState, appid: str, request: EwaybillPrecreateRequest) -> dict[str, Any]:
    """Not idempotent, like WeChat's: every call mints a new ewaybill_order_id."""
    for ec_order in request.ec_order_list:
        if ec_order.ec_order_id is not None:
            state.orders.get(ec_order.ec_order_id, appid=appid)
        elif not ec_order.ewaybill_order_code:
            raise WeChatApiError(ErrCode.INVALID_ARGS, "ec_order_id or ewaybill_order_code is required")
    record = state.ewaybills.precreate(appid, request.model_dump(exclude_none=True))
    return {**OK, "ewaybill_order_id": record.ewaybill_order_id}


def create_ewaybill(state: SimState, appid: str, request: EwaybillCreateRequest) -> dict[str, Any]:
    record = state.ewaybills.create(appid, request.ewaybill_order_id, template_id=request.template_id)
    return {
        **OK,
        "ewaybill_order_id": record.ewaybill_order_id,
        "waybill_id": record.doc["waybill_id"],
        "delivery_error_msg": "",
    }


def cancel_ewaybill(state: SimState, appid: str, request: EwaybillCancelRequest) -> dict[str, Any]:
    state.ewaybills.cancel(appid, request.ewaybill_order_id, waybill_id=request.waybill_id)
    return {**OK, "delivery_error_msg": ""}


def get_ewaybill(state: SimState, appid: str, request: EwaybillGetRequest) -> dict[str, Any]:
    return {**OK, "order_info": state.ewaybills.find(appid, request.ewaybill_order_id).doc}


def get_print_info(state: SimState, appid: str, request: EwaybillPrintRequest) -> dict[str, Any]:
    info = state.ewaybills.print_info(appid, request.ewaybill_order_id, template_id=request.template_id)
    return {**OK, "print_info": info}


# ---- after-sale ----------------------------------------------------------------------------------


def get_aftersale(state: SimState, appid: str, request: AfterSaleRequest) -> dict[str, Any]:
    return {**OK, "after_sale_order": state.orders.aftersale_for(appid, request.after_sale_order_id).doc}


def accept_aftersale(state: SimState, appid: str, request: AcceptApplyRequest) -> dict[str, Any]:
    state.accept_aftersale(appid, request.after_sale_order_id)
    return dict(OK)


def reject_aftersale(state: SimState, appid: str, request: RejectApplyRequest) -> dict[str, Any]:
    state.reject_aftersale(
        appid,
        request.after_sale_order_id,
        reject_reason_type=request.reject_reason_type,
        reject_reason=request.reject_reason,
    )
    return dict(OK)


def accept_exchange_reship(
    state: SimState, appid: str, request: AcceptExchangeReshipRequest
) -> dict[str, Any]:
    state.accept_exchange_reship(
        appid, request.after_sale_order_id, delivery_id=request.delivery_id, waybill_id=request.waybill_id
    )
    return dict(OK)


def reject_exchange_reship(
    state: SimState, appid: str, request: RejectExchangeReshipRequest
) -> dict[str, Any]:
    state.reject_exchange_reship(appid, request.after_sale_order_id, reject_reason=request.reject_reason)
    return dict(OK)


# ---- drop-ship -----------------------------------------------------------------------------------


def assign_dropship(state: SimState, appid: str, request: DropshipAssignRequest) -> dict[str, Any]:
    lines = [ShipLine(p.spu_id, p.sku_id, p.product_cnt) for p in request.dropship_product_list]
    doc = state.assign_dropship(appid, request.order_id, supplier_appid=request.supplier_appid, lines=lines)
    return {**OK, "ds_order_id": doc["ds_order_id"]}


def cancel_dropship(state: SimState, appid: str, request: DropshipCancelRequest) -> dict[str, Any]:
    lines = [ShipLine(p.spu_id, p.sku_id, p.product_cnt) for p in request.dropship_product_list]
    state.cancel_dropship(appid, request.order_id, ds_order_id=request.ds_order_id, lines=lines)
    return dict(OK)


def _dropship_order(doc: dict[str, Any]) -> dict[str, Any]:
    """dropship/get's `dropship_order`: the stored record without our own bookkeeping."""
    return {k: v for k, v in doc.items() if k not in ("appid", "dropship_product_list")}


def get_dropship(state: SimState, appid: str, request: DropshipGetRequest) -> dict[str, Any]:
    return {**OK, "dropship_order": _dropship_order(state.orders.dropship_of(appid, request.ds_order_id))}


def list_dropships(state: SimState, appid: str, request: DropshipListRequest) -> dict[str, Any]:
    ranges = {
        name: window
        for name, window in (
            ("create_time_range", request.create_time_range),
            ("update_time_range", request.update_time_range),
        )
        if window is not None
    }
    for name, window in ranges.items():
        _check_range(name, window)
    page = request.page_info
    limit = MAX_PAGE_SIZE if page is None or page.limit is None else page.limit
    if not 1 <= limit <= MAX_PAGE_SIZE or (page is not None and page.offset < 0):
        raise WeChatApiError(ErrCode.INVALID_ARGS, "page_info.limit must be 1 to 100")
    ids, has_more, total = state.orders.list_dropships(
        appid,
        order_id=request.order_id,
        supplier_appid=request.supplier_appid,
        status=request.status,
        create_range=_span(ranges.get("create_time_range")),
        update_range=_span(ranges.get("update_time_range")),
        offset=0 if page is None else page.offset,
        limit=limit,
    )
    return {**OK, "ds_order_id_list": ids, "has_more": has_more, "total": total}


def _span(window: TimeRangeIn | None) -> tuple[int, int] | None:
    return None if window is None else (window.start_time, window.end_time)
