"""Waybill numbers and labels for a dispatch order's parcels.

Through WeChat's e-waybill service when the shop has an account with the carrier (precreate ->
create -> print/get), otherwise through a carrier aggregator (Kuaidi100-style). Neither mints
numbers idempotently (precreate returns a new id on every call), so each parcel has our own key
(`<issue key>:<parcel no>`) and every step is recorded before the next one: a retry resumes from the
recorded step and never asks for a second number. Numbers of a cancelled dispatch order are cancelled.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from aiokafka import AIOKafkaProducer
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict

from services.logistics.handlers import WeChatApi
from shared.api.labels import LabelData, LabelLine, LabelSender
from shared.api.logistics import WaybillIssueRequest
from shared.api.supplier import IssuedWaybill, WaybillResponse
from shared.carriers.codes import by_delivery_id
from shared.events.base import utc_now
from shared.events.dispatch import ShippingAddress
from shared.events.logistics import ParcelRef, WaybillCancelled, WaybillIssued, WaybillSource
from shared.kafka.producer import publish
from shared.kafka.topics import LOGISTICS
from shared.versioned import VersionedProjection
from shared.wechat.client import WeChatApiError

EWAYBILL = "/channels/ec/logistics/ewaybill/biz"
WAYBILLS_ISSUED = Counter(
    "lvyue_logistics_waybills_total", "Waybill numbers, by source and result.", ["source", "result"]
)


class WaybillStep(StrEnum):
    PRECREATED = "precreated"  # WeChat gave an ewaybill_order_id; no number yet
    ISSUED = "issued"
    CANCELLED = "cancelled"


class EwaybillAccount(BaseModel):
    """A shop's WeChat e-waybill account with one carrier (set with `lvyue ewaybill-account set`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    shop_id: str
    carrier_code: str
    acct_id: str
    template_id: str = ""
    site_code: str = ""


class WaybillRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    step: WaybillStep
    shop_id: str
    order_id: str
    dispatch_id: str
    parcel_no: int
    carrier_code: str
    source: WaybillSource
    waybill_no: str | None = None
    ewaybill_order_id: str | None = None
    print_info: str | None = None
    label: LabelData | None = None


class CarrierRefused(Exception):
    """No number allocated (WeChat 10025005, aggregator refusal): the supplier's answer is a 409."""


class Aggregator(Protocol):
    async def issue(
        self,
        *,
        carrier_code: str,
        sender: ShippingAddress,
        receiver: ShippingAddress,
        goods: str,
        count: int,
        weight_grams: int | None,
        reference: str,
    ) -> str: ...

    async def cancel(self, *, carrier_code: str, waybill_no: str) -> None: ...


EWAYBILL_ACCOUNTS = "logistics_ewaybill_accounts"


def account_key(shop_id: str, carrier_code: str) -> str:
    return f"{shop_id}:{carrier_code}"


