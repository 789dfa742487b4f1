"""Telling WeChat about shipments (物流回传): the delivery/send request for parcels, and what each
answer means. Pure."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.events.dispatch import DispatchLine, Parcel
from shared.events.logistics import DeliveryOutcome
from shared.wechat.api import Order

COURIER = 1  # deliver_type: 1 courier, 3 no logistics


class DeliveryErrCode:
    OK = 0
    BUSY = -1
    MINUTE_QUOTA = 45011
    UPDATED_TOO_OFTEN = 100003
    STATUS_FORBIDS_SHIPPING = 101100
    OPEN_AFTERSALE = 108009
    SHIPPING_FAILED = 109000
    ALREADY_FULLY_SHIPPED = 109001


class NextStep(StrEnum):
    DONE = "done"
    RETRY_LATER = "retry_later"
    HOLD_FOR_AFTERSALE = "hold_for_aftersale"
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True)
class Verdict:
    step: NextStep
    outcome: DeliveryOutcome | None  # what to record and announce (None: nothing yet, retry)


class ParcelTold(BaseModel):
    """What WeChat was told of one parcel (or that it is not told: an after-sale replacement, goods
    refunded first), kept so it is never sent again."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    outcome: DeliveryOutcome
    errcode: int = 0
    at: datetime
    product_infos: list[dict[str, Any]] = Field(default_factory=list, description="as told")


def told_with_delivery_send(*, aftersale_case_id: str | None) -> bool:
    """Whether a shipment is the order's own, for delivery/send. The parcels of an after-sale
    replacement (an exchange's replacement, a re-ship) are not: the order shipped already (WeChat
    answers 109001 or 109000) and its case is open (108009, held for nothing). WeChat learns an
    exchange's replacement waybill through acceptexchangereship, which aftersale calls once the
    replacement ships; a re-ship is our own case and WeChat is not told of it at all."""
    return aftersale_case_id is None


def delivery_request(
    order_id: str, parcels: Sequence[Parcel], lines: Sequence[DispatchLine]
) -> dict[str, object]:
    """One `delivery_list` element per parcel, each with the products inside it."""
    by_line = {line.line_no: line for line in lines}
    delivery_list = []
    for parcel in parcels:
        product_infos = [
            {
                "product_id": by_line[item.line_no].product_id,
                "sku_id": by_line[item.line_no].sku_id,
                "product_cnt": item.quantity,
            }
            for item in parcel.lines
        ]
        delivery_list.append(
            {
                "delivery_id": parcel.carrier_code,
                "waybill_id": parcel.waybill_no,
                "deliver_type": COURIER,
                "product_infos": product_infos,
            }
        )
    return {"order_id": int(order_id), "delivery_list": delivery_list}


def judge(errcode: int) -> Verdict:
    """What an answer of delivery/send means for the parcels sent."""
    match errcode:
        case DeliveryErrCode.OK:
            return Verdict(NextStep.DONE, DeliveryOutcome.TOLD)
        case DeliveryErrCode.ALREADY_FULLY_SHIPPED:
            # Our earlier call got through and its answer was lost: the effect happened once.
            return Verdict(NextStep.DONE, DeliveryOutcome.ALREADY_SHIPPED)
        case DeliveryErrCode.UPDATED_TOO_OFTEN | DeliveryErrCode.BUSY | DeliveryErrCode.MINUTE_QUOTA:
            return Verdict(NextStep.RETRY_LATER, None)
        case DeliveryErrCode.OPEN_AFTERSALE:
            return Verdict(NextStep.HOLD_FOR_AFTERSALE, DeliveryOutcome.HELD_FOR_AFTERSALE)
        case _:
            return Verdict(NextStep.DEAD_LETTER, DeliveryOutcome.REFUSED)


# Refusals that may only mean WeChat counts the goods as settled otherwise: a refund took units we
# shipped before WeChat was told (a refund covers units WeChat has not seen shipped first), or our
# earlier call got through and its answer was lost. WeChat's order says which.
# 101100 too: a refund of every unit ends the order (status 200), and a parcel not told by then
# has nothing left to tell.
RECHECKED = frozenset(
    {
        DeliveryErrCode.STATUS_FORBIDS_SHIPPING,
        DeliveryErrCode.SHIPPING_FAILED,
        DeliveryErrCode.ALREADY_FULLY_SHIPPED,
    }
)
# After-sale statuses of a case that refunded (a refund-only case among them is read for its units).
REFUNDED_CASE_STATUSES = frozenset(
    {"MERCHANT_REFUND_SUCCESS", "PLATFORM_REFUNDING", "MERCHANT_OVERDUE_REFUND"}
)


def refunded_units(cases: Sequence[dict[str, Any]]) -> Counter[tuple[str, str]]:
    """Units per (product_id, sku_id) of the refund-only cases among `cases` (getaftersaleorder's
    after_sale_order documents) that refunded."""
    units: Counter[tuple[str, str]] = Counter()
    for case in cases:
        if case.get("type") == "REFUND" and str(case.get("status")) in REFUNDED_CASE_STATUSES:
            info = case.get("product_info") or {}
            units[(str(info.get("product_id")), str(info.get("sku_id")))] += int(info.get("count", 0))
    return units


class ParcelFate(StrEnum):
    TOLD = "told"  # the waybill is on WeChat's order already
    REFUNDED = "refunded"  # none of its goods is still expected
    SEND = "send"  # send it with the goods still expected (all of them, or fewer)


@dataclass(frozen=True)
class Recheck:
    fate: ParcelFate
    product_infos: list[dict[str, Any]]


def recheck(
    order: Order, delivery_list: Sequence[dict[str, Any]], refunded: Mapping[tuple[str, str], int]
) -> list[Recheck]:
    """After a 109000/109001, what each parcel of the refused call is to WeChat's order: told already,
    refunded, or still to send with at most the units WeChat still expects of each SKU (ordered less
    told less `refunded`, the units of the order's refund-only cases: a return is of goods told), taken
    by the parcels in turn."""
    delivery = order.order_detail.delivery_info.delivery_product_info
    told_waybills = {d.waybill_id for d in delivery}
    told: Counter[tuple[str, str]] = Counter()
    for parcel in delivery:
        for line in parcel.product_infos:
            told[(str(line["product_id"]), str(line["sku_id"]))] += int(line["product_cnt"])
    products = {(p.product_id, p.sku_id): p for p in order.order_detail.product_infos}
    left = {key: max(0, p.sku_cnt - told[key] - refunded.get(key, 0)) for key, p in products.items()}
    rechecked = []
    for info in delivery_list:
        lines = list(info["product_infos"])
        keys = [(str(line["product_id"]), str(line["sku_id"])) for line in lines]
        if info["waybill_id"] in told_waybills:
            rechecked.append(Recheck(ParcelFate.TOLD, lines))
            continue
        expected, cut = [], []
        for key, line in zip(keys, lines, strict=True):
            count = min(int(line["product_cnt"]), left.get(key, 0))
            if count > 0:
                left[key] -= count
                expected.append({**line, "product_cnt": count})
            if count < int(line["product_cnt"]):
                cut.append(key)
        if not cut:
            rechecked.append(Recheck(ParcelFate.SEND, lines))
        elif all(key in products and refunded.get(key, 0) > 0 for key in cut):
            rechecked.append(Recheck(ParcelFate.SEND if expected else ParcelFate.REFUNDED, expected))
        else:  # goods WeChat does not know, or fewer without a refund: a real mismatch, as refused
            rechecked.append(Recheck(ParcelFate.SEND, lines))
    return rechecked
