"""Dispatch events (topics `dispatch` and `dispatch.progress`), published by dispatch.

A dispatch order is the part of one WeChat order that one supplier fulfils. Every state change of a
dispatch order, and every hold of a whole order, is one event here. `version` is the dispatch
order's own version after the change, so consumers drop duplicates and stale copies by comparing it.

Aftersale reads only the orders it follows (an open case each), on `dispatch.aftersale`: a
`DispatchFulfilmentSnapshot` of the order's dispatch orders when a case asks, then copies of their
changes.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from shared.events.base import Event


class DispatchState(StrEnum):
    OFFERED = "offered"  # in the supplier's feed, waiting for accept or reject
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    PARTIALLY_SHIPPED = "partially_shipped"
    SHIPPED = "shipped"
    CANCELLED = "cancelled"


class RejectReason(StrEnum):
    OUT_OF_STOCK = "out_of_stock"
    INVALID_SKU = "invalid_sku"
    BAD_ADDRESS = "bad_address"
    OTHER = "other"


class HoldReason(StrEnum):
    NO_ROUTE = "no_route"  # no supplier route matches the line
    STOCK_CAP_REACHED = "stock_cap_reached"  # every matching route's stock cap is used up
    ALL_SUPPLIERS_REJECTED = "all_suppliers_rejected"  # each matching supplier rejected the line
    SUPPLIER_INACTIVE = "supplier_inactive"  # the only matching suppliers are deactivated


class ChangeKind(StrEnum):
    CANCEL = "cancel"
    ADDRESS = "address"
    SKU = "sku"


class ChangeStatus(StrEnum):
    OPEN = "open"
    CONFIRMED = "confirmed"
    REFUSED = "refused"
    SUPERSEDED = "superseded"  # a newer request of the same kind replaced it, or the order was cancelled


class ChangeRefusal(StrEnum):
    ALREADY_SHIPPED = "already_shipped"
    OTHER = "other"


class DispatchLine(BaseModel):
    """One order line as the supplier sees it; `line_no` is its index in the WeChat order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    line_no: int = Field(ge=0)
    product_id: str
    sku_id: str
    sku_code: str = ""
    title: str = ""
    sku_attrs: str = Field(default="", description='as text, e.g. "颜色: 红; 尺码: XL"')
    quantity: int = Field(ge=1)
    shipped_quantity: int = Field(default=0, ge=0)

    @property
    def remaining(self) -> int:
        return self.quantity - self.shipped_quantity


class ShippingAddress(BaseModel):
    """What a supplier needs to ship: no prices, no buyer ids; the virtual number when WeChat gave one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    phone: str
    province: str
    city: str
    county: str
    detail: str
    postal_code: str = ""


class ParcelLine(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    line_no: int = Field(ge=0)
    quantity: int = Field(ge=1)


class Parcel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    parcel_no: int = Field(ge=1, description="1, 2, ... within the dispatch order")
    carrier_code: str = Field(min_length=1, max_length=32, description="WeChat delivery_id")
    waybill_no: str = Field(min_length=1, max_length=64, description="WeChat waybill_id")
    lines: list[ParcelLine] = Field(min_length=1)
    shipped_at: datetime


class ChangeRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str
    kind: ChangeKind
    status: ChangeStatus = ChangeStatus.OPEN
    requested_at: datetime
    answered_at: datetime | None = None
    new_receiver: ShippingAddress | None = None
    new_lines: list[DispatchLine] | None = None
    refusal: ChangeRefusal | None = None
    refusal_text: str = ""


class DispatchEvent(Event):
    dispatch_id: str
    shop_id: str
    supplier_id: str
    version: int = Field(ge=1, description="the dispatch order's version after this change")
    state: DispatchState


class DispatchOffered(DispatchEvent):
    """A new dispatch order is in the supplier's feed."""

    event_type: Literal["dispatch_offered"] = "dispatch_offered"
    schema_version: int = 1
    lines: list[DispatchLine]
    receiver: ShippingAddress
    ship_by: datetime | None
    paid_at: datetime
    replaces_dispatch_id: str | None = None
    aftersale_case_id: str | None = None


class DispatchAccepted(DispatchEvent):
    event_type: Literal["dispatch_accepted"] = "dispatch_accepted"
    schema_version: int = 1
    estimated_ship_at: datetime | None


class DispatchRejected(DispatchEvent):
    event_type: Literal["dispatch_rejected"] = "dispatch_rejected"
    schema_version: int = 1
    reason: RejectReason
    reason_text: str = ""