class WaybillIssuer:
    def __init__(
        self,
        *,
        records: VersionedProjection[WaybillRecord],
        accounts: VersionedProjection[EwaybillAccount],
        wechat: WeChatApi,
        aggregator: Aggregator,
        producer: AIOKafkaProducer,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.records = records
        self.accounts = accounts
        self._wechat = wechat
        self._aggregator = aggregator
        self._producer = producer
        self._clock = clock
        self._by_waybill: dict[tuple[str, str], str] = {}

    def index(self) -> None:
        for record in self.records:
            if record.waybill_no:
                self._by_waybill[(record.carrier_code, record.waybill_no)] = record.key

    def label_of(self, carrier_code: str, waybill_no: str) -> LabelData | None:
        key = self._by_waybill.get((carrier_code, waybill_no))
        record = self.records.get(key) if key else None
        return record.label if record else None

    async def issue(self, request: WaybillIssueRequest) -> WaybillResponse:
        carrier = by_delivery_id(request.carrier_code)  # UnknownCarrierError for an unknown carrier
        account = self.accounts.get(account_key(request.shop_id, request.carrier_code))
        issued: list[IssuedWaybill] = []
        for parcel_no in range(1, len(request.parcels) + 1):
            key = f"{request.issue_key}:{parcel_no}"
            async with self.records.lock(key):
                record = self.records.get(key)
                if record is None or record.step != WaybillStep.ISSUED:
                    record = await self._issue_one(request, parcel_no, key, record, account, carrier.name)
            assert record.waybill_no is not None
            issued.append(
                IssuedWaybill(
                    parcel_no=parcel_no,
                    carrier_code=record.carrier_code,
                    waybill_no=record.waybill_no,
                    label_url=(
                        f"/supplier/v1/dispatch-orders/{request.dispatch_id}/labels/"
                        f"{record.carrier_code}/{record.waybill_no}.pdf"
                    ),
                    print_info=record.print_info,
                )
            )
        return WaybillResponse(dispatch_id=request.dispatch_id, waybills=issued)

    async def _issue_one(
        self,
        request: WaybillIssueRequest,
        parcel_no: int,
        key: str,
        record: WaybillRecord | None,
        account: EwaybillAccount | None,
        carrier_name: str,
    ) -> WaybillRecord:
        parcel = request.parcels[parcel_no - 1]
        base = WaybillRecord(
            key=key,
            step=WaybillStep.PRECREATED,
            shop_id=request.shop_id,
            order_id=request.order_id,
            dispatch_id=request.dispatch_id,
            parcel_no=parcel_no,
            carrier_code=request.carrier_code,
            source=WaybillSource.WECHAT_EWAYBILL if account else WaybillSource.AGGREGATOR,
        )
        record = record or base
        goods = "、".join(f"{line.title or line.product_id}×{line.quantity}" for line in parcel.lines)
        if account is not None:
            record = await self._through_wechat(request, parcel_no, record, account)
        else:
            try:
                number = await self._aggregator.issue(
                    carrier_code=request.carrier_code,
                    sender=request.sender,
                    receiver=request.receiver,
                    goods=goods[:100],
                    count=sum(line.quantity for line in parcel.lines),
                    weight_grams=parcel.weight_grams,
                    reference=key,
                )
            except CarrierRefused:
                WAYBILLS_ISSUED.labels(record.source, "refused").inc()
                raise
            record = record.model_copy(update={"step": WaybillStep.ISSUED, "waybill_no": number})
        assert record.waybill_no is not None
        label = LabelData(
            carrier_code=request.carrier_code,
            carrier_name=carrier_name,
            waybill_no=record.waybill_no,
            parcel_no=parcel_no,
            parcel_count=len(request.parcels),
            sender=LabelSender(
                name=request.sender.name,
                phone=request.sender.phone,
                address=_one_line(request.sender),
            ),
            receiver=request.receiver,
            order_id=request.order_id,
            dispatch_id=request.dispatch_id,
            shop_name=request.shop_id,
            lines=[
                LabelLine(
                    title=line.title or line.product_id, sku_attrs=line.sku_attrs, quantity=line.quantity
                )
                for line in parcel.lines
            ],
            printed_at=self._clock(),
            e_waybill=account is not None,
        )
        record = await self.records.save(
            key, record.model_copy(update={"label": label}), cause=f"issued:{key}"
        )
        self._by_waybill[(record.carrier_code, label.waybill_no)] = key
        WAYBILLS_ISSUED.labels(record.source, "issued").inc()
        ref = ParcelRef(
            dispatch_id=request.dispatch_id,
            parcel_no=parcel_no,
            carrier_code=record.carrier_code,
            waybill_no=record.waybill_no,
        )
        await publish(
            self._producer,
            LOGISTICS,
            WaybillIssued(
                order_id=request.order_id,
                shop_id=request.shop_id,
                parcel=ref,
                source=record.source,
                ewaybill_order_id=record.ewaybill_order_id,
            ),
        )
        return record

    async def _through_wechat(
        self, request: WaybillIssueRequest, parcel_no: int, record: WaybillRecord, account: EwaybillAccount
    ) -> WaybillRecord:
        parcel = request.parcels[parcel_no - 1]
        body = {
            "delivery_id": request.carrier_code,
            "site_code": account.site_code,
            "ewaybill_acct_id": account.acct_id,
            "sender": _ewaybill_address(request.sender),
            "receiver": _ewaybill_address(request.receiver),
            "ec_order_list": [
                {
                    "ec_order_id": int(request.order_id),
                    "goods_list": [
                        {
                            "good_name": line.title or line.product_id,
                            "good_count": line.quantity,
                            "product_id": line.product_id,
                            "sku_id": line.sku_id,
                        }
                        for line in parcel.lines
                    ],
                }
            ],
            "shop_id": request.shop_id,
        }
        if record.ewaybill_order_id is None:
            # Recorded before the next call: a retry continues with this id instead of a new one.
            answer = await self._wechat.call(request.shop_id, f"{EWAYBILL}/order/precreate", body)
            record = record.model_copy(update={"ewaybill_order_id": str(answer["ewaybill_order_id"])})
            record = await self.records.save(record.key, record, cause=f"precreated:{record.key}")
        try:
            created = await self._wechat.call(
                request.shop_id,
                f"{EWAYBILL}/order/create",
                {**body, "ewaybill_order_id": record.ewaybill_order_id, "template_id": account.template_id},
            )
        except WeChatApiError as exc:
            if exc.errcode == 10025005:  # no number allocated: delivery_error_msg says why
                WAYBILLS_ISSUED.labels(WaybillSource.WECHAT_EWAYBILL, "refused").inc()
                raise CarrierRefused(exc.errmsg) from exc
            raise
        printed = await self._wechat.call(
            request.shop_id,
            f"{EWAYBILL}/print/get",
            {"ewaybill_order_id": record.ewaybill_order_id, "template_id": account.template_id},
        )
        return record.model_copy(
            update={
                "step": WaybillStep.ISSUED,
                "waybill_no": str(created["waybill_id"]),
                "print_info": printed.get("print_info"),
            }
        )

    async def cancel_for_dispatch(
        self, dispatch_id: str, *, shipped: set[tuple[str, str]], reason: str
    ) -> int:
        """Cancel the numbers of a dispatch order that ended without using them."""
        cancelled = 0
        for record in [
            r for r in self.records if r.dispatch_id == dispatch_id and r.step != WaybillStep.CANCELLED
        ]:
            if record.waybill_no is not None and (record.carrier_code, record.waybill_no) in shipped:
                continue
            async with self.records.lock(record.key):
                if record.source == WaybillSource.WECHAT_EWAYBILL and record.ewaybill_order_id:
                    await self._wechat.call(
                        record.shop_id,
                        f"{EWAYBILL}/order/cancel",
                        {
                            "ewaybill_order_id": record.ewaybill_order_id,
                            "delivery_id": record.carrier_code,
                            "waybill_id": record.waybill_no or "",
                        },
                    )
                elif record.waybill_no:
                    await self._aggregator.cancel(
                        carrier_code=record.carrier_code, waybill_no=record.waybill_no
                    )
                await self.records.save(
                    record.key,
                    record.model_copy(update={"step": WaybillStep.CANCELLED}),
                    cause=f"cancel:{record.key}",
                )
            cancelled += 1
            WAYBILLS_ISSUED.labels(record.source, "cancelled").inc()
            if record.waybill_no:
                ref = ParcelRef(
                    dispatch_id=dispatch_id,
                    parcel_no=record.parcel_no,
                    carrier_code=record.carrier_code,
                    waybill_no=record.waybill_no,
                )
                await publish(
                    self._producer,
                    LOGISTICS,
                    WaybillCancelled(
                        order_id=record.order_id, shop_id=record.shop_id, parcel=ref, reason=reason
                    ),
                )
        return cancelled


def _one_line(address: ShippingAddress) -> str:
    return f"{address.province}{address.city}{address.county}{address.detail}"


def _ewaybill_address(address: ShippingAddress) -> dict[str, str]:
    return {
        "name": address.name,
        "mobile": address.phone,
        "province": address.province,
        "city": address.city,
        "county": address.county,
        "street": "",
        "address": address.detail,
    }
