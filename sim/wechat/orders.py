"""Orders and after-sale cases as WeChat Shop keeps them, and the rules that change them (pure).

An order is stored as a dict shaped exactly like `shared.wechat.api.Order` (WeChat's field names,
`order_id` a decimal string of a 64-bit number above 2^53), so `order/get` answers it as is. Every
change raises `update_time` strictly, and returns the push event WeChat would send about it.
"""

from __future__ import annotations

import base64
import binascii
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from shared.wechat.api import DropshipErrCode, ErrCode, OrderStatus
from sim.wechat.errors import SimErrCode, WeChatApiError

SHIP_BY_S = 48 * 3600  # delivery_deadline ≈ pay_time + 48 h
REFUND_MIN_INTERVAL_S = 60  # after-sale: at most one refund per order per minute (10021059)
UNSHIPPED = frozenset({OrderStatus.AWAITING_SHIPMENT, OrderStatus.PARTIALLY_SHIPPED})
FULLY_SHIPPED = frozenset({OrderStatus.AWAITING_RECEIPT, OrderStatus.COMPLETED})
PAID_NOT_DONE = frozenset(
    {OrderStatus.AWAITING_SHIPMENT, OrderStatus.PARTIALLY_SHIPPED, OrderStatus.AWAITING_RECEIPT}
)


class DeliverType:
    COURIER = 1  # 自寄快递
    NO_LOGISTICS = 3  # 无需物流


class DropshipStatus:
    """A drop-ship order's `status` (the docs' enumeration was not available to us: unverified values;
    clients must not depend on them)."""

    AWAITING_SHIPMENT = 1
    SHIPPED = 2
    CANCELLED = 3


def dropship_units(ds: Mapping[str, Any]) -> dict[tuple[str, str], int]:
    """Units a drop-ship order holds now, per (product_id, sku_id)."""
    held: dict[tuple[str, str], int] = {}
    for product in ds["dropship_order_detail"]["product_infos"]:
        key = (str(product["product_id"]), str(product["sku_id"]))
        held[key] = held.get(key, 0) + int(product["sku_cnt"])
    return held


def _dropship_products(record: OrderRecord, lines: Iterable[ShipLine]) -> list[dict[str, Any]]:
    products = []
    for line in lines:
        product = record.product(line.product_id, line.sku_id) or {}
        products.append(
            {
                "product_id": line.product_id,
                "sku_id": line.sku_id,
                "sku_cnt": line.product_cnt,
                "title": product.get("title", ""),
                "thumb_img": product.get("thumb_img", ""),
                "sku_code": product.get("sku_code", ""),
                "out_product_id": product.get("out_product_id", ""),
                "out_sku_id": product.get("out_sku_id", ""),
                "delivery_deadline": product.get("delivery_deadline", 0),
            }
        )
    return products


# /channels/ec/order/deliverycompanylist/new/get
DELIVERY_COMPANIES: tuple[tuple[str, str], ...] = (
    ("ZTO", "中通快递"),
    ("YTO", "圆通速递"),
    ("YUNDA", "韵达快递"),
    ("JTSD", "极兔速递"),
    ("STO", "申通快递"),
    ("SF", "顺丰速运"),
    ("JD", "京东快递"),
    ("EMS", "中国邮政"),
    ("CNSD", "丹鸟"),
    ("DBKD", "德邦快递"),
    ("OTHER", "其他"),
)
DELIVERY_COMPANY_IDS = frozenset(code for code, _ in DELIVERY_COMPANIES)


class AfterSaleType(StrEnum):
    REFUND = "REFUND"
    RETURN = "RETURN"
    EXCHANGE = "EXCHANGE"


class AfterSaleStatus(StrEnum):
    USER_CANCELD = "USER_CANCELD"  # WeChat's spelling
    MERCHANT_PROCESSING = "MERCHANT_PROCESSING"
    MERCHANT_REJECT_REFUND = "MERCHANT_REJECT_REFUND"
    MERCHANT_REJECT_RETURN = "MERCHANT_REJECT_RETURN"
    USER_WAIT_RETURN = "USER_WAIT_RETURN"
    RETURN_CLOSED = "RETURN_CLOSED"
    MERCHANT_WAIT_RECEIPT = "MERCHANT_WAIT_RECEIPT"
    MERCHANT_OVERDUE_REFUND = "MERCHANT_OVERDUE_REFUND"
    MERCHANT_REFUND_SUCCESS = "MERCHANT_REFUND_SUCCESS"
    MERCHANT_RETURN_SUCCESS = "MERCHANT_RETURN_SUCCESS"
    PLATFORM_REFUNDING = "PLATFORM_REFUNDING"
    MERCHANT_REJECT_EXCHANGE = "MERCHANT_REJECT_EXCHANGE"
    MERCHANT_EXCHANGE_SUCCESS = "MERCHANT_EXCHANGE_SUCCESS"


REFUNDED_STATUSES = frozenset(
    {AfterSaleStatus.MERCHANT_REFUND_SUCCESS, AfterSaleStatus.MERCHANT_RETURN_SUCCESS}
)
CLOSED_AFTERSALE = frozenset(
    {
        AfterSaleStatus.USER_CANCELD,
        AfterSaleStatus.MERCHANT_REJECT_REFUND,
        AfterSaleStatus.MERCHANT_REJECT_RETURN,
        AfterSaleStatus.RETURN_CLOSED,
        AfterSaleStatus.MERCHANT_REFUND_SUCCESS,
        AfterSaleStatus.MERCHANT_RETURN_SUCCESS,
        AfterSaleStatus.MERCHANT_REJECT_EXCHANGE,
        AfterSaleStatus.MERCHANT_EXCHANGE_SUCCESS,
    }
)


