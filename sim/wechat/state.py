"""The stand-in's whole state, in memory (plain classes, no I/O): shops, access tokens, orders and
after-sale cases, the calls received, scripted faults and the pushes to send.

Time comes from an injectable clock (a callable returning unix seconds as a float), so tests can move
it. Changes that WeChat would push about queue the push here; `sim.wechat.pusher` sends them.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from shared.wechat.push import PushFormat
from sim.wechat.ewaybill import EwaybillBook, EwaybillRecord
from sim.wechat.faults import FaultPlan, HoldFault
from sim.wechat.orders import (
    AfterSaleRecord,
    AfterSaleStatus,
    AfterSaleType,
    NewProduct,
    OrderBook,
    OrderError,
    OrderErrorCode,
    OrderEvent,
    OrderRecord,
    Parcel,
    ShipLine,
)
from sim.wechat.tokens import Clock, TokenStore

DEFAULT_ADDRESS: dict[str, str] = {
    "user_name": "张三",
    "postal_code": "510000",
    "province_name": "广东省",
    "city_name": "广州市",
    "county_name": "海珠区",
    "detail_info": "新港中路397号",
    "tel_number": "13800138000",
    "virtual_order_tel_number": "",
}


class UnknownShopError(Exception):
    def __init__(self, appid: str) -> None:
        super().__init__(f"no shop with appid {appid}")
        self.appid = appid


@dataclass
class Shop:
    """One WeChat Shop as its service provider configured it in WeChat's console."""

    appid: str
    secret: str
    token: str  # message-push Token
    encoding_aes_key: str
    callback_url: str | None = None
    push_format: PushFormat = PushFormat.JSON
    encrypted: bool = True  # safe mode (what WeChat Shop accounts use)
    username: str = ""  # the shop's gh_ id, ToUserName of its pushes

    def __post_init__(self) -> None:
        if not self.username:
            self.username = "gh_" + hashlib.sha1(self.appid.encode()).hexdigest()[:12]


# ---- the calls received -------------------------------------------------------------------------


@dataclass(frozen=True)
class CallRecord:
    at: float
    method: str
    path: str
    appid: str | None
    request: Any  # the parsed JSON body (or the query for GET), exactly as received
    errcode: int
    errmsg: str
    seq: int = 0  # numbered by the recorder from 1, never reused (not even after a clear)


class CallRecorder:
    def __init__(self, *, limit: int = 200_000) -> None:
        self._calls: deque[CallRecord] = deque(maxlen=limit)
        self._last_seq = 0

    def record(self, call: CallRecord) -> None:
        self._last_seq += 1
        # Field by field: dataclasses.replace looks the fields up on every call.
        c = call
        self._calls.append(
            CallRecord(c.at, c.method, c.path, c.appid, c.request, c.errcode, c.errmsg, self._last_seq)
        )

    def calls(self, *, path: str | None = None, appid: str | None = None, after: int = 0) -> list[CallRecord]:
        """The calls kept, oldest first; `after`: only those numbered after it (read from the newest
        back, so a watcher asking for what is new does not walk the whole log)."""
        newer: list[CallRecord] = []
        for call in reversed(self._calls):
            if call.seq <= after:
                break
            if (path is None or call.path == path) and (appid is None or call.appid == appid):
                newer.append(call)
        newer.reverse()
        return newer

    def clear(self) -> None:
        self._calls.clear()


# ---- the pushes ---------------------------------------------------------------------------------


class PushStatus(StrEnum):
    HELD = "held"  # kept back by a hold fault
    QUEUED = "queued"  # waiting for its first attempt or for a retry
    DELIVERED = "delivered"
    FAILED = "failed"  # every attempt failed
    UNDELIVERABLE = "undeliverable"  # the shop has no callback URL


class AttemptOutcome(StrEnum):
    DELIVERED = "delivered"  # HTTP 200 with "success" or an empty body
    REJECTED = "rejected"  # any other answer
    TIMEOUT = "timeout"  # no answer within push_timeout_s
    ERROR = "error"  # no connection, or the request failed


