"""Kuaidi100 (快递100) tracking: the subscription (POST poll.kuaidi100.com/poll) and the callback it
pushes to the subscriber.

Subscribe: form `schema=json&param={company, number, key, parameters{callbackurl, salt, resultv2}}`,
answered `{"result", "returnCode", "message"}` (200 提交成功, 501 duplicate, 600/601 key, 700/701/702
bad data or company, 500 server error).
Callback: form `param=<JSON>&sign=<UPPERCASE hex MD5(param + salt)>` (sign present whenever a salt
was given at subscription); `param` is `{status, message, lastResult{state, ischeck, com, nu,
data[{context, time, ftime}] newest first}, ...}`. The receiver answers
`{"result":true,"returnCode":"200","message":"成功"}` within 20 s, otherwise Kuaidi100 pushes again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, ValidationError

from shared.carriers.errors import CarrierFormatError, FormatErrorCode
from shared.carriers.forms import encode_form, parse_form, require

SUBSCRIBE_URL = "https://poll.kuaidi100.com/poll"
SUBSCRIBE_SCHEMA = "json"


def _int_from_wire(value: Any) -> Any:
    # Kuaidi100 sends numbers as strings ("3"); a receiver must accept either.
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


# An integer that arrives (and is sent) as a decimal string.
WireInt = Annotated[int, BeforeValidator(_int_from_wire), PlainSerializer(str, return_type=str)]


class TrackingState(IntEnum):
    """lastResult.state, the base states (advanced resultv2 states map onto these: base_state)."""

    IN_TRANSIT = 0  # 在途
    PICKED_UP = 1  # 揽收
    PROBLEM = 2  # 疑难
    SIGNED = 3  # 签收
    RETURN_SIGNED = 4  # 退签 (the returned parcel was signed for by the sender)
    OUT_FOR_DELIVERY = 5  # 派件
    RETURNED = 6  # 退回 (on its way back)
    REDIRECTED = 7  # 转投
    CUSTOMS = 8  # 清关
    REFUSED = 14  # 拒签

    @property
    def is_final(self) -> bool:
        """Kuaidi100 stops tracking (status=shutdown) after these."""
        return self in (TrackingState.SIGNED, TrackingState.RETURN_SIGNED)


def base_state(code: int) -> TrackingState | None:
    """The base state of a lastResult.state or data[].statusCode: itself for a base code; the family
    of an advanced one (resultv2=4/6: 101-103 picked up, 1001-1003 in transit, 2xx problem, 3xx signed,
    4xx return-signed, 5xx out for delivery, 10-13 customs); None when unknown."""
    try:
        return TrackingState(code)
    except ValueError:
        pass
    families = (
        (range(10, 14), TrackingState.CUSTOMS),
        (range(100, 200), TrackingState.PICKED_UP),
        (range(200, 300), TrackingState.PROBLEM),
        (range(300, 400), TrackingState.SIGNED),
        (range(400, 500), TrackingState.RETURN_SIGNED),
        (range(500, 600), TrackingState.OUT_FOR_DELIVERY),
        (range(1000, 1100), TrackingState.IN_TRANSIT),
    )
    for codes, state in families:
        if code in codes:
            return state
    return None


class PollStatus(StrEnum):
    """Callback `status`: the monitoring state of the subscription, not of the parcel."""

    POLLING = "polling"  # still tracked
    SHUTDOWN = "shutdown"  # finished (signed)
    ABORT = "abort"  # gave up ("3天查询无记录", "60天无变化"); re-subscribe after ~30 min if wanted
    UPDATEALL = "updateall"  # a full re-push


class TraceNode(BaseModel):
    """One data[] element: a scan on the parcel's way."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    context: str
    time: str  # as the carrier wrote it
    ftime: str  # formatted "yyyy-MM-dd HH:mm:ss" (Beijing time)
    status: str | None = None  # resultv2 only: state name (在途, 签收, ...)
    status_code: str | None = Field(default=None, alias="statusCode")  # resultv2 only
    area_code: str | None = Field(default=None, alias="areaCode")
    area_name: str | None = Field(default=None, alias="areaName")