class OrderErrorCode(StrEnum):
    """Why a control operation (the sale simulator's side) was refused."""

    UNKNOWN_ORDER = "unknown_order"
    ORDER_EXISTS = "order_exists"
    UNKNOWN_PRODUCT = "unknown_product"
    UNKNOWN_AFTERSALE = "unknown_aftersale"
    UNKNOWN_EWAYBILL = "unknown_ewaybill"
    INVALID_TRANSITION = "invalid_transition"


class OrderError(Exception):
    def __init__(self, code: OrderErrorCode, detail: str) -> None:
        super().__init__(f"{code.value}: {detail}")
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class OrderEvent:
    """A push WeChat sends about a change: `Event` and the body beside the envelope fields."""

    event: str
    body: dict[str, Any]
    subject_id: str  # the order (or after-sale case) it is about: pushes about one subject stay in order


def order_info_event(event: str, order_id: str, **fields: Any) -> OrderEvent:
    # order_id goes out as a JSON number, as in WeChat's examples: receivers must parse it exactly.
    return OrderEvent(event, {"order_info": {"order_id": int(order_id), **fields}}, order_id)


@dataclass(frozen=True)
class ShipLine:
    product_id: str
    sku_id: str
    product_cnt: int


@dataclass(frozen=True)
class Parcel:
    """One `delivery_list` element: one package with its waybill."""

    delivery_id: str
    waybill_id: str
    deliver_type: int
    lines: tuple[ShipLine, ...]