class DispatchShipped(DispatchEvent):
    """A shipment: the parcels of this call (not the earlier ones); state says partial or whole.

    `aftersale_case_id` is set when the dispatch order is an after-sale replacement (an exchange's
    replacement or a re-ship, see `DispatchOffered`): such parcels are not the order's shipment, so
    logistics tracks them but never tells WeChat with delivery/send (aftersale reports an exchange's
    replacement waybill with acceptexchangereship)."""

    event_type: Literal["dispatch_shipped"] = "dispatch_shipped"
    schema_version: int = 1
    parcels: list[Parcel]
    lines: list[DispatchLine]
    aftersale_case_id: str | None = None


class DispatchCancelled(DispatchEvent):
    event_type: Literal["dispatch_cancelled"] = "dispatch_cancelled"
    schema_version: int = 1
    cause: Literal["order_cancelled", "rerouted", "operator"]


class DispatchChangeRequested(DispatchEvent):
    event_type: Literal["dispatch_change_requested"] = "dispatch_change_requested"
    schema_version: int = 1
    request: ChangeRequest


class DispatchChangeAnswered(DispatchEvent):
    event_type: Literal["dispatch_change_answered"] = "dispatch_change_answered"
    schema_version: int = 1
    request: ChangeRequest


class DispatchUpdated(DispatchEvent):
    """Lines or receiver changed before the supplier accepted (applied directly)."""

    event_type: Literal["dispatch_updated"] = "dispatch_updated"
    schema_version: int = 1
    lines: list[DispatchLine]
    receiver: ShippingAddress


class InterceptionRequired(DispatchEvent):
    """The goods left (or the supplier says so) before a cancellation or change reached them:
    aftersale and logistics take it over as an interception case."""

    event_type: Literal["interception_required"] = "interception_required"
    schema_version: int = 1
    kind: ChangeKind
    parcels: list[Parcel]


class AftersaleInstructionKind(StrEnum):
    INTERCEPT = "intercept"  # ask the carrier to bring the parcel back
    RETURN_EXPECTED = "return_expected"  # the buyer sends goods back: confirm when they arrive


