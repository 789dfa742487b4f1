"""WeChat Shop open-API shapes we use, with WeChat's own field names, and its error codes.

Models accept fields they do not know (`extra="allow"`): WeChat adds fields without notice, and a
new field must never make us drop an order. Amounts are in fen (0.01 CNY); times are unix seconds.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from shared.events.base import OrderId


def _digits(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


# Ids WeChat sends sometimes as numbers, sometimes as strings: kept as exact strings.
WeChatId = Annotated[str, BeforeValidator(_digits)]


class ErrCode(IntEnum):
    OK = 0
    SYSTEM_BUSY = -1
    INVALID_CREDENTIAL = 40001  # invalid or superseded access_token (or wrong secret)
    INVALID_APPID = 40013
    INVALID_ARGS = 40097
    TOKEN_MISSING = 41001
    TOKEN_EXPIRED = 42001
    DAILY_QUOTA = 45009
    MINUTE_QUOTA = 45011
    INVALID_JSON_TYPES = 47001
    NO_PERMISSION = 48001
    IP_NOT_WHITELISTED = 61004
    ORDER_NOT_FOUND = 100002
    ORDER_UPDATED_TOO_OFTEN = 100003
    STATUS_FORBIDS_SHIPPING = 101100
    OPEN_AFTERSALE = 108009
    SHIPPING_FAILED = 109000
    ALREADY_SHIPPED = 109001


TOKEN_ERRCODES = frozenset({ErrCode.INVALID_CREDENTIAL, ErrCode.TOKEN_EXPIRED, ErrCode.TOKEN_MISSING})
RETRYABLE_ERRCODES = frozenset({ErrCode.SYSTEM_BUSY, ErrCode.MINUTE_QUOTA})


class OrderStatus(IntEnum):
    UNPAID = 10
    GIFT_PENDING = 12
    GROUP_BUY_PENDING = 13
    AWAITING_SHIPMENT = 20
    PARTIALLY_SHIPPED = 21
    AWAITING_RECEIPT = 30
    COMPLETED = 100
    CANCELLED_AFTER_AFTERSALE = 200
    CANCELLED_UNPAID = 250


class WeChatModel(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ApiResponse(WeChatModel):
    errcode: int = 0
    errmsg: str = "ok"


class TokenResponse(ApiResponse):
    access_token: str = ""
    expires_in: int = 0


class SkuAttr(WeChatModel):
    attr_key: str = ""
    attr_value: str = ""


class ProductInfo(WeChatModel):
    product_id: WeChatId
    sku_id: WeChatId
    sku_cnt: int
    sale_price: int = 0
    real_price: int = 0
    title: str = ""
    thumb_img: str = ""
    sku_attrs: list[SkuAttr] = Field(default_factory=list)
    sku_code: str = ""
    out_product_id: str = ""
    out_sku_id: str = ""
    on_aftersale_sku_cnt: int = 0
    finish_aftersale_sku_cnt: int = 0
    delivery_deadline: int = 0


class PayInfo(WeChatModel):
    pay_time: int = 0
    transaction_id: str = ""
    payment_method: int = 0


class PriceInfo(WeChatModel):
    product_price: int = 0
    order_price: int = 0
    freight: int = 0


class AddressInfo(WeChatModel):
    user_name: str = ""
    postal_code: str = ""
    province_name: str = ""
    city_name: str = ""
    county_name: str = ""
    detail_info: str = ""
    tel_number: str = ""
    virtual_order_tel_number: str = ""


class DeliveryProductInfo(WeChatModel):
    waybill_id: str = ""
    delivery_id: str = ""
    delivery_time: int = 0
    deliver_type: int = 0
    product_infos: list[dict[str, Any]] = Field(default_factory=list)


class DeliveryInfo(WeChatModel):
    address_info: AddressInfo = Field(default_factory=AddressInfo)
    deliver_method: int = 0
    delivery_product_info: list[DeliveryProductInfo] = Field(default_factory=list)


class ExtInfo(WeChatModel):
    customer_notes: str = ""
    merchant_notes: str = ""


class OrderDetail(WeChatModel):
    product_infos: list[ProductInfo] = Field(default_factory=list)
    pay_info: PayInfo = Field(default_factory=PayInfo)
    price_info: PriceInfo = Field(default_factory=PriceInfo)
    delivery_info: DeliveryInfo = Field(default_factory=DeliveryInfo)
    ext_info: ExtInfo = Field(default_factory=ExtInfo)


class AftersaleRef(WeChatModel):
    aftersale_order_id: WeChatId
    status: int | str = 0


class AftersaleDetail(WeChatModel):
    aftersale_order_list: list[AftersaleRef] = Field(default_factory=list)


class Order(WeChatModel):
    order_id: OrderId
    status: int
    create_time: int = 0
    update_time: int = 0
    openid: str = ""
    order_detail: OrderDetail = Field(default_factory=OrderDetail)
    aftersale_detail: AftersaleDetail = Field(default_factory=AftersaleDetail)


class OrderGetResponse(ApiResponse):
    order: Order | None = None


class TimeRange(WeChatModel):
    start_time: int
    end_time: int


class OrderListRequest(WeChatModel):
    create_time_range: TimeRange | None = None
    update_time_range: TimeRange | None = None
    status: int | None = None
    page_size: int = Field(default=100, ge=1, le=100)
    next_key: str = ""


class OrderListResponse(ApiResponse):
    order_id_list: list[WeChatId] = Field(default_factory=list)
    next_key: str = ""
    has_more: bool = False


MAX_LIST_WINDOW_S = 7 * 24 * 3600


# ---- drop-ship (代发): the merchant assigns units of an order to a linked supplier inside WeChat ----
# https://developers.weixin.qq.com/doc/store/shop/API/supplier/order/api_dropship_assign (and _cancel,
# _get, _list). Shop-side paths; the supplier has its own (`.../dropship/supplier/...`).

DROPSHIP_ASSIGN = "/channels/ec/order/dropship/assign"
DROPSHIP_CANCEL = "/channels/ec/order/dropship/cancel"
DROPSHIP_GET = "/channels/ec/order/dropship/get"
DROPSHIP_LIST = "/channels/ec/order/dropship/list"


class DropshipErrCode(IntEnum):
    """The drop-ship errcodes the docs list (assign's list is cut short after 610003 in the copy we
    read: other 6100xx codes exist and are treated as refusals)."""

    NOT_LINKED = 610000  # 未绑定代发关系
    ORDER_NOT_AWAITING_SHIPMENT = 610001  # 订单非待发货状态
    ORDER_NOT_DROPSHIP = 610002  # 订单没有代发标记
    ORDER_ALL_SHIPPED = 610003  # 订单所有商品已发货
    PRODUCT_SHIPPED = 610004  # cancel: 该商品已发货
    DS_ORDER_CONFLICT = 610009  # cancel: 代发单订单ID冲突
    DROPSHIP_NOT_ENABLED = 9700232  # 小店尚未开通代发管理


class DropshipProduct(WeChatModel):
    """One element of `dropship_product_list`."""

    spu_id: WeChatId
    sku_id: WeChatId
    product_cnt: int = Field(ge=1)


class DropshipAssignRequest(WeChatModel):
    order_id: OrderId
    supplier_appid: str = Field(min_length=1)
    dropship_product_list: list[DropshipProduct] = Field(min_length=1)


class DropshipAssignResponse(ApiResponse):
    # The docs' answer is errcode/errmsg only; the stand-in (and, reportedly, WeChat) adds the new
    # drop-ship order's id. When it is missing, the caller looks it up (dropship/list + get).
    ds_order_id: WeChatId | None = None


class DropshipCancelRequest(WeChatModel):
    order_id: OrderId
    ds_order_id: WeChatId
    dropship_product_list: list[DropshipProduct] = Field(min_length=1)


class DropshipGetRequest(WeChatModel):
    ds_order_id: WeChatId


class DropshipOrderProduct(WeChatModel):
    product_id: WeChatId  # the spu id
    sku_id: WeChatId
    sku_cnt: int = 0
    title: str = ""
    sku_code: str = ""


class DropshipOrderDetail(WeChatModel):
    product_infos: list[DropshipOrderProduct] = Field(default_factory=list)


class DropshipOrder(WeChatModel):
    ds_order_id: WeChatId
    order_id: WeChatId = ""
    supplier_appid: str = ""
    supplier_name: str = ""
    status: int = 0  # the docs' enumeration was not available to us: never branched on
    create_time: int = 0
    update_time: int = 0
    dropship_order_detail: DropshipOrderDetail = Field(default_factory=DropshipOrderDetail)

    def counts(self) -> dict[tuple[str, str], int]:
        """Units per (spu_id, sku_id) the drop-ship order holds."""
        held: dict[tuple[str, str], int] = {}
        for product in self.dropship_order_detail.product_infos:
            key = (product.product_id, product.sku_id)
            held[key] = held.get(key, 0) + product.sku_cnt
        return held


class DropshipGetResponse(ApiResponse):
    dropship_order: DropshipOrder | None = None


class DropshipPageInfo(WeChatModel):
    offset: int = Field(default=0, ge=0)
    limit: int = Field(default=100, ge=1, le=100)


class DropshipListRequest(WeChatModel):
    """Filters: the order (`order_id` is a number in this request's docs), the supplier, a time range of
    at most 7 days."""

    order_id: int | None = None
    supplier_appid: str | None = None
    status: int | None = None
    create_time_range: TimeRange | None = None
    update_time_range: TimeRange | None = None
    page_info: DropshipPageInfo = Field(default_factory=DropshipPageInfo)


class DropshipListResponse(ApiResponse):
    # Field names as the supplier-side list answers them (the shop-side answer was not in our copy).
    ds_order_id_list: list[WeChatId] = Field(default_factory=list)
    has_more: bool = False
    total: int = 0
