"""Kdniao (快递鸟) tracking pushes (RequestType 101) and the subscription that starts them (1008).

A push is a form POST `RequestData=<JSON>&DataSign=<sign>&RequestType=101&EBusinessID=<id>` where
`DataSign = base64(lowercase hex MD5(RequestData + AppKey))` (base64 of the 32-character hex text,
not of the raw digest). RequestData is `{EBusinessID, PushTime, Count, Data[{ShipperCode, LogisticCode,
State, StateEx, Traces[{AcceptTime, AcceptStation}] oldest first}]}`. The receiver answers
`{"EBusinessID", "UpdateTime": "yyyy-MM-dd HH:mm:ss", "Success": true, "Reason": ""}`; Kdniao pushes
again when Success is not true.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import IntEnum, StrEnum
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, ValidationError

from shared.carriers.errors import CarrierFormatError, FormatErrorCode
from shared.carriers.forms import encode_form, parse_form, require

ModelT = TypeVar("ModelT", bound=BaseModel)

BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


class RequestType(StrEnum):
    TRACKING_PUSH = "101"  # Kdniao -> subscriber: trace update
    SUBSCRIBE = "1008"  # subscriber -> Kdniao: track this waybill


class State(IntEnum):
    """The basic `State`."""

    NO_TRACE = 0  # 暂无轨迹信息
    PICKED_UP = 1  # 已揽收
    IN_TRANSIT = 2  # 在途中
    SIGNED = 3  # 已签收
    PROBLEM = 4  # 问题件
    FORWARDED = 5  # 转寄 (newer accounts only)


class StateEx(IntEnum):
    """The detailed `StateEx` (增值物流状态); its first digit(s) give the State."""

    PICKED_UP = 1  # 已揽收
    AWAITING_PICKUP = 10  # 待揽件
    IN_TRANSIT = 2  # 在途中
    AT_DESTINATION_CITY = 201  # 到达派件城市
    OUT_FOR_DELIVERY = 202  # 派件中
    AT_TRANSFER_CENTRE = 204  # 到达转运中心
    AT_DELIVERY_STATION = 205  # 到达派件网点
    SENT_FROM_ORIGIN = 206  # 寄件网点发件
    IN_LOCKER = 211  # 已放入快递柜或驿站
    SIGNED = 3  # 已签收
    SIGNED_NORMALLY = 301  # 正常签收
    SIGNED_AFTER_EXCEPTION = 302  # 派件异常后最终签收
    SIGNED_BY_PROXY = 304  # 代收签收
    SIGNED_FROM_LOCKER = 311  # 快递柜或驿站签收
    PROBLEM = 4  # 问题件
    NO_SHIPMENT_INFO = 401  # 发货无信息
    NOT_SIGNED_IN_TIME = 402  # 超时未签收
    NOT_UPDATED_IN_TIME = 403  # 超时未更新
    REFUSED = 404  # 拒收(退件)
    DELIVERY_EXCEPTION = 405  # 派件异常
    RETURN_SIGNED = 406  # 退货签收
    RETURN_NOT_SIGNED = 407  # 退货未签收
    LOCKER_NOT_COLLECTED = 412  # 快递柜或驿站超时未取
    FORWARDED = 5  # 转寄


def state_ex_of(code: int | None) -> StateEx | None:
    """The StateEx for a raw code; None when absent or not one this table knows."""
    if code is None:
        return None
    try:
        return StateEx(code)
    except ValueError:
        return None


def _int_from_wire(value: Any) -> Any:
    # Kdniao writes numbers as strings ("3"); accept both.
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


WireInt = Annotated[int, BeforeValidator(_int_from_wire), PlainSerializer(str, return_type=str)]
WireState = Annotated[
    State, BeforeValidator(_int_from_wire), PlainSerializer(lambda s: str(int(s)), return_type=str)
]


class Trace(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    accept_time: str = Field(alias="AcceptTime")  # "yyyy-MM-dd HH:mm:ss", Beijing time
    accept_station: str = Field(alias="AcceptStation")  # the scan's description
    location: str | None = Field(default=None, alias="Location")
    action: str | None = Field(default=None, alias="Action")  # the StateEx of this node, when sent
    remark: str | None = Field(default=None, alias="Remark")


class PushItem(BaseModel):
    """One element of Data[]: the latest view of one waybill."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    ebusiness_id: str | None = Field(default=None, alias="EBusinessID")
    shipper_code: str = Field(alias="ShipperCode")
    logistic_code: str = Field(alias="LogisticCode")  # waybill number
    success: bool = Field(default=True, alias="Success")
    reason: str | None = Field(default=None, alias="Reason")
    state: WireState = Field(alias="State")
    state_ex: WireInt | None = Field(default=None, alias="StateEx")  # raw: see detailed_state
    location: str | None = Field(default=None, alias="Location")
    callback: str | None = Field(default=None, alias="CallBack")  # the subscriber's own echo value
    traces: list[Trace] = Field(default_factory=list, alias="Traces")  # oldest first

    @property
    def detailed_state(self) -> StateEx | None:
        return state_ex_of(self.state_ex)


