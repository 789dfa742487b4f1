"""The dispatch order state machine: every command from every state, versions, error codes."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.dispatch.domain import dispatch_order as dispatch
from services.dispatch.domain.dispatch_order import DispatchError, DispatchOrder, ParcelShipment, Transition
from shared.api.supplier import SupplierErrorCode
from shared.events.dispatch import (
    DISPATCH_EVENTS,
    ChangeKind,
    ChangeRefusal,
    ChangeStatus,
    DispatchAccepted,
    DispatchCancelled,
    DispatchChangeAnswered,
    DispatchChangeRequested,
    DispatchOffered,
    DispatchRejected,
    DispatchShipped,
    DispatchState,
    DispatchUpdated,
    InterceptionRequired,
    ParcelLine,
    RejectReason,
)
from tests.unit.dispatch.builders import (
    ADDRESS,
    ORDER_ID,
    OTHER_ADDRESS,
    PAID_AT,
    SHIP_BY,
    SHOP,
    T0,
    THIRD_ADDRESS,
    accepted,
    assert_versions_follow,
    at,
    cancelled,
    dline,
    offered,
    parcel,
    partially_shipped,
    rejected,
    shipped,
)

NEW_LINES = [dline(0, 2, sku="sku-blue"), dline(1, 1)]
OTHER_LINES = [dline(0, 2, sku="sku-red"), dline(1, 1)]

STATES: dict[DispatchState, Callable[[], DispatchOrder]] = {
    DispatchState.OFFERED: offered,
    DispatchState.ACCEPTED: accepted,
    DispatchState.REJECTED: rejected,
    DispatchState.PARTIALLY_SHIPPED: partially_shipped,
    DispatchState.SHIPPED: shipped,
    DispatchState.CANCELLED: cancelled,
}


def test_builders_reach_the_state_they_are_named_for() -> None:
    for state, build in STATES.items():
        assert build().state == state


def expect_error(code: SupplierErrorCode, command: Callable[[], object]) -> DispatchError:
    with pytest.raises(DispatchError) as raised:
        command()
    assert raised.value.code == code
    assert raised.value.message == str(raised.value)
    return raised.value


def with_requests(*kinds: ChangeKind) -> DispatchOrder:
    """An accepted order with open requests of these kinds (a cancellation last: it supersedes)."""
    order = accepted()
    for kind in kinds:
        match kind:
            case ChangeKind.ADDRESS:
                order = dispatch.change_receiver(order, receiver=OTHER_ADDRESS, now=at(3)).order
            case ChangeKind.SKU:
                order = dispatch.change_lines(order, lines=NEW_LINES, now=at(3)).order
            case ChangeKind.CANCEL:
                order = dispatch.cancel_for_reroute(order, now=at(3)).order
    return order


def request_id(order: DispatchOrder, kind: ChangeKind) -> str:
    request = order.open_request(kind)
    assert request is not None
    return request.request_id


# --- offer ----------------------------------------------------------------------------------------


def test_offer_creates_version_one_and_a_matching_event() -> None:
    lines = [dline(0, 2), dline(3, 1)]
    transition = dispatch.offer(
        dispatch_id=f"{ORDER_ID}-2",
        order_id=ORDER_ID,
        shop_id=SHOP,
        supplier_id="sup-b",
        lines=lines,
        receiver=ADDRESS,
        ship_by=SHIP_BY,
        paid_at=PAID_AT,
        now=T0,
        allocations={"r1": 3},
        replaces_dispatch_id=f"{ORDER_ID}-1",
        aftersale_case_id="case-9",
    )
    order = transition.order
    assert order.state == DispatchState.OFFERED
    assert order.version == 1
    assert (order.created_at, order.updated_at) == (T0, T0)
    assert order.lines == lines
    assert order.allocations == {"r1": 3}
    assert order.parcels == [] and order.change_requests == []
    assert order.accepted_at is None and order.rejection_reason is None
    assert not order.is_final
    [event] = transition.events
    assert isinstance(event, DispatchOffered)
    assert event.version == 1 and event.state == DispatchState.OFFERED
    assert (event.dispatch_id, event.order_id, event.shop_id, event.supplier_id) == (
        f"{ORDER_ID}-2",
        ORDER_ID,
        SHOP,
        "sup-b",
    )
    assert event.lines == lines and event.receiver == ADDRESS
    assert (event.ship_by, event.paid_at, event.occurred_at) == (SHIP_BY, PAID_AT, T0)
    assert event.replaces_dispatch_id == f"{ORDER_ID}-1" and event.aftersale_case_id == "case-9"
    assert transition.changed


def test_offer_without_allocations_stores_none() -> None:
    assert offered().allocations == {}


def test_public_view_leaves_out_internal_fields() -> None:
    order = rejected()
    public = order.public()
    dumped = public.model_dump()
    assert "allocations" not in dumped and "rejection_text" not in dumped and "supplier_id" not in dumped
    assert public.dispatch_id == order.dispatch_id
    assert public.state == DispatchState.REJECTED
    assert public.version == order.version
    assert public.rejection_reason == RejectReason.OUT_OF_STOCK
    assert public.receiver == ADDRESS


# --- accept / reject ------------------------------------------------------------------------------


def test_accept_an_offered_order() -> None:
    before = offered()
    transition = dispatch.accept(before, estimated_ship_at=at(60), now=at(1))
    after = transition.order
    assert after.state == DispatchState.ACCEPTED
    assert after.accepted_at == at(1) and after.updated_at == at(1)
    assert after.estimated_ship_at == at(60)
    assert after.created_at == T0
    [event] = transition.events
    assert isinstance(event, DispatchAccepted)
    assert event.estimated_ship_at == at(60)
    assert event.occurred_at == at(1)
    assert_versions_follow(before, after, transition.events)
    assert before.state == DispatchState.OFFERED, "the aggregate is immutable"


def test_accept_without_an_estimate() -> None:
    transition = dispatch.accept(offered(), estimated_ship_at=None, now=at(1))
    assert transition.order.estimated_ship_at is None
    assert isinstance(transition.events[0], DispatchAccepted)
    assert transition.events[0].estimated_ship_at is None


def test_reject_an_offered_order() -> None:
    before = offered()
    transition = dispatch.reject(before, reason=RejectReason.BAD_ADDRESS, text="no such street", now=at(1))
    after = transition.order
    assert after.state == DispatchState.REJECTED and after.is_final
    assert after.rejection_reason == RejectReason.BAD_ADDRESS
    assert after.rejection_text == "no such street"
    [event] = transition.events
    assert isinstance(event, DispatchRejected)
    assert (event.reason, event.reason_text) == (RejectReason.BAD_ADDRESS, "no such street")
    assert_versions_follow(before, after, transition.events)


ANSWER_ERRORS = {
    DispatchState.ACCEPTED: SupplierErrorCode.NOT_OFFERED,
    DispatchState.REJECTED: SupplierErrorCode.NOT_OFFERED,
    DispatchState.PARTIALLY_SHIPPED: SupplierErrorCode.NOT_OFFERED,
    DispatchState.SHIPPED: SupplierErrorCode.NOT_OFFERED,
    DispatchState.CANCELLED: SupplierErrorCode.DISPATCH_CANCELLED,
}


@pytest.mark.parametrize(("state", "code"), ANSWER_ERRORS.items())
def test_accept_is_refused_unless_offered(state: DispatchState, code: SupplierErrorCode) -> None:
    order = STATES[state]()
    expect_error(code, lambda: dispatch.accept(order, estimated_ship_at=None, now=at(9)))


@pytest.mark.parametrize(("state", "code"), ANSWER_ERRORS.items())
def test_reject_is_refused_unless_offered(state: DispatchState, code: SupplierErrorCode) -> None:
    order = STATES[state]()
    expect_error(code, lambda: dispatch.reject(order, reason=RejectReason.OTHER, text="", now=at(9)))


# --- ship ----------------------------------------------------------------------------------------------


def test_ship_everything_in_one_parcel() -> None:
    before = accepted()
    transition = dispatch.ship(before, parcels=[parcel("W1", (0, 2), (1, 1))], now=at(5))
    after = transition.order
    assert after.state == DispatchState.SHIPPED and after.is_final
    assert [line.shipped_quantity for line in after.lines] == [2, 1]
    assert all(line.remaining == 0 for line in after.lines)
    [p] = after.parcels
    assert (p.parcel_no, p.carrier_code, p.waybill_no, p.shipped_at) == (1, "ZTO", "W1", at(5))
    assert p.lines == [ParcelLine(line_no=0, quantity=2), ParcelLine(line_no=1, quantity=1)]
    [event] = transition.events
    assert isinstance(event, DispatchShipped)
    assert event.parcels == after.parcels and event.lines == after.lines
    assert event.state == DispatchState.SHIPPED
    assert_versions_follow(before, after, transition.events)


def test_ship_part_then_the_rest() -> None:
    first = dispatch.ship(accepted(), parcels=[parcel("W1", (0, 1))], now=at(5))
    assert first.order.state == DispatchState.PARTIALLY_SHIPPED
    assert [line.shipped_quantity for line in first.order.lines] == [1, 0]
    assert isinstance(first.events[0], DispatchShipped)
    assert first.events[0].state == DispatchState.PARTIALLY_SHIPPED

    second = dispatch.ship(first.order, parcels=[parcel("W2", (0, 1), (1, 1))], now=at(6))
    after = second.order
    assert after.state == DispatchState.SHIPPED
    assert [p.parcel_no for p in after.parcels] == [1, 2]
    assert [p.waybill_no for p in after.parcels] == ["W1", "W2"]
    assert [p.shipped_at for p in after.parcels] == [at(5), at(6)]
    [event] = second.events
    assert isinstance(event, DispatchShipped)
    assert [p.waybill_no for p in event.parcels] == ["W2"], "the event carries this call's parcels only"
    assert [line.shipped_quantity for line in event.lines] == [2, 1]
    assert_versions_follow(first.order, after, second.events)


def test_partially_shipped_order_ships_more_parts() -> None:
    before = partially_shipped()
    transition = dispatch.ship(before, parcels=[parcel("W2", (1, 1))], now=at(6))
    assert transition.order.state == DispatchState.PARTIALLY_SHIPPED
    assert [line.shipped_quantity for line in transition.order.lines] == [1, 1]


def test_one_call_splits_the_order_into_several_parcels() -> None:
    before = accepted(dline(0, 3), dline(1, 1))
    parcels = [parcel("W1", (0, 1)), parcel("W2", (0, 2)), parcel("W3", (1, 1), carrier="SF")]
    transition = dispatch.ship(before, parcels=parcels, now=at(5))
    after = transition.order
    assert after.state == DispatchState.SHIPPED
    assert [(p.parcel_no, p.carrier_code, p.waybill_no) for p in after.parcels] == [
        (1, "ZTO", "W1"),
        (2, "ZTO", "W2"),
        (3, "SF", "W3"),
    ]
    assert len(transition.events) == 1, "one shipment, one event, one version"
    assert after.version == before.version + 1


def test_the_same_waybill_number_with_another_carrier_is_another_parcel() -> None:
    transition = dispatch.ship(
        accepted(), parcels=[parcel("W1", (0, 1)), parcel("W1", (0, 1), carrier="SF")], now=at(5)
    )
    assert len(transition.order.parcels) == 2


def _replacement(case_id: str) -> DispatchOrder:
    """An after-sale replacement (exchange or re-ship) of dispatch order -1, accepted."""
    offered_replacement = dispatch.offer(
        dispatch_id=f"{ORDER_ID}-2",
        order_id=ORDER_ID,
        shop_id=SHOP,
        supplier_id="sup-a",
        lines=[dline(0, 1)],
        receiver=ADDRESS,
        ship_by=None,
        paid_at=PAID_AT,
        now=at(60),
        replaces_dispatch_id=f"{ORDER_ID}-1",
        aftersale_case_id=case_id,
    ).order
    return dispatch.accept(offered_replacement, estimated_ship_at=None, now=at(61)).order


def test_a_replacement_shipment_carries_its_after_sale_case() -> None:
    transition = dispatch.ship(_replacement("case-9"), parcels=[parcel("W7", (0, 1))], now=at(62))
    [event] = transition.events
    assert isinstance(event, DispatchShipped)
    assert event.aftersale_case_id == "case-9"
    assert event.state == DispatchState.SHIPPED
    again = DISPATCH_EVENTS.validate_json(event.to_kafka_value())
    assert isinstance(again, DispatchShipped) and again.aftersale_case_id == "case-9"


def test_every_partial_shipment_of_a_replacement_carries_its_after_sale_case() -> None:
    before = dispatch.accept(
        dispatch.offer(
            dispatch_id=f"{ORDER_ID}-2",
            order_id=ORDER_ID,
            shop_id=SHOP,
            supplier_id="sup-a",
            lines=[dline(0, 2)],
            receiver=ADDRESS,
            ship_by=None,
            paid_at=PAID_AT,
            now=at(60),
            aftersale_case_id="case-9",
        ).order,
        estimated_ship_at=None,
        now=at(61),
    ).order
    first = dispatch.ship(before, parcels=[parcel("W7", (0, 1))], now=at(62))
    second = dispatch.ship(first.order, parcels=[parcel("W8", (0, 1))], now=at(63))
    events = [*first.events, *second.events]
    assert [e.state for e in events] == [DispatchState.PARTIALLY_SHIPPED, DispatchState.SHIPPED]
    assert all(isinstance(e, DispatchShipped) and e.aftersale_case_id == "case-9" for e in events)


def test_an_ordinary_shipment_carries_no_after_sale_case() -> None:
    [event] = dispatch.ship(accepted(), parcels=[parcel("W1", (0, 2), (1, 1))], now=at(5)).events
    assert isinstance(event, DispatchShipped) and event.aftersale_case_id is None


def test_a_shipment_event_from_before_the_case_field_still_reads() -> None:
    [event] = dispatch.ship(accepted(), parcels=[parcel("W1", (0, 2), (1, 1))], now=at(5)).events
    old = json.loads(event.to_kafka_value())
    del old["aftersale_case_id"]
    assert old["schema_version"] == 1
    read = DISPATCH_EVENTS.validate_python(old)
    assert isinstance(read, DispatchShipped) and read.aftersale_case_id is None
    assert read == event


SHIP_ERRORS = {
    DispatchState.OFFERED: SupplierErrorCode.NOT_ACCEPTED,
    DispatchState.REJECTED: SupplierErrorCode.NOT_ACCEPTED,
    DispatchState.SHIPPED: SupplierErrorCode.ALREADY_SHIPPED,
    DispatchState.CANCELLED: SupplierErrorCode.DISPATCH_CANCELLED,
}


@pytest.mark.parametrize(("state", "code"), SHIP_ERRORS.items())
def test_ship_is_refused_outside_accepted_and_partially_shipped(
    state: DispatchState, code: SupplierErrorCode
) -> None:
    order = STATES[state]()
    expect_error(code, lambda: dispatch.ship(order, parcels=[parcel("W9", (1, 1))], now=at(9)))
    expect_error(
        code, lambda: dispatch.check_can_request_waybills(order, [[ParcelLine(line_no=1, quantity=1)]])
    )


@pytest.mark.parametrize(
    ("build", "parcels"),
    [
        (accepted, [parcel("W1", (0, 3))]),
        (accepted, [parcel("W1", (0, 1), (0, 2))]),
        (accepted, [parcel("W1", (0, 2)), parcel("W2", (0, 1))]),
        (partially_shipped, [parcel("W2", (0, 2))]),
    ],
    ids=["one-parcel", "one-parcel-repeated-line", "over-two-parcels", "after-a-partial-shipment"],
)
def test_ship_more_than_remains_is_refused(
    build: Callable[[], DispatchOrder], parcels: list[ParcelShipment]
) -> None:
    order = build()
    error = expect_error(
        SupplierErrorCode.QUANTITY_EXCEEDS_REMAINING, lambda: dispatch.ship(order, parcels=parcels, now=at(9))
    )
    assert "line 0" in error.message
    expect_error(
        SupplierErrorCode.QUANTITY_EXCEEDS_REMAINING,
        lambda: dispatch.check_can_request_waybills(order, [p.lines for p in parcels]),
    )


def test_ship_an_unknown_line_is_refused() -> None:
    order = accepted()
    expect_error(
        SupplierErrorCode.UNKNOWN_LINE,
        lambda: dispatch.ship(order, parcels=[parcel("W1", (0, 1), (7, 1))], now=at(9)),
    )
    expect_error(
        SupplierErrorCode.UNKNOWN_LINE,
        lambda: dispatch.check_can_request_waybills(order, [[ParcelLine(line_no=7, quantity=1)]]),
    )


def test_waybills_can_be_requested_for_what_remains() -> None:
    dispatch.check_can_request_waybills(accepted(), [[ParcelLine(line_no=0, quantity=2)]])
    dispatch.check_can_request_waybills(partially_shipped(), [[ParcelLine(line_no=0, quantity=1)]])


@pytest.mark.parametrize(
    ("build", "parcels"),
    [
        (accepted, [parcel("W1", (0, 1)), parcel("W1", (1, 1))]),
        (partially_shipped, [parcel("W1", (1, 1))]),
        (partially_shipped, [parcel("W2", (1, 1)), parcel("W1", (0, 1))]),
    ],
    ids=["twice-in-one-call", "used-by-an-earlier-parcel", "one-of-several-already-used"],
)
def test_a_waybill_is_used_once(build: Callable[[], DispatchOrder], parcels: list[ParcelShipment]) -> None:
    order = build()
    expect_error(
        SupplierErrorCode.WAYBILL_ALREADY_USED, lambda: dispatch.ship(order, parcels=parcels, now=at(9))
    )


@pytest.mark.parametrize("state", [DispatchState.ACCEPTED, DispatchState.PARTIALLY_SHIPPED])
def test_a_shipment_without_parcels_is_refused(state: DispatchState) -> None:
    order = STATES[state]()
    expect_error(SupplierErrorCode.VALIDATION_FAILED, lambda: dispatch.ship(order, parcels=[], now=at(9)))


@pytest.mark.parametrize("kind", list(ChangeKind))
def test_shipping_with_an_open_request_refuses_it_as_already_shipped(kind: ChangeKind) -> None:
    before = with_requests(kind)
    open_id = request_id(before, kind)
    transition = dispatch.ship(before, parcels=[parcel("W1", (0, 1))], now=at(5))
    after = transition.order
    assert after.state == DispatchState.PARTIALLY_SHIPPED
    shipped_event, answered, interception = transition.events
    assert isinstance(shipped_event, DispatchShipped)
    assert isinstance(answered, DispatchChangeAnswered)
    assert answered.request.request_id == open_id
    assert answered.request.status == ChangeStatus.REFUSED
    assert answered.request.refusal == ChangeRefusal.ALREADY_SHIPPED
    assert answered.request.answered_at == at(5)
    assert isinstance(interception, InterceptionRequired)
    assert interception.kind == kind
    assert interception.parcels == after.parcels
    assert after.open_request() is None
    assert_versions_follow(before, after, transition.events)
    # Nothing of the change was applied.
    assert after.receiver == ADDRESS
    assert [line.sku_id for line in after.lines] == ["sku-0", "sku-1"]


def test_shipping_refuses_every_open_request_each_with_its_interception() -> None:
    before = with_requests(ChangeKind.ADDRESS, ChangeKind.SKU)
    transition = dispatch.ship(before, parcels=[parcel("W1", (0, 2), (1, 1))], now=at(5))
    assert transition.order.state == DispatchState.SHIPPED
    assert [type(e) for e in transition.events] == [
        DispatchShipped,
        DispatchChangeAnswered,
        InterceptionRequired,
        DispatchChangeAnswered,
        InterceptionRequired,
    ]
    kinds = [e.kind for e in transition.events if isinstance(e, InterceptionRequired)]
    assert kinds == [ChangeKind.ADDRESS, ChangeKind.SKU]
    assert all(r.status == ChangeStatus.REFUSED for r in transition.order.change_requests)
    assert_versions_follow(before, transition.order, transition.events)


# --- answer_change ------------------------------------------------------------------------------------


def test_answer_an_unknown_request_is_not_found() -> None:
    order = with_requests(ChangeKind.CANCEL)
    expect_error(
        SupplierErrorCode.NOT_FOUND,
        lambda: dispatch.answer_change(
            order, request_id="nope", decision="confirm", refusal=None, text="", now=at(9)
        ),
    )


def test_confirm_a_cancellation_cancels_the_order() -> None:
    before = with_requests(ChangeKind.CANCEL)
    rid = request_id(before, ChangeKind.CANCEL)
    transition = dispatch.answer_change(
        before, request_id=rid, decision="confirm", refusal=None, text="", now=at(9)
    )
    after = transition.order
    assert after.state == DispatchState.CANCELLED and after.is_final
    [event] = transition.events
    assert isinstance(event, DispatchChangeAnswered)
    assert event.state == DispatchState.CANCELLED
    assert event.request.status == ChangeStatus.CONFIRMED and event.request.answered_at == at(9)
    assert after.change_requests == [event.request]
    assert_versions_follow(before, after, transition.events)
    expect_error(
        SupplierErrorCode.DISPATCH_CANCELLED,
        lambda: dispatch.ship(after, parcels=[parcel("W1", (0, 1))], now=at(10)),
    )


def test_confirm_an_address_change_applies_the_new_receiver() -> None:
    before = with_requests(ChangeKind.ADDRESS)
    rid = request_id(before, ChangeKind.ADDRESS)
    transition = dispatch.answer_change(
        before, request_id=rid, decision="confirm", refusal=None, text="", now=at(9)
    )
    after = transition.order
    assert after.state == DispatchState.ACCEPTED
    assert after.receiver == OTHER_ADDRESS
    assert after.open_request() is None
    [event] = transition.events
    assert isinstance(event, DispatchChangeAnswered)
    assert event.request.status == ChangeStatus.CONFIRMED
    assert event.request.new_receiver == OTHER_ADDRESS
    assert_versions_follow(before, after, transition.events)


def test_confirm_a_sku_change_applies_the_new_lines() -> None:
    before = with_requests(ChangeKind.SKU)
    rid = request_id(before, ChangeKind.SKU)
    transition = dispatch.answer_change(
        before, request_id=rid, decision="confirm", refusal=None, text="", now=at(9)
    )
    after = transition.order
    assert after.state == DispatchState.ACCEPTED
    assert after.lines == NEW_LINES
    assert after.open_request() is None
    assert_versions_follow(before, after, transition.events)
    # The shipment now checks against the new lines.
    done = dispatch.ship(after, parcels=[parcel("W1", (0, 2), (1, 1))], now=at(10)).order
    assert done.state == DispatchState.SHIPPED


@pytest.mark.parametrize("kind", list(ChangeKind))
def test_refuse_a_request_changes_nothing_else(kind: ChangeKind) -> None:
    before = with_requests(kind)
    rid = request_id(before, kind)
    transition = dispatch.answer_change(
        before,
        request_id=rid,
        decision="refuse",
        refusal=ChangeRefusal.OTHER,
        text="packed already",
        now=at(9),
    )
    after = transition.order
    assert (after.state, after.receiver, after.lines) == (before.state, before.receiver, before.lines)
    [event] = transition.events
    assert isinstance(event, DispatchChangeAnswered)
    assert event.request.status == ChangeStatus.REFUSED
    assert event.request.refusal == ChangeRefusal.OTHER
    assert event.request.refusal_text == "packed already"
    assert event.request.answered_at == at(9)
    assert after.open_request() is None
    assert_versions_follow(before, after, transition.events)


def test_refuse_without_a_refusal_reason_means_other() -> None:
    before = with_requests(ChangeKind.ADDRESS)
    rid = request_id(before, ChangeKind.ADDRESS)
    transition = dispatch.answer_change(
        before, request_id=rid, decision="refuse", refusal=None, text="", now=at(9)
    )
    [request] = transition.order.change_requests
    assert request.refusal == ChangeRefusal.OTHER


@pytest.mark.parametrize("kind", list(ChangeKind))
def test_refuse_as_already_shipped_requires_an_interception(kind: ChangeKind) -> None:
    before = with_requests(kind)
    rid = request_id(before, kind)
    transition = dispatch.answer_change(
        before, request_id=rid, decision="refuse", refusal=ChangeRefusal.ALREADY_SHIPPED, text="", now=at(9)
    )
    answered, interception = transition.events
    assert isinstance(answered, DispatchChangeAnswered)
    assert answered.request.refusal == ChangeRefusal.ALREADY_SHIPPED
    assert isinstance(interception, InterceptionRequired)
    assert interception.kind == kind
    assert transition.order.state == DispatchState.ACCEPTED
    assert_versions_follow(before, transition.order, transition.events)


def _answered(decision: str) -> tuple[DispatchOrder, str]:
    order = with_requests(ChangeKind.ADDRESS)
    rid = request_id(order, ChangeKind.ADDRESS)
    if decision == "superseded":
        order = dispatch.change_receiver(order, receiver=THIRD_ADDRESS, now=at(4)).order
    else:
        order = dispatch.answer_change(
            order,
            request_id=rid,
            decision="confirm" if decision == "confirmed" else "refuse",
            refusal=None,
            text="",
            now=at(4),
        ).order
    return order, rid


@pytest.mark.parametrize("status", ["confirmed", "refused", "superseded"])
@pytest.mark.parametrize("decision", ["confirm", "refuse"])
def test_answering_a_request_that_is_not_open_is_refused(status: str, decision: str) -> None:
    order, rid = _answered(status)
    assert next(r for r in order.change_requests if r.request_id == rid).status == status
    expect_error(
        SupplierErrorCode.CHANGE_REQUEST_NOT_OPEN,
        lambda: dispatch.answer_change(
            order,
            request_id=rid,
            decision="confirm" if decision == "confirm" else "refuse",
            refusal=None,
            text="",
            now=at(9),
        ),
    )


def test_a_request_refused_by_the_shipment_cannot_be_answered_again() -> None:
    order = with_requests(ChangeKind.CANCEL)
    rid = request_id(order, ChangeKind.CANCEL)
    after = dispatch.ship(order, parcels=[parcel("W1", (0, 1))], now=at(5)).order
    expect_error(
        SupplierErrorCode.CHANGE_REQUEST_NOT_OPEN,
        lambda: dispatch.answer_change(
            after, request_id=rid, decision="confirm", refusal=None, text="", now=at(9)
        ),
    )


def test_confirming_a_cancellation_supersedes_every_other_open_request() -> None:
    # The commands no longer open a request next to an open cancellation; a dispatch order stored
    # before that (a cancellation and an address change both open) is built by hand.
    order = with_requests(ChangeKind.CANCEL)
    address = dispatch.change_receiver(accepted(), receiver=OTHER_ADDRESS, now=at(4)).order.change_requests[0]
    address = address.model_copy(update={"request_id": f"{order.dispatch_id}-r2"})
    order = order.model_copy(update={"change_requests": [*order.change_requests, address]})
    assert order.open_request(ChangeKind.ADDRESS) is not None
    rid = request_id(order, ChangeKind.CANCEL)
    transition = dispatch.answer_change(
        order, request_id=rid, decision="confirm", refusal=None, text="", now=at(5)
    )
    after = transition.order
    assert after.state == DispatchState.CANCELLED
    assert after.open_request() is None
    assert [(r.kind, r.status, r.answered_at) for r in after.change_requests] == [
        (ChangeKind.CANCEL, ChangeStatus.CONFIRMED, at(5)),
        (ChangeKind.ADDRESS, ChangeStatus.SUPERSEDED, at(5)),
    ]
    assert after.receiver == ADDRESS, "the address change was not applied"
    [event] = transition.events
    assert isinstance(event, DispatchChangeAnswered) and event.request.request_id == rid
    assert_versions_follow(order, after, transition.events)
    expect_error(
        SupplierErrorCode.CHANGE_REQUEST_NOT_OPEN,
        lambda: dispatch.answer_change(
            after, request_id=address.request_id, decision="confirm", refusal=None, text="", now=at(6)
        ),
    )


# --- cancel_for_order / cancel_for_reroute -----------------------------------------------------------


def test_order_cancelled_while_offered_cancels_at_once() -> None:
    before = offered()
    transition = dispatch.cancel_for_order(before, now=at(3))
    assert transition.order.state == DispatchState.CANCELLED
    [event] = transition.events
    assert isinstance(event, DispatchCancelled)
    assert event.cause == "order_cancelled"
    assert_versions_follow(before, transition.order, transition.events)


def test_order_cancelled_while_accepted_asks_the_supplier() -> None:
    before = accepted()
    transition = dispatch.cancel_for_order(before, now=at(3))
    after = transition.order
    assert after.state == DispatchState.ACCEPTED
    request = after.open_request(ChangeKind.CANCEL)
    assert request is not None
    assert request.request_id == f"{before.dispatch_id}-r1"
    assert request.requested_at == at(3)
    [event] = transition.events
    assert isinstance(event, DispatchChangeRequested)
    assert event.request == request
    assert_versions_follow(before, after, transition.events)


def test_a_second_cancellation_while_one_is_open_changes_nothing() -> None:
    before = dispatch.cancel_for_order(accepted(), now=at(3)).order
    transition = dispatch.cancel_for_order(before, now=at(4))
    assert not transition.changed
    assert transition.order == before


def test_order_cancelled_after_everything_shipped_requires_an_interception_only() -> None:
    before = shipped()
    transition = dispatch.cancel_for_order(before, now=at(3))
    after = transition.order
    assert after.state == DispatchState.SHIPPED
    assert after.change_requests == []
    [event] = transition.events
    assert isinstance(event, InterceptionRequired)
    assert event.kind == ChangeKind.CANCEL
    assert event.parcels == before.parcels
    assert event.state == DispatchState.SHIPPED
    assert_versions_follow(before, after, transition.events)


def test_order_cancelled_while_partially_shipped_intercepts_the_parcels_and_asks_to_stop_the_rest() -> None:
    before = partially_shipped()
    transition = dispatch.cancel_for_order(before, now=at(3))
    after = transition.order
    assert after.state == DispatchState.PARTIALLY_SHIPPED
    interception, requested = transition.events
    assert isinstance(interception, InterceptionRequired)
    assert interception.kind == ChangeKind.CANCEL
    assert interception.parcels == before.parcels
    assert interception.state == DispatchState.PARTIALLY_SHIPPED
    assert isinstance(requested, DispatchChangeRequested)
    request = after.open_request(ChangeKind.CANCEL)
    assert request is not None and requested.request == request
    assert request.request_id == f"{before.dispatch_id}-r1" and request.requested_at == at(3)
    assert_versions_follow(before, after, transition.events)


def test_confirming_the_cancellation_of_a_partially_shipped_order_cancels_the_rest() -> None:
    order = dispatch.cancel_for_order(partially_shipped(), now=at(3)).order
    rid = request_id(order, ChangeKind.CANCEL)
    transition = dispatch.answer_change(
        order, request_id=rid, decision="confirm", refusal=None, text="", now=at(4)
    )
    after = transition.order
    assert after.state == DispatchState.CANCELLED and after.is_final
    assert after.parcels == order.parcels, "what left stays recorded"
    assert after.open_request() is None
    assert [type(e) for e in transition.events] == [DispatchChangeAnswered]
    assert_versions_follow(order, after, transition.events)
    expect_error(
        SupplierErrorCode.DISPATCH_CANCELLED,
        lambda: dispatch.ship(after, parcels=[parcel("W2", (1, 1))], now=at(5)),
    )


def test_a_second_cancellation_while_partially_shipped_does_not_ask_again() -> None:
    before = dispatch.cancel_for_order(partially_shipped(), now=at(3)).order
    transition = dispatch.cancel_for_order(before, now=at(4))
    assert [type(e) for e in transition.events] == [InterceptionRequired]
    assert transition.order.change_requests == before.change_requests


def test_shipping_the_rest_after_a_cancellation_refuses_it_as_already_shipped() -> None:
    order = dispatch.cancel_for_order(partially_shipped(), now=at(3)).order
    rid = request_id(order, ChangeKind.CANCEL)
    transition = dispatch.ship(order, parcels=[parcel("W2", (0, 1), (1, 1))], now=at(5))
    after = transition.order
    assert after.state == DispatchState.SHIPPED
    shipped_event, answered, interception = transition.events
    assert isinstance(shipped_event, DispatchShipped)
    assert isinstance(answered, DispatchChangeAnswered)
    assert answered.request.request_id == rid
    assert answered.request.refusal == ChangeRefusal.ALREADY_SHIPPED
    assert isinstance(interception, InterceptionRequired)
    assert interception.kind == ChangeKind.CANCEL
    assert [p.waybill_no for p in interception.parcels] == ["W1", "W2"]
    assert after.open_request() is None
    assert_versions_follow(order, after, transition.events)


@pytest.mark.parametrize("state", [DispatchState.REJECTED, DispatchState.CANCELLED])
@pytest.mark.parametrize("command", [dispatch.cancel_for_order, dispatch.cancel_for_reroute])
def test_cancelling_an_order_that_already_ended_changes_nothing(
    state: DispatchState, command: Callable[..., Transition]
) -> None:
    before = STATES[state]()
    transition = command(before, now=at(3))
    assert not transition.changed
    assert transition.order == before


def test_reroute_while_offered_cancels_with_cause_rerouted() -> None:
    transition = dispatch.cancel_for_reroute(offered(), now=at(3))
    assert transition.order.state == DispatchState.CANCELLED
    [event] = transition.events
    assert isinstance(event, DispatchCancelled)
    assert event.cause == "rerouted"


def test_reroute_while_accepted_asks_the_supplier_once() -> None:
    first = dispatch.cancel_for_reroute(accepted(), now=at(3))
    assert first.order.open_request(ChangeKind.CANCEL) is not None
    assert [type(e) for e in first.events] == [DispatchChangeRequested]
    assert not dispatch.cancel_for_reroute(first.order, now=at(4)).changed
    assert not dispatch.cancel_for_order(first.order, now=at(4)).changed


@pytest.mark.parametrize("state", [DispatchState.PARTIALLY_SHIPPED, DispatchState.SHIPPED])
def test_reroute_after_goods_left_changes_nothing(state: DispatchState) -> None:
    before = STATES[state]()
    assert not dispatch.cancel_for_reroute(before, now=at(3)).changed


def test_a_cancellation_supersedes_every_open_request() -> None:
    before = with_requests(ChangeKind.ADDRESS, ChangeKind.SKU)
    transition = dispatch.cancel_for_order(before, now=at(5))
    statuses = [(r.kind, r.status) for r in transition.order.change_requests]
    assert statuses == [
        (ChangeKind.ADDRESS, ChangeStatus.SUPERSEDED),
        (ChangeKind.SKU, ChangeStatus.SUPERSEDED),
        (ChangeKind.CANCEL, ChangeStatus.OPEN),
    ]
    assert all(r.answered_at == at(5) for r in transition.order.change_requests[:2])
    assert [r.request_id for r in transition.order.change_requests] == [
        f"{before.dispatch_id}-r1",
        f"{before.dispatch_id}-r2",
        f"{before.dispatch_id}-r3",
    ]
    assert len(transition.events) == 1
    assert_versions_follow(before, transition.order, transition.events)


# --- change_receiver ------------------------------------------------------------------------------


def test_new_receiver_while_offered_is_applied_directly() -> None:
    before = offered()
    transition = dispatch.change_receiver(before, receiver=OTHER_ADDRESS, now=at(3))
    after = transition.order
    assert after.receiver == OTHER_ADDRESS and after.state == DispatchState.OFFERED
    assert after.change_requests == []
    [event] = transition.events
    assert isinstance(event, DispatchUpdated)
    assert event.receiver == OTHER_ADDRESS and event.lines == before.lines
    assert_versions_follow(before, after, transition.events)


@pytest.mark.parametrize("state", list(DispatchState))
def test_the_same_receiver_changes_nothing(state: DispatchState) -> None:
    before = STATES[state]()
    transition = dispatch.change_receiver(before, receiver=ADDRESS, now=at(3))
    assert not transition.changed and transition.order == before


def test_new_receiver_while_accepted_asks_the_supplier() -> None:
    before = accepted()
    transition = dispatch.change_receiver(before, receiver=OTHER_ADDRESS, now=at(3))
    after = transition.order
    assert after.receiver == ADDRESS, "not applied until the supplier confirms"
    request = after.open_request(ChangeKind.ADDRESS)
    assert request is not None and request.new_receiver == OTHER_ADDRESS
    [event] = transition.events
    assert isinstance(event, DispatchChangeRequested)
    assert_versions_follow(before, after, transition.events)


def test_the_receiver_already_asked_for_changes_nothing() -> None:
    before = with_requests(ChangeKind.ADDRESS)
    assert not dispatch.change_receiver(before, receiver=OTHER_ADDRESS, now=at(4)).changed


def test_a_newer_receiver_supersedes_the_open_address_request() -> None:
    before = with_requests(ChangeKind.ADDRESS)
    transition = dispatch.change_receiver(before, receiver=THIRD_ADDRESS, now=at(4))
    first, second = transition.order.change_requests
    assert (first.status, first.answered_at) == (ChangeStatus.SUPERSEDED, at(4))
    assert (second.status, second.new_receiver) == (ChangeStatus.OPEN, THIRD_ADDRESS)
    assert second.request_id != first.request_id
    assert_versions_follow(before, transition.order, transition.events)


def test_changing_back_to_the_current_receiver_while_a_change_is_open_asks_again() -> None:
    before = with_requests(ChangeKind.ADDRESS)
    transition = dispatch.change_receiver(before, receiver=ADDRESS, now=at(4))
    request = transition.order.open_request(ChangeKind.ADDRESS)
    assert request is not None and request.new_receiver == ADDRESS
    assert [r.status for r in transition.order.change_requests] == [
        ChangeStatus.SUPERSEDED,
        ChangeStatus.OPEN,
    ]


def test_an_address_request_does_not_supersede_other_kinds() -> None:
    before = with_requests(ChangeKind.SKU)
    after = dispatch.change_receiver(before, receiver=OTHER_ADDRESS, now=at(4)).order
    assert after.open_request(ChangeKind.SKU) is not None
    assert after.open_request(ChangeKind.ADDRESS) is not None


def cancelling(state: DispatchState) -> DispatchOrder:
    """An accepted or partially shipped order whose supplier is asked to cancel."""
    order = dispatch.cancel_for_order(STATES[state](), now=at(3)).order
    assert order.open_request(ChangeKind.CANCEL) is not None
    return order


@pytest.mark.parametrize("state", [DispatchState.ACCEPTED, DispatchState.PARTIALLY_SHIPPED])
def test_a_new_receiver_while_a_cancellation_is_open_records_nothing(state: DispatchState) -> None:
    before = cancelling(state)
    transition = dispatch.change_receiver(before, receiver=OTHER_ADDRESS, now=at(4))
    assert not transition.changed and transition.order == before


def test_a_new_receiver_after_a_sku_and_a_cancel_request_records_nothing() -> None:
    before = with_requests(ChangeKind.SKU, ChangeKind.CANCEL)
    transition = dispatch.change_receiver(before, receiver=OTHER_ADDRESS, now=at(4))
    assert not transition.changed and transition.order == before
    assert transition.order.open_request(ChangeKind.ADDRESS) is None


def test_new_receiver_after_everything_shipped_requires_an_interception_only() -> None:
    before = shipped()
    transition = dispatch.change_receiver(before, receiver=OTHER_ADDRESS, now=at(3))
    assert transition.order.receiver == ADDRESS
    assert transition.order.change_requests == []
    [event] = transition.events
    assert isinstance(event, InterceptionRequired)
    assert event.kind == ChangeKind.ADDRESS and event.parcels == before.parcels
    assert_versions_follow(before, transition.order, transition.events)


def test_new_receiver_while_partially_shipped_intercepts_and_asks_for_the_rest() -> None:
    before = partially_shipped()
    transition = dispatch.change_receiver(before, receiver=OTHER_ADDRESS, now=at(3))
    after = transition.order
    assert after.receiver == ADDRESS, "not applied until the supplier confirms"
    interception, requested = transition.events
    assert isinstance(interception, InterceptionRequired)
    assert interception.kind == ChangeKind.ADDRESS and interception.parcels == before.parcels
    assert isinstance(requested, DispatchChangeRequested)
    request = after.open_request(ChangeKind.ADDRESS)
    assert request is not None and request.new_receiver == OTHER_ADDRESS
    assert requested.request == request
    assert_versions_follow(before, after, transition.events)
    confirmed = dispatch.answer_change(
        after, request_id=request.request_id, decision="confirm", refusal=None, text="", now=at(4)
    ).order
    assert confirmed.receiver == OTHER_ADDRESS
    assert confirmed.state == DispatchState.PARTIALLY_SHIPPED


@pytest.mark.parametrize("state", [DispatchState.REJECTED, DispatchState.CANCELLED])
def test_new_receiver_for_an_ended_order_changes_nothing(state: DispatchState) -> None:
    before = STATES[state]()
    transition = dispatch.change_receiver(before, receiver=OTHER_ADDRESS, now=at(3))
    assert not transition.changed and transition.order == before


# --- change_lines ---------------------------------------------------------------------------------


def test_new_lines_while_offered_are_applied_directly() -> None:
    before = offered()
    transition = dispatch.change_lines(before, lines=NEW_LINES, now=at(3))
    after = transition.order
    assert after.lines == NEW_LINES and after.state == DispatchState.OFFERED
    [event] = transition.events
    assert isinstance(event, DispatchUpdated)
    assert event.lines == NEW_LINES and event.receiver == ADDRESS
    assert_versions_follow(before, after, transition.events)


@pytest.mark.parametrize("state", list(DispatchState))
def test_the_same_lines_change_nothing(state: DispatchState) -> None:
    before = STATES[state]()
    assert not dispatch.change_lines(before, lines=before.lines, now=at(3)).changed


def test_new_lines_while_accepted_ask_the_supplier() -> None:
    before = accepted()
    transition = dispatch.change_lines(before, lines=NEW_LINES, now=at(3))
    after = transition.order
    assert after.lines == before.lines
    request = after.open_request(ChangeKind.SKU)
    assert request is not None and request.new_lines == NEW_LINES
    assert [type(e) for e in transition.events] == [DispatchChangeRequested]
    assert_versions_follow(before, after, transition.events)


def test_the_lines_already_asked_for_change_nothing() -> None:
    before = with_requests(ChangeKind.SKU)
    assert not dispatch.change_lines(before, lines=NEW_LINES, now=at(4)).changed


def test_newer_lines_supersede_the_open_sku_request_only() -> None:
    before = with_requests(ChangeKind.ADDRESS, ChangeKind.SKU)
    after = dispatch.change_lines(before, lines=OTHER_LINES, now=at(4)).order
    assert [(r.kind, r.status) for r in after.change_requests] == [
        (ChangeKind.ADDRESS, ChangeStatus.OPEN),
        (ChangeKind.SKU, ChangeStatus.SUPERSEDED),
        (ChangeKind.SKU, ChangeStatus.OPEN),
    ]
    request = after.open_request(ChangeKind.SKU)
    assert request is not None and request.new_lines == OTHER_LINES


def test_new_lines_after_everything_shipped_require_an_interception_only() -> None:
    before = shipped()
    transition = dispatch.change_lines(before, lines=NEW_LINES, now=at(3))
    assert transition.order.lines == before.lines
    assert transition.order.change_requests == []
    [event] = transition.events
    assert isinstance(event, InterceptionRequired)
    assert event.kind == ChangeKind.SKU and event.parcels == before.parcels
    assert_versions_follow(before, transition.order, transition.events)


def test_new_lines_while_partially_shipped_intercept_and_ask_for_the_rest() -> None:
    before = partially_shipped()
    transition = dispatch.change_lines(before, lines=NEW_LINES, now=at(3))
    after = transition.order
    assert after.lines == before.lines, "not applied until the supplier confirms"
    interception, requested = transition.events
    assert isinstance(interception, InterceptionRequired)
    assert interception.kind == ChangeKind.SKU and interception.parcels == before.parcels
    assert isinstance(requested, DispatchChangeRequested)
    request = after.open_request(ChangeKind.SKU)
    assert request is not None and request.new_lines == NEW_LINES
    assert requested.request == request
    assert_versions_follow(before, after, transition.events)


@pytest.mark.parametrize("state", [DispatchState.ACCEPTED, DispatchState.PARTIALLY_SHIPPED])
def test_new_lines_while_a_cancellation_is_open_record_nothing(state: DispatchState) -> None:
    before = cancelling(state)
    transition = dispatch.change_lines(before, lines=NEW_LINES, now=at(4))
    assert not transition.changed and transition.order == before


@pytest.mark.parametrize("kind", [ChangeKind.ADDRESS, ChangeKind.SKU])
def test_shipping_after_a_change_asked_while_partially_shipped_refuses_it(kind: ChangeKind) -> None:
    order = partially_shipped()
    if kind == ChangeKind.ADDRESS:
        order = dispatch.change_receiver(order, receiver=OTHER_ADDRESS, now=at(3)).order
    else:
        order = dispatch.change_lines(order, lines=NEW_LINES, now=at(3)).order
    rid = request_id(order, kind)
    transition = dispatch.ship(order, parcels=[parcel("W2", (1, 1))], now=at(5))
    assert [type(e) for e in transition.events] == [
        DispatchShipped,
        DispatchChangeAnswered,
        InterceptionRequired,
    ]
    answered = transition.events[1]
    assert isinstance(answered, DispatchChangeAnswered)
    assert answered.request.request_id == rid
    assert answered.request.refusal == ChangeRefusal.ALREADY_SHIPPED
    assert transition.order.open_request() is None
    assert (transition.order.receiver, transition.order.lines[0].sku_id) == (ADDRESS, "sku-0")


@pytest.mark.parametrize("state", [DispatchState.REJECTED, DispatchState.CANCELLED])
def test_new_lines_for_an_ended_order_change_nothing(state: DispatchState) -> None:
    before = STATES[state]()
    assert not dispatch.change_lines(before, lines=NEW_LINES, now=at(3)).changed


# --- reduce_lines (a refund before shipping) -------------------------------------------------------

LINE_0 = ("p-sku-0", "sku-0")
LINE_1 = ("p-sku-1", "sku-1")


def test_a_refund_while_offered_shrinks_the_lines_directly() -> None:
    before = offered()
    transition = dispatch.reduce_lines(before, units={LINE_0: 1}, now=at(3))
    [event] = transition.events
    assert isinstance(event, DispatchUpdated)
    assert [(x.line_no, x.quantity) for x in transition.order.lines] == [(0, 1), (1, 1)]
    assert_versions_follow(before, transition.order, transition.events)


def test_a_refund_while_accepted_asks_the_supplier_for_smaller_lines() -> None:
    before = accepted()
    transition = dispatch.reduce_lines(before, units={LINE_0: 1}, now=at(3))
    [event] = transition.events
    assert isinstance(event, DispatchChangeRequested)
    assert event.request.new_lines is not None
    assert [(x.line_no, x.quantity) for x in event.request.new_lines] == [(0, 1), (1, 1)]
    assert transition.order.lines == before.lines, "not applied until the supplier confirms"


def test_a_refund_of_every_unit_not_shipped_yet_cancels() -> None:
    assert dispatch.reduce_lines(offered(), units={LINE_0: 2, LINE_1: 1}, now=at(3)).order.state == (
        DispatchState.CANCELLED
    )
    asked = dispatch.reduce_lines(accepted(), units={LINE_0: 5, LINE_1: 1}, now=at(3)).order
    assert asked.open_request(ChangeKind.CANCEL) is not None


def test_a_refund_while_partially_shipped_drops_only_units_not_shipped_and_intercepts_nothing() -> None:
    """Line 0 has 1 of 2 units shipped: a refund of 2 units of it drops the one left; the parcel sent
    stays with the buyer (a sale once intercepted it and left WeChat waiting for a unit forever)."""
    before = partially_shipped()
    transition = dispatch.reduce_lines(before, units={LINE_0: 2}, now=at(3))
    [event] = transition.events
    assert isinstance(event, DispatchChangeRequested)
    assert event.request.new_lines is not None
    assert [(x.line_no, x.quantity, x.shipped_quantity) for x in event.request.new_lines] == [
        (0, 1, 1),
        (1, 1, 0),
    ]
    assert_versions_follow(before, transition.order, transition.events)


def _confirm_sku_request(order: DispatchOrder) -> Transition:
    rid = request_id(order, ChangeKind.SKU)
    return dispatch.answer_change(order, request_id=rid, decision="confirm", refusal=None, text="", now=at(4))


def test_confirming_a_refund_of_the_last_units_left_ends_the_order_shipped() -> None:
    order = dispatch.reduce_lines(partially_shipped(), units={LINE_0: 1, LINE_1: 1}, now=at(3)).order
    transition = _confirm_sku_request(order)
    assert transition.order.state == DispatchState.SHIPPED
    assert [(x.quantity, x.remaining) for x in transition.order.lines] == [(1, 0)]
    [answered] = transition.events
    assert isinstance(answered, DispatchChangeAnswered) and answered.state == DispatchState.SHIPPED


def test_confirming_a_refund_with_units_still_to_send_stays_partially_shipped() -> None:
    order = dispatch.reduce_lines(partially_shipped(), units={LINE_1: 1}, now=at(3)).order
    transition = _confirm_sku_request(order)
    assert transition.order.state == DispatchState.PARTIALLY_SHIPPED
    assert [(x.line_no, x.remaining) for x in transition.order.lines] == [(0, 1)]


def test_a_second_refund_while_the_first_is_asked_adds_to_it() -> None:
    """The supplier has not answered the first refund's request yet: the second asks for both."""
    first = dispatch.reduce_lines(accepted(), units={LINE_0: 1}, now=at(3)).order
    second = dispatch.reduce_lines(first, units={LINE_1: 1}, now=at(4)).order
    request = second.open_request(ChangeKind.SKU)
    assert request is not None and request.new_lines is not None
    assert [(x.line_no, x.quantity) for x in request.new_lines] == [(0, 1)]
    same_sku = dispatch.reduce_lines(first, units={LINE_0: 1}, now=at(4)).order.open_request(ChangeKind.SKU)
    assert same_sku is not None and same_sku.new_lines is not None
    assert [(x.line_no, x.quantity) for x in same_sku.new_lines] == [(1, 1)]  # both units of line 0 off


