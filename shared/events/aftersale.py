"""After-sale events, published by aftersale: case decisions for the record (topic `aftersale`), and
commands to dispatch (`aftersale.instructions`): instructions it puts in the supplier's feed, and
follows of the orders with an open case.

The supplier's answers come back on `dispatch.aftersale` with the rest of a followed order's dispatch
changes (`SupplierReturnReceived`, and the usual dispatch events for cancellations and replacement
shipments)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from shared.events.base import Event
from shared.events.dispatch import ShippingAddress


class CaseType(StrEnum):
    REFUND = "REFUND"  # refund only (仅退款)
    RETURN = "RETURN"  # return and refund (退货退款)
    EXCHANGE = "EXCHANGE"  # exchange (换货)
    RESHIP = "RESHIP"  # re-ship (补发), an operator's case for a lost or damaged parcel


class CaseState(StrEnum):
    """Where our handling of a case stands (WeChat's status is kept beside it)."""

    AWAITING_OPERATOR = "awaiting_operator"  # the shop's policy wants a person to decide
    STOPPING_SHIPMENT = "stopping_shipment"  # the supplier is asked to cancel the lines
    INTERCEPTING = "intercepting"  # the parcel is asked back from the carrier
    AWAITING_RETURN = "awaiting_return"  # return approved, the buyer is to send it back
    AWAITING_RECEIPT = "awaiting_receipt"  # the buyer shipped it back; the supplier confirms receipt
    REFUNDING = "refunding"  # acceptapply to be called (queued: one refund per order per minute)
    RESHIPPING = "reshipping"  # a replacement dispatch order is with the supplier
    RESOLVED = "resolved"
    REJECTED = "rejected"  # we refused the request at WeChat
    CLOSED = "closed"  # the buyer withdrew or WeChat closed it


class Resolution(StrEnum):
    REFUNDED = "refunded"
    RETURNED_AND_REFUNDED = "returned_and_refunded"
    EXCHANGED = "exchanged"
    RESHIPPED = "reshipped"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"
    CLOSED_BY_WECHAT = "closed_by_wechat"


class AffectedLine(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    product_id: str
    sku_id: str
    count: int = Field(ge=1)


class AftersaleEvent(Event):
    shop_id: str
    case_id: str = Field(description="WeChat after_sale_order_id (ours for an operator re-ship)")


class CaseUpdated(AftersaleEvent):
    """The case moved (for the record, ops dashboards and the run report)."""

    event_type: Literal["aftersale_case_updated"] = "aftersale_case_updated"
    schema_version: int = 1
    case_type: CaseType
    state: CaseState
    wechat_status: str
    resolution: Resolution | None = None
    reason: str = ""
    version: int = Field(ge=1)


class CancelLinesRequested(AftersaleEvent):
    """Dispatch: stop these units before they ship (cancel them, or ask the supplier if accepted)."""

    event_type: Literal["aftersale_cancel_lines"] = "aftersale_cancel_lines"
    schema_version: int = 1
    lines: list[AffectedLine]


class InterceptRequested(AftersaleEvent):
    """Logistics and the supplier: bring back the parcels already on their way."""

    event_type: Literal["aftersale_intercept"] = "aftersale_intercept"
    schema_version: int = 1
    dispatch_id: str
    waybills: list[tuple[str, str]] = Field(description="(carrier_code, waybill_no)")


class ReturnExpected(AftersaleEvent):
    """The supplier: the buyer sends these units back to your return address; confirm receipt."""

    event_type: Literal["aftersale_return_expected"] = "aftersale_return_expected"
    schema_version: int = 1
    dispatch_id: str
    lines: list[AffectedLine]
    return_address: ShippingAddress
    return_waybill: tuple[str, str] | None = None  # (delivery_id, waybill_id) once the buyer shipped


class ReshipRequested(AftersaleEvent):
    """Dispatch: a replacement dispatch order for these units (exchange or re-ship)."""

    event_type: Literal["aftersale_reship"] = "aftersale_reship"
    schema_version: int = 1
    dispatch_id: str = Field(description="the dispatch order being replaced")
    lines: list[AffectedLine]
    replacement_sku_id: str | None = Field(default=None, description="an exchange's new SKU")
    deadline: datetime | None = None


class FollowRequested(AftersaleEvent):
    """Dispatch: a case of this order is open. Publish a snapshot of the order's dispatch orders on
    `dispatch.aftersale` (`DispatchFulfilmentSnapshot`, empty if dispatch has not seen the order yet),
    then copy each of their changes there, while any case that asked is open. Asked again for the
    same case, dispatch answers with a new snapshot."""

    event_type: Literal["aftersale_follow"] = "aftersale_follow"
    schema_version: int = 1


class UnfollowRequested(AftersaleEvent):
    """Dispatch: this case ended. The order stays followed while another case that asked is open."""

    event_type: Literal["aftersale_unfollow"] = "aftersale_unfollow"
    schema_version: int = 1


AnyAftersaleEvent = Annotated[
    CaseUpdated
    | CancelLinesRequested
    | InterceptRequested
    | ReturnExpected
    | ReshipRequested
    | FollowRequested
    | UnfollowRequested,
    Field(discriminator="event_type"),
]
AFTERSALE_EVENTS: TypeAdapter[AnyAftersaleEvent] = TypeAdapter(AnyAftersaleEvent)
