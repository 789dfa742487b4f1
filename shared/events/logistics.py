"""Logistics events (topic `logistics`), published by logistics, consumed by aftersale and ops:
waybills issued, shipments told to WeChat, parcel tracking states, deadline alerts."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from shared.events.base import Event


class TrackingState(StrEnum):
    AWAITING_PICKUP = "awaiting_pickup"
    PICKED_UP = "picked_up"
    IN_TRANSIT = "in_transit"
    OUT_FOR_DELIVERY = "out_for_delivery"
    DELIVERED = "delivered"
    RETURNED = "returned"  # back with the sender (after a refusal or an interception)
    EXCEPTION = "exception"  # problem parcel: lost, damaged, refused, held


class TrackingSource(StrEnum):
    WECHAT_EWAYBILL = "wechat_ewaybill"  # ewaybill_push_path
    KUAIDI100 = "kuaidi100"
    KDNIAO = "kdniao"


class WaybillSource(StrEnum):
    WECHAT_EWAYBILL = "wechat_ewaybill"
    AGGREGATOR = "aggregator"  # Kuaidi100-style carrier aggregator


class TraceEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    at: datetime
    text: str
    state: TrackingState
    source: TrackingSource


class ParcelRef(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    dispatch_id: str
    parcel_no: int
    carrier_code: str = Field(description="WeChat delivery_id")
    waybill_no: str


class DeliveryOutcome(StrEnum):
    TOLD = "told"  # delivery/send accepted
    ALREADY_SHIPPED = "already_shipped"  # 109001: WeChat had it already (a retry after a lost answer)
    HELD_FOR_AFTERSALE = "held_for_aftersale"  # 108009: an open after-sale blocks shipping
    REFUSED = "refused"  # 101100 and other permanent refusals: dead-lettered with the reason
    # 109000/109001, and WeChat's order shows none of the parcel's goods still expected: refunded
    # (by an after-sale case) before WeChat was told. Nothing is left to tell.
    REFUNDED_BEFORE_TOLD = "refunded_before_told"
    # Not sent: an after-sale replacement (exchange or re-ship) is not the order's shipment. WeChat
    # learns an exchange's replacement waybill from aftersale (acceptexchangereship), a re-ship never.
    AFTERSALE_REPLACEMENT = "aftersale_replacement"


class AlertKind(StrEnum):
    SHIP_BY_WARNING = "ship_by_warning"
    SHIP_BY_BREACHED = "ship_by_breached"
    PICKUP_OVERDUE = "pickup_overdue"  # waybill issued, carrier has not picked up
    PARCEL_STALLED = "parcel_stalled"  # no tracking update for too long
    DELIVERED_UNCONFIRMED = "delivered_unconfirmed"  # delivered, buyer has not confirmed receipt


class WaybillIssued(Event):
    event_type: Literal["waybill_issued"] = "waybill_issued"
    schema_version: int = 1
    shop_id: str
    parcel: ParcelRef
    source: WaybillSource
    ewaybill_order_id: str | None = None


class WaybillCancelled(Event):
    event_type: Literal["waybill_cancelled"] = "waybill_cancelled"
    schema_version: int = 1
    shop_id: str
    parcel: ParcelRef
    reason: str


class ShipmentReported(Event):
    """The outcome of telling WeChat about parcels (delivery/send), once per parcel; for the parcels
    of an after-sale replacement, that they are not told (`aftersale_replacement`)."""

    event_type: Literal["shipment_reported"] = "shipment_reported"
    schema_version: int = 1
    shop_id: str
    parcels: list[ParcelRef]
    outcome: DeliveryOutcome
    errcode: int = 0
    errmsg: str = ""


class ParcelTrackingChanged(Event):
    event_type: Literal["parcel_tracking_changed"] = "parcel_tracking_changed"
    schema_version: int = 1
    shop_id: str
    parcel: ParcelRef
    state: TrackingState
    previous_state: TrackingState | None
    latest: TraceEntry
    version: int = Field(ge=1, description="the parcel's tracking version after this change")


class DeadlineAlert(Event):
    event_type: Literal["deadline_alert"] = "deadline_alert"
    schema_version: int = 1
    shop_id: str
    kind: AlertKind
    subject: str = Field(description="dispatch id (ship-by) or carrier:waybill (parcel alerts)")
    due_at: datetime


AnyLogisticsEvent = Annotated[
    WaybillIssued | WaybillCancelled | ShipmentReported | ParcelTrackingChanged | DeadlineAlert,
    Field(discriminator="event_type"),
]
LOGISTICS_EVENTS: TypeAdapter[AnyLogisticsEvent] = TypeAdapter(AnyLogisticsEvent)
