"""The order plan: how one WeChat order is split into dispatch orders, and what each order event
does to them. Pure: every decision takes the plan, its dispatch orders, the shop's routes and the
time, and returns what to store and publish.

Idempotent and order-tolerant: an event already applied (same event id) or older than the plan
(WeChat `update_time` below the plan's version) changes nothing; a cancellation that arrives before
the payment leaves a cancelled plan, so the late payment dispatches nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from services.dispatch.domain import dispatch_order as dispatch
from services.dispatch.domain.dispatch_order import DispatchOrder, Transition
from services.dispatch.domain.routing import Held, LineToRoute, Route, Routed, route_lines
from shared.events.base import Event
from shared.events.dispatch import (
    DispatchLine,
    DispatchState,
    HoldReason,
    OrderHeld,
    OrderHoldReleased,
    ShippingAddress,
)
from shared.events.orders import (
    OrderAddressChanged,
    OrderCancelled,
    OrderLine,
    OrderPaid,
    OrderSkuChanged,
    Receiver,
)

APPLIED_EVENTS_KEPT = 50


_EVENT_NAMESPACE = uuid.UUID("0b7f5d3e-8c1a-4f8e-a6d2-3c9e1f4b7a20")


def _plan_event_id(plan: OrderPlan, what: str) -> uuid.UUID:
    """Deterministic: the same decision recomputed after a crash publishes the same event id."""
    return uuid.uuid5(_EVENT_NAMESPACE, f"{plan.order_id}#{len(plan.dispatch_ids)}#{what}")


class PlanStatus(StrEnum):
    DISPATCHED = "dispatched"  # every line is with a supplier
    HELD = "held"  # some lines wait for a route
    CANCELLED = "cancelled"


class OrderPlan(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    order_id: str
    shop_id: str
    version: int = Field(description="WeChat update_time of the newest order event applied")
    status: PlanStatus
    lines: list[DispatchLine] = Field(default_factory=list)
    receiver: ShippingAddress | None = None
    ship_by: datetime | None = None
    paid_at: datetime | None = None
    hold_reason: HoldReason | None = None
    held_line_nos: list[int] = Field(default_factory=list)
    held_since: datetime | None = None
    dispatch_ids: list[str] = Field(default_factory=list)
    # line number (as text: a document key) -> suppliers that rejected it
    rejected_by: dict[str, list[str]] = Field(default_factory=dict)
    applied_event_ids: list[str] = Field(default_factory=list)

    def next_dispatch_id(self) -> str:
        return f"{self.order_id}-{len(self.dispatch_ids) + 1}"

    def seen(self, event: Event) -> bool:
        return str(event.event_id) in self.applied_event_ids

    def remember(self, event: Event, **changes: object) -> OrderPlan:
        applied = [*self.applied_event_ids, str(event.event_id)][-APPLIED_EVENTS_KEPT:]
        return self.model_copy(update={**changes, "applied_event_ids": applied})


@dataclass(frozen=True)
class PlanOutcome:
    plan: OrderPlan | None  # None: nothing to store
    transitions: list[Transition] = field(default_factory=list)  # new and changed dispatch orders
    plan_events: list[Event] = field(default_factory=list)

    @property
    def dispatch_events(self) -> list[Event]:
        return [e for t in self.transitions for e in t.events]


@dataclass(frozen=True)
class RoutingContext:
    routes: Sequence[Route]
    active_suppliers: set[str]


def shipping_address(receiver: Receiver) -> ShippingAddress:
    """The receiver as a supplier may see it: WeChat's virtual number when the buyer chose privacy."""
    return ShippingAddress(
        name=receiver.name,
        phone=receiver.virtual_phone or receiver.phone,
        province=receiver.province,
        city=receiver.city,
        county=receiver.county,
        detail=receiver.detail,
        postal_code=receiver.postal_code,
    )


def dispatch_lines(lines: Sequence[OrderLine]) -> list[DispatchLine]:
    return [
        DispatchLine(
            line_no=number,
            product_id=line.product_id,
            sku_id=line.sku_id,
            sku_code=line.sku_code,
            title=line.title,
            sku_attrs="; ".join(f"{key}: {value}" for key, value in line.sku_attrs),
            quantity=line.quantity,
        )
        for number, line in enumerate(lines)
        if line.quantity > 0
    ]


def _to_route(lines: Sequence[DispatchLine]) -> list[LineToRoute]:
    return [
        LineToRoute(line.line_no, line.product_id, line.sku_id, line.sku_code, line.quantity)
        for line in lines
    ]


def _excluded(plan: OrderPlan) -> dict[int, list[str]]:
    return {int(line_no): suppliers for line_no, suppliers in plan.rejected_by.items()}


