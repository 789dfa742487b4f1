"""The order plan: splitting a paid order, and what each later order event does to its dispatch orders."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.dispatch.domain import dispatch_order as dispatch
from services.dispatch.domain.dispatch_order import DispatchOrder
from services.dispatch.domain.plan import (
    APPLIED_EVENTS_KEPT,
    OrderPlan,
    PlanOutcome,
    PlanStatus,
    RoutingContext,
    dispatch_lines,
    on_address_changed,
    on_cancelled,
    on_dispatch_rejected,
    on_paid,
    on_reship,
    on_sku_changed,
    retry_hold,
    shipping_address,
)
from shared.events.dispatch import (
    ChangeKind,
    DispatchCancelled,
    DispatchChangeRequested,
    DispatchOffered,
    DispatchState,
    DispatchUpdated,
    HoldReason,
    InterceptionRequired,
    OrderHeld,
    OrderHoldReleased,
    RejectReason,
    ShippingAddress,
)
from tests.unit.dispatch.builders import (
    ADDRESS,
    NEW_RECEIVER,
    ORDER_ID,
    PAID_AT,
    PAID_VERSION,
    RECEIVER,
    SHIP_BY,
    SHOP,
    T0,
    address_changed,
    at,
    by_supplier,
    cancelled_event,
    context,
    event_types,
    oline,
    paid,
    parcel,
    route,
    sku_changed,
    sku_route,
    stored,
)

NEW_ADDRESS = shipping_address(NEW_RECEIVER)

# x and z go to supplier A, y to B; anything else falls to nobody.
SPLIT = context(sku_route("A", "p-x", "x"), sku_route("B", "p-y", "y"), sku_route("A", "p-z", "z"))


def place(*lines: str, ctx: RoutingContext = SPLIT) -> tuple[OrderPlan, list[DispatchOrder]]:
    """A paid order, one line per SKU (2 units each), routed by `ctx`."""
    outcome = on_paid(None, paid(*(oline(s, 2) for s in lines)), ctx, T0)
    return stored(outcome), [t.order for t in outcome.transitions]


def accept_all(orders: Sequence[DispatchOrder]) -> list[DispatchOrder]:
    return [dispatch.accept(o, estimated_ship_at=None, now=at(1)).order for o in orders]


def reject(order: DispatchOrder) -> DispatchOrder:
    return dispatch.reject(order, reason=RejectReason.OUT_OF_STOCK, text="", now=at(2)).order


def apply(orders: Sequence[DispatchOrder], outcome: PlanOutcome) -> list[DispatchOrder]:
    """The dispatch orders as the store would hold them after the outcome."""
    changed = {t.order.dispatch_id: t.order for t in outcome.transitions}
    kept = [changed.pop(o.dispatch_id, o) for o in orders]
    return [*kept, *changed.values()]


# --- helpers --------------------------------------------------------------------------------------


def test_shipping_address_prefers_wechat_s_virtual_number() -> None:
    assert shipping_address(RECEIVER) == ADDRESS
    assert shipping_address(NEW_RECEIVER).phone == "17000001111"
    assert shipping_address(NEW_RECEIVER) == ShippingAddress(
        name="张三", phone="17000001111", province="北京市", city="北京市", county="朝阳区", detail="2号"
    )


def test_dispatch_lines_keep_the_wechat_line_index_and_drop_zero_quantities() -> None:
    lines = dispatch_lines([oline("x", 0), oline("y", 3), oline("z", 0), oline("w", 1)])
    assert [(line.line_no, line.sku_id, line.quantity) for line in lines] == [(1, "y", 3), (3, "w", 1)]
    assert lines[0].product_id == "p-y" and lines[0].sku_code == "code-y" and lines[0].title == "item y"
    assert all(line.shipped_quantity == 0 for line in lines)


# --- on_paid ----------------------------------------------------------------------------------------


def test_paid_order_is_split_across_suppliers() -> None:
    event = paid(oline("x", 2), oline("y", 1), oline("z", 5))
    outcome = on_paid(None, event, SPLIT, T0)
    plan = stored(outcome)
    assert plan.status == PlanStatus.DISPATCHED
    assert plan.version == PAID_VERSION
    assert plan.dispatch_ids == [f"{ORDER_ID}-1", f"{ORDER_ID}-2"]
    assert plan.applied_event_ids == [str(event.event_id)]
    assert (plan.receiver, plan.ship_by, plan.paid_at) == (ADDRESS, SHIP_BY, PAID_AT)
    assert plan.hold_reason is None and plan.held_line_nos == [] and plan.held_since is None
    orders = by_supplier(outcome)
    assert orders["A"].dispatch_id == f"{ORDER_ID}-1"
    assert orders["B"].dispatch_id == f"{ORDER_ID}-2"
    assert [(line.line_no, line.sku_id, line.quantity) for line in orders["A"].lines] == [
        (0, "x", 2),
        (2, "z", 5),
    ]
    assert [(line.line_no, line.sku_id, line.quantity) for line in orders["B"].lines] == [(1, "y", 1)]
    for order in orders.values():
        assert order.state == DispatchState.OFFERED
        assert (order.ship_by, order.paid_at, order.receiver, order.created_at) == (
            SHIP_BY,
            PAID_AT,
            ADDRESS,
            T0,
        )
        assert (order.order_id, order.shop_id) == (ORDER_ID, SHOP)
    assert event_types(outcome.dispatch_events) == ["dispatch_offered", "dispatch_offered"]
    offered_events = [e for e in outcome.dispatch_events if isinstance(e, DispatchOffered)]
    assert [e.ship_by for e in offered_events] == [SHIP_BY, SHIP_BY]
    assert outcome.plan_events == []


def test_quantities_are_kept_over_the_split() -> None:
    event = paid(oline("x", 3), oline("y", 7), oline("z", 1), oline("x", 4))
    outcome = on_paid(None, event, SPLIT, T0)
    dispatched = sorted((line.line_no, line.quantity) for t in outcome.transitions for line in t.order.lines)
    assert dispatched == [(0, 3), (1, 7), (2, 1), (3, 4)]


def test_zero_quantity_lines_are_not_dispatched() -> None:
    outcome = on_paid(None, paid(oline("x", 0), oline("y", 2)), SPLIT, T0)
    orders = by_supplier(outcome)
    assert list(orders) == ["B"]
    assert [(line.line_no, line.quantity) for line in orders["B"].lines] == [(1, 2)]
    assert [line.line_no for line in stored(outcome).lines] == [1]


def test_an_order_with_nothing_to_ship_dispatches_nothing() -> None:
    outcome = on_paid(None, paid(oline("x", 0)), SPLIT, T0)
    plan = stored(outcome)
    assert plan.lines == [] and plan.dispatch_ids == []
    assert outcome.transitions == [] and outcome.plan_events == []


def test_an_unroutable_line_holds_the_whole_order() -> None:
    outcome = on_paid(None, paid(oline("x"), oline("nowhere"), oline("y")), SPLIT, at(1))
    plan = stored(outcome)
    assert outcome.transitions == [], "nothing is dispatched, not even the routable lines"
    assert plan.status == PlanStatus.HELD
    assert plan.hold_reason == HoldReason.NO_ROUTE
    assert plan.held_line_nos == [0, 1, 2]
    assert plan.held_since == at(1)
    assert plan.dispatch_ids == []
    [held] = outcome.plan_events
    assert isinstance(held, OrderHeld)
    assert (held.reason, held.line_nos, held.shop_id, held.order_id) == (
        HoldReason.NO_ROUTE,
        [1],
        SHOP,
        ORDER_ID,
    )
    assert held.occurred_at == at(1)


@pytest.mark.parametrize(
    ("ctx", "reason"),
    [
        (context(route("A"), active=[]), HoldReason.SUPPLIER_INACTIVE),
        (context(route("A", stock_cap=3, allocated=2)), HoldReason.STOCK_CAP_REACHED),
        (context(), HoldReason.NO_ROUTE),
    ],
)
def test_the_hold_says_why(ctx: RoutingContext, reason: HoldReason) -> None:
    outcome = on_paid(None, paid(oline("x", 2)), ctx, T0)
    assert stored(outcome).hold_reason == reason
    assert [e.reason for e in outcome.plan_events if isinstance(e, OrderHeld)] == [reason]


def test_allocations_go_with_the_supplier_whose_capped_route_was_used() -> None:
    capped_a = route("A", 1, stock_cap=10)
    capped_b = sku_route("B", "p-y", "y", 1, stock_cap=10)
    outcome = on_paid(
        None, paid(oline("x", 2), oline("y", 3), oline("z", 4)), context(capped_a, capped_b), T0
    )
    orders = by_supplier(outcome)
    assert orders["A"].allocations == {capped_a.route_id: 6}
    assert orders["B"].allocations == {capped_b.route_id: 3}


def test_a_duplicate_payment_changes_nothing() -> None:
    event = paid(oline("x"))
    plan = stored(on_paid(None, event, SPLIT, T0))
    assert on_paid(plan, event, SPLIT, at(1)) == PlanOutcome(None)
    assert on_paid(plan, paid(oline("x"), version=PAID_VERSION + 5), SPLIT, at(1)) == PlanOutcome(None)


# --- on_cancelled -------------------------------------------------------------------------------


def test_cancel_before_paid_leaves_a_tombstone_and_a_late_payment_dispatches_nothing() -> None:
    cancel = cancelled_event(version=PAID_VERSION + 10)
    outcome = on_cancelled(None, [], cancel, T0)
    tombstone = stored(outcome)
    assert tombstone.status == PlanStatus.CANCELLED
    assert tombstone.version == PAID_VERSION + 10
    assert tombstone.applied_event_ids == [str(cancel.event_id)]
    assert tombstone.lines == [] and tombstone.dispatch_ids == []
    assert outcome.transitions == [] and outcome.plan_events == []
    late = on_paid(tombstone, paid(oline("x")), SPLIT, at(1))
    assert late == PlanOutcome(None)
    assert late.dispatch_events == []
    # And the same cancellation again is a no-op.
    assert on_cancelled(tombstone, [], cancel, at(2)) == PlanOutcome(None)


def test_cancel_reaches_every_dispatch_order_as_its_state_allows() -> None:
    plan, orders = place("x", "y", "nowhere-yet", ctx=context(sku_route("A", "p-x", "x"), route("B")))
    a, b = orders
    assert a.supplier_id == "A" and b.supplier_id == "B"
    c = dispatch.offer(
        dispatch_id=f"{ORDER_ID}-3",
        order_id=ORDER_ID,
        shop_id=SHOP,
        supplier_id="C",
        lines=b.lines,
        receiver=ADDRESS,
        ship_by=SHIP_BY,
        paid_at=PAID_AT,
        now=T0,
    ).order
    accepted_b = dispatch.accept(b, estimated_ship_at=None, now=at(1)).order
    shipped_a = dispatch.ship(
        dispatch.accept(a, estimated_ship_at=None, now=at(1)).order, parcels=[parcel("W1", (0, 2))], now=at(2)
    ).order
    rejected_c = reject(c)
    fresh = dispatch.offer(
        dispatch_id=f"{ORDER_ID}-4",
        order_id=ORDER_ID,
        shop_id=SHOP,
        supplier_id="D",
        lines=b.lines,
        receiver=ADDRESS,
        ship_by=SHIP_BY,
        paid_at=PAID_AT,
        now=T0,
    ).order
    cancel = cancelled_event()
    outcome = on_cancelled(plan, [shipped_a, accepted_b, rejected_c, fresh], cancel, at(5))
    result = stored(outcome)
    assert result.status == PlanStatus.CANCELLED
    assert result.version == cancel.version
    assert str(cancel.event_id) in result.applied_event_ids
    changed = {t.order.supplier_id: t for t in outcome.transitions}
    assert set(changed) == {"A", "B", "D"}, "the rejected dispatch order is left alone"
    assert [type(e) for e in changed["A"].events] == [InterceptionRequired]
    assert [type(e) for e in changed["B"].events] == [DispatchChangeRequested]
    assert changed["B"].order.open_request(ChangeKind.CANCEL) is not None
    assert [type(e) for e in changed["D"].events] == [DispatchCancelled]
    assert changed["D"].order.state == DispatchState.CANCELLED


def test_cancel_of_a_held_order_clears_the_hold() -> None:
    plan, orders = place("nowhere")
    assert plan.status == PlanStatus.HELD and orders == []
    outcome = on_cancelled(plan, [], cancelled_event(), at(5))
    result = stored(outcome)
    assert result.status == PlanStatus.CANCELLED
    assert result.hold_reason is None and result.held_line_nos == []
    assert retry_hold(result, context(route("A")), at(6)) == PlanOutcome(None)


def test_stale_duplicate_and_repeated_cancellations_change_nothing() -> None:
    plan, orders = place("x")
    assert on_cancelled(plan, orders, cancelled_event(version=PAID_VERSION - 1), at(5)) == PlanOutcome(None)
    cancel = cancelled_event()
    result = stored(on_cancelled(plan, orders, cancel, at(5)))
    assert on_cancelled(result, orders, cancel, at(6)) == PlanOutcome(None)
    assert on_cancelled(result, orders, cancelled_event(version=PAID_VERSION + 99), at(6)) == PlanOutcome(
        None
    )


def test_a_cancellation_with_the_payment_s_version_still_applies() -> None:
    plan, orders = place("x")
    outcome = on_cancelled(plan, orders, cancelled_event(version=PAID_VERSION), at(5))
    assert stored(outcome).status == PlanStatus.CANCELLED
    assert [t.order.state for t in outcome.transitions] == [DispatchState.CANCELLED]


# --- on_address_changed ---------------------------------------------------------------------------


def test_address_change_reaches_every_live_dispatch_order() -> None:
    plan, (a, b) = place("x", "y")
    accepted_b = dispatch.accept(b, estimated_ship_at=None, now=at(1)).order
    event = address_changed()
    outcome = on_address_changed(plan, [a, accepted_b], event, at(5))
    result = stored(outcome)
    assert result.receiver == NEW_ADDRESS and result.version == event.version
    assert str(event.event_id) in result.applied_event_ids
    changed = by_supplier(outcome)
    assert changed["A"].receiver == NEW_ADDRESS
    assert [type(e) for e in outcome.transitions[0].events] == [DispatchUpdated]
    request = changed["B"].open_request(ChangeKind.ADDRESS)
    assert request is not None and request.new_receiver == NEW_ADDRESS


def test_address_change_leaves_ended_dispatch_orders_alone() -> None:
    plan, (a, b) = place("x", "y")
    outcome = on_address_changed(plan, [reject(a), b], address_changed(), at(5))
    assert [t.order.supplier_id for t in outcome.transitions] == ["B"]


def test_address_change_after_shipment_requires_an_interception() -> None:
    plan, (a,) = place("x")
    sent = dispatch.ship(accept_all([a])[0], parcels=[parcel("W1", (0, 2))], now=at(2)).order
    outcome = on_address_changed(plan, [sent], address_changed(), at(5))
    assert event_types(outcome.dispatch_events) == ["interception_required"]


def test_address_change_to_the_same_receiver_updates_only_the_plan() -> None:
    plan, orders = place("x")
    outcome = on_address_changed(plan, orders, address_changed(receiver=RECEIVER), at(5))
    assert outcome.transitions == []
    assert stored(outcome).version == PAID_VERSION + 10


@pytest.mark.parametrize("case", ["no-plan", "stale", "duplicate", "cancelled"])
def test_address_changes_that_must_be_ignored(case: str) -> None:
    plan, orders = place("x")
    event = address_changed()
    current: OrderPlan | None = plan
    match case:
        case "no-plan":
            current = None
        case "stale":
            event = address_changed(version=PAID_VERSION - 1)
        case "duplicate":
            current = stored(on_address_changed(plan, orders, event, at(4)))
        case "cancelled":
            current = stored(on_cancelled(plan, orders, cancelled_event(version=PAID_VERSION + 1), at(4)))
    assert on_address_changed(current, orders, event, at(5)) == PlanOutcome(None)


def test_a_held_order_is_dispatched_to_the_address_changed_while_it_waited() -> None:
    plan, _ = place("x", ctx=context())
    held = stored(on_address_changed(plan, [], address_changed(), at(5)))
    assert held.status == PlanStatus.HELD
    outcome = retry_hold(held, context(route("A")), at(6))
    assert [t.order.receiver for t in outcome.transitions] == [NEW_ADDRESS]


# --- on_sku_changed -----------------------------------------------------------------------------------


def test_a_supplier_keeping_its_lines_gets_them_changed_in_place() -> None:
    ctx = context(route("A"))
    plan, (a,) = place("x", "y", ctx=ctx)
    event = sku_changed(oline("x", 2), oline("y-blue", 2))
    outcome = on_sku_changed(plan, [a], event, ctx, at(5))
    result = stored(outcome)
    assert result.version == event.version
    assert [line.sku_id for line in result.lines] == ["x", "y-blue"]
    [transition] = outcome.transitions
    assert transition.order.dispatch_id == a.dispatch_id
    assert [line.sku_id for line in transition.order.lines] == ["x", "y-blue"]
    assert event_types(transition.events) == ["dispatch_updated"]
    assert result.dispatch_ids == plan.dispatch_ids


def test_an_accepted_supplier_keeping_its_lines_is_asked_to_change_them() -> None:
    ctx = context(route("A"))
    plan, orders = place("x", ctx=ctx)
    outcome = on_sku_changed(plan, accept_all(orders), sku_changed(oline("x-blue", 2)), ctx, at(5))
    [transition] = outcome.transitions
    request = transition.order.open_request(ChangeKind.SKU)
    assert request is not None
    assert [line.sku_id for line in request.new_lines or []] == ["x-blue"]
    assert [line.sku_id for line in transition.order.lines] == ["x"], "not applied until confirmed"


def test_unchanged_lines_change_nothing_but_the_plan_version() -> None:
    plan, orders = place("x", "y")
    outcome = on_sku_changed(plan, orders, sku_changed(oline("x", 2), oline("y", 2)), SPLIT, at(5))
    assert outcome.transitions == [] and outcome.plan_events == []
    assert stored(outcome).version == PAID_VERSION + 10


def test_lines_moving_to_a_supplier_that_has_an_order_change_both_orders() -> None:
    plan, (a, b) = place("x", "y")
    # Line 0 becomes y: it is B's now; A loses its only line and is cancelled.
    outcome = on_sku_changed(plan, [a, b], sku_changed(oline("y", 2), oline("y", 2)), SPLIT, at(5))
    changed = by_supplier(outcome)
    assert changed["A"].state == DispatchState.CANCELLED
    assert event_types([e for t in outcome.transitions if t.order.supplier_id == "A" for e in t.events]) == [
        "dispatch_cancelled"
    ]
    assert next(e for e in outcome.dispatch_events if isinstance(e, DispatchCancelled)).cause == "rerouted"
    assert [(line.line_no, line.sku_id) for line in changed["B"].lines] == [(0, "y"), (1, "y")]
    assert stored(outcome).dispatch_ids == plan.dispatch_ids


def test_lines_moving_to_a_new_supplier_get_a_new_dispatch_order() -> None:
    ctx = context(sku_route("A", "p-x", "x"), sku_route("B", "p-y", "y"), sku_route("C", "p-c", "c"))
    plan, (a, b) = place("x", "y", ctx=ctx)
    outcome = on_sku_changed(plan, [a, b], sku_changed(oline("x", 2), oline("c", 2)), ctx, at(5))
    result = stored(outcome)
    changed = by_supplier(outcome)
    assert set(changed) == {"B", "C"}, "A keeps exactly its lines: untouched"
    assert changed["B"].state == DispatchState.CANCELLED
    assert changed["C"].dispatch_id == f"{ORDER_ID}-3"
    assert changed["C"].state == DispatchState.OFFERED
    assert [(line.line_no, line.sku_id) for line in changed["C"].lines] == [(1, "c")]
    assert result.dispatch_ids == [f"{ORDER_ID}-1", f"{ORDER_ID}-2", f"{ORDER_ID}-3"]
    assert result.status == PlanStatus.DISPATCHED
    assert outcome.plan_events == []


def test_an_accepted_supplier_losing_its_lines_is_asked_to_cancel() -> None:
    plan, orders = place("x", "y")
    a, b = accept_all(orders)
    outcome = on_sku_changed(plan, [a, b], sku_changed(oline("y", 2), oline("y", 2)), SPLIT, at(5))
    changed = by_supplier(outcome)
    assert changed["A"].state == DispatchState.ACCEPTED
    assert changed["A"].open_request(ChangeKind.CANCEL) is not None
    assert changed["B"].open_request(ChangeKind.SKU) is not None


def test_an_unroutable_new_sku_holds_the_order_and_withdraws_what_suppliers_have() -> None:
    plan, (a, b) = place("x", "y")
    accepted_b = accept_all([b])[0]
    event = sku_changed(oline("x", 2), oline("nowhere", 2))
    outcome = on_sku_changed(plan, [a, accepted_b], event, SPLIT, at(5))
    result = stored(outcome)
    assert result.status == PlanStatus.HELD
    assert result.hold_reason == HoldReason.NO_ROUTE
    assert result.held_line_nos == [0, 1]
    assert result.held_since == at(5)
    assert result.version == event.version
    assert [line.sku_id for line in result.lines] == ["x", "nowhere"]
    [held] = outcome.plan_events
    assert isinstance(held, OrderHeld) and held.line_nos == [1]
    changed = by_supplier(outcome)
    assert changed["A"].state == DispatchState.CANCELLED
    assert changed["B"].open_request(ChangeKind.CANCEL) is not None
    # When a route for the new SKU appears, the whole order goes out again.
    released = retry_hold(result, context(route("A")), at(6))
    assert [e.event_type for e in released.plan_events] == ["order_hold_released"]
    [again] = released.transitions
    assert [line.sku_id for line in again.order.lines] == ["x", "nowhere"]
    assert again.order.dispatch_id == f"{ORDER_ID}-3"


def test_an_unroutable_new_sku_leaves_shipped_dispatch_orders_alone() -> None:
    plan, (a, b) = place("x", "y")
    sent = dispatch.ship(accept_all([a])[0], parcels=[parcel("W1", (0, 2))], now=at(2)).order
    outcome = on_sku_changed(plan, [sent, b], sku_changed(oline("x", 2), oline("nowhere", 2)), SPLIT, at(5))
    assert [t.order.supplier_id for t in outcome.transitions] == ["B"]
    assert stored(outcome).status == PlanStatus.HELD


def test_a_sku_change_of_a_held_order_changing_its_held_lines_holds_it_again() -> None:
    plan, _ = place("x", "nowhere")
    assert plan.held_line_nos == [0, 1]
    outcome = on_sku_changed(
        plan, [], sku_changed(oline("x", 2), oline("nowhere", 2), oline("elsewhere", 2)), SPLIT, at(5)
    )
    result = stored(outcome)
    assert result.status == PlanStatus.HELD and result.hold_reason == HoldReason.NO_ROUTE
    assert result.held_line_nos == [0, 1, 2]
    assert result.held_since == T0
    [held] = outcome.plan_events
    assert isinstance(held, OrderHeld)
    assert (held.reason, held.line_nos) == (HoldReason.NO_ROUTE, [1, 2])


def test_a_sku_change_of_a_held_order_keeping_its_held_lines_and_reason_announces_nothing() -> None:
    plan, _ = place("x", "nowhere")
    outcome = on_sku_changed(plan, [], sku_changed(oline("x", 3), oline("nowhere-else", 1)), SPLIT, at(5))
    result = stored(outcome)
    assert (result.status, result.hold_reason, result.held_line_nos) == (
        PlanStatus.HELD,
        HoldReason.NO_ROUTE,
        [0, 1],
    )
    assert outcome.plan_events == [] and outcome.transitions == []


def test_a_sku_change_that_makes_a_held_order_routable_releases_it() -> None:
    plan, _ = place("x", "nowhere")
    outcome = on_sku_changed(plan, [], sku_changed(oline("x", 2), oline("y", 2)), SPLIT, at(5))
    result = stored(outcome)
    assert result.status == PlanStatus.DISPATCHED
    assert result.hold_reason is None and result.held_line_nos == [] and result.held_since is None
    assert set(by_supplier(outcome)) == {"A", "B"}
    [released] = outcome.plan_events
    assert isinstance(released, OrderHoldReleased)
    assert released.dispatch_ids == [f"{ORDER_ID}-1", f"{ORDER_ID}-2"]


def test_a_sku_change_dropping_every_line_withdraws_every_order() -> None:
    plan, orders = place("x", "y")
    outcome = on_sku_changed(plan, orders, sku_changed(oline("x", 0)), SPLIT, at(5))
    assert stored(outcome).lines == []
    assert sorted(t.order.state for t in outcome.transitions) == [DispatchState.CANCELLED] * 2


@pytest.mark.parametrize("case", ["no-plan", "stale", "duplicate", "cancelled"])
def test_sku_changes_that_must_be_ignored(case: str) -> None:
    plan, orders = place("x")
    event = sku_changed(oline("y", 2))
    current: OrderPlan | None = plan
    match case:
        case "no-plan":
            current = None
        case "stale":
            event = sku_changed(oline("y", 2), version=PAID_VERSION - 1)
        case "duplicate":
            current = stored(on_sku_changed(plan, orders, event, SPLIT, at(4)))
        case "cancelled":
            current = stored(on_cancelled(plan, orders, cancelled_event(version=PAID_VERSION + 1), at(4)))
    assert on_sku_changed(current, orders, event, SPLIT, at(5)) == PlanOutcome(None)


def test_an_older_sku_change_after_a_newer_address_change_is_ignored() -> None:
    plan, orders = place("x")
    newer = stored(on_address_changed(plan, orders, address_changed(version=PAID_VERSION + 20), at(4)))
    older = sku_changed(oline("y", 2), version=PAID_VERSION + 10)
    assert on_sku_changed(newer, orders, older, SPLIT, at(5)) == PlanOutcome(None)


def test_sku_change_keeps_the_routing_decision_for_lines_going_to_a_new_supplier() -> None:
    capped = route("A", 1, stock_cap=3)
    ctx = context(capped, route("B", 2))
    plan, (a,) = place("x", ctx=ctx)  # 2 units on A's cap
    outcome = on_sku_changed(plan, [a], sku_changed(oline("x", 2), oline("y", 2)), ctx, at(5))
    # Line 0 stays with A (2 of 3); line 1 (2 units) does not fit in A's cap any more: it goes to B.
    new_orders = [t.order for t in outcome.transitions if t.order.dispatch_id not in plan.dispatch_ids]
    assert [o.supplier_id for o in new_orders] == ["B"]


def test_sku_change_with_two_orders_at_one_supplier_leaves_each_line_in_one_order() -> None:
    ctx = context(sku_route("B", "p-y", "y", 1), route("A", 5))
    plan, (a, b) = place("x", "y", ctx=ctx)
    fallback = on_dispatch_rejected(plan, reject(b), ctx, at(3))
    plan = stored(fallback)
    orders = apply([a, reject(b)], fallback)
    assert [o.supplier_id for o in orders if o.state == DispatchState.OFFERED] == ["A", "A"]
    outcome = on_sku_changed(plan, orders, sku_changed(oline("x-blue", 2), oline("y", 2)), ctx, at(5))
    after = [
        o for o in apply(orders, outcome) if o.state not in (DispatchState.CANCELLED, DispatchState.REJECTED)
    ]
    line_nos = sorted(line.line_no for o in after for line in o.lines)  # offered: changed in place
    assert line_nos == [0, 1]


def test_sku_change_placing_every_line_with_existing_orders_releases_the_hold() -> None:
    ctx = context(sku_route("A", "p-x", "x"), sku_route("B", "p-y", "y"), sku_route("A", "p-z", "z"))
    plan, (a, b) = place("x", "y", ctx=ctx)
    held = on_dispatch_rejected(plan, reject(b), ctx, at(3))
    assert stored(held).status == PlanStatus.HELD
    outcome = on_sku_changed(
        stored(held), [a, reject(b)], sku_changed(oline("x", 2), oline("z", 2)), ctx, at(5)
    )
    assert [t.order.supplier_id for t in outcome.transitions] == ["A"]
    result = stored(outcome)
    assert result.status == PlanStatus.DISPATCHED
    assert result.hold_reason is None and result.held_line_nos == [] and result.held_since is None
    [released] = outcome.plan_events
    assert isinstance(released, OrderHoldReleased)
    assert released.dispatch_ids == [], "no new dispatch order: the lines went to A's existing one"
    assert retry_hold(result, ctx, at(6)) == PlanOutcome(None)


def test_sku_change_gives_a_supplier_s_lines_to_its_first_live_order_and_withdraws_the_others() -> None:
    ctx = context(sku_route("B", "p-y", "y", 1), route("A", 5))
    plan, (a, b) = place("x", "y", ctx=ctx)
    fallback = on_dispatch_rejected(plan, reject(b), ctx, at(3))
    orders = apply([a, reject(b)], fallback)
    first, second = (o for o in orders if o.state == DispatchState.OFFERED)
    outcome = on_sku_changed(
        stored(fallback), orders, sku_changed(oline("x-blue", 2), oline("y", 2)), ctx, at(5)
    )
    changed = {t.order.dispatch_id: t for t in outcome.transitions}
    assert set(changed) == {first.dispatch_id, second.dispatch_id}
    assert [(line.line_no, line.sku_id) for line in changed[first.dispatch_id].order.lines] == [
        (0, "x-blue"),
        (1, "y"),
    ]
    assert event_types(changed[first.dispatch_id].events) == ["dispatch_updated"]
    assert changed[second.dispatch_id].order.state == DispatchState.CANCELLED
    assert event_types(changed[second.dispatch_id].events) == ["dispatch_cancelled"]
    assert stored(outcome).dispatch_ids == stored(fallback).dispatch_ids, "no new dispatch order"


def test_sku_change_counts_a_stock_cap_once_for_changed_and_new_orders() -> None:
    capped_a = route("A", 1, stock_cap=5)
    ctx = context(capped_a, route("B", 2))
    plan, (a,) = place("x", ctx=ctx)
    outcome = on_sku_changed(plan, [a], sku_changed(oline("x", 2), oline("y", 2), oline("z", 2)), ctx, at(5))
    changed = by_supplier(outcome)
    # 2 + 2 units fit A's cap of 5; the third line would make 6: it goes to B in a new dispatch order.
    assert [line.line_no for line in changed["A"].lines] == [0, 1]
    assert changed["A"].dispatch_id == a.dispatch_id
    assert [line.line_no for line in changed["B"].lines] == [2]
    assert changed["B"].dispatch_id == f"{ORDER_ID}-2"
    assert changed["B"].allocations == {}, "B's route has no cap"
    assert stored(outcome).status == PlanStatus.DISPATCHED


def test_sku_change_does_not_count_the_order_s_own_allocations_twice() -> None:
    capped = route("A", 1, stock_cap=3)
    plan, (a,) = place("x", ctx=context(capped, route("B", 2)))
    assert a.allocations == {capped.route_id: 2}
    # The context as the service builds it: `allocated` sums the live dispatch orders' allocations.
    live = context(route("A", 1, stock_cap=3, allocated=2), route("B", 2))
    outcome = on_sku_changed(plan, [a], sku_changed(oline("x", 2)), live, at(5))
    assert outcome.transitions == [], "the lines did not change: A keeps them"


# --- on_dispatch_rejected ---------------------------------------------------------------------------


def test_a_rejection_goes_to_the_fallback_supplier() -> None:
    ctx = context(route("A", 1), route("B", 2))
    plan, (a,) = place("x", "y", ctx=ctx)
    outcome = on_dispatch_rejected(plan, reject(a), ctx, at(3))
    result = stored(outcome)
    assert result.rejected_by == {"0": ["A"], "1": ["A"]}
    assert result.status == PlanStatus.DISPATCHED
    assert result.dispatch_ids == [f"{ORDER_ID}-1", f"{ORDER_ID}-2"]
    [transition] = outcome.transitions
    order = transition.order
    assert (order.supplier_id, order.dispatch_id, order.state) == (
        "B",
        f"{ORDER_ID}-2",
        DispatchState.OFFERED,
    )
    assert [(line.line_no, line.quantity) for line in order.lines] == [(0, 2), (1, 2)]
    assert (order.receiver, order.ship_by, order.paid_at) == (ADDRESS, SHIP_BY, PAID_AT)
    assert outcome.plan_events == []


def test_a_rejection_with_no_fallback_holds_all_suppliers_rejected() -> None:
    plan, (_, b) = place("x", "y")
    outcome = on_dispatch_rejected(plan, reject(b), SPLIT, at(3))
    result = stored(outcome)
    assert outcome.transitions == []
    assert result.status == PlanStatus.HELD
    assert result.hold_reason == HoldReason.ALL_SUPPLIERS_REJECTED
    assert result.held_line_nos == [1]
    assert result.held_since == at(3)
    [held] = outcome.plan_events
    assert isinstance(held, OrderHeld)
    assert (held.reason, held.line_nos) == (HoldReason.ALL_SUPPLIERS_REJECTED, [1])


def test_a_second_supplier_rejecting_is_remembered_too() -> None:
    ctx = context(route("A", 1), route("B", 2))
    plan, (a,) = place("x", ctx=ctx)
    first = on_dispatch_rejected(plan, reject(a), ctx, at(3))
    [b] = [t.order for t in first.transitions]
    second = on_dispatch_rejected(stored(first), reject(b), ctx, at(4))
    result = stored(second)
    assert result.rejected_by == {"0": ["A", "B"]}
    assert result.hold_reason == HoldReason.ALL_SUPPLIERS_REJECTED
    assert second.transitions == []


def test_a_rejection_while_held_retries_the_held_lines_with_it() -> None:
    ctx = context(route("A", 1), route("B", 2))
    plan, (a,) = place("x", ctx=ctx)
    plan = plan.model_copy(
        update={
            "status": PlanStatus.HELD,
            "hold_reason": HoldReason.NO_ROUTE,
            "held_line_nos": [0],
            "held_since": T0,
        }
    )
    outcome = on_dispatch_rejected(plan, reject(a), ctx, at(3))
    [transition] = outcome.transitions
    assert transition.order.supplier_id == "B"
    assert event_types(outcome.plan_events) == ["order_hold_released"]


def test_a_second_rejection_while_held_for_the_same_reason_announces_the_new_held_lines() -> None:
    plan, (a, b) = place("x", "y")
    first = on_dispatch_rejected(plan, reject(b), SPLIT, at(3))
    [first_held] = first.plan_events
    assert isinstance(first_held, OrderHeld) and first_held.line_nos == [1]
    second = on_dispatch_rejected(stored(first), reject(a), SPLIT, at(4))
    result = stored(second)
    assert result.hold_reason == HoldReason.ALL_SUPPLIERS_REJECTED
    assert result.held_line_nos == [0, 1]
    assert result.held_since == at(3), "still waiting since the first hold"
    [held] = second.plan_events
    assert isinstance(held, OrderHeld)
    assert (held.reason, held.line_nos, held.occurred_at) == (
        HoldReason.ALL_SUPPLIERS_REJECTED,
        [0, 1],
        at(4),
    )
    assert held.event_id != first_held.event_id


def test_a_rejection_for_a_cancelled_order_changes_nothing() -> None:
    plan, (a,) = place("x")
    cancelled = stored(on_cancelled(plan, [a], cancelled_event(), at(2)))
    assert on_dispatch_rejected(cancelled, reject(a), SPLIT, at(3)) == PlanOutcome(None)


def test_a_rejection_still_excludes_the_supplier_from_that_line_number_after_a_sku_change() -> None:
    ctx = context(route("A", 1), route("B", 2))
    plan, (a,) = place("x", ctx=ctx)
    rerouted = on_dispatch_rejected(plan, reject(a), ctx, at(3))
    orders = apply([reject(a)], rerouted)
    outcome = on_sku_changed(stored(rerouted), orders, sku_changed(oline("x-blue", 2)), ctx, at(5))
    assert [t.order.supplier_id for t in outcome.transitions] == ["B"]


# --- retry_hold -------------------------------------------------------------------------------------


def test_retry_of_a_plan_that_is_not_held_does_nothing() -> None:
    plan, _ = place("x")
    assert retry_hold(plan, SPLIT, at(5)) == PlanOutcome(None)


def test_retry_that_still_cannot_route_for_the_same_reason_does_nothing() -> None:
    plan, _ = place("nowhere")
    assert retry_hold(plan, SPLIT, at(5)) == PlanOutcome(None)


def test_retry_that_still_cannot_route_for_another_reason_says_so() -> None:
    plan, _ = place("x", ctx=context())
    outcome = retry_hold(plan, context(route("A"), active=[]), at(5))
    result = stored(outcome)
    assert result.hold_reason == HoldReason.SUPPLIER_INACTIVE
    assert result.held_since == T0, "still waiting since the first hold"
    assert outcome.transitions == []
    [held] = outcome.plan_events
    assert isinstance(held, OrderHeld) and held.reason == HoldReason.SUPPLIER_INACTIVE


def test_retry_when_a_route_appears_releases_the_hold() -> None:
    plan, _ = place("x", "nowhere", "y")
    ctx = context(*SPLIT.routes, route("C", 50))
    outcome = retry_hold(plan, ctx, at(5))
    result = stored(outcome)
    assert result.status == PlanStatus.DISPATCHED
    assert result.hold_reason is None and result.held_line_nos == [] and result.held_since is None
    orders = by_supplier(outcome)
    assert {s: [line.line_no for line in o.lines] for s, o in orders.items()} == {
        "A": [0],
        "B": [2],
        "C": [1],
    }
    assert all(o.created_at == at(5) and o.ship_by == SHIP_BY for o in orders.values())
    [released] = outcome.plan_events
    assert isinstance(released, OrderHoldReleased)
    assert released.dispatch_ids == [f"{ORDER_ID}-1", f"{ORDER_ID}-2", f"{ORDER_ID}-3"]
    assert released.dispatch_ids == result.dispatch_ids
    assert released.occurred_at == at(5)


# --- Idempotency and ids ------------------------------------------------------------------------------


def test_only_the_last_applied_event_ids_are_kept() -> None:
    plan, orders = place("x")
    for n in range(APPLIED_EVENTS_KEPT + 5):
        plan = stored(on_address_changed(plan, orders, address_changed(version=PAID_VERSION + n), at(n)))
    assert len(plan.applied_event_ids) == APPLIED_EVENTS_KEPT


@settings(max_examples=60, deadline=None)
@given(
    quantities=st.lists(st.integers(0, 3), min_size=1, max_size=4),
    rejections=st.lists(st.integers(0, 3), max_size=6),
)
def test_property_dispatch_ids_are_unique_and_lines_are_never_lost(
    quantities: list[int], rejections: list[int]
) -> None:
    suppliers = ["A", "B", "C", "D"]
    ctx = context(*(route(s, priority) for priority, s in enumerate(suppliers)))
    event = paid(*(oline(f"s{n}", q) for n, q in enumerate(quantities)))
    outcome = on_paid(None, event, ctx, T0)
    plan = stored(outcome)
    orders = apply([], outcome)
    minute = 1
    for pick in rejections:
        live = [o for o in orders if o.state == DispatchState.OFFERED]
        if not live:
            break
        minute += 1
        target = live[pick % len(live)]
        gone = reject(target)
        orders = [gone if o.dispatch_id == target.dispatch_id else o for o in orders]
        outcome = on_dispatch_rejected(plan, gone, ctx, at(minute))
        plan = stored(outcome)
        orders = apply(orders, outcome)
    ids = [o.dispatch_id for o in orders]
    assert len(set(ids)) == len(ids) == len(plan.dispatch_ids)
    assert set(ids) == set(plan.dispatch_ids)
    assert ids == [f"{ORDER_ID}-{n}" for n in range(1, len(ids) + 1)]
    live_lines = sorted(line.line_no for o in orders if o.state == DispatchState.OFFERED for line in o.lines)
    wanted = [n for n, q in enumerate(quantities) if q > 0]
    if plan.status == PlanStatus.HELD:
        assert plan.hold_reason == HoldReason.ALL_SUPPLIERS_REJECTED
        assert set(plan.held_line_nos).isdisjoint(live_lines)
        assert sorted([*live_lines, *plan.held_line_nos]) == wanted
    else:
        assert live_lines == wanted, "every line is with exactly one live supplier"
    for line_no, rejecting in plan.rejected_by.items():
        assert not any(
            o.supplier_id in rejecting and any(line.line_no == int(line_no) for line in o.lines)
            for o in orders
            if o.state == DispatchState.OFFERED
        )


def test_a_rejected_replacement_goes_to_the_next_supplier_as_a_replacement() -> None:
    """An exchange's replacement that its supplier rejects must stay a replacement of the same case
    elsewhere, not become a second dispatch of the order's line."""
    ctx = context(sku_route("A", "p-x", "x", priority=1), sku_route("B", "p-x", "x", priority=2))
    plan, (original,) = place("x", ctx=ctx)
    shipped = dispatch.ship(accept_all([original])[0], parcels=[parcel("ZT1", (0, 2))], now=at(3)).order
    replaced = on_reship(
        plan, [shipped], case_id="case-9", replaces=shipped.dispatch_id, units=[("p-x", "x", 1)],
        replacement_sku_id=None, now=at(4),
    )  # fmt: skip
    plan = stored(replaced)
    (replacement,) = [t.order for t in replaced.transitions]
    assert replacement.supplier_id == "A" and replacement.aftersale_case_id == "case-9"
    outcome = on_dispatch_rejected(plan, reject(replacement), ctx, at(5))
    (fallback,) = [t.order for t in outcome.transitions]
    assert fallback.supplier_id == "B"
    assert fallback.aftersale_case_id == "case-9" and fallback.replaces_dispatch_id == shipped.dispatch_id
    assert [(line.line_no, line.quantity) for line in fallback.lines] == [(0, 1)]
    assert outcome.plan is not None and outcome.plan.lines == plan.lines  # the order's own lines untouched
    alone = on_dispatch_rejected(plan, reject(replacement), context(sku_route("A", "p-x", "x")), at(5))
    assert alone.transitions == [] and alone.plan is None  # nobody else: the case waits for a person