@pytest.mark.parametrize("build", [shipped, rejected, cancelled])
def test_a_refund_of_units_that_cannot_be_stopped_changes_nothing(build: Callable[[], DispatchOrder]) -> None:
    assert not dispatch.reduce_lines(build(), units={LINE_0: 2, LINE_1: 1}, now=at(3)).changed


# --- Properties ------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    quantities=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    calls=st.lists(
        st.lists(
            st.lists(st.tuples(st.integers(0, 4), st.integers(1, 4)), min_size=1, max_size=3),
            min_size=1,
            max_size=3,
        ),
        max_size=8,
    ),
)
def test_property_any_ship_sequence_never_ships_more_than_ordered(
    quantities: list[int], calls: list[list[list[tuple[int, int]]]]
) -> None:
    order = accepted(*(dline(n, q) for n, q in enumerate(quantities)))
    waybill = 0
    for call in calls:
        parcels = []
        for items in call:
            waybill += 1
            parcels.append(parcel(f"W{waybill}", *items))
        before = order
        try:
            transition = dispatch.ship(order, parcels=parcels, now=at(waybill))
        except DispatchError as error:
            assert error.code in {
                SupplierErrorCode.UNKNOWN_LINE,
                SupplierErrorCode.QUANTITY_EXCEEDS_REMAINING,
                SupplierErrorCode.ALREADY_SHIPPED,
            }
            if error.code == SupplierErrorCode.ALREADY_SHIPPED:
                assert order.state == DispatchState.SHIPPED
            continue
        order = transition.order
        assert_versions_follow(before, order, transition.events)
        wanted = sum(q for items in call for _, q in items)
        assert (
            sum(line.shipped_quantity for line in order.lines)
            == sum(line.shipped_quantity for line in before.lines) + wanted
        )
    for line, quantity in zip(order.lines, quantities, strict=True):
        assert 0 <= line.shipped_quantity <= quantity
    everything = all(line.shipped_quantity == line.quantity for line in order.lines)
    assert (order.state == DispatchState.SHIPPED) == everything
    if order.parcels:
        assert order.state in {DispatchState.SHIPPED, DispatchState.PARTIALLY_SHIPPED}
    assert [p.parcel_no for p in order.parcels] == list(range(1, len(order.parcels) + 1))
    shipped_in_parcels = [0] * len(quantities)
    for p in order.parcels:
        for item in p.lines:
            shipped_in_parcels[item.line_no] += item.quantity
    assert shipped_in_parcels == [line.shipped_quantity for line in order.lines]