def _allocations_for(supplier: str, routes: Sequence[Route], taken: Mapping[str, int]) -> dict[str, int]:
    return {
        r.route_id: taken[r.route_id] for r in routes if r.supplier_id == supplier and r.route_id in taken
    }


def _dispatch_lines_to_routes(
    plan: OrderPlan,
    line_nos: Sequence[int],
    context: RoutingContext,
    now: datetime,
    *,
    replaces: str | None = None,
) -> tuple[OrderPlan, list[Transition], list[Event]]:
    """Route these lines: new dispatch orders, or the plan held (nothing of these lines dispatched)."""
    chosen = [line for line in plan.lines if line.line_no in set(line_nos)]
    decision = route_lines(
        _to_route(chosen), context.routes, active_suppliers=context.active_suppliers, excluded=_excluded(plan)
    )
    if isinstance(decision, Held):
        held, events = _hold(plan, decision, line_nos, now)
        return held, [], events
    return _offer_routed(plan, decision, decision.lines_by_supplier, context, now, replaces=replaces)


def _hold(
    plan: OrderPlan, decision: Held, line_nos: Sequence[int], now: datetime
) -> tuple[OrderPlan, list[Event]]:
    unchanged = (
        plan.status == PlanStatus.HELD
        and plan.hold_reason == decision.reason
        and plan.held_line_nos == sorted(line_nos)
    )
    held = plan.model_copy(
        update={
            "status": PlanStatus.HELD,
            "hold_reason": decision.reason,
            "held_line_nos": sorted(line_nos),
            "held_since": plan.held_since if plan.status == PlanStatus.HELD else now,
        }
    )
    if unchanged:
        return held, []
    event = OrderHeld(
        event_id=_plan_event_id(plan, f"held:{decision.reason}:{sorted(line_nos)}"),
        order_id=plan.order_id,
        occurred_at=now,
        shop_id=plan.shop_id,
        reason=decision.reason,
        line_nos=decision.line_nos,
    )
    return held, [event]


def _offer_each(
    plan: OrderPlan,
    lines_by_supplier: Mapping[str, Sequence[int]],
    lines: Sequence[DispatchLine],
    *,
    receiver: ShippingAddress,
    ship_by: datetime | None,
    paid_at: datetime,
    now: datetime,
    allocations_of: Callable[[str], dict[str, int]] | None = None,
    replaces_dispatch_id: str | None = None,
    aftersale_case_id: str | None = None,
) -> tuple[OrderPlan, list[Transition]]:
    """One new dispatch order per supplier with its lines (by line number), numbered in the plan."""
    by_line = {line.line_no: line for line in lines}
    transitions: list[Transition] = []
    for supplier_id, numbers in sorted(lines_by_supplier.items()):
        dispatch_id = plan.next_dispatch_id()
        transitions.append(
            dispatch.offer(
                dispatch_id=dispatch_id,
                order_id=plan.order_id,
                shop_id=plan.shop_id,
                supplier_id=supplier_id,
                lines=[by_line[n] for n in numbers],
                receiver=receiver,
                ship_by=ship_by,
                paid_at=paid_at,
                now=now,
                allocations=allocations_of(supplier_id) if allocations_of else None,
                replaces_dispatch_id=replaces_dispatch_id,
                aftersale_case_id=aftersale_case_id,
            )
        )
        plan = plan.model_copy(update={"dispatch_ids": [*plan.dispatch_ids, dispatch_id]})
    return plan, transitions


def _offer_routed(
    plan: OrderPlan,
    decision: Routed,
    lines_by_supplier: Mapping[str, Sequence[int]],
    context: RoutingContext,
    now: datetime,
    *,
    replaces: str | None = None,
) -> tuple[OrderPlan, list[Transition], list[Event]]:
    """New dispatch orders for these suppliers' lines (of a routing decision); any hold is released.
    `replaces`: the rejected dispatch order these take over (shown to the fallback supplier)."""
    assert plan.receiver is not None and plan.paid_at is not None  # a plan with lines was paid
    plan, transitions = _offer_each(
        plan,
        lines_by_supplier,
        plan.lines,
        receiver=plan.receiver,
        ship_by=plan.ship_by,
        paid_at=plan.paid_at,
        now=now,
        allocations_of=lambda supplier: _allocations_for(supplier, context.routes, decision.allocations),
        replaces_dispatch_id=replaces,
    )
    released: list[Event] = []
    if plan.status == PlanStatus.HELD:
        released.append(
            OrderHoldReleased(
                event_id=_plan_event_id(plan, "released"),
                order_id=plan.order_id,
                occurred_at=now,
                shop_id=plan.shop_id,
                dispatch_ids=[t.order.dispatch_id for t in transitions],
            )
        )
    plan = plan.model_copy(
        update={"status": PlanStatus.DISPATCHED, "hold_reason": None, "held_line_nos": [], "held_since": None}
    )
    return plan, transitions, released


