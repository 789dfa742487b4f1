"""Parcel tracking: one state model for every source (WeChat e-waybill pushes, Kuaidi100, Kdniao).
Pure. Duplicates and out-of-order updates are normal: the trace is a set of entries ordered by the
carrier's own time, and the parcel's state is the state of its newest entry."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from services.logistics.domain.delivery import ParcelTold
from shared.events.logistics import (
    ParcelRef,
    ParcelTrackingChanged,
    TraceEntry,
    TrackingSource,
    TrackingState,
)

# WeChat ewaybill_push_path `status`.
WECHAT_EWAYBILL_STATES: dict[int, TrackingState] = {
    0: TrackingState.AWAITING_PICKUP,
    1: TrackingState.PICKED_UP,
    2: TrackingState.IN_TRANSIT,
    3: TrackingState.OUT_FOR_DELIVERY,
    4: TrackingState.OUT_FOR_DELIVERY,  # in a parcel locker, waiting for the buyer
    5: TrackingState.DELIVERED,
    6: TrackingState.RETURNED,
    7: TrackingState.IN_TRANSIT,  # forwarded
    8: TrackingState.EXCEPTION,
    9: TrackingState.DELIVERED,  # taken out of the locker
}
# Kuaidi100 lastResult.state.
KUAIDI100_STATES: dict[int, TrackingState] = {
    0: TrackingState.IN_TRANSIT,
    1: TrackingState.PICKED_UP,
    2: TrackingState.EXCEPTION,
    3: TrackingState.DELIVERED,
    4: TrackingState.RETURNED,  # return signed by the sender
    5: TrackingState.OUT_FOR_DELIVERY,
    6: TrackingState.IN_TRANSIT,  # on its way back to the sender
    7: TrackingState.IN_TRANSIT,  # redirected
    8: TrackingState.IN_TRANSIT,  # customs
    14: TrackingState.EXCEPTION,  # refused by the buyer
}
# Kdniao State.
KDNIAO_STATES: dict[int, TrackingState] = {
    0: TrackingState.AWAITING_PICKUP,
    1: TrackingState.PICKED_UP,
    2: TrackingState.IN_TRANSIT,
    3: TrackingState.DELIVERED,
    4: TrackingState.EXCEPTION,
}


def state_of(source: TrackingSource, code: int) -> TrackingState | None:
    """None for a code the source did not document (99 "unknown", say): kept out of the state."""
    table = {
        TrackingSource.WECHAT_EWAYBILL: WECHAT_EWAYBILL_STATES,
        TrackingSource.KUAIDI100: KUAIDI100_STATES,
        TrackingSource.KDNIAO: KDNIAO_STATES,
    }[source]
    return table.get(code)


class ParcelTracking(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    shop_id: str
    order_id: str
    parcel: ParcelRef
    state: TrackingState = TrackingState.AWAITING_PICKUP
    version: int = Field(default=1, ge=1)
    trace: list[TraceEntry] = Field(default_factory=list)
    registered_at: datetime
    last_update_at: datetime | None = Field(default=None, description="carrier time of the newest entry")
    ewaybill_order_id: str | None = None
    # What WeChat was told of the parcel, once it answered for good: saved with the registration when
    # the answer comes while the shipment is handled (one document for both).
    told: ParcelTold | None = None
    # The dispatch order's version whose shipment this parcel completed (every line shipped): its
    # ship-by watch is met.
    completes_dispatch_version: int | None = None

    @property
    def key(self) -> str:
        return parcel_key(self.parcel.carrier_code, self.parcel.waybill_no)


def parcel_key(carrier_code: str, waybill_no: str) -> str:
    return f"{carrier_code}:{waybill_no}"


@dataclass(frozen=True)
class TrackingUpdate:
    tracking: ParcelTracking
    events: list[ParcelTrackingChanged] = field(default_factory=list)
    changed: bool = False  # the trace grew (the state may be the same)


# Where the goods are, as an after-sale tells it apart: with the buyer, back with the sender, or on
# their way (any other state). Aftersale is told only of the changes that cross these.
_WHEREABOUTS: dict[TrackingState | None, str] = {
    TrackingState.DELIVERED: "with_buyer",
    TrackingState.RETURNED: "with_sender",
}


def moves_whereabouts(event: ParcelTrackingChanged) -> bool:
    """Whether the change takes the parcel into or out of delivered or returned."""
    return _WHEREABOUTS.get(event.previous_state) != _WHEREABOUTS.get(event.state)


def apply_entries(tracking: ParcelTracking, entries: list[TraceEntry], *, now: datetime) -> TrackingUpdate:
    """Merge new trace entries. Returns the tracking unchanged (and no event) for duplicates."""
    known = {(e.at, e.text, e.state) for e in tracking.trace}
    fresh: list[TraceEntry] = []
    for entry in entries:  # duplicates within one batch too: the trace must not depend on batching
        identity = (entry.at, entry.text, entry.state)
        if identity not in known:
            known.add(identity)
            fresh.append(entry)
    if not fresh:
        return TrackingUpdate(tracking)
    # A total order, so replays in any arrival order store the same trace and name the same newest entry.
    trace = sorted([*tracking.trace, *fresh], key=lambda e: (e.at, _progress(e.state), e.text, e.source))
    newest = trace[-1]
    changes: dict[str, object] = {"trace": trace, "last_update_at": newest.at}
    events: list[ParcelTrackingChanged] = []
    if newest.state != tracking.state:
        version = tracking.version + 1
        changes.update(state=newest.state, version=version)
        events.append(
            ParcelTrackingChanged(
                order_id=tracking.order_id,
                occurred_at=now,
                shop_id=tracking.shop_id,
                parcel=tracking.parcel,
                state=newest.state,
                previous_state=tracking.state,
                latest=newest,
                version=version,
            )
        )
    return TrackingUpdate(tracking.model_copy(update=changes), events, changed=True)


def _progress(state: TrackingState) -> int:
    """Tie-break for entries with the same carrier time: the further along wins."""
    order = [
        TrackingState.AWAITING_PICKUP,
        TrackingState.PICKED_UP,
        TrackingState.IN_TRANSIT,
        TrackingState.OUT_FOR_DELIVERY,
        TrackingState.EXCEPTION,
        TrackingState.DELIVERED,
        TrackingState.RETURNED,
    ]
    return order.index(state)