ACTIONS = ["accept", "reject", "ship", "cancel", "reroute", "receiver", "lines", "confirm", "refuse"]


@settings(max_examples=200, deadline=None)
@given(data=st.data(), actions=st.lists(st.sampled_from(ACTIONS), max_size=12))
def test_property_every_event_bumps_the_version_once(data: st.DataObject, actions: list[str]) -> None:
    order = offered()
    events_seen = 1  # the offer
    for step, action in enumerate(actions, start=1):
        now = at(step)
        before = order
        try:
            match action:
                case "accept":
                    transition = dispatch.accept(order, estimated_ship_at=None, now=now)
                case "reject":
                    transition = dispatch.reject(order, reason=RejectReason.OTHER, text="", now=now)
                case "ship":
                    line = data.draw(st.sampled_from(order.lines))
                    quantity = data.draw(st.integers(1, max(1, line.remaining)))
                    transition = dispatch.ship(
                        order, parcels=[parcel(f"W{step}", (line.line_no, quantity))], now=now
                    )
                case "cancel":
                    transition = dispatch.cancel_for_order(order, now=now)
                case "reroute":
                    transition = dispatch.cancel_for_reroute(order, now=now)
                case "receiver":
                    receiver = data.draw(st.sampled_from([ADDRESS, OTHER_ADDRESS, THIRD_ADDRESS]))
                    transition = dispatch.change_receiver(order, receiver=receiver, now=now)
                case "lines":
                    lines = data.draw(st.sampled_from([NEW_LINES, OTHER_LINES]))
                    transition = dispatch.change_lines(order, lines=lines, now=now)
                case _:
                    if not order.change_requests:
                        continue
                    request = data.draw(st.sampled_from(order.change_requests))
                    transition = dispatch.answer_change(
                        order,
                        request_id=request.request_id,
                        decision="confirm" if action == "confirm" else "refuse",
                        refusal=None,
                        text="",
                        now=now,
                    )
        except DispatchError:
            continue
        order = transition.order
        events_seen += len(transition.events)
        assert_versions_follow(before, order, transition.events)
        assert order.version == events_seen
        if transition.changed:
            assert order.updated_at == now
        else:
            assert order == before
        for kind in ChangeKind:
            assert (
                sum(1 for r in order.change_requests if r.kind == kind and r.status == ChangeStatus.OPEN) <= 1
            )
        assert all(line.shipped_quantity <= line.quantity for line in order.lines)
        if order.parcels:
            # A shipment answers every request open before it; after a partial shipment a
            # cancellation or change may open a new one, for the rest still to ship.
            last_shipped_at = max(p.shipped_at for p in order.parcels)
            assert all(
                r.requested_at > last_shipped_at
                for r in order.change_requests
                if r.status == ChangeStatus.OPEN
            )
        if order.state == DispatchState.SHIPPED or order.is_final:
            assert order.open_request() is None, "nothing is left to change"
        assert len({r.request_id for r in order.change_requests}) == len(order.change_requests)