class InstructionLine(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    product_id: str
    sku_id: str
    count: int = Field(ge=1)


class WaybillRef(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    carrier_code: str
    waybill_no: str


class AftersaleInstruction(BaseModel):
    """What an after-sale case asks of the supplier, shown on the dispatch order in its feed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    case_id: str
    kind: AftersaleInstructionKind
    lines: list[InstructionLine] = Field(default_factory=list)
    waybills: list[WaybillRef] = Field(default_factory=list)
    return_address: ShippingAddress | None = None
    return_waybill: tuple[str, str] | None = None
    given_at: datetime
    done_at: datetime | None = None
    condition: str = ""


class DispatchAftersaleInstructed(DispatchEvent):
    event_type: Literal["dispatch_aftersale_instructed"] = "dispatch_aftersale_instructed"
    schema_version: int = 1
    instruction: AftersaleInstruction


class SupplierReturnReceived(DispatchEvent):
    """The supplier confirms the returned goods arrived (for the after-sale case)."""

    event_type: Literal["supplier_return_received"] = "supplier_return_received"
    schema_version: int = 1
    instruction: AftersaleInstruction


class OrderHeld(Event):
    """Lines of a paid order could not be routed: nothing of it is dispatched until they can be."""

    event_type: Literal["order_held"] = "order_held"
    schema_version: int = 1
    shop_id: str
    reason: HoldReason
    line_nos: list[int]


class OrderHoldReleased(Event):
    event_type: Literal["order_hold_released"] = "order_hold_released"
    schema_version: int = 1
    shop_id: str
    dispatch_ids: list[str]


class MirrorLine(BaseModel):
    """Units of one product SKU in a WeChat drop-ship order (代发单): WeChat's `spu_id`, `sku_id`,
    `product_cnt` in `dropship_product_list`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    product_id: str = Field(description="WeChat spu_id")
    sku_id: str
    count: int = Field(ge=1, description="WeChat product_cnt")


class MirrorCall(StrEnum):
    ASSIGN = "assign"  # /channels/ec/order/dropship/assign
    CANCEL = "cancel"  # /channels/ec/order/dropship/cancel


class MirrorFailureReason(StrEnum):
    """Why WeChat refused a drop-ship call for these units for good (its errcode is carried beside).
    Refusals of the set-up (supplier not linked, no permission, drop-ship management off) are not
    these: they are dead-lettered, to be replayed once the set-up is fixed."""

    ORDER_NOT_AWAITING_SHIPMENT = "order_not_awaiting_shipment"  # 610001
    ORDER_NOT_DROPSHIP = "order_not_dropship"  # 610002: the order has no drop-ship mark
    ALREADY_SHIPPED = "already_shipped"  # 610003 (the whole order), 610004 (these units)
    DS_ORDER_CONFLICT = "ds_order_conflict"  # 610009: the ds_order_id does not match the order
    INVALID_REQUEST = "invalid_request"  # 40097, 47001: WeChat will not take these lines
    REFUSED = "refused"  # any other errcode


class MirrorEvent(Event):
    """The WeChat drop-ship mirror of a dispatch order (shops that turned it on, `lvyue shop dropship`).
    Not a change of the dispatch order itself: `dispatch_version` is the dispatch order version the
    mirror had applied when this happened."""

    dispatch_id: str
    shop_id: str
    supplier_id: str
    supplier_appid: str = Field(description="the supplier's WeChat appid (供货商 appid)")
    dispatch_version: int = Field(ge=0)


class DispatchMirrored(MirrorEvent):
    """WeChat took the assignment: the supplier sees these units as drop-ship order `ds_order_id`."""

    event_type: Literal["dispatch_mirrored"] = "dispatch_mirrored"
    schema_version: int = 1
    ds_order_id: str
    lines: list[MirrorLine]


class DispatchMirrorCancelled(MirrorEvent):
    """Units taken away from the supplier were cancelled in WeChat (`remaining` empty: the whole
    drop-ship order)."""

    event_type: Literal["dispatch_mirror_cancelled"] = "dispatch_mirror_cancelled"
    schema_version: int = 1
    ds_order_id: str
    lines: list[MirrorLine]
    remaining: list[MirrorLine]


class DispatchMirrorFailed(MirrorEvent):
    """WeChat refused an assign or a cancel for good; it is not asked again for the same units."""

    event_type: Literal["dispatch_mirror_failed"] = "dispatch_mirror_failed"
    schema_version: int = 1
    call: MirrorCall
    reason: MirrorFailureReason
    errcode: int
    errmsg: str = ""
    ds_order_id: str | None = None
    lines: list[MirrorLine]


AnyMirrorEvent = Annotated[
    DispatchMirrored | DispatchMirrorCancelled | DispatchMirrorFailed, Field(discriminator="event_type")
]


AnyDispatchEvent = Annotated[
    DispatchOffered
    | DispatchAccepted
    | DispatchRejected
    | DispatchShipped
    | DispatchCancelled
    | DispatchChangeRequested
    | DispatchChangeAnswered
    | DispatchUpdated
    | InterceptionRequired
    | DispatchAftersaleInstructed
    | SupplierReturnReceived
    | OrderHeld
    | OrderHoldReleased
    | DispatchMirrored
    | DispatchMirrorCancelled
    | DispatchMirrorFailed,
    Field(discriminator="event_type"),
]

DISPATCH_EVENTS: TypeAdapter[AnyDispatchEvent] = TypeAdapter(AnyDispatchEvent)


class DispatchOrderFacts(BaseModel):
    """A dispatch order as aftersale needs it: where its units are."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dispatch_id: str
    supplier_id: str
    state: DispatchState
    version: int = Field(ge=1)
    lines: list[DispatchLine] = Field(description="now, with the quantities shipped")
    offered_lines: list[DispatchLine] = Field(
        description="the lines when offered (as they are now for one offered, and changed, before "
        "dispatch kept them apart: aftersale keeps what it knew of those)"
    )
    parcels: list[Parcel]
    receiver: ShippingAddress
    aftersale_case_id: str | None = None
    returns_received: list[str] = Field(
        default_factory=list, description="cases whose returned goods the supplier confirmed"
    )


class DispatchFulfilmentSnapshot(Event):
    """Every dispatch order of the order as dispatch has it, in answer to a case's follow
    (`FollowRequested`): from then on each of their changes is copied to `dispatch.aftersale` while
    the case is open. Empty when dispatch has not routed the order (not seen yet, or held)."""

    event_type: Literal["dispatch_fulfilment_snapshot"] = "dispatch_fulfilment_snapshot"
    schema_version: int = 1
    shop_id: str
    case_id: str = Field(description="the case whose follow this answers")
    dispatch_orders: list[DispatchOrderFacts]


AnyDispatchForAftersale = Annotated[
    DispatchOffered
    | DispatchRejected
    | DispatchShipped
    | DispatchCancelled
    | DispatchChangeAnswered
    | DispatchUpdated
    | InterceptionRequired
    | SupplierReturnReceived
    | DispatchFulfilmentSnapshot,
    Field(discriminator="event_type"),
]
# What `dispatch.aftersale` carries: snapshots, and copies of the `dispatch` changes of followed orders.
DISPATCH_AFTERSALE_EVENTS: TypeAdapter[AnyDispatchForAftersale] = TypeAdapter(AnyDispatchForAftersale)
