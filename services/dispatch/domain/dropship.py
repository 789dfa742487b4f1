"""The WeChat drop-ship (代发) mirror of a dispatch order: what WeChat should hold, what to ask it next.

Pure: every function takes the mirror record and facts (a dispatch event, WeChat's answer, the time)
and returns the new record or a step; nothing here calls WeChat or the database.

For a shop that turned the mirror on (`lvyue shop dropship --on`), each dispatch order of a supplier
with a WeChat supplier appid is assigned to that supplier inside WeChat (`dropship/assign`), so the
supplier can print WeChat e-waybills for it. Units later taken away from the supplier (the dispatch
order cancelled or rejected, fewer units after a change) are cancelled there (`dropship/cancel`);
units a change adds are assigned as one more drop-ship order.

`wanted()` is what WeChat should hold for the supplier (the dispatch order's units; once it is closed,
only what was shipped), `held()` what it holds (the units of our drop-ship orders); `next_step`
compares them. WeChat's assign is not idempotent (a second call for the same units fails or mints a
second drop-ship order), so every call is recorded as `pending` before it is made, and a pending call
found again (a timeout, a crash, a redelivered event) is reconciled before anything is asked again:
WeChat is asked what exists. A refusal for good is recorded (`MirrorFailure`) and not asked again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.events.dispatch import (
    AnyMirrorEvent,
    ChangeKind,
    ChangeStatus,
    DispatchCancelled,
    DispatchChangeAnswered,
    DispatchEvent,
    DispatchLine,
    DispatchMirrorCancelled,
    DispatchMirrored,
    DispatchMirrorFailed,
    DispatchOffered,
    DispatchRejected,
    DispatchShipped,
    DispatchState,
    DispatchUpdated,
    MirrorCall,
    MirrorFailureReason,
    MirrorLine,
)
from shared.wechat.api import DropshipErrCode, ErrCode

Units = dict[tuple[str, str], int]  # (product_id a.k.a. spu_id, sku_id) -> units

_EVENT_NAMESPACE = uuid.UUID("2b7f6c1e-8a53-4c1f-9e0d-5d7b3f1a9c42")


def units_of(lines: Iterable[MirrorLine]) -> Units:
    units: Units = {}
    for line in lines:
        key = (line.product_id, line.sku_id)
        units[key] = units.get(key, 0) + line.count
    return units


def lines_of(units: Mapping[tuple[str, str], int]) -> list[MirrorLine]:
    """The positive entries, in a stable order (WeChat's request lists them so)."""
    return [
        MirrorLine(product_id=product_id, sku_id=sku_id, count=count)
        for (product_id, sku_id), count in sorted(units.items())
        if count > 0
    ]


def _dispatch_units(lines: Iterable[DispatchLine], *, shipped: bool) -> list[MirrorLine]:
    units: Units = {}
    for line in lines:
        key = (line.product_id, line.sku_id)
        units[key] = units.get(key, 0) + (line.shipped_quantity if shipped else line.quantity)
    return lines_of(units)


class MirrorFailure(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    call: MirrorCall
    reason: MirrorFailureReason
    errcode: int
    errmsg: str = ""
    at: datetime


class MirroredDsOrder(BaseModel):
    """One WeChat drop-ship order of this dispatch order: the units it holds now."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ds_order_id: str
    lines: list[MirrorLine]
    assigned_at: datetime
    cancel_refused: MirrorFailure | None = None  # WeChat would not cancel units of it: not asked again


class PendingCall(BaseModel):
    """A call recorded before it was made; until its answer is recorded, its outcome is unknown."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    call: MirrorCall
    lines: list[MirrorLine]
    ds_order_id: str | None = None  # cancel: of which drop-ship order
    started_at: datetime


class DropshipMirror(BaseModel):
    """The mirror record of one dispatch order (insert-only versions, keyed by `dispatch_id`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dispatch_id: str
    order_id: str
    shop_id: str
    supplier_id: str
    supplier_appid: str
    revision: int = Field(default=0, ge=0, description="bumped by every change; event ids derive from it")
    dispatch_version: int = Field(default=0, ge=0, description="the newest dispatch order version applied")
    lines: list[MirrorLine] = Field(default_factory=list, description="the dispatch order's units")
    shipped: list[MirrorLine] = Field(default_factory=list, description="of which shipped")
    closed: bool = False  # cancelled or rejected: only the shipped units stay with the supplier
    ds_orders: list[MirroredDsOrder] = Field(default_factory=list)
    pending: PendingCall | None = None
    assign_refused: MirrorFailure | None = None
    # Events of changes recorded here, published after the record is written, then cleared.
    outbox: list[AnyMirrorEvent] = Field(default_factory=list)

    def wanted(self) -> Units:
        return units_of(self.shipped if self.closed else self.lines)

    def held(self) -> Units:
        held: Units = {}
        for ds_order in self.ds_orders:
            for key, count in units_of(ds_order.lines).items():
                held[key] = held.get(key, 0) + count
        return held

    @property
    def ds_order_id(self) -> str | None:
        """The newest drop-ship order that still holds units (what the supplier looks for in WeChat)."""
        live = [d.ds_order_id for d in self.ds_orders if d.lines]
        return live[-1] if live else None

    def known_ds_order_ids(self) -> set[str]:
        return {d.ds_order_id for d in self.ds_orders}


# ---- dispatch events ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DispatchFacts:
    """What a dispatch event says about the units the supplier has: new lines, or that it closed."""

    version: int
    lines: list[DispatchLine] | None = None
    closed: bool = False


def facts_of(event: DispatchEvent) -> DispatchFacts | None:
    """None for events that do not change which units the supplier has (accepted, change requested,
    after-sale instructions, ...)."""
    match event:
        case DispatchOffered() | DispatchUpdated() | DispatchShipped():
            return DispatchFacts(event.version, lines=list(event.lines))
        case DispatchCancelled() | DispatchRejected():
            return DispatchFacts(event.version, closed=True)
        case DispatchChangeAnswered():
            if event.state == DispatchState.CANCELLED:
                return DispatchFacts(event.version, closed=True)
            request = event.request
            if (
                request.kind == ChangeKind.SKU
                and request.status == ChangeStatus.CONFIRMED
                and request.new_lines is not None
            ):
                return DispatchFacts(event.version, lines=list(request.new_lines))
            return None
    return None


def is_replacement(event: DispatchOffered) -> bool:
    """A re-ship for an after-sale case: not units of the WeChat order's own fulfilment, not mirrored."""
    return event.aftersale_case_id is not None


def start(event: DispatchOffered, *, supplier_appid: str) -> DropshipMirror:
    mirror = DropshipMirror(
        dispatch_id=event.dispatch_id,
        order_id=event.order_id,
        shop_id=event.shop_id,
        supplier_id=event.supplier_id,
        supplier_appid=supplier_appid,
    )
    return apply(mirror, DispatchFacts(event.version, lines=list(event.lines)))


def closed_unmirrored(event: DispatchEvent, *, supplier_appid: str) -> DropshipMirror:
    """A dispatch order that closed before we saw it offered (events replayed out of order): recorded
    closed, so the offer arriving later assigns nothing."""
    return DropshipMirror(
        dispatch_id=event.dispatch_id,
        order_id=event.order_id,
        shop_id=event.shop_id,
        supplier_id=event.supplier_id,
        supplier_appid=supplier_appid,
        revision=1,
        dispatch_version=event.version,
        closed=True,
    )


def apply(mirror: DropshipMirror, facts: DispatchFacts) -> DropshipMirror:
    """The dispatch order's newer state; a duplicate or an older version changes nothing."""
    if facts.version <= mirror.dispatch_version:
        return mirror
    changes: dict[str, object] = {
        "dispatch_version": facts.version,
        "revision": mirror.revision + 1,
        "closed": mirror.closed or facts.closed,
    }
    if facts.lines is not None:
        changes["lines"] = _dispatch_units(facts.lines, shipped=False)
        changes["shipped"] = _dispatch_units(facts.lines, shipped=True)
    return mirror.model_copy(update=changes)


# ---- what to ask WeChat next ----------------------------------------------------------------------


@dataclass(frozen=True)
class InSync:
    pass


@dataclass(frozen=True)
class Reconcile:
    """A call's outcome is unknown: find out from WeChat before asking anything again."""

    pending: PendingCall


@dataclass(frozen=True)
class Assign:
    lines: list[MirrorLine]


@dataclass(frozen=True)
class Cancel:
    ds_order_id: str
    lines: list[MirrorLine]


Step = InSync | Reconcile | Assign | Cancel


def next_step(mirror: DropshipMirror) -> Step:
    """Units are taken back before new ones are given (a SKU swap frees the old units first)."""
    if mirror.pending is not None:
        return Reconcile(mirror.pending)
    wanted, held = mirror.wanted(), mirror.held()
    excess = {key: count - wanted.get(key, 0) for key, count in held.items() if count > wanted.get(key, 0)}
    for ds_order in reversed(mirror.ds_orders):  # the newest first
        if ds_order.cancel_refused is not None:
            continue
        take = {key: min(count, excess.get(key, 0)) for key, count in units_of(ds_order.lines).items()}
        if any(count > 0 for count in take.values()):
            return Cancel(ds_order.ds_order_id, lines_of(take))
    missing = {key: count - held.get(key, 0) for key, count in wanted.items() if count > held.get(key, 0)}
    if missing and not mirror.closed and mirror.assign_refused is None:
        return Assign(lines_of(missing))
    return InSync()


def begin(mirror: DropshipMirror, step: Assign | Cancel, *, now: datetime) -> DropshipMirror:
    """Record the call about to be made (written before it is made)."""
    pending = (
        PendingCall(call=MirrorCall.ASSIGN, lines=step.lines, started_at=now)
        if isinstance(step, Assign)
        else PendingCall(
            call=MirrorCall.CANCEL, lines=step.lines, ds_order_id=step.ds_order_id, started_at=now
        )
    )
    return mirror.model_copy(update={"pending": pending, "revision": mirror.revision + 1})


# ---- WeChat's answers -------------------------------------------------------------------------------


class Verdict(StrEnum):
    DONE = "done"
    REFUSED = "refused"  # for good, for these units: recorded and not asked again
    BLOCKED = "blocked"  # the set-up (link, permission, drop-ship management): not done; replay once fixed
    UNCLEAR = "unclear"  # may or may not have happened: reconciled before anything is asked again


SETUP_ERRCODES = frozenset(
    {
        DropshipErrCode.NOT_LINKED,
        DropshipErrCode.DROPSHIP_NOT_ENABLED,
        ErrCode.NO_PERMISSION,
        ErrCode.IP_NOT_WHITELISTED,
        ErrCode.INVALID_CREDENTIAL,
        ErrCode.TOKEN_MISSING,
        ErrCode.TOKEN_EXPIRED,
        45035,  # IP not whitelisted (another code for it)
    }
)
UNCLEAR_ERRCODES = frozenset({ErrCode.SYSTEM_BUSY, ErrCode.MINUTE_QUOTA, ErrCode.DAILY_QUOTA})

_REASONS: dict[int, MirrorFailureReason] = {
    DropshipErrCode.ORDER_NOT_AWAITING_SHIPMENT: MirrorFailureReason.ORDER_NOT_AWAITING_SHIPMENT,
    DropshipErrCode.ORDER_NOT_DROPSHIP: MirrorFailureReason.ORDER_NOT_DROPSHIP,
    DropshipErrCode.ORDER_ALL_SHIPPED: MirrorFailureReason.ALREADY_SHIPPED,
    DropshipErrCode.PRODUCT_SHIPPED: MirrorFailureReason.ALREADY_SHIPPED,
    DropshipErrCode.DS_ORDER_CONFLICT: MirrorFailureReason.DS_ORDER_CONFLICT,
    ErrCode.INVALID_ARGS: MirrorFailureReason.INVALID_REQUEST,
    ErrCode.INVALID_JSON_TYPES: MirrorFailureReason.INVALID_REQUEST,
}


def judge(errcode: int) -> Verdict:
    if errcode == ErrCode.OK:
        return Verdict.DONE
    if errcode in UNCLEAR_ERRCODES:
        return Verdict.UNCLEAR
    if errcode in SETUP_ERRCODES:
        return Verdict.BLOCKED
    return Verdict.REFUSED


def reason_for(errcode: int) -> MirrorFailureReason:
    return _REASONS.get(errcode, MirrorFailureReason.REFUSED)


def _event_id(mirror: DropshipMirror) -> uuid.UUID:
    """One event per revision: a change recomputed after a crash carries the same id."""
    return uuid.uuid5(_EVENT_NAMESPACE, f"{mirror.dispatch_id}#{mirror.revision}")


def _envelope(mirror: DropshipMirror, now: datetime) -> dict[str, Any]:
    return {
        "event_id": _event_id(mirror),
        "occurred_at": now,
        "order_id": mirror.order_id,
        "dispatch_id": mirror.dispatch_id,
        "shop_id": mirror.shop_id,
        "supplier_id": mirror.supplier_id,
        "supplier_appid": mirror.supplier_appid,
        "dispatch_version": mirror.dispatch_version,
    }


def _pending(mirror: DropshipMirror, call: MirrorCall) -> PendingCall:
    if mirror.pending is None or mirror.pending.call != call:
        raise ValueError(f"{mirror.dispatch_id}: no pending {call} to record an answer for")
    return mirror.pending


def assigned(mirror: DropshipMirror, ds_order_id: str, *, now: datetime) -> DropshipMirror:
    """WeChat took the pending assignment as drop-ship order `ds_order_id`."""
    pending = _pending(mirror, MirrorCall.ASSIGN)
    ds_order = MirroredDsOrder(ds_order_id=ds_order_id, lines=pending.lines, assigned_at=now)
    done = mirror.model_copy(
        update={"ds_orders": [*mirror.ds_orders, ds_order], "pending": None, "revision": mirror.revision + 1}
    )
    event = DispatchMirrored(**_envelope(done, now), ds_order_id=ds_order_id, lines=pending.lines)
    return done.model_copy(update={"outbox": [*done.outbox, event]})


def cancelled(mirror: DropshipMirror, *, now: datetime) -> DropshipMirror:
    """WeChat cancelled the pending units of their drop-ship order."""
    pending = _pending(mirror, MirrorCall.CANCEL)
    taken = units_of(pending.lines)
    ds_orders, remaining = [], []
    for ds_order in mirror.ds_orders:
        if ds_order.ds_order_id == pending.ds_order_id:
            left = units_of(ds_order.lines)
            remaining = lines_of({key: count - taken.get(key, 0) for key, count in left.items()})
            ds_order = ds_order.model_copy(update={"lines": remaining})
        ds_orders.append(ds_order)
    done = mirror.model_copy(
        update={"ds_orders": ds_orders, "pending": None, "revision": mirror.revision + 1}
    )
    event = DispatchMirrorCancelled(
        **_envelope(done, now),
        ds_order_id=pending.ds_order_id or "",
        lines=pending.lines,
        remaining=remaining,
    )
    return done.model_copy(update={"outbox": [*done.outbox, event]})


def refused(mirror: DropshipMirror, errcode: int, errmsg: str, *, now: datetime) -> DropshipMirror:
    """WeChat refused the pending call for good: recorded, and these units are not asked for again."""
    if mirror.pending is None:
        raise ValueError(f"{mirror.dispatch_id}: no pending call to record a refusal for")
    pending = mirror.pending
    failure = MirrorFailure(
        call=pending.call, reason=reason_for(errcode), errcode=errcode, errmsg=errmsg[:500], at=now
    )
    changes: dict[str, object] = {"pending": None, "revision": mirror.revision + 1}
    if pending.call == MirrorCall.ASSIGN:
        changes["assign_refused"] = failure
    else:
        changes["ds_orders"] = [
            d.model_copy(update={"cancel_refused": failure}) if d.ds_order_id == pending.ds_order_id else d
            for d in mirror.ds_orders
        ]
    done = mirror.model_copy(update=changes)
    event = DispatchMirrorFailed(
        **_envelope(done, now),
        call=pending.call,
        reason=failure.reason,
        errcode=errcode,
        errmsg=failure.errmsg,
        ds_order_id=pending.ds_order_id,
        lines=pending.lines,
    )
    return done.model_copy(update={"outbox": [*done.outbox, event]})


def not_made(mirror: DropshipMirror) -> DropshipMirror:
    """The pending call did not happen (WeChat says so, or refused it before acting): forget it, so the
    next step asks again."""
    if mirror.pending is None:
        return mirror
    return mirror.model_copy(update={"pending": None, "revision": mirror.revision + 1})


def reconcile_assign(
    mirror: DropshipMirror, found: Mapping[str, Units], *, known: set[str], now: datetime
) -> DropshipMirror:
    """`found`: the drop-ship orders WeChat has for this order and supplier (id -> units). One that no
    record knows and that holds exactly the pending units is the pending assignment's: adopted.
    None: the assignment never happened, and is asked for again."""
    pending = _pending(mirror, MirrorCall.ASSIGN)
    target = units_of(pending.lines)
    for ds_order_id in sorted(found):
        if ds_order_id not in known and found[ds_order_id] == target:
            return assigned(mirror, ds_order_id, now=now)
    return not_made(mirror)


def reconcile_cancel(mirror: DropshipMirror, current: Units | None, *, now: datetime) -> DropshipMirror:
    """`current`: the units the drop-ship order holds in WeChat now (None: WeChat no longer has it).
    If the pending units are gone, the cancel happened; otherwise it is asked for again."""
    pending = _pending(mirror, MirrorCall.CANCEL)
    before = next((units_of(d.lines) for d in mirror.ds_orders if d.ds_order_id == pending.ds_order_id), {})
    taken = units_of(pending.lines)
    if current is None or all(
        current.get(key, 0) <= count - taken.get(key, 0) for key, count in before.items()
    ):
        return cancelled(mirror, now=now)
    return not_made(mirror)


def flushed(mirror: DropshipMirror) -> DropshipMirror:
    """The outbox's events are published."""
    if not mirror.outbox:
        return mirror
    return mirror.model_copy(update={"outbox": [], "revision": mirror.revision + 1})