@dataclass(frozen=True)
class PushAttempt:
    number: int  # 1 is the first push; up to 10
    at: float
    outcome: AttemptOutcome
    status_code: int | None = None
    answer: str = ""
    error: str = ""
    duration_ms: float = 0.0


@dataclass
class PushRecord:
    push_id: int
    appid: str
    event: str
    subject_id: str  # the order (or case) it is about; pushes about one subject leave in queue order
    document: dict[str, Any]  # the event as the shop reads it after decryption
    queued_at: float
    duplicate_of: int | None = None
    status: PushStatus = PushStatus.QUEUED
    attempts: list[PushAttempt] = field(default_factory=list)

    @property
    def lane(self) -> tuple[str, str]:
        return (self.appid, self.subject_id)


class PushOutbox:
    """Pushes waiting to go out, and the log of every push. The pusher subscribes to be woken."""

    def __init__(self, faults: FaultPlan) -> None:
        self._faults = faults
        self._next_id = 1
        self.records: list[PushRecord] = []
        self._ready: deque[PushRecord] = deque()
        self._held: list[PushRecord] = []
        self._listeners: list[Callable[[], None]] = []

    def subscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _notify(self) -> None:
        for listener in list(self._listeners):
            listener()

    def queue(
        self, appid: str, event: str, subject_id: str, document: dict[str, Any], *, now: float
    ) -> list[PushRecord]:
        """Queue one push (and its scripted duplicates): identical documents, so identical CreateTime."""
        original = self._new_record(appid, event, subject_id, document, now, None)
        records = [original]
        for _ in range(self._faults.take_push_copies()):
            records.append(self._new_record(appid, event, subject_id, document, now, original.push_id))
        hold = self._faults.hold
        if hold is None:
            self._ready.extend(records)
            self._notify()
            return records
        for record in records:
            record.status = PushStatus.HELD
            self._held.append(record)
            if hold.remaining is not None:
                hold.remaining -= 1
        if hold.remaining is not None and hold.remaining <= 0:
            self.release_held()
        return records

    def _new_record(
        self,
        appid: str,
        event: str,
        subject_id: str,
        document: dict[str, Any],
        now: float,
        duplicate_of: int | None,
    ) -> PushRecord:
        record = PushRecord(self._next_id, appid, event, subject_id, dict(document), now, duplicate_of)
        self._next_id += 1
        self.records.append(record)
        return record

    def hold(self, count: int | None) -> None:
        """Hold the next `count` pushes (None: all until released), then release them newest first."""
        self._faults.hold = HoldFault(count)

    def release_held(self) -> int:
        """Send the held pushes in reverse order of queueing (the reordering fault); stop holding."""
        self._faults.hold = None
        held, self._held = self._held, []
        for record in reversed(held):
            record.status = PushStatus.QUEUED
            self._ready.append(record)
        if held:
            self._notify()
        return len(held)

    def take_ready(self) -> list[PushRecord]:
        ready = list(self._ready)
        self._ready.clear()
        return ready

    def find(
        self, *, event: str | None = None, subject_id: str | None = None, status: PushStatus | None = None
    ) -> list[PushRecord]:
        return [
            r
            for r in self.records
            if (event is None or r.event == event)
            and (subject_id is None or r.subject_id == subject_id)
            and (status is None or r.status == status)
        ]


# ---- everything together ------------------------------------------------------------------------