class PushRequestData(BaseModel):
    """The push's RequestData JSON."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    ebusiness_id: str = Field(alias="EBusinessID")
    push_time: str = Field(alias="PushTime")
    count: WireInt = Field(alias="Count")
    data: list[PushItem] = Field(alias="Data")


def to_json(model: BaseModel) -> str:
    return json.dumps(
        model.model_dump(by_alias=True, exclude_none=True), ensure_ascii=False, separators=(",", ":")
    )


def beijing_time(at: datetime | None = None) -> str:
    """A "yyyy-MM-dd HH:mm:ss" stamp in Beijing time, the only clock Kdniao speaks."""
    return (at or datetime.now(BEIJING)).astimezone(BEIJING).strftime(TIME_FORMAT)


# ---- signatures -----------------------------------------------------------------------------------


def data_sign(request_data: str, app_key: str) -> str:
    """DataSign = base64 of the lowercase hex MD5 of RequestData + AppKey (UTF-8)."""
    hex_digest = hashlib.md5((request_data + app_key).encode("utf-8")).hexdigest()
    return base64.b64encode(hex_digest.encode("ascii")).decode("ascii")


def verify(request_data: str, signature: str | None, app_key: str) -> bool:
    """Constant-time DataSign check."""
    if not signature:
        return False
    return hmac.compare_digest(data_sign(request_data, app_key), signature.strip())


# ---- the push (Kdniao -> subscriber) --------------------------------------------------------------


@dataclass(frozen=True)
class PushForm:
    """The push's form fields, RequestData exactly as signed."""

    request_data: str
    data_sign: str
    request_type: str
    ebusiness_id: str


@dataclass(frozen=True)
class Push:
    form: PushForm
    request: PushRequestData


def parse_push_form(body: bytes | str) -> PushForm:
    fields = parse_form(body)
    return PushForm(
        request_data=require(fields, "RequestData"),
        data_sign=require(fields, "DataSign"),
        request_type=require(fields, "RequestType"),
        ebusiness_id=fields.get("EBusinessID", ""),
    )


def parse_push(body: bytes | str, *, app_key: str) -> Push:
    """Read and check a tracking push: DataSign first, then RequestType 101, then the JSON."""
    form = parse_push_form(body)
    if not verify(form.request_data, form.data_sign, app_key):
        raise CarrierFormatError(FormatErrorCode.SIGNATURE_MISMATCH, "DataSign does not match")
    if form.request_type != RequestType.TRACKING_PUSH:
        raise CarrierFormatError(FormatErrorCode.UNEXPECTED_REQUEST_TYPE, f"RequestType {form.request_type}")
    return Push(form=form, request=parse_request_data(form.request_data, PushRequestData))


def push_form(request: PushRequestData, *, app_key: str) -> dict[str, str]:
    """The form fields Kdniao posts for `request`."""
    raw = to_json(request)
    return {
        "RequestData": raw,
        "DataSign": data_sign(raw, app_key),
        "RequestType": RequestType.TRACKING_PUSH.value,
        "EBusinessID": request.ebusiness_id,
    }


def push_body(request: PushRequestData, *, app_key: str) -> bytes:
    return encode_form(push_form(request, app_key=app_key))


def push_reply(
    ebusiness_id: str, *, success: bool = True, reason: str = "", at: datetime | None = None
) -> dict[str, Any]:
    """The subscriber's answer to a push; success=False (with a reason) asks Kdniao to push again."""
    return {"EBusinessID": ebusiness_id, "UpdateTime": beijing_time(at), "Success": success, "Reason": reason}


def is_success_reply(status_code: int, body: bytes) -> bool:
    if status_code != 200:
        return False
    try:
        answer = json.loads(body)
    except ValueError:
        return False
    return isinstance(answer, dict) and answer.get("Success") is True


# ---- the subscription (subscriber -> Kdniao, RequestType 1008) ------------------------------------


class SubscribeRequestData(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    shipper_code: str = Field(alias="ShipperCode")
    logistic_code: str = Field(alias="LogisticCode")
    order_code: str | None = Field(default=None, alias="OrderCode")
    customer_name: str | None = Field(default=None, alias="CustomerName")  # SF: last 4 phone digits
    callback: str | None = Field(default=None, alias="CallBack")  # echoed in pushes


def subscribe_form(request: SubscribeRequestData, *, ebusiness_id: str, app_key: str) -> dict[str, str]:
    raw = to_json(request)
    return {
        "RequestData": raw,
        "EBusinessID": ebusiness_id,
        "RequestType": RequestType.SUBSCRIBE.value,
        "DataSign": data_sign(raw, app_key),
        "DataType": "2",  # JSON
    }


def subscribe_reply(
    ebusiness_id: str, *, success: bool = True, reason: str = "", at: datetime | None = None
) -> dict[str, Any]:
    return {"EBusinessID": ebusiness_id, "UpdateTime": beijing_time(at), "Success": success, "Reason": reason}


def parse_request_data(raw: str, model: type[ModelT]) -> ModelT:
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise CarrierFormatError(FormatErrorCode.BAD_JSON, f"RequestData: {exc}") from exc
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CarrierFormatError(FormatErrorCode.INVALID_DOCUMENT, f"{where}: {first['msg']}") from exc