def on_paid(plan: OrderPlan | None, event: OrderPaid, context: RoutingContext, now: datetime) -> PlanOutcome:
    if plan is not None:
        return PlanOutcome(None)  # a duplicate, or cancelled before the payment was seen
    lines = dispatch_lines(event.lines)
    new_plan = OrderPlan(
        order_id=event.order_id,
        shop_id=event.shop_id,
        version=event.version,
        status=PlanStatus.DISPATCHED,
        lines=lines,
        receiver=shipping_address(event.receiver),
        ship_by=event.ship_by,
        paid_at=event.paid_at,
    ).remember(event)
    if not lines:
        return PlanOutcome(new_plan)
    new_plan, transitions, events = _dispatch_lines_to_routes(
        new_plan, [line.line_no for line in lines], context, now
    )
    return PlanOutcome(new_plan, transitions, events)


def _stale(plan: OrderPlan, event: OrderCancelled | OrderAddressChanged | OrderSkuChanged) -> bool:
    return plan.seen(event) or event.version < plan.version


def on_cancelled(
    plan: OrderPlan | None, orders: Sequence[DispatchOrder], event: OrderCancelled, now: datetime
) -> PlanOutcome:
    if plan is None:  # cancelled before we saw it paid: remember, so a late payment does nothing
        tombstone = OrderPlan(
            order_id=event.order_id, shop_id=event.shop_id, version=event.version, status=PlanStatus.CANCELLED
        )
        return PlanOutcome(tombstone.remember(event))
    if _stale(plan, event) or plan.status == PlanStatus.CANCELLED:
        return PlanOutcome(None)
    transitions = [dispatch.cancel_for_order(order, now=now) for order in orders]
    cancelled = plan.remember(
        event, status=PlanStatus.CANCELLED, version=event.version, hold_reason=None, held_line_nos=[]
    )
    return PlanOutcome(cancelled, [t for t in transitions if t.changed])


def on_address_changed(
    plan: OrderPlan | None, orders: Sequence[DispatchOrder], event: OrderAddressChanged, now: datetime
) -> PlanOutcome:
    if plan is None or _stale(plan, event) or plan.status == PlanStatus.CANCELLED:
        return PlanOutcome(None)
    receiver = shipping_address(event.receiver)
    transitions = [dispatch.change_receiver(order, receiver=receiver, now=now) for order in orders]
    updated = plan.remember(event, receiver=receiver, version=event.version)
    return PlanOutcome(updated, [t for t in transitions if t.changed])


def on_sku_changed(
    plan: OrderPlan | None,
    orders: Sequence[DispatchOrder],
    event: OrderSkuChanged,
    context: RoutingContext,
    now: datetime,
) -> PlanOutcome:
    """Re-route the new lines: a supplier keeping lines gets them changed in place (or asked to, once
    accepted); a supplier losing all its lines is cancelled (or asked to cancel); new suppliers get
    new dispatch orders."""
    if plan is None or _stale(plan, event) or plan.status == PlanStatus.CANCELLED:
        return PlanOutcome(None)
    lines = dispatch_lines(event.lines)
    updated = plan.remember(event, lines=lines, version=event.version)
    live = [o for o in orders if o.state not in (DispatchState.CANCELLED, DispatchState.REJECTED)]
    context = _without_own_allocations(context, live)
    decision = route_lines(
        _to_route(lines), context.routes, active_suppliers=context.active_suppliers, excluded=_excluded(plan)
    )
    if isinstance(decision, Held):
        # The new SKUs cannot go anywhere: what suppliers have is outdated, so it is withdrawn (a
        # request once accepted) and the whole order waits for a route.
        held, hold_events = _hold(updated, decision, [line.line_no for line in lines], now)
        withdrawn = [dispatch.cancel_for_reroute(o, now=now) for o in live if not o.is_final]
        return PlanOutcome(held, [t for t in withdrawn if t.changed], hold_events)
    by_line = {line.line_no: line for line in lines}
    transitions: list[Transition] = []
    unplaced: dict[str, list[int]] = {}
    for supplier_id, numbers in decision.lines_by_supplier.items():
        current = [o for o in live if o.supplier_id == supplier_id and not o.is_final]
        if not current:
            unplaced[supplier_id] = numbers
            continue
        # One live dispatch order per supplier carries its lines; any other (after a fallback) is withdrawn.
        transitions.append(dispatch.change_lines(current[0], lines=[by_line[n] for n in numbers], now=now))
        transitions.extend(dispatch.cancel_for_reroute(extra, now=now) for extra in current[1:])
    for order in live:
        if order.supplier_id not in decision.lines_by_supplier and not order.is_final:
            transitions.append(dispatch.cancel_for_reroute(order, now=now))
    # New suppliers take their lines from the same decision, so stock caps are counted once.
    updated, created, events = _offer_routed(updated, decision, unplaced, context, now)
    transitions.extend(created)
    return PlanOutcome(updated, [t for t in transitions if t.changed], events)


