"""Errors the stand-in answers with: WeChat's errcodes and errmsg texts."""

from __future__ import annotations

import secrets
from enum import IntEnum
from typing import Any

from shared.wechat.api import DropshipErrCode, ErrCode


class SimErrCode(IntEnum):
    """WeChat errcodes the stand-in returns that `shared.wechat.api.ErrCode` does not list."""

    INVALID_GRANT_TYPE = 40002
    APPID_MISSING = 41002
    SECRET_MISSING = 41004
    REFUND_TOO_OFTEN = 10021059  # after-sale: at most one refund per order per minute
    EWAYBILL_NO_NUMBER = 10025005  # the carrier allocated no waybill number (see delivery_error_msg)
    EWAYBILL_NOT_FOUND = 10025010
    EWAYBILL_EXISTS = 10025019  # order/create called again for an e-waybill order that has its number


ERRMSG: dict[int, str] = {
    ErrCode.OK: "ok",
    ErrCode.SYSTEM_BUSY: "system error",
    ErrCode.INVALID_CREDENTIAL: "invalid credential, access_token is invalid or not latest",
    ErrCode.INVALID_APPID: "invalid appid",
    ErrCode.INVALID_ARGS: "invalid args",
    ErrCode.TOKEN_MISSING: "access_token missing",
    ErrCode.TOKEN_EXPIRED: "access_token expired",
    ErrCode.DAILY_QUOTA: "reach max api daily quota limit",
    ErrCode.MINUTE_QUOTA: "api minute-quota reach limit  mustslower  retry next minute",
    ErrCode.INVALID_JSON_TYPES: "data format error",
    ErrCode.NO_PERMISSION: "api unauthorized",
    ErrCode.ORDER_NOT_FOUND: "order not exist",
    ErrCode.ORDER_UPDATED_TOO_OFTEN: "order updated too often, please retry later",
    ErrCode.STATUS_FORBIDS_SHIPPING: "order status does not allow delivery",
    ErrCode.OPEN_AFTERSALE: "order has aftersale in progress, delivery not allowed",
    ErrCode.SHIPPING_FAILED: "delivery failed",
    ErrCode.ALREADY_SHIPPED: "order already delivered",
    DropshipErrCode.NOT_LINKED: "supplier not linked for drop-ship",
    DropshipErrCode.ORDER_NOT_AWAITING_SHIPMENT: "order is not awaiting shipment",
    DropshipErrCode.ORDER_NOT_DROPSHIP: "order has no drop-ship mark",
    DropshipErrCode.ORDER_ALL_SHIPPED: "all products of the order are shipped",
    DropshipErrCode.PRODUCT_SHIPPED: "the product is shipped",
    DropshipErrCode.DS_ORDER_CONFLICT: "ds_order_id conflicts with order_id",
    DropshipErrCode.DROPSHIP_NOT_ENABLED: "drop-ship management is not enabled for the shop",
    SimErrCode.INVALID_GRANT_TYPE: "invalid grant_type",
    SimErrCode.APPID_MISSING: "appid missing",
    SimErrCode.SECRET_MISSING: "appsecret missing",
    SimErrCode.REFUND_TOO_OFTEN: "refund too frequent for this order, retry in a minute",
    SimErrCode.EWAYBILL_NO_NUMBER: "ewaybill create failed, see delivery_error_msg",
    SimErrCode.EWAYBILL_NOT_FOUND: "ewaybill order not exist",
    SimErrCode.EWAYBILL_EXISTS: "ewaybill order already created",
}


def errmsg_for(errcode: int, detail: str = "") -> str:
    """WeChat's text for `errcode`; errors carry a request id (" rid: ...") as WeChat's do, so clients
    must branch on errcode, never on errmsg."""
    if errcode == ErrCode.OK:
        return "ok"
    text = ERRMSG.get(errcode, "error")
    if detail:
        text = f"{text}: {detail}"
    return f"{text} rid: {secrets.token_hex(4)}-{secrets.token_hex(4)}-{secrets.token_hex(4)}"


class WeChatApiError(Exception):
    """A WeChat API call refused with `errcode` (answered as HTTP 200 with errcode/errmsg, plus any
    `extra` fields WeChat adds to that error, e.g. delivery_error_msg)."""

    def __init__(self, errcode: int, detail: str = "", *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(f"{errcode}: {detail}" if detail else str(errcode))
        self.errcode = int(errcode)
        self.detail = detail
        self.extra = dict(extra or {})
