"""How cases end: the buyer withdraws, WeChat closes, refunds or rejects; final cases never change;
late and duplicate facts; the deadline warning."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest

from services.aftersale.domain.case import ActionKind, Case, Policy, Stage, decide
from shared.events.aftersale import CaseState, CaseType, Resolution
from tests.unit.aftersale.builders import (
    ALL_STATUSES,
    IN_PROGRESS_STATUSES,
    NO_AUTO_REFUND,
    POLICY,
    REFUNDED_STATUSES,
    REJECTED_STATUSES,
    REPLACEMENT,
    RETURN_WAYBILL,
    UNDER_AUTO_APPROVE,
    Run,
    assert_unchanged,
    at,
    fulfilment,
    kinds,
)

A = ActionKind

# --- Runs parked in every non-final state -------------------------------------------------------------


def _new() -> Run:
    return Run.start(CaseType.REFUND, Stage.NOT_SHIPPED)  # not decided yet: state None


def _awaiting_operator() -> Run:
    run = Run.start(CaseType.REFUND, Stage.DELIVERED)
    run.step()
    return run


def _awaiting_operator_exchange() -> Run:
    run = Run.start(CaseType.EXCHANGE, Stage.NOT_SHIPPED)
    run.step()
    return run


def _awaiting_operator_return_without_goods() -> Run:
    run = Run.start(CaseType.RETURN, Stage.NOT_SHIPPED)
    run.step()
    run.step(stage=Stage.CANCELLED)  # stopped: WeChat would not refund a return, a person decides
    return run


def _stopping() -> Run:
    run = Run.start(CaseType.REFUND, Stage.NOT_SHIPPED)
    run.step()
    return run


def _intercepting() -> Run:
    run = Run.start(CaseType.RETURN, Stage.IN_TRANSIT)
    run.step()
    return run


def _awaiting_return() -> Run:
    run = Run.start(CaseType.RETURN, Stage.DELIVERED, UNDER_AUTO_APPROVE)
    run.step()
    return run


def _awaiting_receipt() -> Run:
    run = _awaiting_return()
    run.step(now=at(hours=1), wechat_status="MERCHANT_WAIT_RECEIPT", return_waybill=RETURN_WAYBILL)
    return run


def _refunding() -> Run:
    run = Run.start(CaseType.REFUND, Stage.CANCELLED)
    run.step()
    return run


def _exchange_awaiting_receipt() -> Run:
    run = Run.start(CaseType.EXCHANGE, Stage.DELIVERED, UNDER_AUTO_APPROVE)
    run.step()
    run.step(now=at(hours=1), return_waybill=RETURN_WAYBILL)
    return run


def _exchange_reshipping() -> Run:
    run = _exchange_awaiting_receipt()
    run.step(now=at(hours=2), supplier_received=True)
    return run


def _reshipping() -> Run:
    run = Run.start(CaseType.RESHIP, Stage.DELIVERED)
    run.step()
    return run


# label: (builder, the state it parks in, the resolution if WeChat then reports a refund)
NON_FINAL: dict[str, tuple[Callable[[], Run], CaseState | None, Resolution]] = {
    "new": (_new, None, Resolution.REFUNDED),
    "awaiting_operator": (_awaiting_operator, CaseState.AWAITING_OPERATOR, Resolution.REFUNDED),
    "exchange_awaiting_operator": (
        _awaiting_operator_exchange,
        CaseState.AWAITING_OPERATOR,
        Resolution.REFUNDED,
    ),
    "return_awaiting_operator": (
        _awaiting_operator_return_without_goods,
        CaseState.AWAITING_OPERATOR,
        Resolution.REFUNDED,
    ),
    "stopping_shipment": (_stopping, CaseState.STOPPING_SHIPMENT, Resolution.REFUNDED),
    "intercepting": (_intercepting, CaseState.INTERCEPTING, Resolution.REFUNDED),
    "awaiting_return": (_awaiting_return, CaseState.AWAITING_RETURN, Resolution.RETURNED_AND_REFUNDED),
    "awaiting_receipt": (_awaiting_receipt, CaseState.AWAITING_RECEIPT, Resolution.RETURNED_AND_REFUNDED),
    "refunding": (_refunding, CaseState.REFUNDING, Resolution.REFUNDED),
    "exchange_awaiting_receipt": (
        _exchange_awaiting_receipt,
        CaseState.AWAITING_RECEIPT,
        Resolution.RETURNED_AND_REFUNDED,
    ),
    "exchange_reshipping": (_exchange_reshipping, CaseState.RESHIPPING, Resolution.RETURNED_AND_REFUNDED),
    "reshipping": (_reshipping, CaseState.RESHIPPING, Resolution.REFUNDED),
}


def test_every_non_final_state_is_covered() -> None:
    parked = {state for _, state, _ in NON_FINAL.values()}
    assert parked == {
        None,
        *(s for s in CaseState if s not in (CaseState.RESOLVED, CaseState.REJECTED, CaseState.CLOSED)),
    }


@pytest.mark.parametrize("label", list(NON_FINAL))
def test_parked_runs_are_where_they_say(label: str) -> None:
    build, state, _ = NON_FINAL[label]
    assert build().case.state == state


def _end(label: str, status: str) -> tuple[Case, Case]:
    """The case parked at `label`, then decided once WeChat reports `status`, with an overdue deadline
    (an ending must not also warn)."""
    build, _, _ = NON_FINAL[label]
    run = build()
    before = run.case
    run.case = run.case.model_copy(update={"deadline": at(minutes=1)})
    run.step(now=at(hours=100), wechat_status=status)
    return before, run.case


@pytest.mark.parametrize("label", list(NON_FINAL))
@pytest.mark.parametrize(
    ("status", "resolution"),
    [("USER_CANCELD", Resolution.WITHDRAWN), ("RETURN_CLOSED", Resolution.CLOSED_BY_WECHAT)],
)
def test_withdrawn_or_closed_in_any_state_closes_without_actions(
    label: str, status: str, resolution: Resolution
) -> None:
    before, after = _end(label, status)
    assert (after.state, after.resolution) == (CaseState.CLOSED, resolution)
    assert after.sent == before.sent  # no action
    assert not after.deadline_warned
    assert after.warned_deadline is None
    assert after.version == before.version + 1
    assert after.final


@pytest.mark.parametrize("label", list(NON_FINAL))
@pytest.mark.parametrize("status", REJECTED_STATUSES)
def test_rejected_at_wechat_in_any_state_is_rejected(label: str, status: str) -> None:
    before, after = _end(label, status)
    assert (after.state, after.resolution) == (CaseState.REJECTED, Resolution.REJECTED)
    assert after.sent == before.sent


@pytest.mark.parametrize("label", list(NON_FINAL))
@pytest.mark.parametrize("status", REFUNDED_STATUSES)
def test_refunded_at_wechat_in_any_state_resolves(label: str, status: str) -> None:
    before, after = _end(label, status)
    assert (after.state, after.resolution) == (CaseState.RESOLVED, NON_FINAL[label][2])
    assert after.sent == before.sent


@pytest.mark.parametrize(
    "label", ["exchange_awaiting_operator", "exchange_awaiting_receipt", "exchange_reshipping"]
)
def test_exchange_success_at_wechat_resolves(label: str) -> None:
    before, after = _end(label, "MERCHANT_EXCHANGE_SUCCESS")
    assert (after.state, after.resolution) == (CaseState.RESOLVED, Resolution.EXCHANGED)
    assert after.sent == before.sent


@pytest.mark.parametrize("label", list(NON_FINAL))
@pytest.mark.parametrize("status", IN_PROGRESS_STATUSES)
def test_a_duplicate_push_rereading_the_same_status_changes_nothing(label: str, status: str) -> None:
    run = NON_FINAL[label][0]()
    run.step(now=at(hours=3), wechat_status=status)  # the first push may move the case
    before = run.case
    for minutes in (0, 1, 5):  # the same push again, and again later
        assert_unchanged(
            before, decide(before, fulfilment(run.stage), run.policy, at(hours=3, minutes=minutes))
        )


# --- Final cases --------------------------------------------------------------------------------------


def _resolved_refunded() -> Run:
    run = _refunding()
    run.step(wechat_status="MERCHANT_REFUND_SUCCESS")
    return run


def _resolved_returned() -> Run:
    run = _awaiting_receipt()
    run.step(supplier_received=True)
    run.step(wechat_status="MERCHANT_RETURN_SUCCESS")
    return run


def _resolved_exchanged() -> Run:
    run = _exchange_reshipping()
    run.step(replacement_shipped=REPLACEMENT)
    return run


def _resolved_reshipped() -> Run:
    run = _reshipping()
    run.step(replacement_shipped=REPLACEMENT)
    return run


def _rejected_by_operator() -> Run:
    run = _awaiting_operator()
    run.step(operator_decision="reject")
    return run


def _rejected_at_wechat() -> Run:
    run = _stopping()
    run.step(wechat_status="MERCHANT_REJECT_REFUND")
    return run


def _withdrawn() -> Run:
    run = _intercepting()
    run.step(wechat_status="USER_CANCELD")
    return run


def _closed_by_wechat() -> Run:
    run = _awaiting_return()
    run.step(wechat_status="RETURN_CLOSED")
    return run


FINAL: dict[str, tuple[Callable[[], Run], CaseState, Resolution]] = {
    "refunded": (_resolved_refunded, CaseState.RESOLVED, Resolution.REFUNDED),
    "returned_and_refunded": (_resolved_returned, CaseState.RESOLVED, Resolution.RETURNED_AND_REFUNDED),
    "exchanged": (_resolved_exchanged, CaseState.RESOLVED, Resolution.EXCHANGED),
    "reshipped": (_resolved_reshipped, CaseState.RESOLVED, Resolution.RESHIPPED),
    "rejected_by_operator": (_rejected_by_operator, CaseState.REJECTED, Resolution.REJECTED),
    "rejected_at_wechat": (_rejected_at_wechat, CaseState.REJECTED, Resolution.REJECTED),
    "withdrawn": (_withdrawn, CaseState.CLOSED, Resolution.WITHDRAWN),
    "closed_by_wechat": (_closed_by_wechat, CaseState.CLOSED, Resolution.CLOSED_BY_WECHAT),
}

STATUS_FACTS: list[dict[str, object]] = [{"wechat_status": status} for status in ALL_STATUSES]
LATE_FACTS: list[dict[str, object]] = [
    *STATUS_FACTS,
    {"operator_decision": "approve"},
    {"operator_decision": "reject", "operator_reason": "too late"},
    {"supplier_received": True},
    {"return_waybill": RETURN_WAYBILL},
    {"replacement_shipped": REPLACEMENT},
    {"deadline": at(), "deadline_warned": False, "warned_deadline": None},
    {"deadline": at(hours=600)},
    {"refund_not_before": at(), "sent": []},
    {"approved_return": False},
]


@pytest.mark.parametrize("label", list(FINAL))
def test_final_runs_end_where_they_say(label: str) -> None:
    build, state, resolution = FINAL[label]
    case = build().case
    assert (case.state, case.resolution, case.final) == (state, resolution, True)


@pytest.mark.parametrize("label", list(FINAL))
@pytest.mark.parametrize("stage", list(Stage))
@pytest.mark.parametrize(
    "policy", [POLICY, NO_AUTO_REFUND, UNDER_AUTO_APPROVE], ids=["default", "manual", "small"]
)
def test_a_final_case_never_changes(label: str, stage: Stage, policy: Policy) -> None:
    final = FINAL[label][0]().case
    for facts in LATE_FACTS:
        case = final.model_copy(update=facts)
        decision = decide(case, fulfilment(stage), policy, at(hours=500))
        assert decision.actions == []
        assert decision.case is case


# --- Late and out-of-order facts ------------------------------------------------------------------------


def test_fulfilment_cancelled_after_wechat_already_refunded_changes_nothing() -> None:
    run = _stopping()
    done = run.step(now=at(minutes=2), wechat_status="MERCHANT_REFUND_SUCCESS")
    assert (done.case.state, done.case.resolution, kinds(done)) == (
        CaseState.RESOLVED,
        Resolution.REFUNDED,
        [],
    )
    late = run.step(now=at(minutes=3), stage=Stage.CANCELLED)
    assert_unchanged(done.case, late)
    assert run.all_kinds == [A.CANCEL_LINES]


def test_parcel_back_after_wechat_refunded_changes_nothing() -> None:
    run = _intercepting()
    done = run.step(now=at(hours=1), wechat_status="PLATFORM_REFUNDING")
    assert_unchanged(done.case, run.step(now=at(hours=30), stage=Stage.RETURNED))
    assert run.all_kinds == [A.INTERCEPT]


@pytest.mark.parametrize("stage", list(Stage))
def test_fulfilment_moving_after_the_refund_was_asked_changes_nothing(stage: Stage) -> None:
    run = _refunding()
    before = run.case
    assert_unchanged(before, run.step(now=at(minutes=1), stage=stage))


@pytest.mark.parametrize("label", ["awaiting_return", "awaiting_receipt", "exchange_awaiting_receipt"])
@pytest.mark.parametrize("stage", list(Stage))
def test_fulfilment_moving_after_a_return_was_approved_changes_nothing(label: str, stage: Stage) -> None:
    run = NON_FINAL[label][0]()
    before = run.case
    assert_unchanged(before, run.step(now=at(hours=5), stage=stage))


@pytest.mark.parametrize("label", ["exchange_reshipping", "reshipping"])
@pytest.mark.parametrize("stage", list(Stage))
def test_fulfilment_moving_while_reshipping_changes_nothing(label: str, stage: Stage) -> None:
    run = NON_FINAL[label][0]()
    before = run.case
    assert_unchanged(before, run.step(now=at(hours=5), stage=stage))


def test_late_waybill_after_the_supplier_received_the_return_changes_nothing() -> None:
    run = _awaiting_return()
    refunding = run.step(now=at(hours=30), supplier_received=True)
    assert kinds(refunding) == [A.ACCEPT]
    assert_unchanged(refunding.case, run.step(now=at(hours=31), return_waybill=RETURN_WAYBILL))


def test_intercepting_and_the_parcel_is_still_in_transit_changes_nothing() -> None:
    run = _intercepting()
    before = run.case
    for hours in (1, 5, 10):
        assert_unchanged(before, run.step(now=at(hours=hours), wechat_status="MERCHANT_PROCESSING"))


def test_waiting_for_an_operator_with_the_same_facts_changes_nothing() -> None:
    run = _awaiting_operator()
    before = run.case
    for hours in (1, 5, 10):
        assert_unchanged(before, run.step(now=at(hours=hours)))


# --- Deadline warning -----------------------------------------------------------------------------------

DEADLINE = at(hours=48)
WARN_FROM = DEADLINE - timedelta(hours=12)  # Policy().deadline_warning


def test_the_deadline_is_warned_once_from_the_warning_window() -> None:
    run = Run.start(CaseType.REFUND, Stage.DELIVERED, deadline=DEADLINE)
    assert kinds(run.step()) == []
    assert kinds(run.step(now=WARN_FROM - timedelta(seconds=1))) == []

    warned = run.step(now=WARN_FROM)
    assert kinds(warned) == [A.WARN_DEADLINE]
    assert DEADLINE.isoformat() in warned.actions[0].reason
    assert warned.case.deadline_warned
    assert warned.case.warned_deadline == DEADLINE
    assert warned.case.state == CaseState.AWAITING_OPERATOR
    assert warned.case.version == 3

    for later in (WARN_FROM + timedelta(hours=1), DEADLINE, DEADLINE + timedelta(hours=1)):
        assert kinds(run.step(now=later)) == []
    assert run.all_kinds == [A.WARN_DEADLINE]


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (WARN_FROM - timedelta(microseconds=1), [A.CANCEL_LINES]),
        (WARN_FROM, [A.WARN_DEADLINE, A.CANCEL_LINES]),
        (DEADLINE + timedelta(days=1), [A.WARN_DEADLINE, A.CANCEL_LINES]),  # overdue: still warned
    ],
)
def test_a_new_case_near_its_deadline_warns_first(now: datetime, expected: list[ActionKind]) -> None:
    run = Run.start(CaseType.REFUND, Stage.NOT_SHIPPED, deadline=DEADLINE)
    assert kinds(run.step(now=now)) == expected
    assert kinds(run.step(now=now, stage=Stage.CANCELLED)) == [A.ACCEPT]


def test_the_warning_window_is_the_shops() -> None:
    policy = Policy(deadline_warning=timedelta(hours=1))
    run = Run.start(CaseType.EXCHANGE, Stage.DELIVERED, policy, deadline=DEADLINE)
    assert kinds(run.step(now=WARN_FROM)) == []
    assert kinds(run.step(now=DEADLINE - timedelta(hours=1))) == [A.WARN_DEADLINE]


def test_no_deadline_no_warning() -> None:
    run = Run.start(CaseType.REFUND, Stage.DELIVERED)
    assert kinds(run.step(now=at(hours=10_000))) == []
    assert not run.case.deadline_warned


def test_the_warning_comes_with_an_operator_rejection() -> None:
    run = Run.start(CaseType.REFUND, Stage.DELIVERED, deadline=DEADLINE)
    run.step()
    rejected = run.step(now=WARN_FROM, operator_decision="reject")
    assert kinds(rejected) == [A.WARN_DEADLINE, A.REJECT]


MOVED_DEADLINE = DEADLINE + timedelta(hours=24)  # WeChat sets a new one as the case moves


def test_a_new_deadline_is_warned_again_once() -> None:
    run = Run.start(CaseType.REFUND, Stage.DELIVERED, deadline=DEADLINE)
    assert kinds(run.step(now=WARN_FROM)) == [A.WARN_DEADLINE]

    moved = run.step(now=WARN_FROM + timedelta(hours=1), deadline=MOVED_DEADLINE)  # not yet in its window
    assert kinds(moved) == []
    assert moved.case.warned_deadline == DEADLINE
    assert moved.case.version == run.decisions[0].case.version

    warned_again = run.step(now=MOVED_DEADLINE - timedelta(hours=12))
    assert kinds(warned_again) == [A.WARN_DEADLINE]
    assert MOVED_DEADLINE.isoformat() in warned_again.actions[0].reason
    assert (warned_again.case.warned_deadline, warned_again.case.deadline_warned) == (MOVED_DEADLINE, True)
    assert warned_again.case.version == moved.case.version + 1

    for later in (MOVED_DEADLINE - timedelta(hours=1), MOVED_DEADLINE + timedelta(hours=1)):
        assert kinds(run.step(now=later)) == []
    assert run.all_kinds == [A.WARN_DEADLINE, A.WARN_DEADLINE]


def test_a_new_deadline_already_in_its_window_is_warned_at_once() -> None:
    run = Run.start(CaseType.RETURN, Stage.DELIVERED, UNDER_AUTO_APPROVE, deadline=DEADLINE)
    assert kinds(run.step(now=WARN_FROM)) == [A.WARN_DEADLINE, A.ACCEPT, A.EXPECT_RETURN]
    sooner = WARN_FROM + timedelta(hours=2)  # e.g. the buyer shipped: WeChat's deadline to confirm receipt
    shipped = run.step(now=WARN_FROM + timedelta(hours=1), deadline=sooner, return_waybill=RETURN_WAYBILL)
    assert kinds(shipped) == [A.WARN_DEADLINE, A.EXPECT_RETURN]
    assert shipped.case.warned_deadline == sooner


def test_the_same_deadline_recorded_again_is_not_warned_again() -> None:
    run = Run.start(CaseType.REFUND, Stage.DELIVERED, deadline=DEADLINE)
    run.step(now=WARN_FROM)
    same = run.step(now=WARN_FROM + timedelta(hours=1), deadline=DEADLINE)
    assert_unchanged(run.decisions[0].case, same)


# --- A decision that ends where it started ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "facts"),
    [
        ("awaiting_operator", {}),
        ("exchange_awaiting_operator", {"operator_decision": "approve"}),
        ("return_awaiting_operator", {"operator_decision": "approve"}),
        ("return_awaiting_operator", {"wechat_status": "MERCHANT_PROCESSING"}),
        ("intercepting", {}),
        ("stopping_shipment", {"operator_decision": "approve"}),
    ],
)
def test_a_decision_that_ends_where_it_started_records_nothing(label: str, facts: dict[str, object]) -> None:
    run = NON_FINAL[label][0]()
    before = run.case
    run.case = run.case.model_copy(update=facts)  # the new facts, recorded by the caller
    after = run.step(now=at(hours=4))
    assert_unchanged(before, after)
    assert after.case.timeline == before.timeline
    assert after.case.version == before.version
