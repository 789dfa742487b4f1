"""Kuaidi100's electronic-waybill API (电子面单下单, POST https://api.kuaidi100.com/label/order): an
aggregator that asks the carrier for a waybill number on the merchant's carrier account.

Form fields `method` (order | cancel), `key`, `t` (ms timestamp), `param` (JSON) and
`sign = uppercase hex MD5(param + t + key + secret)`. Ordering is NOT idempotent: every call mints a
new waybill number from the account's stock, so a caller that retries must first look for the number
it may already have (orderId is echoed, not de-duplicated). The reply is
`{"result", "returnCode", "message", "data"{kuaidinum, taskId, ...}}`.

Field names follow Kuaidi100's docs and SDKs; the error returnCodes other than 200 are this code's
best reading (the public docs do not list them for this endpoint).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.carriers.errors import CarrierFormatError, FormatErrorCode
from shared.carriers.forms import parse_form, require

ParamT = TypeVar("ParamT", bound=BaseModel)

LABEL_URL = "https://api.kuaidi100.com/label/order"


class LabelMethod(StrEnum):
    ORDER = "order"
    CANCEL = "cancel"


class LabelReturnCode(StrEnum):
    OK = "200"
    BAD_REQUEST = "400"  # missing or invalid parameters, unsupported company, unknown waybill
    SERVER_ERROR = "500"
    SIGN_FAILED = "503"  # 验证签名失败 (the code Kuaidi100's query API uses for a bad sign)
    BAD_KEY = "601"  # key unknown or expired


def label_sign(param: str, t: str, key: str, secret: str) -> str:
    """sign = uppercase hex MD5(param + t + key + secret), UTF-8, no separators."""
    return hashlib.md5((param + t + key + secret).encode("utf-8")).hexdigest().upper()


def verify_label_sign(param: str, t: str, key: str, secret: str, signature: str | None) -> bool:
    if not signature:
        return False
    return hmac.compare_digest(label_sign(param, t, key, secret), signature.strip().upper())


class ManInfo(BaseModel):
    """recMan / sendMan: either printAddr or province+city+district+addr."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str = Field(min_length=1)
    mobile: str | None = None
    tel: str | None = None
    print_addr: str | None = Field(default=None, alias="printAddr")
    company: str | None = None
    province: str | None = None
    city: str | None = None
    district: str | None = None
    addr: str | None = None


class LabelOrderParam(BaseModel):
    """method=order `param`."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    kuaidicom: str  # Kuaidi100 company code
    partner_id: str = Field(alias="partnerId")  # the carrier account (电子面单客户账户/月结账号)
    partner_key: str | None = Field(default=None, alias="partnerKey")
    partner_secret: str | None = Field(default=None, alias="partnerSecret")
    partner_name: str | None = Field(default=None, alias="partnerName")
    net: str | None = None  # the carrier outlet, or the platform that authorised the account
    code: str | None = None
    rec_man: ManInfo = Field(alias="recMan")
    send_man: ManInfo = Field(alias="sendMan")
    cargo: str | None = None
    count: int = Field(default=1, ge=1)
    weight: float | None = None
    volume: str | None = None
    remark: str | None = None
    order_id: str | None = Field(default=None, alias="orderId")  # the caller's own id, echoed
    pay_type: str | None = Field(default=None, alias="payType")  # SHIPPER | CONSIGNEE | MONTHLY
    exp_type: str | None = Field(default=None, alias="expType")
    print_type: str = Field(default="NON", alias="printType")  # NON: only take a number
    temp_id: str | None = Field(default=None, alias="tempId")
    need_child: str | None = Field(default=None, alias="needChild")  # "1": one number per piece
    need_subscribe: bool = Field(default=False, alias="needSubscribe")  # also subscribe to tracking
    poll_callback_url: str | None = Field(default=None, alias="pollCallBackUrl")
    salt: str | None = None  # for the tracking callbacks' sign
    resultv2: str | None = None


class LabelCancelParam(BaseModel):
    """method=cancel `param`."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    kuaidicom: str
    kuaidinum: str
    partner_id: str | None = Field(default=None, alias="partnerId")
    order_id: str | None = Field(default=None, alias="orderId")  # kdComOrderNum, when one was returned
    reason: str | None = None


class LabelOrderData(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    task_id: str = Field(alias="taskId")
    kuaidinum: str  # the waybill number
    child_num: str | None = Field(default=None, alias="childNum")  # comma-separated
    return_num: str | None = Field(default=None, alias="returnNum")
    label: str | None = None  # image/html short link when printType asked for one
    bulkpen: str | None = None  # 大头笔 (sorting code)
    org_name: str | None = Field(default=None, alias="orgName")
    dest_name: str | None = Field(default=None, alias="destName")
    kd_com_order_num: str | None = Field(default=None, alias="kdComOrderNum")


class LabelReply(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    result: bool
    return_code: str = Field(alias="returnCode")
    message: str
    data: LabelOrderData | None = None


class LabelRequest(BaseModel):
    """The form fields, `param` kept as the exact text that was signed."""

    method: str
    key: str
    t: str
    sign: str
    param: str


def label_form(method: LabelMethod, param: BaseModel, *, key: str, secret: str, t: str) -> dict[str, str]:
    """The caller's side: the signed form for `param`."""
    raw = json.dumps(
        param.model_dump(by_alias=True, exclude_none=True), ensure_ascii=False, separators=(",", ":")
    )
    return {"method": method.value, "key": key, "t": t, "param": raw, "sign": label_sign(raw, t, key, secret)}


def parse_label_request(fields: dict[str, Any]) -> LabelRequest:
    """The form (or a JSON object with the same string fields) as a LabelRequest."""
    values = {name: fields.get(name) for name in ("method", "key", "t", "sign", "param")}
    missing = [name for name, value in values.items() if not isinstance(value, str | int) or value == ""]
    if missing:
        raise CarrierFormatError(FormatErrorCode.MISSING_FIELD, f"missing {', '.join(missing)}")
    return LabelRequest.model_validate({name: str(value) for name, value in values.items()})


def parse_label_form(body: bytes | str) -> LabelRequest:
    fields = parse_form(body)
    require(fields, "param")
    return parse_label_request(dict(fields))


def parse_label_param(raw: str, model: type[ParamT]) -> ParamT:
    """The `param` JSON as `model` (LabelOrderParam or LabelCancelParam)."""
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise CarrierFormatError(FormatErrorCode.BAD_JSON, f"param: {exc}") from exc
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise CarrierFormatError(FormatErrorCode.INVALID_DOCUMENT, _first_error(exc)) from exc


def label_reply(
    code: LabelReturnCode, message: str, data: LabelOrderData | dict[str, Any] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "result": code is LabelReturnCode.OK,
        "returnCode": code.value,
        "message": message,
    }
    if isinstance(data, LabelOrderData):
        body["data"] = data.model_dump(by_alias=True, exclude_none=True)
    elif data is not None:
        body["data"] = data
    return body


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