def _without_own_allocations(context: RoutingContext, orders: Sequence[DispatchOrder]) -> RoutingContext:
    """The order is routed again as a whole: the units its own dispatch orders took are free for it."""
    own: dict[str, int] = {}
    for order in orders:
        for route_id, units in order.allocations.items():
            own[route_id] = own.get(route_id, 0) + units
    if not own:
        return context
    routes = [
        replace(r, allocated=max(0, r.allocated - own[r.route_id])) if r.route_id in own else r
        for r in context.routes
    ]
    return RoutingContext(routes=routes, active_suppliers=context.active_suppliers)


def on_dispatch_rejected(
    plan: OrderPlan, rejected: DispatchOrder, context: RoutingContext, now: datetime
) -> PlanOutcome:
    """The supplier said no: its lines go to the next route, or wait on hold. A rejected after-sale
    replacement goes to the next supplier as a replacement still (its own units, the same case)."""
    if rejected.aftersale_case_id is not None:
        return _replacement_elsewhere(plan, rejected, context, now)
    if plan.status == PlanStatus.CANCELLED:
        return PlanOutcome(None)
    rejected_by = dict(plan.rejected_by)
    for line in rejected.lines:
        key = str(line.line_no)
        rejected_by[key] = sorted({*rejected_by.get(key, []), rejected.supplier_id})
    updated = plan.model_copy(update={"rejected_by": rejected_by})
    line_nos = sorted({line.line_no for line in rejected.lines} | set(plan.held_line_nos))
    updated, transitions, events = _dispatch_lines_to_routes(
        updated, line_nos, context, now, replaces=rejected.dispatch_id
    )
    return PlanOutcome(updated, transitions, events)


def _replacement_elsewhere(
    plan: OrderPlan, rejected: DispatchOrder, context: RoutingContext, now: datetime
) -> PlanOutcome:
    """Another supplier for a rejected replacement, or nothing (the case waits for an operator)."""
    decision = route_lines(
        _to_route(rejected.lines),
        context.routes,
        active_suppliers=context.active_suppliers,
        excluded={line.line_no: [rejected.supplier_id] for line in rejected.lines},
    )
    if isinstance(decision, Held):
        return PlanOutcome(None)
    plan, transitions = _offer_each(
        plan,
        decision.lines_by_supplier,
        rejected.lines,
        receiver=rejected.receiver,
        ship_by=rejected.ship_by,
        paid_at=rejected.paid_at,
        now=now,
        replaces_dispatch_id=rejected.replaces_dispatch_id,
        aftersale_case_id=rejected.aftersale_case_id,
    )
    return PlanOutcome(plan, transitions)


def retry_hold(plan: OrderPlan, context: RoutingContext, now: datetime) -> PlanOutcome:
    """Routes changed: try the held lines again."""
    if plan.status != PlanStatus.HELD:
        return PlanOutcome(None)
    updated, transitions, events = _dispatch_lines_to_routes(plan, plan.held_line_nos, context, now)
    if not transitions:
        return PlanOutcome(None if updated == plan else updated, [], events)
    return PlanOutcome(updated, transitions, events)


def on_reship(
    plan: OrderPlan | None,
    orders: Sequence[DispatchOrder],
    *,
    case_id: str,
    replaces: str,
    units: Sequence[tuple[str, str, int]],
    replacement_sku_id: str | None,
    now: datetime,
) -> PlanOutcome:
    """An exchange or a re-ship: a replacement dispatch order for the supplier that shipped the
    original, linked to the after-sale case. Once per case."""
    original = next((o for o in orders if o.dispatch_id == replaces), None)
    if plan is None or original is None or any(o.aftersale_case_id == case_id for o in orders):
        return PlanOutcome(None)
    by_product = {(line.product_id, line.sku_id): line for line in original.lines}
    lines = [
        by_product[(product_id, sku_id)].model_copy(
            update={"quantity": count, "shipped_quantity": 0, "sku_id": replacement_sku_id or sku_id}
        )
        for product_id, sku_id, count in units
        if (product_id, sku_id) in by_product
    ]
    if not lines:
        return PlanOutcome(None)
    dispatch_id = plan.next_dispatch_id()
    offered = dispatch.offer(
        dispatch_id=dispatch_id,
        order_id=plan.order_id,
        shop_id=plan.shop_id,
        supplier_id=original.supplier_id,
        lines=lines,
        receiver=original.receiver,
        ship_by=None,
        paid_at=original.paid_at,
        now=now,
        replaces_dispatch_id=replaces,
        aftersale_case_id=case_id,
    )
    return PlanOutcome(plan.model_copy(update={"dispatch_ids": [*plan.dispatch_ids, dispatch_id]}), [offered])
