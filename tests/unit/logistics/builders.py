"""Builders for the logistics domain tests: fixed aware UTC times, trace entries and parcels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.logistics.domain.tracking import ParcelTracking
from shared.events.logistics import ParcelRef, TraceEntry, TrackingSource, TrackingState

T0 = datetime(2025, 11, 13, 2, 0, tzinfo=UTC)
ORDER_ID = "3705115058471208928"
SHOP = "shop-1"
CARRIER = "ZTO"
WAYBILL = "78812345678901"
PARCEL = ParcelRef(dispatch_id=f"{ORDER_ID}-1", parcel_no=1, carrier_code=CARRIER, waybill_no=WAYBILL)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def entry(
    hours: float,
    state: TrackingState,
    text: str | None = None,
    *,
    source: TrackingSource = TrackingSource.KUAIDI100,
) -> TraceEntry:
    return TraceEntry(
        at=at(hours), text=text if text is not None else f"{state} @{hours}h", state=state, source=source
    )


def tracking(
    *,
    state: TrackingState = TrackingState.AWAITING_PICKUP,
    version: int = 1,
    trace: list[TraceEntry] | None = None,
    registered_at: datetime = T0,
    last_update_at: datetime | None = None,
) -> ParcelTracking:
    return ParcelTracking(
        shop_id=SHOP,
        order_id=ORDER_ID,
        parcel=PARCEL,
        state=state,
        version=version,
        trace=trace or [],
        registered_at=registered_at,
        last_update_at=last_update_at,
    )
