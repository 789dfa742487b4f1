"""The dispatch order: one supplier's part of one WeChat order, and every transition it can make.

Pure: transitions take the current aggregate and the time, and return the new aggregate plus the
events it records, or raise `DispatchError` with a code. Each recorded event bumps `version` by one,
so an event's version says exactly which state it describes.

    offered --accept--> accepted --ship (part)--> partially_shipped --ship (rest)--> shipped
       |                   |  \\__ cancellation / change request --confirm--> cancelled / changed
       +--reject--> rejected      \\__ refuse (already shipped) --> interception required
       +--order cancelled / rerouted--> cancelled
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.api.supplier import DispatchOrderPublic, SupplierErrorCode
from shared.events.dispatch import (
    AftersaleInstruction,
    AftersaleInstructionKind,
    ChangeKind,
    ChangeRefusal,
    ChangeRequest,
    ChangeStatus,
    DispatchAccepted,
    DispatchAftersaleInstructed,
    DispatchCancelled,
    DispatchChangeAnswered,
    DispatchChangeRequested,
    DispatchEvent,
    DispatchLine,
    DispatchOffered,
    DispatchRejected,
    DispatchShipped,
    DispatchState,
    DispatchUpdated,
    InterceptionRequired,
    Parcel,
    ParcelLine,
    RejectReason,
    ShippingAddress,
    SupplierReturnReceived,
)

FINAL_STATES = frozenset({DispatchState.REJECTED, DispatchState.CANCELLED, DispatchState.SHIPPED})
SHIPPING_STATES = frozenset({DispatchState.ACCEPTED, DispatchState.PARTIALLY_SHIPPED})


_EVENT_NAMESPACE = uuid.UUID("6f1c1f0e-4d0b-4a57-9d39-1b7c5a0de1a1")


def event_id_of(dispatch_id: str, version: int) -> uuid.UUID:
    """One event per version: the same change recomputed after a crash has the same id, so
    consumers drop the copy."""
    return uuid.uuid5(_EVENT_NAMESPACE, f"{dispatch_id}#{version}")


class DispatchError(Exception):
    """A command the dispatch order's state does not allow (409) or cannot find (404)."""

    def __init__(self, code: SupplierErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class DispatchOrder(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    dispatch_id: str
    order_id: str
    shop_id: str
    supplier_id: str
    state: DispatchState = DispatchState.OFFERED
    version: int = Field(default=1, ge=1)
    lines: list[DispatchLine]
    receiver: ShippingAddress
    ship_by: datetime | None
    paid_at: datetime
    created_at: datetime
    updated_at: datetime
    accepted_at: datetime | None = None
    estimated_ship_at: datetime | None = None
    rejection_reason: RejectReason | None = None
    rejection_text: str = ""
    parcels: list[Parcel] = Field(default_factory=list)
    change_requests: list[ChangeRequest] = Field(default_factory=list)
    buyer_urged: bool = False
    replaces_dispatch_id: str | None = None
    aftersale_case_id: str | None = None
    aftersale_instructions: list[AftersaleInstruction] = Field(default_factory=list)
    # The lines when offered, kept once their units change (None: `lines` still has them; aftersale
    # counts the units dropped since the offer).
    offered_lines: list[DispatchLine] | None = None
    # route id -> units this dispatch order took from the route's stock cap (given back if it ends unshipped)
    allocations: dict[str, int] = Field(default_factory=dict)

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    def open_request(self, kind: ChangeKind | None = None) -> ChangeRequest | None:
        return next(
            (
                r
                for r in self.change_requests
                if r.status == ChangeStatus.OPEN and (kind is None or r.kind == kind)
            ),
            None,
        )

    def public(self) -> DispatchOrderPublic:
        return DispatchOrderPublic(
            dispatch_id=self.dispatch_id,
            order_id=self.order_id,
            shop_id=self.shop_id,
            state=self.state,
            version=self.version,
            lines=self.lines,
            receiver=self.receiver,
            ship_by=self.ship_by,
            paid_at=self.paid_at,
            created_at=self.created_at,
            updated_at=self.updated_at,
            estimated_ship_at=self.estimated_ship_at,
            rejection_reason=self.rejection_reason,
            parcels=self.parcels,
            change_requests=self.change_requests,
            buyer_urged=self.buyer_urged,
            replaces_dispatch_id=self.replaces_dispatch_id,
            aftersale_case_id=self.aftersale_case_id,
            aftersale_instructions=self.aftersale_instructions,
        )


@dataclass(frozen=True)
class Transition:
    order: DispatchOrder
    events: list[DispatchEvent] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.events)


class _Recorder:
    """Applies successive changes to one aggregate, bumping the version once per recorded event."""

    def __init__(self, order: DispatchOrder, now: datetime) -> None:
        self.order = order
        self.now = now
        self.events: list[DispatchEvent] = []

    def record(self, event_type: type[DispatchEvent], changes: dict[str, object], **fields: object) -> None:
        version = self.order.version + 1
        lines = changes.get("lines")
        if (
            self.order.offered_lines is None
            and isinstance(lines, list)
            and _units(lines) != _units(self.order.lines)
        ):
            changes = {**changes, "offered_lines": self.order.lines}
        self.order = self.order.model_copy(update={**changes, "version": version, "updated_at": self.now})
        self.events.append(
            event_type(
                event_id=event_id_of(self.order.dispatch_id, version),
                order_id=self.order.order_id,
                occurred_at=self.now,
                dispatch_id=self.order.dispatch_id,
                shop_id=self.order.shop_id,
                supplier_id=self.order.supplier_id,
                version=version,
                state=self.order.state,
                **fields,
            )
        )

    def done(self) -> Transition:
        return Transition(self.order, self.events)


def _units(lines: Sequence[DispatchLine]) -> list[tuple[int, str, str, int]]:
    """What a line asks of the supplier (a shipment changes only what was sent of it)."""
    return [(x.line_no, x.product_id, x.sku_id, x.quantity) for x in lines]


def offered_lines(order: DispatchOrder) -> list[DispatchLine]:
    """The lines as offered (for an order offered before they were kept apart: as they are now)."""
    return order.offered_lines if order.offered_lines is not None else order.lines


def offer(
    *,
    dispatch_id: str,
    order_id: str,
    shop_id: str,
    supplier_id: str,
    lines: Sequence[DispatchLine],
    receiver: ShippingAddress,
    ship_by: datetime | None,
    paid_at: datetime,
    now: datetime,
    allocations: dict[str, int] | None = None,
    replaces_dispatch_id: str | None = None,
    aftersale_case_id: str | None = None,
) -> Transition:
    order = DispatchOrder(
        dispatch_id=dispatch_id,
        order_id=order_id,
        shop_id=shop_id,
        supplier_id=supplier_id,
        lines=list(lines),
        receiver=receiver,
        ship_by=ship_by,
        paid_at=paid_at,
        created_at=now,
        updated_at=now,
        allocations=allocations or {},
        replaces_dispatch_id=replaces_dispatch_id,
        aftersale_case_id=aftersale_case_id,
    )
    event = DispatchOffered(
        event_id=event_id_of(dispatch_id, order.version),
        order_id=order_id,
        occurred_at=now,
        dispatch_id=dispatch_id,
        shop_id=shop_id,
        supplier_id=supplier_id,
        version=order.version,
        state=order.state,
        lines=order.lines,
        receiver=receiver,
        ship_by=ship_by,
        paid_at=paid_at,
        replaces_dispatch_id=replaces_dispatch_id,
        aftersale_case_id=aftersale_case_id,
    )
    return Transition(order, [event])


# --- Supplier commands -------------------------------------------------------------------------


def _refuse_unless_offered(order: DispatchOrder) -> None:
    if order.state == DispatchState.CANCELLED:
        raise DispatchError(SupplierErrorCode.DISPATCH_CANCELLED, "the order was cancelled")
    if order.state != DispatchState.OFFERED:
        raise DispatchError(
            SupplierErrorCode.NOT_OFFERED, f"the dispatch order is {order.state}, not waiting for an answer"
        )


def accept(order: DispatchOrder, *, estimated_ship_at: datetime | None, now: datetime) -> Transition:
    _refuse_unless_offered(order)
    recorder = _Recorder(order, now)
    recorder.record(
        DispatchAccepted,
        {"state": DispatchState.ACCEPTED, "accepted_at": now, "estimated_ship_at": estimated_ship_at},
        estimated_ship_at=estimated_ship_at,
    )
    return recorder.done()


def reject(order: DispatchOrder, *, reason: RejectReason, text: str, now: datetime) -> Transition:
    _refuse_unless_offered(order)
    recorder = _Recorder(order, now)
    recorder.record(
        DispatchRejected,
        {"state": DispatchState.REJECTED, "rejection_reason": reason, "rejection_text": text},
        reason=reason,
        reason_text=text,
    )
    return recorder.done()


def _refuse_unless_shipping(order: DispatchOrder) -> None:
    if order.state == DispatchState.CANCELLED:
        raise DispatchError(SupplierErrorCode.DISPATCH_CANCELLED, "the order was cancelled: do not ship")
    if order.state == DispatchState.SHIPPED:
        raise DispatchError(SupplierErrorCode.ALREADY_SHIPPED, "every line is already shipped")
    if order.state not in SHIPPING_STATES:
        raise DispatchError(
            SupplierErrorCode.NOT_ACCEPTED, f"the dispatch order is {order.state}: accept it first"
        )


def check_parcel_lines(order: DispatchOrder, parcels: Sequence[Sequence[ParcelLine]]) -> None:
    """Every line exists and no line ships more than what remains of it (over all parcels given)."""
    by_line = {line.line_no: line for line in order.lines}
    wanted: Counter[int] = Counter()
    for parcel_lines in parcels:
        for item in parcel_lines:
            if item.line_no not in by_line:
                raise DispatchError(
                    SupplierErrorCode.UNKNOWN_LINE, f"line {item.line_no} is not in this order"
                )
            wanted[item.line_no] += item.quantity
    for line_no, quantity in wanted.items():
        remaining = by_line[line_no].remaining
        if quantity > remaining:
            raise DispatchError(
                SupplierErrorCode.QUANTITY_EXCEEDS_REMAINING,
                f"line {line_no}: {quantity} to ship but {remaining} remain",
            )


def check_can_request_waybills(order: DispatchOrder, parcels: Sequence[Sequence[ParcelLine]]) -> None:
    _refuse_unless_shipping(order)
    check_parcel_lines(order, parcels)


@dataclass(frozen=True)
class ParcelShipment:
    carrier_code: str
    waybill_no: str
    lines: list[ParcelLine]


def ship(order: DispatchOrder, *, parcels: Sequence[ParcelShipment], now: datetime) -> Transition:
    """Record parcels. Open cancellation/change requests are answered by the shipment itself: the
    goods have left, so each becomes an interception case."""
    _refuse_unless_shipping(order)
    if not parcels:
        raise DispatchError(SupplierErrorCode.VALIDATION_FAILED, "a shipment needs at least one parcel")
    check_parcel_lines(order, [p.lines for p in parcels])
    used = {(p.carrier_code, p.waybill_no) for p in order.parcels}
    new_waybills = [(p.carrier_code, p.waybill_no) for p in parcels]
    if len(set(new_waybills)) != len(new_waybills) or used.intersection(new_waybills):
        raise DispatchError(
            SupplierErrorCode.WAYBILL_ALREADY_USED, "each parcel needs its own carrier and waybill number"
        )
    shipped: Counter[int] = Counter()
    for parcel in parcels:
        for item in parcel.lines:
            shipped[item.line_no] += item.quantity
    lines = [
        line.model_copy(update={"shipped_quantity": line.shipped_quantity + shipped[line.line_no]})
        for line in order.lines
    ]
    first_no = len(order.parcels) + 1
    new_parcels = [
        Parcel(
            parcel_no=first_no + i,
            carrier_code=p.carrier_code,
            waybill_no=p.waybill_no,
            lines=list(p.lines),
            shipped_at=now,
        )
        for i, p in enumerate(parcels)
    ]
    state = (
        DispatchState.SHIPPED
        if all(line.remaining == 0 for line in lines)
        else DispatchState.PARTIALLY_SHIPPED
    )
    recorder = _Recorder(order, now)
    recorder.record(
        DispatchShipped,
        {"state": state, "lines": lines, "parcels": [*order.parcels, *new_parcels]},
        parcels=new_parcels,
        lines=lines,
        aftersale_case_id=order.aftersale_case_id,
    )
    for request in [r for r in recorder.order.change_requests if r.status == ChangeStatus.OPEN]:
        _refuse_request(
            recorder, request, ChangeRefusal.ALREADY_SHIPPED, "shipped while the request was open"
        )
    return recorder.done()


def answer_change(
    order: DispatchOrder,
    *,
    request_id: str,
    decision: Literal["confirm", "refuse"],
    refusal: ChangeRefusal | None,
    text: str,
    now: datetime,
) -> Transition:
    request = next((r for r in order.change_requests if r.request_id == request_id), None)
    if request is None:
        raise DispatchError(SupplierErrorCode.NOT_FOUND, f"no change request {request_id}")
    if request.status != ChangeStatus.OPEN:
        raise DispatchError(SupplierErrorCode.CHANGE_REQUEST_NOT_OPEN, f"the request is {request.status}")
    recorder = _Recorder(order, now)
    if decision == "refuse":
        _refuse_request(recorder, request, refusal or ChangeRefusal.OTHER, text)
        return recorder.done()
    answered = request.model_copy(update={"status": ChangeStatus.CONFIRMED, "answered_at": now})
    changes: dict[str, object] = {"change_requests": _replace_request(order, answered)}
    match request.kind:
        case ChangeKind.CANCEL:
            changes["state"] = DispatchState.CANCELLED
            # Nothing else is left to change on a cancelled order.
            changes["change_requests"] = [
                r.model_copy(update={"status": ChangeStatus.SUPERSEDED, "answered_at": now})
                if r.status == ChangeStatus.OPEN
                else r
                for r in _replace_request(order, answered)
            ]
        case ChangeKind.ADDRESS:
            changes["receiver"] = request.new_receiver
        case ChangeKind.SKU:
            new_lines = request.new_lines or order.lines
            changes["lines"] = new_lines
            if order.state == DispatchState.PARTIALLY_SHIPPED and all(x.remaining == 0 for x in new_lines):
                changes["state"] = DispatchState.SHIPPED  # what was left to send was dropped
    recorder.record(DispatchChangeAnswered, changes, request=answered)
    return recorder.done()


def _replace_request(order: DispatchOrder, request: ChangeRequest) -> list[ChangeRequest]:
    return [request if r.request_id == request.request_id else r for r in order.change_requests]


def _refuse_request(recorder: _Recorder, request: ChangeRequest, refusal: ChangeRefusal, text: str) -> None:
    answered = request.model_copy(
        update={
            "status": ChangeStatus.REFUSED,
            "answered_at": recorder.now,
            "refusal": refusal,
            "refusal_text": text,
        }
    )
    recorder.record(
        DispatchChangeAnswered,
        {"change_requests": _replace_request(recorder.order, answered)},
        request=answered,
    )
    if refusal == ChangeRefusal.ALREADY_SHIPPED:
        recorder.record(InterceptionRequired, {}, kind=request.kind, parcels=recorder.order.parcels)


# --- Changes from the order (buyer or WeChat) ---------------------------------------------------


def _request_change(
    recorder: _Recorder,
    kind: ChangeKind,
    *,
    new_receiver: ShippingAddress | None = None,
    new_lines: list[DispatchLine] | None = None,
) -> None:
    """Open a request the supplier must answer; it supersedes an open one of the same kind (and a
    cancellation supersedes every other open request)."""
    order = recorder.order
    number = len(order.change_requests) + 1
    request = ChangeRequest(
        request_id=f"{order.dispatch_id}-r{number}",
        kind=kind,
        requested_at=recorder.now,
        new_receiver=new_receiver,
        new_lines=new_lines,
    )
    requests = [
        r.model_copy(update={"status": ChangeStatus.SUPERSEDED, "answered_at": recorder.now})
        if r.status == ChangeStatus.OPEN and (r.kind == kind or kind == ChangeKind.CANCEL)
        else r
        for r in order.change_requests
    ]
    recorder.record(DispatchChangeRequested, {"change_requests": [*requests, request]}, request=request)


def cancel_for_order(order: DispatchOrder, *, now: datetime) -> Transition:
    """The buyer or WeChat cancelled the order. Parcels already sent become an interception case;
    what is not shipped yet is cancelled, or (once accepted) the supplier is asked to stop it."""
    recorder = _Recorder(order, now)
    if order.state == DispatchState.OFFERED:
        recorder.record(DispatchCancelled, {"state": DispatchState.CANCELLED}, cause="order_cancelled")
        return recorder.done()
    if order.state in (DispatchState.PARTIALLY_SHIPPED, DispatchState.SHIPPED):
        recorder.record(InterceptionRequired, {}, kind=ChangeKind.CANCEL, parcels=order.parcels)
    if order.state in SHIPPING_STATES and order.open_request(ChangeKind.CANCEL) is None:
        _request_change(recorder, ChangeKind.CANCEL)
    return recorder.done()


def cancel_for_reroute(order: DispatchOrder, *, now: datetime) -> Transition:
    recorder = _Recorder(order, now)
    if order.state == DispatchState.OFFERED:
        recorder.record(DispatchCancelled, {"state": DispatchState.CANCELLED}, cause="rerouted")
    elif order.state == DispatchState.ACCEPTED and order.open_request(ChangeKind.CANCEL) is None:
        _request_change(recorder, ChangeKind.CANCEL)
    return recorder.done()


def change_receiver(order: DispatchOrder, *, receiver: ShippingAddress, now: datetime) -> Transition:
    recorder = _Recorder(order, now)
    open_address = order.open_request(ChangeKind.ADDRESS)
    current = open_address.new_receiver if open_address else order.receiver
    if (order.is_final and order.state != DispatchState.SHIPPED) or current == receiver:
        return recorder.done()
    if order.open_request(ChangeKind.CANCEL) is not None:
        return recorder.done()  # a cancellation is pending: nothing else to change
    if order.state == DispatchState.OFFERED:
        recorder.record(DispatchUpdated, {"receiver": receiver}, lines=order.lines, receiver=receiver)
        return recorder.done()
    if order.state in (DispatchState.PARTIALLY_SHIPPED, DispatchState.SHIPPED):  # goods already left
        recorder.record(InterceptionRequired, {}, kind=ChangeKind.ADDRESS, parcels=order.parcels)
    if order.state in SHIPPING_STATES:
        _request_change(recorder, ChangeKind.ADDRESS, new_receiver=receiver)
    return recorder.done()


def pending_lines(order: DispatchOrder) -> list[DispatchLine]:
    """The lines as last asked for: an open SKU request's new lines, else the order's own."""
    open_sku = order.open_request(ChangeKind.SKU)
    return open_sku.new_lines if open_sku and open_sku.new_lines is not None else order.lines


def change_lines(order: DispatchOrder, *, lines: list[DispatchLine], now: datetime) -> Transition:
    """The buyer changed SKUs (WeChat allows it before shipping); `lines` are this supplier's new lines."""
    return _ask_for_lines(order, lines, now=now, goods_left_are_wrong=True)


def _ask_for_lines(
    order: DispatchOrder, lines: list[DispatchLine], *, now: datetime, goods_left_are_wrong: bool
) -> Transition:
    """Apply new lines while offered, else ask the supplier; when `goods_left_are_wrong`, parcels
    already sent carry the old lines and become an interception case."""
    recorder = _Recorder(order, now)
    current = pending_lines(order)
    if (order.is_final and order.state != DispatchState.SHIPPED) or current == lines:
        return recorder.done()
    if order.open_request(ChangeKind.CANCEL) is not None:
        return recorder.done()  # a cancellation is pending: nothing else to change
    if order.state == DispatchState.OFFERED:
        recorder.record(DispatchUpdated, {"lines": lines}, lines=lines, receiver=order.receiver)
        return recorder.done()
    if goods_left_are_wrong and order.state in (DispatchState.PARTIALLY_SHIPPED, DispatchState.SHIPPED):
        recorder.record(InterceptionRequired, {}, kind=ChangeKind.SKU, parcels=order.parcels)
    if order.state in SHIPPING_STATES:
        _request_change(recorder, ChangeKind.SKU, new_lines=lines)
    return recorder.done()


# --- After-sale instructions ----------------------------------------------------------------------


def instruct(order: DispatchOrder, instruction: AftersaleInstruction, *, now: datetime) -> Transition:
    """Put an after-sale instruction in front of the supplier (once per case and kind; a newer one of
    the same case and kind, e.g. with the buyer's return waybill, replaces it)."""
    recorder = _Recorder(order, now)
    current = next(
        (
            i
            for i in order.aftersale_instructions
            if (i.case_id, i.kind) == (instruction.case_id, instruction.kind)
        ),
        None,
    )
    if current is not None and (current.done_at is not None or _same_instruction(current, instruction)):
        return recorder.done()
    kept = [i for i in order.aftersale_instructions if i is not current]
    recorder.record(
        DispatchAftersaleInstructed, {"aftersale_instructions": [*kept, instruction]}, instruction=instruction
    )
    return recorder.done()


def _same_instruction(a: AftersaleInstruction, b: AftersaleInstruction) -> bool:
    return (a.lines, a.waybills, a.return_address, a.return_waybill) == (
        b.lines,
        b.waybills,
        b.return_address,
        b.return_waybill,
    )


def confirm_return(order: DispatchOrder, *, case_id: str, condition: str, now: datetime) -> Transition:
    """The supplier received the goods of an after-sale case back."""
    instruction = next(
        (
            i
            for i in order.aftersale_instructions
            if i.case_id == case_id and i.kind == AftersaleInstructionKind.RETURN_EXPECTED
        ),
        None,
    )
    if instruction is None:
        raise DispatchError(SupplierErrorCode.NOT_FOUND, f"no return expected for case {case_id}")
    if instruction.done_at is not None:
        raise DispatchError(SupplierErrorCode.RETURN_ALREADY_CONFIRMED, "this return was already confirmed")
    done = instruction.model_copy(update={"done_at": now, "condition": condition})
    instructions = [done if i is instruction else i for i in order.aftersale_instructions]
    recorder = _Recorder(order, now)
    recorder.record(SupplierReturnReceived, {"aftersale_instructions": instructions}, instruction=done)
    return recorder.done()


def reduce_lines(order: DispatchOrder, *, units: dict[tuple[str, str], int], now: datetime) -> Transition:
    """After-sale refund before shipping: these units are not to be sent. Only units not shipped yet
    are dropped (a refund covers them first, as WeChat counts it), so parcels already sent stay with the
    buyer. The whole dispatch order is cancelled (or a cancellation asked) when nothing of it was
    shipped or is left to send; otherwise its lines shrink (asked of the supplier once accepted)."""
    remaining: list[DispatchLine] = []
    for line in pending_lines(order):  # a reduction still asked of the supplier stands: this adds to it
        drop = min(units.get((line.product_id, line.sku_id), 0), line.remaining)
        if line.quantity - drop > 0:
            remaining.append(line.model_copy(update={"quantity": line.quantity - drop}))
    if not remaining:
        return cancel_for_order(order, now=now)
    return _ask_for_lines(order, remaining, now=now, goods_left_are_wrong=False)
