"""What aftersale knows of an order's fulfilment: each dispatch order's state, lines and parcels
(from dispatch's snapshot of the order when a case asked it to follow the order, then the copies of
its changes on `dispatch.aftersale`), and each parcel's tracking state (`logistics.parcel-stages`).
Pure functions apply them (idempotent by version) and say where a case's units are."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field

from services.aftersale.domain.case import Fulfilment, Stage
from shared.events.aftersale import AffectedLine
from shared.events.dispatch import (
    DispatchEvent,
    DispatchFulfilmentSnapshot,
    DispatchLine,
    DispatchOrderFacts,
    DispatchState,
    Parcel,
    ShippingAddress,
)
from shared.events.logistics import ParcelTrackingChanged, TrackingState


class Unit(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    product_id: str
    sku_id: str
    quantity: int = 0
    shipped: int = 0


class ParcelView(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    carrier_code: str
    waybill_no: str
    units: list[Unit]


class DispatchView(BaseModel):
    """A dispatch order as aftersale needs it (objects only: FerretDB stores no nested arrays)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dispatch_id: str
    supplier_id: str
    state: DispatchState
    version: int
    lines: list[Unit]
    original: list[Unit] = Field(description="the lines when offered")
    parcels: list[ParcelView] = Field(default_factory=list)
    aftersale_case_id: str | None = None
    replacement_waybill: tuple[str, str] | None = None


