"""The supplier API (dispatch, port 8002, `/supplier/v1`): request and response bodies, error codes.

What a supplier sees is a deliberate public model (`DispatchOrderPublic`), never the stored document:
no prices, no buyer ids, and a receiver limited to what shipping needs.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.events.dispatch import (
    AftersaleInstruction,
    ChangeKind,
    ChangeRefusal,
    ChangeRequest,
    ChangeStatus,
    DispatchLine,
    DispatchState,
    Parcel,
    ParcelLine,
    RejectReason,
    ShippingAddress,
)

API_PREFIX = "/supplier/v1"


class SupplierErrorCode(StrEnum):
    UNAUTHENTICATED = "unauthenticated"
    NOT_FOUND = "not_found"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_IN_FLIGHT = "too_many_in_flight"  # 429: the key has its limit of calls unanswered
    VALIDATION_FAILED = "validation_failed"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"  # same key, different request
    # Illegal transitions (409).
    NOT_OFFERED = "not_offered"  # accept/reject: the dispatch order is no longer waiting for an answer
    NOT_ACCEPTED = "not_accepted"  # ship/waybills: accept it first
    DISPATCH_CANCELLED = "dispatch_cancelled"
    ALREADY_SHIPPED = "already_shipped"
    CHANGE_REQUEST_NOT_OPEN = "change_request_not_open"
    UNKNOWN_LINE = "unknown_line"
    QUANTITY_EXCEEDS_REMAINING = "quantity_exceeds_remaining"
    WAYBILL_ALREADY_USED = "waybill_already_used"
    CONCURRENT_UPDATE = "concurrent_update"  # another call changed it first; read it and decide again
    LOGISTICS_UNAVAILABLE = "logistics_unavailable"
    CARRIER_REFUSED = "carrier_refused"  # the carrier allocated no waybill number
    UNKNOWN_CARRIER = "unknown_carrier"
    SENDER_ADDRESS_MISSING = "sender_address_missing"  # the supplier has no warehouse address on file
    RETURN_ALREADY_CONFIRMED = "return_already_confirmed"


class FieldError(BaseModel):
    path: str
    message: str


class ErrorBody(BaseModel):
    code: SupplierErrorCode
    message: str
    # Validation errors: one entry per field, with its path ("body.parcels.0.lines.1.quantity").
    fields: list[FieldError] = Field(default_factory=list)


class DispatchOrderPublic(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    dispatch_id: str
    order_id: str = Field(description="WeChat order_id, exact, as a decimal string")
    shop_id: str
    state: DispatchState
    version: int
    lines: list[DispatchLine]
    receiver: ShippingAddress
    ship_by: datetime | None
    paid_at: datetime
    created_at: datetime
    updated_at: datetime
    estimated_ship_at: datetime | None = None
    rejection_reason: RejectReason | None = None
    parcels: list[Parcel] = Field(default_factory=list)
    change_requests: list[ChangeRequest] = Field(default_factory=list)
    buyer_urged: bool = False
    replaces_dispatch_id: str | None = None
    aftersale_case_id: str | None = None
    aftersale_instructions: list[AftersaleInstruction] = Field(default_factory=list)
    wechat_ds_order_id: str | None = Field(
        default=None,
        description="WeChat drop-ship order (代发单 ds_order_id) holding these units for you, when the "
        "shop mirrors dispatch orders into WeChat (shown by GET and list)",
    )


class ReturnReceipt(BaseModel):
    model_config = ConfigDict(extra="forbid")

    condition: Literal["intact", "damaged", "incomplete"] = "intact"
    note: str = Field(default="", max_length=500)


class FeedChange(BaseModel):
    """One change in a supplier's feed: the dispatch order as it is after the change."""

    cursor: int = Field(description="monotonic per supplier; pass the last one seen as `after`")
    change: str = Field(description="the event type, e.g. dispatch_offered, dispatch_change_requested")
    occurred_at: datetime
    dispatch_order: DispatchOrderPublic


class FeedPage(BaseModel):
    schema_version: Literal[1] = 1
    changes: list[FeedChange]
    next_cursor: int = Field(description="pass as `after` to get the changes after these")


class DispatchOrderList(BaseModel):
    schema_version: Literal[1] = 1
    items: list[DispatchOrderPublic]
    next_page_after: str | None = Field(description="pass as `page_after` for the next page")


class AcceptRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    estimated_ship_at: AwareDatetime | None = None


class RejectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: RejectReason
    text: str = Field(default="", max_length=500)


class ParcelToShip(BaseModel):
    model_config = ConfigDict(extra="forbid")

    carrier_code: str = Field(min_length=1, max_length=32, description="WeChat delivery_id, e.g. ZTO")
    waybill_no: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")
    lines: list[ParcelLine] = Field(min_length=1, max_length=200)


class ShipRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    parcels: list[ParcelToShip] = Field(min_length=1, max_length=50)


class ParcelToLabel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lines: list[ParcelLine] = Field(min_length=1, max_length=200)
    weight_grams: int | None = Field(default=None, ge=1, le=100_000)


class WaybillRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    carrier_code: str = Field(min_length=1, max_length=32)
    parcels: list[ParcelToLabel] = Field(min_length=1, max_length=50)


class IssuedWaybill(BaseModel):
    parcel_no: int
    carrier_code: str
    waybill_no: str
    label_url: str = Field(description="PDF label, 100x150 mm, on this API")
    print_info: str | None = Field(default=None, description="WeChat e-waybill print_info, when used")


class WaybillResponse(BaseModel):
    schema_version: Literal[1] = 1
    dispatch_id: str
    waybills: list[IssuedWaybill]


class ChangeAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["confirm", "refuse"]
    refusal: ChangeRefusal | None = Field(default=None, description="required when refusing")
    text: str = Field(default="", max_length=500)


__all__ = [
    "API_PREFIX",
    "AcceptRequest",
    "ChangeAnswer",
    "ChangeKind",
    "ChangeStatus",
    "DispatchOrderList",
    "DispatchOrderPublic",
    "ErrorBody",
    "FeedChange",
    "FeedPage",
    "FieldError",
    "IssuedWaybill",
    "ParcelToLabel",
    "ParcelToShip",
    "RejectRequest",
    "ShipRequest",
    "SupplierErrorCode",
    "WaybillRequest",
    "WaybillResponse",
]