class LastResult(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    message: str = ""
    state: WireInt  # TrackingState or an advanced resultv2 code: see tracking_state
    status: str = "200"  # "communication status", ignore
    condition: str = ""
    ischeck: WireInt = 0  # 1 once signed for
    com: str  # Kuaidi100 company code
    nu: str  # waybill number
    data: list[TraceNode] = Field(default_factory=list)  # newest first

    @property
    def tracking_state(self) -> TrackingState | None:
        return base_state(self.state)


class CallbackParam(BaseModel):
    """The callback's `param` JSON."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    status: PollStatus
    billstatus: str = ""  # deprecated by Kuaidi100
    message: str = ""  # e.g. "3天查询无记录" with status=abort
    auto_check: str | None = Field(default=None, alias="autoCheck")  # "1": company code was corrected
    com_old: str | None = Field(default=None, alias="comOld")
    com_new: str | None = Field(default=None, alias="comNew")
    last_result: LastResult = Field(alias="lastResult")


def to_json(model: BaseModel) -> str:
    """The compact UTF-8 JSON text Kuaidi100 sends (Chinese unescaped, wire aliases)."""
    return json.dumps(
        model.model_dump(by_alias=True, exclude_none=True), ensure_ascii=False, separators=(",", ":")
    )


# ---- signatures -----------------------------------------------------------------------------------


def sign(param: str, salt: str) -> str:
    """The callback sign: uppercase hex MD5 of the param text followed by the salt (UTF-8)."""
    return hashlib.md5((param + salt).encode("utf-8")).hexdigest().upper()


def verify(param: str, signature: str | None, salt: str) -> bool:
    """Constant-time check of a callback sign (case-insensitive hex)."""
    if not signature:
        return False
    return hmac.compare_digest(sign(param, salt), signature.strip().upper())


# ---- the callback (Kuaidi100 -> subscriber) --------------------------------------------------------


@dataclass(frozen=True)
class Callback:
    """A received callback: the param text exactly as signed, its sign, and the parsed document."""

    raw_param: str
    sign: str | None
    param: CallbackParam


def parse_callback(body: bytes | str, *, salt: str | None) -> Callback:
    """Read a callback form body. With a salt the sign is checked first (missing or wrong sign raises
    SIGNATURE_MISMATCH); salt=None skips the check (subscriptions made without a salt)."""
    fields = parse_form(body)
    raw_param = require(fields, "param")
    signature = fields.get("sign")
    if salt is not None and not verify(raw_param, signature, salt):
        raise CarrierFormatError(FormatErrorCode.SIGNATURE_MISMATCH, "sign does not match MD5(param + salt)")
    return Callback(raw_param=raw_param, sign=signature, param=parse_callback_param(raw_param))


def parse_callback_param(raw_param: str) -> CallbackParam:
    try:
        document = json.loads(raw_param)
    except ValueError as exc:
        raise CarrierFormatError(FormatErrorCode.BAD_JSON, f"param: {exc}") from exc
    try:
        return CallbackParam.model_validate(document)
    except ValidationError as exc:
        raise CarrierFormatError(FormatErrorCode.INVALID_DOCUMENT, _first_error(exc)) from exc


def callback_form(raw_param: str, *, salt: str | None) -> dict[str, str]:
    """The form fields Kuaidi100 posts: param, plus sign when the subscription had a salt."""
    fields = {"param": raw_param}
    if salt is not None:
        fields["sign"] = sign(raw_param, salt)
    return fields


def callback_body(raw_param: str, *, salt: str | None) -> bytes:
    return encode_form(callback_form(raw_param, salt=salt))


def success_reply() -> dict[str, Any]:
    """What the subscriber answers when it has taken the push (anything else makes Kuaidi100 retry)."""
    return {"result": True, "returnCode": "200", "message": "成功"}


def failure_reply(message: str = "失败", return_code: str = "500") -> dict[str, Any]:
    """A refusal: Kuaidi100 will push the same data again later."""
    return {"result": False, "returnCode": return_code, "message": message}


def is_success_reply(status_code: int, body: bytes) -> bool:
    """How the pushing side reads the subscriber's answer: HTTP 200 and result true."""
    if status_code != 200:
        return False
    try:
        answer = json.loads(body)
    except ValueError:
        return False
    return isinstance(answer, dict) and answer.get("result") is True


# ---- the subscription (subscriber -> Kuaidi100) ---------------------------------------------------


class SubscribeReturnCode(StrEnum):
    OK = "200"  # 提交成功
    SERVER_ERROR = "500"  # 服务器错误 (also for some malformed requests)
    DUPLICATE = "501"  # 重复订阅: already polling; re-subscribe only after shutdown/abort (+30 min)
    BAD_KEY = "600"  # 您不是合法的订阅者 (授权KEY出错)
    KEY_EXPIRED = "601"  # KEY已过期
    BAD_DATA = "700"  # 订阅数据错误 (unsupported company, empty/too long number, bad callback URL)
    COMPANY_REFUSED = "701"  # 拒绝订阅的快递公司
    COMPANY_UNKNOWN = "702"  # 识别不到该单号对应的快递公司 (autoCom)


SUBSCRIBE_MESSAGES: dict[SubscribeReturnCode, str] = {
    SubscribeReturnCode.OK: "提交成功",
    SubscribeReturnCode.SERVER_ERROR: "服务器错误",
    SubscribeReturnCode.DUPLICATE: "重复订阅",
    SubscribeReturnCode.BAD_KEY: "您不是合法的订阅者",
    SubscribeReturnCode.KEY_EXPIRED: "KEY已过期",
    SubscribeReturnCode.BAD_DATA: "订阅方的订阅数据存在错误",
    SubscribeReturnCode.COMPANY_REFUSED: "拒绝订阅的快递公司",
    SubscribeReturnCode.COMPANY_UNKNOWN: "识别不到该单号对应的快递公司",
}


class SubscribeParameters(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    callbackurl: str
    salt: str | None = None
    resultv2: str | None = None  # "1": add area parsing and per-node status; "4"/"6": advanced states
    auto_com: str | None = Field(default=None, alias="autoCom")
    phone: str | None = None  # required by Kuaidi100 for SF numbers


class SubscribeParam(BaseModel):
    """The subscribe request's `param` JSON."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    company: str  # Kuaidi100 company code, lowercase
    number: str = Field(max_length=32)
    key: str  # the account's authorisation key
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None
    parameters: SubscribeParameters


class SubscribeReply(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    result: bool
    return_code: str = Field(alias="returnCode")
    message: str

    @property
    def code(self) -> SubscribeReturnCode | None:
        try:
            return SubscribeReturnCode(self.return_code)
        except ValueError:
            return None


def subscribe_form(param: SubscribeParam) -> dict[str, str]:
    """The form to POST to SUBSCRIBE_URL."""
    return {"schema": SUBSCRIBE_SCHEMA, "param": to_json(param)}


def parse_subscribe(body: bytes | str) -> SubscribeParam:
    """Read a subscribe form body (the stand-in's side)."""
    raw_param = require(parse_form(body), "param")
    try:
        return SubscribeParam.model_validate(json.loads(raw_param))
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            raise CarrierFormatError(FormatErrorCode.INVALID_DOCUMENT, _first_error(exc)) from exc
        raise CarrierFormatError(FormatErrorCode.BAD_JSON, f"param: {exc}") from exc


def subscribe_reply(code: SubscribeReturnCode, message: str | None = None) -> dict[str, Any]:
    return {
        "result": code is SubscribeReturnCode.OK,
        "returnCode": code.value,
        "message": message or SUBSCRIBE_MESSAGES[code],
    }


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