class OrderFulfilment(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    order_id: str
    shop_id: str
    dispatch: dict[str, DispatchView] = Field(default_factory=dict)
    parcels: dict[str, TrackingState] = Field(default_factory=dict, description="carrier:waybill -> state")
    parcel_versions: dict[str, int] = Field(default_factory=dict)
    receiver: ShippingAddress | None = None
    followed_cases: list[str] = Field(
        default_factory=list,
        description="cases whose follow dispatch answered with a snapshot: from then on it copies "
        "every change of the order here, until they end (`knows_for`)",
    )

    def knows_for(self, case_id: str) -> bool:
        """Whether `dispatch` is the whole truth for this open case: dispatch's snapshot answered its
        follow. Before that, what is here may be nothing or old (changes not copied)."""
        return case_id in self.followed_cases


def apply_dispatch_event(fulfilment: OrderFulfilment, event: DispatchEvent) -> OrderFulfilment:
    """The dispatch order as the event describes it (an older version than known changes nothing)."""
    current = fulfilment.dispatch.get(event.dispatch_id)
    if current is not None and current.version >= event.version:
        return fulfilment
    lines_now = getattr(event, "lines", None)
    request = getattr(event, "request", None)
    if lines_now is None and request is not None and request.status == "confirmed" and request.new_lines:
        lines_now = request.new_lines  # a confirmed change of lines
    lines = [_unit(x) for x in lines_now] if lines_now is not None else (current.lines if current else [])
    original = current.original if current else lines
    parcels = list(current.parcels) if current else []
    shipped_parcels = getattr(event, "parcels", None)
    if event.event_type == "dispatch_shipped" and shipped_parcels is not None and lines_now is not None:
        by_line = {x.line_no: x for x in lines_now}
        known = {(p.carrier_code, p.waybill_no) for p in parcels}
        for parcel in shipped_parcels:
            if (parcel.carrier_code, parcel.waybill_no) not in known:
                parcels.append(_parcel_view(parcel, by_line))
    case_id = getattr(event, "aftersale_case_id", None) or (current.aftersale_case_id if current else None)
    replacement = current.replacement_waybill if current else None
    if case_id and parcels and replacement is None:
        replacement = (parcels[0].carrier_code, parcels[0].waybill_no)
    view = DispatchView(
        dispatch_id=event.dispatch_id,
        supplier_id=event.supplier_id,
        state=event.state,
        version=event.version,
        lines=lines,
        original=original,
        parcels=parcels,
        aftersale_case_id=case_id,
        replacement_waybill=replacement,
    )
    receiver = getattr(event, "receiver", None) or fulfilment.receiver
    return fulfilment.model_copy(
        update={"dispatch": {**fulfilment.dispatch, event.dispatch_id: view}, "receiver": receiver}
    )


def apply_snapshot(fulfilment: OrderFulfilment, snapshot: DispatchFulfilmentSnapshot) -> OrderFulfilment:
    """Dispatch's whole view of the order, in answer to a case's follow: each dispatch order as the
    snapshot has it, unless a newer version is known (a copy that overtook it); the lines as offered
    are the first known (an order offered before dispatch kept them apart keeps aftersale's)."""
    dispatch = dict(fulfilment.dispatch)
    for facts in snapshot.dispatch_orders:
        current = dispatch.get(facts.dispatch_id)
        if current is None or current.version < facts.version:
            dispatch[facts.dispatch_id] = _view_of(facts, current)
    followed = fulfilment.followed_cases
    if snapshot.case_id not in followed:
        followed = [*followed, snapshot.case_id]
    receiver = snapshot.dispatch_orders[-1].receiver if snapshot.dispatch_orders else fulfilment.receiver
    return fulfilment.model_copy(
        update={"dispatch": dispatch, "receiver": receiver, "followed_cases": followed}
    )


def _view_of(facts: DispatchOrderFacts, current: DispatchView | None) -> DispatchView:
    by_line = {x.line_no: x for x in [*facts.offered_lines, *facts.lines]}  # the lines now come last
    parcels = [_parcel_view(parcel, by_line) for parcel in facts.parcels]
    replacement = current.replacement_waybill if current else None
    if facts.aftersale_case_id and parcels and replacement is None:
        replacement = (parcels[0].carrier_code, parcels[0].waybill_no)
    return DispatchView(
        dispatch_id=facts.dispatch_id,
        supplier_id=facts.supplier_id,
        state=facts.state,
        version=facts.version,
        lines=[_unit(x) for x in facts.lines],
        original=current.original if current else [_unit(x) for x in facts.offered_lines],
        parcels=parcels,
        aftersale_case_id=facts.aftersale_case_id,
        replacement_waybill=replacement,
    )


def _unit(line: DispatchLine) -> Unit:
    return Unit(
        product_id=line.product_id, sku_id=line.sku_id, quantity=line.quantity, shipped=line.shipped_quantity
    )


def _parcel_view(parcel: Parcel, by_line: dict[int, DispatchLine]) -> ParcelView:
    units = [
        Unit(product_id=by_line[i.line_no].product_id, sku_id=by_line[i.line_no].sku_id, quantity=i.quantity)
        for i in parcel.lines
        if i.line_no in by_line
    ]
    return ParcelView(carrier_code=parcel.carrier_code, waybill_no=parcel.waybill_no, units=units)


def apply_tracking(fulfilment: OrderFulfilment, event: ParcelTrackingChanged) -> OrderFulfilment:
    key = f"{event.parcel.carrier_code}:{event.parcel.waybill_no}"
    if fulfilment.parcel_versions.get(key, 0) >= event.version:
        return fulfilment
    return fulfilment.model_copy(
        update={
            "parcels": {**fulfilment.parcels, key: event.state},
            "parcel_versions": {**fulfilment.parcel_versions, key: event.version},
        }
    )


def stage_for(
    fulfilment: OrderFulfilment | None,
    lines: Sequence[AffectedLine],
    *,
    unshipped_first: bool = False,
    dropped_before: Sequence[AffectedLine] = (),
) -> Fulfilment:
    """Where the case's units are. The first dispatch order that carries them and shipped decides,
    unless `unshipped_first` (a refund, which WeChat counts against units not shipped yet first):
    then units still to send, or dropped beyond `dropped_before` (other cases' drops), are the case's
    before any parcel is."""
    if fulfilment is None:
        return Fulfilment(Stage.NOT_DISPATCHED)
    wanted = {(line.product_id, line.sku_id) for line in lines}
    carrying = [
        view
        for view in fulfilment.dispatch.values()
        if view.aftersale_case_id is None and any((u.product_id, u.sku_id) in wanted for u in view.original)
    ]
    if not carrying:
        return Fulfilment(Stage.NOT_DISPATCHED)
    live = [v for v in carrying if v.state not in (DispatchState.CANCELLED, DispatchState.REJECTED)]
    if unshipped_first and live:
        stoppable = _units_not_sent(live, lines, dropped_before)
        if stoppable is not None:
            return stoppable
    for view in carrying:
        shipped = [
            (p.carrier_code, p.waybill_no)
            for p in view.parcels
            if any((u.product_id, u.sku_id) in wanted for u in p.units)
        ]
        if shipped:
            states = [fulfilment.parcels.get(f"{c}:{w}", TrackingState.AWAITING_PICKUP) for c, w in shipped]
            ended = all(s in (TrackingState.DELIVERED, TrackingState.RETURNED) for s in states)
            if ended and any(s == TrackingState.DELIVERED for s in states):
                # Some of these units reached the buyer (others came back): there is something to
                # return or exchange, and a refund-only request needs a person.
                stage = Stage.DELIVERED
            elif any(s == TrackingState.RETURNED for s in states):
                stage = Stage.RETURNED
            else:
                stage = Stage.IN_TRANSIT
            return Fulfilment(stage, view.dispatch_id, view.supplier_id, tuple(shipped))
    if not live:
        return Fulfilment(Stage.CANCELLED, carrying[-1].dispatch_id, carrying[-1].supplier_id)
    view = live[-1]
    if _units_dropped(view, lines):
        return Fulfilment(Stage.CANCELLED, view.dispatch_id, view.supplier_id)
    return Fulfilment(Stage.NOT_SHIPPED, view.dispatch_id, view.supplier_id)


def units_dropped(fulfilment: OrderFulfilment | None, lines: Sequence[AffectedLine]) -> list[AffectedLine]:
    """How many of each of these SKUs the live dispatch orders dropped since they were offered."""
    if fulfilment is None:
        return []
    wanted = {(x.product_id, x.sku_id) for x in lines}
    live = [
        view
        for view in fulfilment.dispatch.values()
        if view.aftersale_case_id is None
        and view.state not in (DispatchState.CANCELLED, DispatchState.REJECTED)
    ]
    dropped = _dropped(live, wanted)
    return [AffectedLine(product_id=p, sku_id=s, count=n) for (p, s), n in sorted(dropped.items()) if n > 0]


def _dropped(live: Sequence[DispatchView], wanted: Iterable[tuple[str, str]]) -> Counter[tuple[str, str]]:
    keys = set(wanted)
    dropped: Counter[tuple[str, str]] = Counter()
    for view in live:
        now = {(u.product_id, u.sku_id): u.quantity for u in view.lines}
        for unit in view.original:
            key = (unit.product_id, unit.sku_id)
            if key in keys:
                dropped[key] += max(0, unit.quantity - now.get(key, 0))
    return dropped


def _units_not_sent(
    live: Sequence[DispatchView], lines: Sequence[AffectedLine], dropped_before: Sequence[AffectedLine]
) -> Fulfilment | None:
    """CANCELLED when the live dispatch orders dropped all of the case's units, NOT_SHIPPED while some
    are still to send (they are stopped first), None when the rest can only be in parcels."""
    wanted = {(x.product_id, x.sku_id): x.count for x in lines}
    dropped = _dropped(live, wanted)
    dropped.subtract({(x.product_id, x.sku_id): x.count for x in dropped_before})
    unsent: Counter[tuple[str, str]] = Counter()
    holder: DispatchView | None = None
    for view in live:
        for unit in view.lines:
            key = (unit.product_id, unit.sku_id)
            if key in wanted and unit.quantity > unit.shipped:
                unsent[key] += unit.quantity - unit.shipped
                holder = holder or view
    if all(dropped[key] >= count for key, count in wanted.items()):
        return Fulfilment(Stage.CANCELLED, live[0].dispatch_id, live[0].supplier_id)
    if holder is not None and any(unsent[key] and dropped[key] < count for key, count in wanted.items()):
        return Fulfilment(Stage.NOT_SHIPPED, holder.dispatch_id, holder.supplier_id)
    return None


def _units_dropped(view: DispatchView, lines: Sequence[AffectedLine]) -> bool:
    """The dispatch order's lines shrank by at least the case's units (a confirmed partial stop)."""
    dropped = _dropped([view], [(x.product_id, x.sku_id) for x in lines])
    return all(dropped[(x.product_id, x.sku_id)] >= x.count for x in lines)