class SimState:
    def __init__(
        self,
        *,
        clock: Clock = time.time,
        token_ttl_s: int = 7200,
        old_token_overlap_s: int = 300,
        seed: int | None = None,
    ) -> None:
        self.clock = clock
        self.shops: dict[str, Shop] = {}
        self.tokens = TokenStore(clock=clock, ttl_s=token_ttl_s, overlap_s=old_token_overlap_s)
        self.orders = OrderBook(seed=seed)
        self.ewaybills = EwaybillBook(seed=seed)
        self.calls = CallRecorder()
        self.faults = FaultPlan()
        self.pushes = PushOutbox(self.faults)

    def now(self) -> int:
        return int(self.clock())

    # ---- shops ------------------------------------------------------------------------------------

    def register_shop(self, shop: Shop) -> Shop:
        """Add a shop, or replace its configuration (a new callback URL or EncodingAESKey)."""
        self.shops[shop.appid] = shop
        return shop

    def shop(self, appid: str) -> Shop:
        shop = self.shops.get(appid)
        if shop is None:
            raise UnknownShopError(appid)
        return shop

    # ---- pushes -----------------------------------------------------------------------------------

    def emit(self, appid: str, event: OrderEvent, *, openid: str) -> list[PushRecord]:
        """Queue the push WeChat sends about `event`: the common envelope plus the event's body."""
        shop = self.shop(appid)
        document: dict[str, Any] = {
            "ToUserName": shop.username,
            "FromUserName": openid,
            "CreateTime": self.now(),
            "MsgType": "event",
            "Event": event.event,
            **event.body,
        }
        return self.pushes.queue(appid, event.event, event.subject_id, document, now=self.clock())

    # ---- the sale simulator's side: each change is followed by its push ---------------------------

    def create_order(
        self,
        appid: str,
        *,
        products: Iterable[NewProduct] = (NewProduct(),),
        address: Mapping[str, str] | None = None,
        order_id: str | None = None,
        openid: str | None = None,
        freight: int = 0,
        customer_notes: str = "",
        merchant_notes: str = "",
    ) -> OrderRecord:
        self.shop(appid)
        record, event = self.orders.create(
            appid,
            now=self.now(),
            products=products,
            address=address if address is not None else DEFAULT_ADDRESS,
            order_id=order_id,
            openid=openid,
            freight=freight,
            customer_notes=customer_notes,
            merchant_notes=merchant_notes,
        )
        self.emit(appid, event, openid=record.openid)
        return record

    def _after(self, result: tuple[OrderRecord, OrderEvent]) -> OrderRecord:
        record, event = result
        self.emit(record.appid, event, openid=record.openid)
        return record

    def pay_order(self, order_id: str, *, pay_time: int | None = None) -> OrderRecord:
        return self._after(self.orders.pay(order_id, now=self.now(), pay_time=pay_time))

    def cancel_order(self, order_id: str, *, cancel_type: int = 1) -> OrderRecord:
        return self._after(self.orders.cancel(order_id, now=self.now(), cancel_type=cancel_type))

    def change_address(self, order_id: str, address: Mapping[str, str]) -> OrderRecord:
        return self._after(self.orders.change_address(order_id, now=self.now(), address=address))

    def urge_order(self, order_id: str) -> OrderRecord:
        return self._after(self.orders.urge(order_id, now=self.now()))

    def complete_order(self, order_id: str, *, confirm_type: int = 1) -> OrderRecord:
        return self._after(self.orders.complete(order_id, now=self.now(), confirm_type=confirm_type))

    def open_aftersale(
        self,
        order_id: str,
        *,
        kind: AfterSaleType = AfterSaleType.REFUND,
        product_id: str | None = None,
        sku_id: str | None = None,
        count: int = 1,
        reason: str = "",
        refund_amount: int | None = None,
    ) -> AfterSaleRecord:
        aftersale, event = self.orders.open_aftersale(
            order_id,
            now=self.now(),
            kind=kind,
            product_id=product_id,
            sku_id=sku_id,
            count=count,
            reason=reason,
            refund_amount=refund_amount,
        )
        self.emit(aftersale.appid, event, openid=str(aftersale.doc["openid"]))
        return aftersale

    def set_aftersale_status(self, after_sale_order_id: str, status: AfterSaleStatus) -> AfterSaleRecord:
        aftersale = self.orders.find_aftersale(after_sale_order_id)
        event = self.orders.set_aftersale_status(aftersale, status, now=self.now())
        self.emit(aftersale.appid, event, openid=str(aftersale.doc["openid"]))
        return aftersale

    # ---- the merchant's side ----------------------------------------------------------------------

    def ship(self, appid: str, order_id: str, parcels: list[Parcel]) -> OrderRecord:
        """delivery/send: raises WeChatApiError; on success queues channels_ec_order_deliver."""
        record = self.orders.get(order_id, appid=appid)
        event = self.orders.ship(record, parcels, now=self.now())
        for parcel in parcels:
            for ewaybill in self.ewaybills.by_waybill(appid, parcel.waybill_id) if parcel.waybill_id else []:
                self.ewaybills.mark_shipped(ewaybill)
        self.emit(appid, event, openid=record.openid)
        return record

    def _emit_about(self, aftersale: AfterSaleRecord, events: Iterable[OrderEvent]) -> AfterSaleRecord:
        for event in events:
            self.emit(aftersale.appid, event, openid=str(aftersale.doc["openid"]))
        return aftersale

    def accept_aftersale(self, appid: str, after_sale_order_id: str) -> AfterSaleRecord:
        aftersale = self.orders.aftersale_for(appid, after_sale_order_id)
        return self._emit_about(aftersale, self.orders.accept_aftersale(aftersale, now=self.now()))

    def reject_aftersale(
        self, appid: str, after_sale_order_id: str, *, reject_reason_type: int | None, reject_reason: str
    ) -> AfterSaleRecord:
        aftersale = self.orders.aftersale_for(appid, after_sale_order_id)
        event = self.orders.reject_aftersale(
            aftersale, now=self.now(), reject_reason_type=reject_reason_type, reject_reason=reject_reason
        )
        return self._emit_about(aftersale, [event])

    def accept_exchange_reship(
        self, appid: str, after_sale_order_id: str, *, delivery_id: str, waybill_id: str
    ) -> AfterSaleRecord:
        aftersale = self.orders.aftersale_for(appid, after_sale_order_id)
        event = self.orders.accept_exchange_reship(
            aftersale, now=self.now(), delivery_id=delivery_id, waybill_id=waybill_id
        )
        return self._emit_about(aftersale, [event])

    def reject_exchange_reship(
        self, appid: str, after_sale_order_id: str, *, reject_reason: str
    ) -> AfterSaleRecord:
        aftersale = self.orders.aftersale_for(appid, after_sale_order_id)
        event = self.orders.reject_exchange_reship(aftersale, now=self.now(), reject_reason=reject_reason)
        return self._emit_about(aftersale, [event])

    def buyer_returns(
        self, after_sale_order_id: str, *, delivery_id: str, waybill_id: str
    ) -> AfterSaleRecord:
        aftersale, event = self.orders.buyer_returns(
            after_sale_order_id, now=self.now(), delivery_id=delivery_id, waybill_id=waybill_id
        )
        return self._emit_about(aftersale, [event])

    def assign_dropship(
        self, appid: str, order_id: str, *, supplier_appid: str, lines: list[ShipLine]
    ) -> dict[str, Any]:
        record = self.orders.get(order_id, appid=appid)
        doc, event = self.orders.assign_dropship(
            record, supplier_appid=supplier_appid, lines=lines, now=self.now()
        )
        self.emit(appid, event, openid=record.openid)
        return doc

    def cancel_dropship(
        self, appid: str, order_id: str, *, ds_order_id: str, lines: list[ShipLine]
    ) -> dict[str, Any]:
        record = self.orders.get(order_id, appid=appid)
        doc, event = self.orders.cancel_dropship(record, ds_order_id=ds_order_id, lines=lines, now=self.now())
        self.emit(appid, event, openid=record.openid)
        return doc

    def ewaybill_path(self, ewaybill_order_id: str, *, status: int, desc: str) -> EwaybillRecord:
        """The carrier reports progress on an e-waybill (control side): ewaybill_push_path is pushed."""
        record = self.ewaybills.records.get(ewaybill_order_id)
        if record is None or not record.doc["waybill_id"]:
            raise OrderError(
                OrderErrorCode.UNKNOWN_EWAYBILL, f"no e-waybill {ewaybill_order_id} with a number"
            )
        event = self.ewaybills.add_path(record, status=status, desc=desc, now=self.now())
        openid = ""
        for ec_order in record.doc["ec_order_list"]:
            order = self.orders.orders.get(str(ec_order.get("ec_order_id", "")))
            if order is not None:
                openid = order.openid
                break
        self.emit(record.appid, event, openid=openid)
        return record