@dataclass
class OrderRecord:
    appid: str
    doc: dict[str, Any]  # shaped like shared.wechat.api.Order
    # Units refunded by after-sale cases before they were shipped, per (product_id, sku_id): they
    # are no longer to ship. Units refunded after shipping (a return, a refund in transit) are not.
    refunded_unshipped: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def order_id(self) -> str:
        return str(self.doc["order_id"])

    @property
    def status(self) -> int:
        return int(self.doc["status"])

    @property
    def openid(self) -> str:
        return str(self.doc.get("openid", ""))

    @property
    def products(self) -> list[dict[str, Any]]:
        products: list[dict[str, Any]] = self.doc["order_detail"]["product_infos"]
        return products

    def product(self, product_id: str, sku_id: str) -> dict[str, Any] | None:
        for product in self.products:
            if product["product_id"] == product_id and product["sku_id"] == sku_id:
                return product
        return None

    def touch(self, now: int) -> int:
        """Raise update_time, strictly (two changes in one second still order correctly)."""
        self.doc["update_time"] = max(now, int(self.doc["update_time"]) + 1)
        return int(self.doc["update_time"])

    def shipped_counts(self) -> dict[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = {}
        for parcel in self.doc["order_detail"]["delivery_info"]["delivery_product_info"]:
            for line in parcel["product_infos"]:
                key = (str(line["product_id"]), str(line["sku_id"]))
                counts[key] = counts.get(key, 0) + int(line["product_cnt"])
        return counts

    def remaining_counts(self) -> dict[tuple[str, str], int]:
        """Units still to ship per (product_id, sku_id): ordered − shipped − refunded before shipping."""
        shipped = self.shipped_counts()
        return {
            (p["product_id"], p["sku_id"]): int(p["sku_cnt"])
            - self.refunded_unshipped.get((p["product_id"], p["sku_id"]), 0)
            - shipped.get((p["product_id"], p["sku_id"]), 0)
            for p in self.products
        }


@dataclass
class AfterSaleRecord:
    appid: str
    doc: dict[str, Any]  # WeChat's after_sale_order shape
    refund_times: list[float] = field(default_factory=list)
    shipped_units: int = 0  # of the case's units, how many WeChat had been told were shipped at applying

    @property
    def after_sale_order_id(self) -> str:
        return str(self.doc["after_sale_order_id"])

    @property
    def order_id(self) -> str:
        return str(self.doc["order_id"])

    @property
    def status(self) -> AfterSaleStatus:
        return AfterSaleStatus(self.doc["status"])

    @property
    def is_open(self) -> bool:
        return self.status not in CLOSED_AFTERSALE


@dataclass(frozen=True)
class NewProduct:
    product_id: str | None = None
    sku_id: str | None = None
    sku_cnt: int = 1
    sale_price: int = 9900
    real_price: int | None = None
    title: str = "测试商品"
    thumb_img: str = ""
    sku_code: str = ""
    out_product_id: str = ""
    out_sku_id: str = ""
    sku_attrs: tuple[tuple[str, str], ...] = ()


def _encode_key(sort_value: int, order_id: str) -> str:
    return base64.urlsafe_b64encode(f"{sort_value}:{order_id}".encode()).decode()


def _decode_key(next_key: str) -> tuple[int, int]:
    try:
        sort_value, order_id = base64.urlsafe_b64decode(next_key.encode()).decode().split(":")
        return int(sort_value), int(order_id)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise WeChatApiError(ErrCode.INVALID_ARGS, "invalid next_key") from exc


class OrderBook:
    """Every order and after-sale case of every shop."""

    def __init__(self, *, seed: int | None = None) -> None:
        self._rng = random.Random(seed)
        self.orders: dict[str, OrderRecord] = {}
        self.aftersales: dict[str, AfterSaleRecord] = {}
        self.dropships: dict[str, dict[str, Any]] = {}
        self._last_refund: dict[str, int] = {}  # order_id -> time of its last refund

    # ---- ids -------------------------------------------------------------------------------------

    def _new_id(self, taken: Mapping[str, object]) -> str:
        while True:  # 19 digits, like 3705115058471208928: always above 2^53
            candidate = str(self._rng.randrange(2**61, 2**62))
            if candidate not in taken:
                return candidate

    def _numeric_id(self, digits: int) -> str:
        return str(self._rng.randrange(10 ** (digits - 1), 10**digits))

    # ---- lookups ---------------------------------------------------------------------------------

    def get(self, order_id: str, *, appid: str | None = None) -> OrderRecord:
        """The order, or WeChatApiError(100002) if it is unknown or another shop's."""
        record = self.orders.get(order_id)
        if record is None or (appid is not None and record.appid != appid):
            raise WeChatApiError(ErrCode.ORDER_NOT_FOUND)
        return record

    def find(self, order_id: str) -> OrderRecord:
        record = self.orders.get(order_id)
        if record is None:
            raise OrderError(OrderErrorCode.UNKNOWN_ORDER, f"no order {order_id}")
        return record

    def find_aftersale(self, after_sale_order_id: str) -> AfterSaleRecord:
        record = self.aftersales.get(after_sale_order_id)
        if record is None:
            raise OrderError(OrderErrorCode.UNKNOWN_AFTERSALE, f"no after-sale case {after_sale_order_id}")
        return record

    def open_aftersales(self, order_id: str) -> list[AfterSaleRecord]:
        return [a for a in self.aftersales.values() if a.order_id == order_id and a.is_open]

    def list_ids(
        self,
        appid: str,
        *,
        time_field: str,
        start_time: int,
        end_time: int,
        status: int | None,
        page_size: int,
        next_key: str,
        also: tuple[str, int, int] | None = None,
    ) -> tuple[list[str], str, bool]:
        """Order ids of `appid` with `time_field` in [start_time, end_time] (both ends included),
        sorted by (time, order_id). `next_key` is a cursor after the last id returned, so orders
        created while a client pages never shift a page. `also` adds a second (field, start, end)."""
        after = _decode_key(next_key) if next_key else None
        matches: list[tuple[int, int, str]] = []
        for record in self.orders.values():
            doc = record.doc
            if record.appid != appid or not start_time <= int(doc[time_field]) <= end_time:
                continue
            if also is not None and not also[1] <= int(doc[also[0]]) <= also[2]:
                continue
            if status is not None and record.status != status:
                continue
            position = (int(doc[time_field]), int(record.order_id))
            if after is not None and position <= after:
                continue
            matches.append((*position, record.order_id))
        matches.sort()
        page = matches[:page_size]
        has_more = len(matches) > page_size
        key = _encode_key(page[-1][0], page[-1][2]) if page else next_key
        return [order_id for _, _, order_id in page], key, has_more

    # ---- the sale simulator's side: orders placed, paid, changed by buyers -----------------------

    def create(
        self,
        appid: str,
        *,
        now: int,
        products: Iterable[NewProduct],
        address: Mapping[str, str],
        order_id: str | None = None,
        openid: str | None = None,
        freight: int = 0,
        customer_notes: str = "",
        merchant_notes: str = "",
    ) -> tuple[OrderRecord, OrderEvent]:
        if order_id is not None and order_id in self.orders:
            raise OrderError(OrderErrorCode.ORDER_EXISTS, f"order {order_id} exists")
        order_id = order_id or self._new_id(self.orders)
        product_infos = [self._product_info(p) for p in products]
        product_price = sum(p["sale_price"] * p["sku_cnt"] for p in product_infos)
        paid_price = sum(p["real_price"] for p in product_infos)
        doc: dict[str, Any] = {
            "order_id": order_id,
            "status": int(OrderStatus.UNPAID),
            "create_time": now,
            "update_time": now,
            "openid": openid or f"o{self._rng.getrandbits(120):x}"[:28],
            "order_detail": {
                "product_infos": product_infos,
                "pay_info": {"prepay_id": f"wx{self._numeric_id(20)}", "prepay_time": now},
                "price_info": {
                    "product_price": product_price,
                    "order_price": paid_price + freight,
                    "freight": freight,
                    "discounted_price": product_price - paid_price,
                    "is_discounted": paid_price < product_price,
                },
                "delivery_info": {
                    "address_info": dict(address),
                    "deliver_method": 0,
                    "delivery_product_info": [],
                },
                "ext_info": {"customer_notes": customer_notes, "merchant_notes": merchant_notes},
            },
            "aftersale_detail": {"aftersale_order_list": [], "on_aftersale_order_cnt": 0},
        }
        record = OrderRecord(appid, doc)
        self.orders[order_id] = record
        return record, order_info_event("channels_ec_order_new", order_id)

    def _product_info(self, product: NewProduct) -> dict[str, Any]:
        real_price = (
            product.real_price if product.real_price is not None else product.sale_price * product.sku_cnt
        )
        return {
            "product_id": product.product_id or self._numeric_id(14),
            "sku_id": product.sku_id or self._numeric_id(14),
            "sku_cnt": product.sku_cnt,
            "sale_price": product.sale_price,
            "real_price": real_price,
            "title": product.title,
            "thumb_img": product.thumb_img,
            "sku_attrs": [{"attr_key": k, "attr_value": v} for k, v in product.sku_attrs],
            "sku_code": product.sku_code,
            "out_product_id": product.out_product_id,
            "out_sku_id": product.out_sku_id,
            "on_aftersale_sku_cnt": 0,
            "finish_aftersale_sku_cnt": 0,
            "delivery_deadline": 0,
        }

    @staticmethod
    def _require(record: OrderRecord, allowed: Iterable[int], action: str) -> None:
        if record.status not in set(allowed):
            raise OrderError(
                OrderErrorCode.INVALID_TRANSITION,
                f"cannot {action} order {record.order_id} in status {record.status}",
            )

    def pay(self, order_id: str, *, now: int, pay_time: int | None = None) -> tuple[OrderRecord, OrderEvent]:
        record = self.find(order_id)
        self._require(record, {OrderStatus.UNPAID}, "pay")
        paid_at = pay_time if pay_time is not None else now
        record.doc["status"] = int(OrderStatus.AWAITING_SHIPMENT)
        record.doc["order_detail"]["pay_info"] |= {
            "pay_time": paid_at,
            "transaction_id": f"42{self._numeric_id(26)}",
            "payment_method": 1,
        }
        for product in record.products:
            product["delivery_deadline"] = paid_at + SHIP_BY_S
        record.touch(now)
        return record, order_info_event("channels_ec_order_pay", order_id, pay_time=paid_at)

    def cancel(self, order_id: str, *, now: int, cancel_type: int) -> tuple[OrderRecord, OrderEvent]:
        """cancel_type 1 buyer / 2 timeout cancel an unpaid order (→ 250); 3 "every item after-sold"
        closes a paid one (→ 200)."""
        record = self.find(order_id)
        if cancel_type == 3:
            self._require(record, PAID_NOT_DONE, "cancel (all after-sold)")
            record.doc["status"] = int(OrderStatus.CANCELLED_AFTER_AFTERSALE)
        else:
            self._require(record, {OrderStatus.UNPAID}, "cancel")
            record.doc["status"] = int(OrderStatus.CANCELLED_UNPAID)
        record.touch(now)
        return record, order_info_event("channels_ec_order_cancel", order_id, cancel_type=cancel_type)

    def change_address(
        self, order_id: str, *, now: int, address: Mapping[str, str]
    ) -> tuple[OrderRecord, OrderEvent]:
        record = self.find(order_id)
        self._require(record, {OrderStatus.UNPAID, *UNSHIPPED}, "change the address of")
        record.doc["order_detail"]["delivery_info"]["address_info"] = dict(address)
        record.touch(now)
        return record, order_info_event("channels_ec_order_ext_info_update", order_id, type=2)

    def urge(self, order_id: str, *, now: int) -> tuple[OrderRecord, OrderEvent]:
        record = self.find(order_id)
        self._require(record, UNSHIPPED, "urge shipping of")
        record.touch(now)
        return record, order_info_event("channels_ec_order_ext_info_update", order_id, type=7)

    def complete(self, order_id: str, *, now: int, confirm_type: int = 1) -> tuple[OrderRecord, OrderEvent]:
        record = self.find(order_id)
        self._require(record, {OrderStatus.AWAITING_RECEIPT}, "confirm receipt of")
        record.doc["status"] = int(OrderStatus.COMPLETED)
        record.touch(now)
        return record, order_info_event("channels_ec_order_confirm", order_id, confirm_type=confirm_type)

    def open_aftersale(
        self,
        order_id: str,
        *,
        now: int,
        kind: AfterSaleType,
        product_id: str | None = None,
        sku_id: str | None = None,
        count: int = 1,
        reason: str = "",
        refund_amount: int | None = None,
    ) -> tuple[AfterSaleRecord, OrderEvent]:
        """The buyer applies for a refund, return or exchange of `count` units of one SKU."""
        record = self.find(order_id)
        self._require(record, {*PAID_NOT_DONE, OrderStatus.COMPLETED}, "open an after-sale case on")
        product = (
            record.product(product_id, sku_id or "")
            if product_id is not None
            else (record.products[0] if record.products else None)
        )
        if product is None:
            raise OrderError(OrderErrorCode.UNKNOWN_PRODUCT, f"order {order_id} has no {product_id}/{sku_id}")
        free = (
            int(product["sku_cnt"])
            - int(product["on_aftersale_sku_cnt"])
            - int(product["finish_aftersale_sku_cnt"])
        )
        if count > free:
            raise OrderError(OrderErrorCode.INVALID_TRANSITION, f"only {free} units can still be after-sold")
        unit = int(product["real_price"]) // max(1, int(product["sku_cnt"]))
        after_sale_order_id = self._new_id(self.aftersales)
        doc: dict[str, Any] = {
            "after_sale_order_id": after_sale_order_id,
            "status": AfterSaleStatus.MERCHANT_PROCESSING.value,
            "openid": record.openid,
            "order_id": order_id,
            "product_info": {
                "product_id": product["product_id"],
                "sku_id": product["sku_id"],
                "count": count,
            },
            "details": {"desc": reason, "receive_product": False, "prove_imgs": [], "tel_number": ""},
            "refund_info": {"amount": refund_amount if refund_amount is not None else unit * count},
            "return_info": {},
            "merchant_upload_info": {},
            "create_time": now,
            "update_time": now,
            "reason": reason or "OTHERS",
            "reason_text": reason,
            "type": kind.value,
            "deadline": now + SHIP_BY_S,
        }
        key = (str(product["product_id"]), str(product["sku_id"]))
        cases_of_sku = [
            a
            for a in self.aftersales.values()
            if a.order_id == order_id
            and (str(a.doc["product_info"]["product_id"]), str(a.doc["product_info"]["sku_id"])) == key
        ]
        if kind is AfterSaleType.REFUND:
            # A refund covers units not shipped yet first: they are simply not sent. (Shipping waits
            # while a case is open, 108009, so this split holds until the case ends.)
            unshipped_claimed = sum(
                int(a.doc["product_info"]["count"]) - a.shipped_units for a in cases_of_sku if a.is_open
            )
            unshipped_free = max(0, record.remaining_counts().get(key, 0) - unshipped_claimed)
            shipped_units = count - min(count, unshipped_free)
        else:  # a return or exchange is of goods the buyer has
            shipped_claimed = sum(
                a.shipped_units for a in cases_of_sku if a.is_open or a.status in REFUNDED_STATUSES
            )
            shipped_units = min(count, max(0, record.shipped_counts().get(key, 0) - shipped_claimed))
        aftersale = AfterSaleRecord(record.appid, doc, shipped_units=shipped_units)
        self.aftersales[after_sale_order_id] = aftersale
        product["on_aftersale_sku_cnt"] = int(product["on_aftersale_sku_cnt"]) + count
        detail = record.doc["aftersale_detail"]
        detail["aftersale_order_list"].append(
            {"aftersale_order_id": after_sale_order_id, "status": doc["status"]}
        )
        detail["on_aftersale_order_cnt"] = len(self.open_aftersales(order_id))
        record.touch(now)
        return aftersale, self._aftersale_event(aftersale)

    def set_aftersale_status(
        self, aftersale: AfterSaleRecord, status: AfterSaleStatus, *, now: int
    ) -> OrderEvent:
        """Move a case to `status`, keeping the order's counters and after-sale list in step."""
        was_open = aftersale.is_open
        aftersale.doc["status"] = status.value
        aftersale.doc["update_time"] = max(now, int(aftersale.doc["update_time"]) + 1)
        record = self.orders[aftersale.order_id]
        info = aftersale.doc["product_info"]
        product = record.product(str(info["product_id"]), str(info["sku_id"]))
        if was_open and not aftersale.is_open and product is not None:
            product["on_aftersale_sku_cnt"] = max(
                0, int(product["on_aftersale_sku_cnt"]) - int(info["count"])
            )
            if status in REFUNDED_STATUSES:
                product["finish_aftersale_sku_cnt"] = int(product["finish_aftersale_sku_cnt"]) + int(
                    info["count"]
                )
                key = (str(info["product_id"]), str(info["sku_id"]))
                unshipped = int(info["count"]) - aftersale.shipped_units
                record.refunded_unshipped[key] = record.refunded_unshipped.get(key, 0) + unshipped
        detail = record.doc["aftersale_detail"]
        for ref in detail["aftersale_order_list"]:
            if ref["aftersale_order_id"] == aftersale.after_sale_order_id:
                ref["status"] = status.value
        detail["on_aftersale_order_cnt"] = len(self.open_aftersales(aftersale.order_id))
        record.touch(now)
        return self._aftersale_event(aftersale)

    @staticmethod
    def _aftersale_event(aftersale: AfterSaleRecord) -> OrderEvent:
        body = {
            "finder_shop_aftersale_status_update": {
                "status": aftersale.status.value,
                "after_sale_order_id": aftersale.after_sale_order_id,
                "order_id": aftersale.order_id,
            }
        }
        return OrderEvent("channels_ec_aftersale_update", body, aftersale.order_id)

    # ---- the merchant's side: after-sale cases (/channels/ec/aftersale/...) ----------------------

    def aftersale_for(self, appid: str, after_sale_order_id: str) -> AfterSaleRecord:
        """The case, or WeChatApiError(40097) if it is unknown or another shop's (code unverified)."""
        aftersale = self.aftersales.get(after_sale_order_id)
        if aftersale is None or aftersale.appid != appid:
            raise WeChatApiError(ErrCode.INVALID_ARGS, "after_sale_order_id not found")
        return aftersale

    @staticmethod
    def _refuse_in(aftersale: AfterSaleRecord, action: str) -> WeChatApiError:
        return WeChatApiError(ErrCode.INVALID_ARGS, f"cannot {action} a case in {aftersale.status.value}")

    def accept_aftersale(self, aftersale: AfterSaleRecord, *, now: int) -> list[OrderEvent]:
        """acceptapply: a refund-only case is refunded; a return or exchange is first approved (the buyer
        sends the goods back), and a received return is then refunded."""
        kind = AfterSaleType(aftersale.doc["type"])
        if aftersale.status is AfterSaleStatus.MERCHANT_PROCESSING:
            if kind is AfterSaleType.REFUND:
                return self._refund(aftersale, AfterSaleStatus.MERCHANT_REFUND_SUCCESS, now=now)
            return [self.set_aftersale_status(aftersale, AfterSaleStatus.USER_WAIT_RETURN, now=now)]
        if aftersale.status is AfterSaleStatus.MERCHANT_WAIT_RECEIPT and kind is AfterSaleType.RETURN:
            return self._refund(aftersale, AfterSaleStatus.MERCHANT_RETURN_SUCCESS, now=now)
        raise self._refuse_in(aftersale, "accept")

    def _refund(self, aftersale: AfterSaleRecord, status: AfterSaleStatus, *, now: int) -> list[OrderEvent]:
        last = self._last_refund.get(aftersale.order_id)
        if last is not None and now - last < REFUND_MIN_INTERVAL_S:
            raise WeChatApiError(SimErrCode.REFUND_TOO_OFTEN)
        self._last_refund[aftersale.order_id] = now
        events = [self.set_aftersale_status(aftersale, status, now=now)]
        record = self.orders[aftersale.order_id]
        all_after_sold = all(int(p["finish_aftersale_sku_cnt"]) >= int(p["sku_cnt"]) for p in record.products)
        if all_after_sold and record.status in PAID_NOT_DONE:
            record.doc["status"] = int(OrderStatus.CANCELLED_AFTER_AFTERSALE)
            record.touch(now)
            events.append(order_info_event("channels_ec_order_cancel", record.order_id, cancel_type=3))
        elif record.status == OrderStatus.PARTIALLY_SHIPPED and all(
            n <= 0 for n in record.remaining_counts().values()
        ):
            # The refund took the last units still to ship: the rest is on its way to the buyer.
            record.doc["status"] = int(OrderStatus.AWAITING_RECEIPT)
            record.doc["order_detail"]["delivery_info"]["ship_done_time"] = now
            record.touch(now)
        return events

    def reject_aftersale(
        self, aftersale: AfterSaleRecord, *, now: int, reject_reason_type: int | None, reject_reason: str
    ) -> OrderEvent:
        kind = AfterSaleType(aftersale.doc["type"])
        if aftersale.status not in (
            AfterSaleStatus.MERCHANT_PROCESSING,
            AfterSaleStatus.MERCHANT_WAIT_RECEIPT,
        ):
            raise self._refuse_in(aftersale, "reject")
        target = {
            AfterSaleType.REFUND: AfterSaleStatus.MERCHANT_REJECT_REFUND,
            AfterSaleType.RETURN: AfterSaleStatus.MERCHANT_REJECT_RETURN,
            AfterSaleType.EXCHANGE: AfterSaleStatus.MERCHANT_REJECT_EXCHANGE,
        }[kind]
        aftersale.doc["merchant_upload_info"] = {
            "reject_reason": reject_reason,
            "reject_reason_type": reject_reason_type,
        }
        return self.set_aftersale_status(aftersale, target, now=now)

    def buyer_returns(
        self, after_sale_order_id: str, *, now: int, delivery_id: str, waybill_id: str
    ) -> tuple[AfterSaleRecord, OrderEvent]:
        """The buyer ships the goods back (return or exchange), the merchant now awaits them."""
        aftersale = self.find_aftersale(after_sale_order_id)
        if aftersale.status is not AfterSaleStatus.USER_WAIT_RETURN:
            raise OrderError(OrderErrorCode.INVALID_TRANSITION, f"case is {aftersale.status.value}")
        aftersale.doc["return_info"] = {"delivery_id": delivery_id, "waybill_id": waybill_id}
        return aftersale, self.set_aftersale_status(aftersale, AfterSaleStatus.MERCHANT_WAIT_RECEIPT, now=now)

    def _exchange_awaiting_reship(self, aftersale: AfterSaleRecord, action: str) -> None:
        is_exchange = aftersale.doc["type"] == AfterSaleType.EXCHANGE.value
        if not is_exchange or aftersale.status is not AfterSaleStatus.MERCHANT_WAIT_RECEIPT:
            raise self._refuse_in(aftersale, action)

    def accept_exchange_reship(
        self, aftersale: AfterSaleRecord, *, now: int, delivery_id: str, waybill_id: str
    ) -> OrderEvent:
        self._exchange_awaiting_reship(aftersale, "reship the exchange of")
        if delivery_id not in DELIVERY_COMPANY_IDS or not waybill_id:
            raise WeChatApiError(ErrCode.INVALID_ARGS, "delivery_id or waybill_id")
        aftersale.doc["exchange_delivery_info"] = {"delivery_id": delivery_id, "waybill_id": waybill_id}
        return self.set_aftersale_status(aftersale, AfterSaleStatus.MERCHANT_EXCHANGE_SUCCESS, now=now)

    def reject_exchange_reship(
        self, aftersale: AfterSaleRecord, *, now: int, reject_reason: str
    ) -> OrderEvent:
        self._exchange_awaiting_reship(aftersale, "reject the exchange of")
        aftersale.doc["merchant_upload_info"] = {"reject_reason": reject_reason}
        return self.set_aftersale_status(aftersale, AfterSaleStatus.MERCHANT_REJECT_EXCHANGE, now=now)

    # ---- the merchant's side: drop-ship (代发) ----------------------------------------------------
    # A drop-ship order is stored shaped like dropship/get's `dropship_order`, plus the shop's appid
    # and the list as assigned. Its product_infos hold the units still assigned (cancel lowers them).

    def _live_dropship_units(self, order_id: str) -> dict[tuple[str, str], int]:
        held: dict[tuple[str, str], int] = {}
        for ds in self.dropships.values():
            if ds["order_id"] == order_id:
                for key, count in dropship_units(ds).items():
                    held[key] = held.get(key, 0) + count
        return held

    def assign_dropship(
        self, record: OrderRecord, *, supplier_appid: str, lines: list[ShipLine], now: int
    ) -> tuple[dict[str, Any], OrderEvent]:
        """dropship/assign: hand unshipped units to a linked supplier. 610003 when everything is
        shipped, 610001 when the order is not awaiting shipment; units beyond what is neither shipped
        nor assigned already: 40097 (WeChat's code for that case is not in the docs we read)."""
        if record.status in FULLY_SHIPPED:
            raise WeChatApiError(DropshipErrCode.ORDER_ALL_SHIPPED, f"order status is {record.status}")
        if record.status not in UNSHIPPED:
            raise WeChatApiError(
                DropshipErrCode.ORDER_NOT_AWAITING_SHIPMENT, f"order status is {record.status}"
            )
        if not supplier_appid or not lines:
            raise WeChatApiError(
                ErrCode.INVALID_ARGS, "supplier_appid and dropship_product_list are required"
            )
        free = record.remaining_counts()
        for key, count in self._live_dropship_units(record.order_id).items():
            free[key] = free.get(key, 0) - count
        for line in lines:
            key = (line.product_id, line.sku_id)
            if line.product_cnt < 1 or key not in free or line.product_cnt > free[key]:
                raise WeChatApiError(ErrCode.INVALID_ARGS, f"{line.product_id}/{line.sku_id}: cannot assign")
            free[key] -= line.product_cnt
        ds_order_id = self._new_id(self.dropships)
        assigned = [
            {"spu_id": ln.product_id, "sku_id": ln.sku_id, "product_cnt": ln.product_cnt} for ln in lines
        ]
        doc: dict[str, Any] = {
            "ds_order_id": ds_order_id,
            "order_id": record.order_id,
            "appid": record.appid,
            "supplier_appid": supplier_appid,
            "supplier_name": f"供货商 {supplier_appid}",
            "status": DropshipStatus.AWAITING_SHIPMENT,
            "create_time": now,
            "update_time": now,
            "dropship_product_list": assigned,
            "dropship_order_detail": {"product_infos": _dropship_products(record, lines)},
        }
        self.dropships[ds_order_id] = doc
        record.touch(now)
        return doc, order_info_event("channels_ec_order_ext_info_update", record.order_id, type=14)

    def dropship_of(self, appid: str, ds_order_id: str) -> dict[str, Any]:
        """dropship/get's drop-ship order; 40097 when the shop has none with this id."""
        ds = self.dropships.get(ds_order_id)
        if ds is None or ds["appid"] != appid:
            raise WeChatApiError(ErrCode.INVALID_ARGS, f"no drop-ship order {ds_order_id}")
        return ds

    def cancel_dropship(
        self, record: OrderRecord, *, ds_order_id: str, lines: list[ShipLine], now: int
    ) -> tuple[dict[str, Any], OrderEvent]:
        """dropship/cancel: take units (all of them when `lines` is empty) back from the supplier.
        610009 when the drop-ship order is unknown or another order's; 610004 when the units were
        shipped meanwhile; 40097 for units the drop-ship order does not hold (or holds no more)."""
        ds = self.dropships.get(ds_order_id)
        if ds is None or ds["appid"] != record.appid or ds["order_id"] != record.order_id:
            raise WeChatApiError(DropshipErrCode.DS_ORDER_CONFLICT, f"{ds_order_id} is not of this order")
        held = dropship_units(ds)
        if not held:
            raise WeChatApiError(ErrCode.INVALID_ARGS, f"drop-ship order {ds_order_id} is cancelled")
        wanted: dict[tuple[str, str], int] = {}
        for line in lines or [ShipLine(p, s, n) for (p, s), n in held.items()]:
            key = (line.product_id, line.sku_id)
            if line.product_cnt < 1:
                raise WeChatApiError(ErrCode.INVALID_ARGS, "product_cnt must be positive")
            wanted[key] = wanted.get(key, 0) + line.product_cnt
        unshipped = record.remaining_counts()
        for key, count in wanted.items():
            if count > held.get(key, 0):
                raise WeChatApiError(ErrCode.INVALID_ARGS, f"{key[0]}/{key[1]}: {count} > {held.get(key, 0)}")
            if count > max(0, unshipped.get(key, 0)):
                raise WeChatApiError(DropshipErrCode.PRODUCT_SHIPPED, f"{key[0]}/{key[1]} shipped")
        products = []
        for product in ds["dropship_order_detail"]["product_infos"]:
            key = (str(product["product_id"]), str(product["sku_id"]))
            take = min(int(product["sku_cnt"]), wanted.get(key, 0))
            wanted[key] = wanted.get(key, 0) - take
            if int(product["sku_cnt"]) - take > 0:
                products.append({**product, "sku_cnt": int(product["sku_cnt"]) - take})
        ds["dropship_order_detail"]["product_infos"] = products
        if not products:
            ds["status"] = DropshipStatus.CANCELLED
        ds["update_time"] = max(now, int(ds["update_time"]) + 1)
        record.touch(now)
        return ds, order_info_event("channels_ec_order_ext_info_update", record.order_id, type=15)

    def list_dropships(
        self,
        appid: str,
        *,
        order_id: str | None,
        supplier_appid: str | None,
        status: int | None,
        create_range: tuple[int, int] | None,
        update_range: tuple[int, int] | None,
        offset: int,
        limit: int,
    ) -> tuple[list[str], bool, int]:
        """dropship/list: the shop's drop-ship ids matching every filter given, oldest first."""
        matches = []
        for ds in self.dropships.values():
            if ds["appid"] != appid:
                continue
            if order_id is not None and ds["order_id"] != order_id:
                continue
            if supplier_appid is not None and ds["supplier_appid"] != supplier_appid:
                continue
            if status is not None and ds["status"] != status:
                continue
            if create_range is not None and not create_range[0] <= ds["create_time"] <= create_range[1]:
                continue
            if update_range is not None and not update_range[0] <= ds["update_time"] <= update_range[1]:
                continue
            matches.append((int(ds["create_time"]), int(ds["ds_order_id"]), str(ds["ds_order_id"])))
        matches.sort()
        page = matches[offset : offset + limit]
        return [ds_id for _, _, ds_id in page], offset + limit < len(matches), len(matches)

    # ---- the merchant's side: /channels/ec/order/delivery/send ----------------------------------

    def ship(self, record: OrderRecord, parcels: list[Parcel], *, now: int) -> OrderEvent:
        """Ship `parcels`, or raise WeChatApiError (101100, 108009, 109000, 109001, 40097), unchanged."""
        if record.status in FULLY_SHIPPED:
            raise WeChatApiError(ErrCode.ALREADY_SHIPPED)
        if record.status not in UNSHIPPED:
            raise WeChatApiError(ErrCode.STATUS_FORBIDS_SHIPPING, f"order status is {record.status}")
        if self.open_aftersales(record.order_id):
            raise WeChatApiError(ErrCode.OPEN_AFTERSALE)
        if not parcels:
            raise WeChatApiError(ErrCode.INVALID_ARGS, "delivery_list is empty")
        remaining = record.remaining_counts()
        if len(parcels) == 1 and not parcels[0].lines:  # no product_infos: the whole rest of the order
            only = parcels[0]
            lines = tuple(ShipLine(p, s, n) for (p, s), n in remaining.items() if n > 0)
            if not lines:
                raise WeChatApiError(ErrCode.ALREADY_SHIPPED)
            parcels = [Parcel(only.delivery_id, only.waybill_id, only.deliver_type, lines)]
        wanted: dict[tuple[str, str], int] = {}
        for parcel in parcels:
            if parcel.deliver_type not in (DeliverType.COURIER, DeliverType.NO_LOGISTICS):
                raise WeChatApiError(ErrCode.INVALID_ARGS, f"deliver_type {parcel.deliver_type}")
            if parcel.deliver_type == DeliverType.COURIER and (
                parcel.delivery_id not in DELIVERY_COMPANY_IDS or not parcel.waybill_id
            ):
                raise WeChatApiError(ErrCode.INVALID_ARGS, "delivery_id or waybill_id")
            if not parcel.lines:
                raise WeChatApiError(ErrCode.INVALID_ARGS, "product_infos is empty")
            for line in parcel.lines:
                key = (line.product_id, line.sku_id)
                if line.product_cnt < 1:
                    raise WeChatApiError(ErrCode.INVALID_ARGS, "product_cnt must be positive")
                if key not in remaining:
                    raise WeChatApiError(
                        ErrCode.SHIPPING_FAILED, f"product {line.product_id}/{line.sku_id} not in order"
                    )
                wanted[key] = wanted.get(key, 0) + line.product_cnt
        for key, count in wanted.items():
            if count > remaining[key]:
                raise WeChatApiError(
                    ErrCode.SHIPPING_FAILED, f"{key[0]}/{key[1]}: {count} > {remaining[key]} left"
                )
        delivery_info = record.doc["order_detail"]["delivery_info"]
        for parcel in parcels:
            delivery_info["delivery_product_info"].append(
                {
                    "waybill_id": parcel.waybill_id,
                    "delivery_id": parcel.delivery_id,
                    "delivery_time": now,
                    "deliver_type": parcel.deliver_type,
                    "delivery_address": dict(delivery_info["address_info"]),
                    "product_infos": [
                        {"product_id": ln.product_id, "sku_id": ln.sku_id, "product_cnt": ln.product_cnt}
                        for ln in parcel.lines
                    ],
                }
            )
        finished = all(count <= 0 for count in record.remaining_counts().values())
        record.doc["status"] = int(
            OrderStatus.AWAITING_RECEIPT if finished else OrderStatus.PARTIALLY_SHIPPED
        )
        if finished:
            delivery_info["ship_done_time"] = now
        record.touch(now)
        return order_info_event("channels_ec_order_deliver", record.order_id, finish_delivery=int(finished))
