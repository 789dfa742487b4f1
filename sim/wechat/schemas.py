"""Request bodies: WeChat's (as WeChat reads them: strict JSON types, unknown fields ignored) and the
control API's (`/sim/...`, for tests and the sale simulator)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.events.base import OrderId
from shared.wechat.api import WeChatId
from shared.wechat.push import PushFormat
from sim.wechat.orders import AfterSaleType
from sim.wechat.state import DEFAULT_ADDRESS, AttemptOutcome, PushStatus

# ---- WeChat's API ---------------------------------------------------------------------------------


class WeChatRequest(BaseModel):
    # WeChat rejects wrong JSON types (47001) rather than coercing them; ids may be numbers or strings.
    model_config = ConfigDict(strict=True, extra="ignore")


class StableTokenRequest(WeChatRequest):
    grant_type: str = ""
    appid: str = ""
    secret: str = ""
    force_refresh: bool = False


class OrderGetRequest(WeChatRequest):
    order_id: OrderId


class TimeRangeIn(WeChatRequest):
    start_time: int
    end_time: int


class OrderListRequest(WeChatRequest):
    create_time_range: TimeRangeIn | None = None
    update_time_range: TimeRangeIn | None = None
    status: int | None = None
    page_size: int | None = None
    next_key: str = ""


class ShipProductIn(WeChatRequest):
    product_id: WeChatId
    sku_id: WeChatId
    product_cnt: int


class DeliveryIn(WeChatRequest):
    delivery_id: str = ""
    waybill_id: str = ""
    deliver_type: int = 1
    product_infos: list[ShipProductIn] = Field(default_factory=list)


class DeliverySendRequest(WeChatRequest):
    order_id: OrderId
    delivery_list: list[DeliveryIn] = Field(default_factory=list)


class DeliveryCompanyListRequest(WeChatRequest):
    ewaybill_only: bool = False


class EwaybillAddressIn(WeChatRequest):
    name: str = ""
    mobile: str = ""
    province: str = ""
    city: str = ""
    county: str = ""
    street: str = ""
    address: str = ""


class EwaybillGoodsIn(WeChatRequest):
    good_name: str = ""
    good_count: int = 1
    product_id: WeChatId | None = None
    sku_id: WeChatId | None = None


class EcOrderIn(WeChatRequest):
    ec_order_id: OrderId | None = None
    goods_list: list[EwaybillGoodsIn] = Field(default_factory=list)
    ewaybill_order_code: str | None = None  # drop-ship mode: the order as a ciphertext ...
    ewaybill_order_appid: str | None = None  # ... and the shop it belongs to


class EwaybillPrecreateRequest(WeChatRequest):
    delivery_id: str = ""
    site_code: str = ""
    ewaybill_acct_id: str = ""
    sender: EwaybillAddressIn = Field(default_factory=EwaybillAddressIn)
    receiver: EwaybillAddressIn = Field(default_factory=EwaybillAddressIn)
    ec_order_list: list[EcOrderIn] = Field(default_factory=list)
    remark: str = ""
    shop_id: str = ""


class EwaybillCreateRequest(EwaybillPrecreateRequest):
    ewaybill_order_id: WeChatId
    template_id: str = ""


class EwaybillCancelRequest(WeChatRequest):
    ewaybill_order_id: WeChatId
    delivery_id: str = ""
    waybill_id: str = ""


class EwaybillGetRequest(WeChatRequest):
    ewaybill_order_id: WeChatId


class EwaybillPrintRequest(WeChatRequest):
    ewaybill_order_id: WeChatId
    template_id: str = ""
    sub_waybill_id: str | None = None


class AfterSaleRequest(WeChatRequest):
    after_sale_order_id: WeChatId


class AcceptApplyRequest(AfterSaleRequest):
    address_id: WeChatId | None = None


class RejectApplyRequest(AfterSaleRequest):
    reject_reason_type: int | None = None
    reject_reason: str = ""


class AcceptExchangeReshipRequest(AfterSaleRequest):
    waybill_id: str = ""
    delivery_id: str = ""


class RejectExchangeReshipRequest(AfterSaleRequest):
    reject_reason_type: int | None = None
    reject_reason: str = ""


class DropshipProductIn(WeChatRequest):
    spu_id: WeChatId
    sku_id: WeChatId
    product_cnt: int


class DropshipAssignRequest(WeChatRequest):
    order_id: OrderId
    supplier_appid: str = ""
    dropship_product_list: list[DropshipProductIn] = Field(default_factory=list)


class DropshipCancelRequest(WeChatRequest):
    order_id: OrderId
    ds_order_id: WeChatId
    dropship_product_list: list[DropshipProductIn] = Field(default_factory=list)


class DropshipGetRequest(WeChatRequest):
    ds_order_id: WeChatId


class DropshipPageInfoIn(WeChatRequest):
    offset: int = 0
    limit: int | None = None


class DropshipListRequest(WeChatRequest):
    order_id: OrderId | None = None
    supplier_appid: str | None = None
    status: int | None = None
    create_time_range: TimeRangeIn | None = None
    update_time_range: TimeRangeIn | None = None
    page_info: DropshipPageInfoIn | None = None


# ---- the control API (/sim/...) --------------------------------------------------------------------


class ShopIn(BaseModel):
    appid: str = Field(min_length=1)
    secret: str = Field(min_length=1)
    token: str = Field(min_length=1, description="message-push Token")
    encoding_aes_key: str = Field(min_length=43, max_length=43)
    callback_url: str | None = Field(default=None, description="where pushes go; None: no pushes sent")
    push_format: PushFormat = PushFormat.JSON
    encrypted: bool = True
    username: str = Field(default="", description="the shop's gh_ id; derived from the appid if empty")


class ShopOut(BaseModel):
    appid: str
    username: str
    callback_url: str | None
    push_format: PushFormat
    encrypted: bool


class AddressIn(BaseModel):
    user_name: str = DEFAULT_ADDRESS["user_name"]
    postal_code: str = DEFAULT_ADDRESS["postal_code"]
    province_name: str = DEFAULT_ADDRESS["province_name"]
    city_name: str = DEFAULT_ADDRESS["city_name"]
    county_name: str = DEFAULT_ADDRESS["county_name"]
    detail_info: str = DEFAULT_ADDRESS["detail_info"]
    tel_number: str = DEFAULT_ADDRESS["tel_number"]
    virtual_order_tel_number: str = ""


class SkuAttrIn(BaseModel):
    attr_key: str
    attr_value: str


class ProductIn(BaseModel):
    product_id: WeChatId | None = None
    sku_id: WeChatId | None = None
    sku_cnt: int = Field(default=1, ge=1)
    sale_price: int = Field(default=9900, ge=0, description="fen, per unit")
    real_price: int | None = Field(default=None, ge=0, description="fen, the line's total paid")
    title: str = "测试商品"
    thumb_img: str = ""
    sku_code: str = ""
    out_product_id: str = ""
    out_sku_id: str = ""
    sku_attrs: list[SkuAttrIn] = Field(default_factory=list)


class OrderIn(BaseModel):
    appid: str
    order_id: OrderId | None = Field(default=None, description="chosen by the stand-in (> 2^53) if absent")
    openid: str | None = None
    products: list[ProductIn] = Field(default_factory=lambda: [ProductIn()], min_length=1)
    address: AddressIn = Field(default_factory=AddressIn)
    freight: int = Field(default=0, ge=0)
    customer_notes: str = ""
    merchant_notes: str = ""
    paid: bool = Field(default=False, description="also pay it at once (pushes new, then pay)")


class PayIn(BaseModel):
    pay_time: int | None = None


class CancelIn(BaseModel):
    cancel_type: Literal[1, 2, 3] = Field(default=1, description="1 buyer, 2 timeout, 3 all items after-sold")


class CompleteIn(BaseModel):
    confirm_type: int = 1


class AfterSaleIn(BaseModel):
    type: AfterSaleType = AfterSaleType.REFUND
    product_id: WeChatId | None = None
    sku_id: WeChatId | None = None
    count: int = Field(default=1, ge=1)
    reason: str = ""
    refund_amount: int | None = Field(default=None, ge=0)


class BuyerReturnIn(BaseModel):
    delivery_id: str = "SF"
    waybill_id: str = "SF1234567890123"


class EwaybillPathIn(BaseModel):
    status: int = Field(description="0 awaiting pickup, 1 picked up, 2 in transit, ... 5 signed, 99 unknown")
    desc: str = ""


class EwaybillBalanceIn(BaseModel):
    appid: str
    delivery_id: str
    available: int | None = Field(ge=0, description="waybill numbers left; None: unlimited")


class CallOut(BaseModel):
    seq: int = Field(description="the call's number, from 1 (ask `after` it for the newer ones)")
    at: float
    method: str
    path: str
    appid: str | None
    request: Any
    errcode: int
    errmsg: str


class PushAttemptOut(BaseModel):
    number: int
    at: float
    outcome: AttemptOutcome
    status_code: int | None
    answer: str
    error: str
    duration_ms: float


class PushOut(BaseModel):
    push_id: int
    appid: str
    event: str
    subject_id: str
    duplicate_of: int | None
    status: PushStatus
    queued_at: float
    document: dict[str, Any]
    attempts: list[PushAttemptOut]


# ---- faults ----------------------------------------------------------------------------------------


class ExpireTokensFault(BaseModel):
    fault: Literal["expire_tokens"]
    appid: str


class BusyFault(BaseModel):
    """The next `count` calls (to `path`, or to any WeChat API path) answer -1 (system busy)."""

    fault: Literal["busy"]
    count: int = Field(default=1, ge=1)
    path: str | None = None


class RateLimitFault(BaseModel):
    """The next `count` calls answer 45011 (minute quota reached)."""

    fault: Literal["rate_limit"]
    count: int = Field(default=1, ge=1)
    path: str | None = None


class ErrcodeFault(BaseModel):
    """The next `count` calls answer `errcode`, e.g. 100003 on /channels/ec/order/delivery/send."""

    fault: Literal["errcode"]
    errcode: int
    count: int = Field(default=1, ge=1)
    path: str | None = None


class DelayFault(BaseModel):
    """Answers wait `ms` first: the next `count` calls, or every call until cleared."""

    fault: Literal["delay"]
    ms: int = Field(ge=0)
    count: int | None = Field(default=None, ge=1)
    path: str | None = None


class DuplicatePushesFault(BaseModel):
    """The next `count` pushes are each sent `times` extra times (same document, same CreateTime)."""

    fault: Literal["duplicate_pushes"]
    times: int = Field(default=1, ge=1)
    count: int = Field(default=1, ge=1)


class HoldPushesFault(BaseModel):
    """Hold the next `count` pushes, then send them newest first; without count, until release."""

    fault: Literal["hold_pushes"]
    count: int | None = Field(default=None, ge=1)


class ReleasePushesFault(BaseModel):
    fault: Literal["release_pushes"]


class ClearFaults(BaseModel):
    """Remove every scripted fault (held pushes are released)."""

    fault: Literal["clear"]


FaultIn = Annotated[
    ExpireTokensFault
    | BusyFault
    | RateLimitFault
    | ErrcodeFault
    | DelayFault
    | DuplicatePushesFault
    | HoldPushesFault
    | ReleasePushesFault
    | ClearFaults,
    Field(discriminator="fault"),
]
