"""Telling WeChat about shipments (物流回传): the delivery/send request for parcels, and what each
answer means. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from shared.events.dispatch import DispatchLine, Parcel
from shared.events.logistics import DeliveryOutcome

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
