"""Each path to its end, fact by fact; operator decisions; WeChat's one-refund-a-minute limit.

`Run.step` decides twice at every step and asserts the second decision changes nothing, so every path
here is also an idempotency check."""

from __future__ import annotations

import pytest

from services.aftersale.domain.case import (
    REFUND_RETRY_AFTER,
    ActionKind,
    Policy,
    Stage,
    decide,
    refund_refused_for_now,
)
from shared.events.aftersale import CaseState, CaseType, Resolution
from tests.unit.aftersale.builders import (
    NO_AUTO_REFUND,
    OTHER_RETURN_WAYBILL,
    POLICY,
    REPLACEMENT,
    RETURN_WAYBILL,
    UNDER_AUTO_APPROVE,
    Run,
    assert_unchanged,
    at,
    fulfilment,
    kinds,
    new_case,
)

A = ActionKind

# --- REFUND -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", [Stage.NOT_DISPATCHED, Stage.NOT_SHIPPED])
def test_refund_before_shipment_stops_the_lines_then_refunds(stage: Stage) -> None:
    run = Run.start(CaseType.REFUND, stage)

    stopping = run.step()
    assert (stopping.case.state, kinds(stopping)) == (CaseState.STOPPING_SHIPMENT, [A.CANCEL_LINES])
    assert stopping.case.sent == ["cancel_lines:cancel"]

    refunding = run.step(stage=Stage.CANCELLED, now=at(minutes=5))
    assert (refunding.case.state, kinds(refunding)) == (CaseState.REFUNDING, [A.ACCEPT])
    assert refunding.case.sent == ["cancel_lines:cancel", "accept:refund"]

    done = run.step(now=at(minutes=6), wechat_status="MERCHANT_REFUND_SUCCESS")
    assert (done.case.state, done.case.resolution, kinds(done)) == (
        CaseState.RESOLVED,
        Resolution.REFUNDED,
        [],
    )
    assert run.all_kinds == [A.CANCEL_LINES, A.ACCEPT]
    assert [d.case.version for d in run.decisions] == [2, 3, 4]


def test_refund_the_supplier_ships_anyway_so_the_parcel_is_intercepted() -> None:
    run = Run.start(CaseType.REFUND, Stage.NOT_SHIPPED)
    run.step()
    intercepting = run.step(stage=Stage.IN_TRANSIT, now=at(minutes=30))
    assert (intercepting.case.state, kinds(intercepting)) == (CaseState.INTERCEPTING, [A.INTERCEPT])
    refunding = run.step(stage=Stage.RETURNED, now=at(hours=30))
    assert (refunding.case.state, kinds(refunding)) == (CaseState.REFUNDING, [A.ACCEPT])
    assert run.all_kinds == [A.CANCEL_LINES, A.INTERCEPT, A.ACCEPT]


def test_refund_in_transit_is_intercepted_then_refunded_once_back() -> None:
    run = Run.start(CaseType.REFUND, Stage.IN_TRANSIT)

    intercepting = run.step()
    assert (intercepting.case.state, kinds(intercepting)) == (CaseState.INTERCEPTING, [A.INTERCEPT])
    assert intercepting.case.sent == ["intercept:intercept"]

    still = run.step(now=at(hours=2))  # the parcel is still moving: nothing new
    assert kinds(still) == []

    refunding = run.step(stage=Stage.RETURNED, now=at(hours=40))
    assert (refunding.case.state, kinds(refunding)) == (CaseState.REFUNDING, [A.ACCEPT])

    done = run.step(wechat_status="MERCHANT_REFUND_SUCCESS")
    assert (done.case.state, done.case.resolution) == (CaseState.RESOLVED, Resolution.REFUNDED)
    assert run.all_kinds == [A.INTERCEPT, A.ACCEPT]


def test_refund_interception_fails_then_an_operator_approves() -> None:
    run = Run.start(CaseType.REFUND, Stage.IN_TRANSIT)
    run.step()

    failed = run.step(stage=Stage.DELIVERED, now=at(hours=20))
    assert (failed.case.state, kinds(failed)) == (CaseState.AWAITING_OPERATOR, [])
    assert failed.case.version == 3  # the move is recorded

    waiting = run.step(now=at(hours=21))
    assert (waiting.case.state, kinds(waiting), waiting.case.version) == (CaseState.AWAITING_OPERATOR, [], 3)

    approved = run.step(now=at(hours=22), operator_decision="approve")
    assert (approved.case.state, kinds(approved)) == (CaseState.REFUNDING, [A.ACCEPT])

    done = run.step(wechat_status="MERCHANT_REFUND_SUCCESS")
    assert (done.case.state, done.case.resolution) == (CaseState.RESOLVED, Resolution.REFUNDED)
    assert run.all_kinds == [A.INTERCEPT, A.ACCEPT]


def test_refund_interception_fails_under_the_auto_approve_amount_refunds_at_once() -> None:
    run = Run.start(CaseType.REFUND, Stage.IN_TRANSIT, UNDER_AUTO_APPROVE)
    run.step()
    refunding = run.step(stage=Stage.DELIVERED, now=at(hours=20))
    assert (refunding.case.state, kinds(refunding)) == (CaseState.REFUNDING, [A.ACCEPT])


def test_refund_interception_fails_then_an_operator_rejects() -> None:
    run = Run.start(CaseType.REFUND, Stage.IN_TRANSIT)
    run.step()
    run.step(stage=Stage.DELIVERED, now=at(hours=20))
    rejected = run.step(operator_decision="reject", operator_reason="the buyer has the goods")
    assert (rejected.case.state, rejected.case.resolution) == (CaseState.REJECTED, Resolution.REJECTED)
    assert rejected.actions[0].reason == "the buyer has the goods"
    assert run.all_kinds == [A.INTERCEPT, A.REJECT]


# --- RETURN -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "start",
    ["operator", "small_amount", "interception_failed_then_operator", "interception_failed_small_amount"],
)
def test_return_delivered_goods_come_back_then_refund(start: str) -> None:
    if start == "operator":
        run = Run.start(CaseType.RETURN, Stage.DELIVERED)
        waiting = run.step()
        assert (waiting.case.state, kinds(waiting)) == (CaseState.AWAITING_OPERATOR, [])
        assert not waiting.case.approved_return
        approved = run.step(now=at(minutes=10), operator_decision="approve")
    elif start == "small_amount":
        run = Run.start(CaseType.RETURN, Stage.DELIVERED, UNDER_AUTO_APPROVE)
        approved = run.step()
    elif start == "interception_failed_then_operator":
        run = Run.start(CaseType.RETURN, Stage.IN_TRANSIT)
        assert kinds(run.step()) == [A.INTERCEPT]
        failed = run.step(stage=Stage.DELIVERED, now=at(minutes=5))  # the buyer has the goods: not approved
        assert (failed.case.state, kinds(failed)) == (CaseState.AWAITING_OPERATOR, [])
        assert (
            failed.case.timeline[-1].reason == "a return of delivered goods: the shop's policy asks a person"
        )
        assert not failed.case.approved_return
        approved = run.step(now=at(minutes=10), operator_decision="approve")
    else:
        run = Run.start(CaseType.RETURN, Stage.IN_TRANSIT, UNDER_AUTO_APPROVE)
        assert kinds(run.step()) == [A.INTERCEPT]
        approved = run.step(stage=Stage.DELIVERED, now=at(minutes=10))
    before = run.all_kinds[: -len(approved.actions)]

    assert (approved.case.state, kinds(approved)) == (CaseState.AWAITING_RETURN, [A.ACCEPT, A.EXPECT_RETURN])
    assert approved.case.approved_return
    assert approved.case.sent[-2:] == ["accept:approve_return", "expect_return:expect"]

    wechat_waits = run.step(now=at(minutes=11), wechat_status="USER_WAIT_RETURN")
    assert (wechat_waits.case.state, kinds(wechat_waits)) == (CaseState.AWAITING_RETURN, [])

    shipped = run.step(now=at(hours=24), wechat_status="MERCHANT_WAIT_RECEIPT", return_waybill=RETURN_WAYBILL)
    assert (shipped.case.state, kinds(shipped)) == (CaseState.AWAITING_RECEIPT, [A.EXPECT_RETURN])
    assert shipped.case.sent[-1] == "expect_return:waybill:YT7001"
    assert shipped.case.return_waybill == RETURN_WAYBILL

    received = run.step(now=at(hours=72), supplier_received=True)
    assert (received.case.state, kinds(received)) == (CaseState.REFUNDING, [A.ACCEPT])
    assert received.case.sent[-1] == "accept:refund"

    done = run.step(now=at(hours=73), wechat_status="MERCHANT_RETURN_SUCCESS")
    assert (done.case.state, done.case.resolution, kinds(done)) == (
        CaseState.RESOLVED,
        Resolution.RETURNED_AND_REFUNDED,
        [],
    )
    assert run.all_kinds == [*before, A.ACCEPT, A.EXPECT_RETURN, A.EXPECT_RETURN, A.ACCEPT]


def test_return_the_buyer_corrects_the_waybill() -> None:
    run = Run.start(CaseType.RETURN, Stage.DELIVERED, UNDER_AUTO_APPROVE)
    run.step()
    run.step(return_waybill=RETURN_WAYBILL, wechat_status="MERCHANT_WAIT_RECEIPT")
    corrected = run.step(now=at(hours=1), return_waybill=OTHER_RETURN_WAYBILL)
    assert (corrected.case.state, kinds(corrected)) == (CaseState.AWAITING_RECEIPT, [A.EXPECT_RETURN])
    assert corrected.case.sent[-1] == "expect_return:waybill:ZT7002"
    back = run.step(now=at(hours=2), return_waybill=RETURN_WAYBILL)  # already announced
    assert kinds(back) == []
    assert run.all_kinds == [A.ACCEPT, A.EXPECT_RETURN, A.EXPECT_RETURN, A.EXPECT_RETURN]


def test_return_received_before_any_waybill_is_refunded() -> None:
    run = Run.start(CaseType.RETURN, Stage.DELIVERED, UNDER_AUTO_APPROVE)
    run.step()
    received = run.step(now=at(hours=30), supplier_received=True)
    assert (received.case.state, kinds(received)) == (CaseState.REFUNDING, [A.ACCEPT])


RETURN_WITHOUT_GOODS = (
    "a return of goods that are {stage}: WeChat refunds a return only after the buyer sends goods back; "
    "reject it so that the buyer asks for a refund instead"
)


@pytest.mark.parametrize("stage", [Stage.NOT_DISPATCHED, Stage.NOT_SHIPPED])
def test_return_before_shipment_stops_the_lines_then_asks_an_operator(stage: Stage) -> None:
    run = Run.start(CaseType.RETURN, stage)
    stopping = run.step()
    assert (stopping.case.state, kinds(stopping)) == (CaseState.STOPPING_SHIPMENT, [A.CANCEL_LINES])

    stopped = run.step(stage=Stage.CANCELLED, now=at(minutes=5))  # no refund: WeChat would only approve
    assert (stopped.case.state, kinds(stopped)) == (CaseState.AWAITING_OPERATOR, [])
    assert stopped.case.timeline[-1].reason == RETURN_WITHOUT_GOODS.format(stage=Stage.CANCELLED)
    assert not stopped.case.approved_return
    assert stopped.case.sent == ["cancel_lines:cancel"]

    rejected = run.step(now=at(minutes=30), operator_decision="reject", operator_reason="ask for a refund")
    assert (rejected.case.state, rejected.case.resolution) == (CaseState.REJECTED, Resolution.REJECTED)
    assert run.all_kinds == [A.CANCEL_LINES, A.REJECT]


def test_return_in_transit_is_intercepted_then_an_operator_decides_once_back() -> None:
    run = Run.start(CaseType.RETURN, Stage.IN_TRANSIT)
    intercepting = run.step()
    assert (intercepting.case.state, kinds(intercepting)) == (CaseState.INTERCEPTING, [A.INTERCEPT])
    assert kinds(run.step(now=at(hours=2))) == []  # still moving

    back = run.step(stage=Stage.RETURNED, now=at(hours=40))
    assert (back.case.state, kinds(back)) == (CaseState.AWAITING_OPERATOR, [])
    assert back.case.timeline[-1].reason == RETURN_WITHOUT_GOODS.format(stage=Stage.RETURNED)

    rejected = run.step(now=at(hours=41), operator_decision="reject")
    assert (rejected.case.state, kinds(rejected)) == (CaseState.REJECTED, [A.REJECT])
    assert run.all_kinds == [A.INTERCEPT, A.REJECT]


@pytest.mark.parametrize("decision", ["approve", None])
def test_return_back_with_the_sender_then_delivered_after_all(decision: str | None) -> None:
    """The parcel was reported back, then delivered (the interception failed after all)."""
    run = Run.start(CaseType.RETURN, Stage.IN_TRANSIT)
    run.step()
    assert run.step(stage=Stage.RETURNED, now=at(hours=40)).case.state == CaseState.AWAITING_OPERATOR
    if decision is not None:
        run.step(now=at(hours=41), operator_decision=decision)
    delivered = run.step(stage=Stage.DELIVERED, now=at(hours=42))
    if decision == "approve":
        assert (delivered.case.state, kinds(delivered)) == (
            CaseState.AWAITING_RETURN,
            [A.ACCEPT, A.EXPECT_RETURN],
        )
        assert delivered.case.approved_return
    else:
        assert (delivered.case.state, kinds(delivered)) == (CaseState.AWAITING_OPERATOR, [])
        assert delivered.case.version == run.decisions[-2].case.version  # nothing moved


@pytest.mark.parametrize("stage", [Stage.CANCELLED, Stage.RETURNED])
@pytest.mark.parametrize(
    "policy", [POLICY, NO_AUTO_REFUND, UNDER_AUTO_APPROVE], ids=["default", "manual", "small"]
)
def test_return_that_never_reached_the_buyer_waits_for_an_operator(stage: Stage, policy: Policy) -> None:
    """WeChat refunds a return only after the buyer sent goods back: no ACCEPT, whatever the policy."""
    run = Run.start(CaseType.RETURN, stage, policy)
    waiting = run.step()
    assert (waiting.case.state, kinds(waiting)) == (CaseState.AWAITING_OPERATOR, [])
    assert waiting.case.sent == []

    approved = run.step(now=at(minutes=10), operator_decision="approve")  # nothing to approve
    assert (approved.case.state, kinds(approved)) == (CaseState.AWAITING_OPERATOR, [])
    assert approved.case.version == waiting.case.version
    assert approved.case.timeline == waiting.case.timeline

    rejected = run.step(now=at(minutes=20), operator_decision="reject")
    assert (rejected.case.state, kinds(rejected)) == (CaseState.REJECTED, [A.REJECT])
    assert run.all_kinds == [A.REJECT]


@pytest.mark.parametrize("case_type", [CaseType.RETURN, CaseType.EXCHANGE])
@pytest.mark.parametrize(
    ("status", "waybill", "expected_state", "expected_kinds"),
    [
        ("USER_WAIT_RETURN", None, CaseState.AWAITING_RETURN, []),
        ("MERCHANT_WAIT_RECEIPT", RETURN_WAYBILL, CaseState.AWAITING_RECEIPT, [A.EXPECT_RETURN]),
    ],
)
def test_return_already_approved_at_wechat_is_not_accepted_again(
    case_type: CaseType,
    status: str,
    waybill: tuple[str, str] | None,
    expected_state: CaseState,
    expected_kinds: list[ActionKind],
) -> None:
    case = new_case(case_type, wechat_status=status).model_copy(update={"return_waybill": waybill})
    decision = decide(case, fulfilment(Stage.DELIVERED), UNDER_AUTO_APPROVE, at())
    assert (decision.case.state, kinds(decision)) == (expected_state, expected_kinds)
    assert decision.case.approved_return
    assert_unchanged(
        decision.case, decide(decision.case, fulfilment(Stage.DELIVERED), UNDER_AUTO_APPROVE, at())
    )


@pytest.mark.parametrize("case_type", [CaseType.RETURN, CaseType.EXCHANGE])
@pytest.mark.parametrize("status", ["USER_WAIT_RETURN", "MERCHANT_WAIT_RECEIPT"])
def test_approved_at_wechat_records_the_approval_on_an_approved_case(
    case_type: CaseType, status: str
) -> None:
    run = Run.start(case_type, Stage.DELIVERED, UNDER_AUTO_APPROVE)
    approved = run.step()
    assert approved.case.approved_return
    pushed = run.step(now=at(minutes=1), wechat_status=status)
    assert (pushed.case.state, kinds(pushed)) == (CaseState.AWAITING_RETURN, [])
    assert pushed.case.version == approved.case.version


@pytest.mark.parametrize("status", ["USER_WAIT_RETURN", "MERCHANT_WAIT_RECEIPT"])
def test_approved_at_wechat_does_not_mark_a_refund_only_case(status: str) -> None:
    case = new_case(CaseType.REFUND, wechat_status=status)
    decision = decide(case, fulfilment(Stage.NOT_SHIPPED), POLICY, at())
    assert not decision.case.approved_return
    assert (decision.case.state, kinds(decision)) == (CaseState.STOPPING_SHIPMENT, [A.CANCEL_LINES])


@pytest.mark.parametrize("case_type", [CaseType.RETURN, CaseType.EXCHANGE])
def test_approved_at_wechat_without_our_approval_still_waits_for_an_operator(case_type: CaseType) -> None:
    """Approval is the shop's policy or an operator; WeChat's status only records that no second
    'approve' acceptapply may be sent. Above the auto-approve amount a person still decides; once
    they approve, the case follows the return without calling acceptapply."""
    run = Run.start(case_type, Stage.DELIVERED)
    waiting = run.step(wechat_status="USER_WAIT_RETURN")
    assert (waiting.case.state, kinds(waiting)) == (CaseState.AWAITING_OPERATOR, [])
    assert waiting.case.approved_return

    approved = run.step(now=at(minutes=10), operator_decision="approve")
    assert (approved.case.state, kinds(approved)) == (CaseState.AWAITING_RETURN, [])
    shipped = run.step(now=at(hours=1), wechat_status="MERCHANT_WAIT_RECEIPT", return_waybill=RETURN_WAYBILL)
    assert (shipped.case.state, kinds(shipped)) == (CaseState.AWAITING_RECEIPT, [A.EXPECT_RETURN])
    assert A.ACCEPT not in run.all_kinds


# --- EXCHANGE and RESHIP ------------------------------------------------------------------------------


def test_exchange_operator_approved_goods_back_replacement_shipped() -> None:
    run = Run.start(CaseType.EXCHANGE, Stage.DELIVERED)
    assert run.step().case.state == CaseState.AWAITING_OPERATOR

    approved = run.step(now=at(minutes=10), operator_decision="approve")
    assert (approved.case.state, kinds(approved)) == (CaseState.AWAITING_RETURN, [A.ACCEPT, A.EXPECT_RETURN])
    assert approved.case.sent == ["accept:approve_exchange", "expect_return:expect"]
    assert approved.case.approved_return

    shipped = run.step(now=at(hours=24), wechat_status="MERCHANT_WAIT_RECEIPT", return_waybill=RETURN_WAYBILL)
    assert (shipped.case.state, kinds(shipped)) == (CaseState.AWAITING_RECEIPT, [A.EXPECT_RETURN])
    assert shipped.case.sent[-1] == "expect_return:waybill:YT7001"

    received = run.step(now=at(hours=72), supplier_received=True)
    assert (received.case.state, kinds(received)) == (CaseState.RESHIPPING, [A.RESHIP])

    replaced = run.step(now=at(hours=80), replacement_shipped=REPLACEMENT)
    assert kinds(replaced) == [A.ACCEPT_EXCHANGE_RESHIP]
    assert "SF9001" in replaced.actions[0].reason
    assert (replaced.case.state, replaced.case.resolution) == (CaseState.RESOLVED, Resolution.EXCHANGED)

    wechat_agrees = run.step(now=at(hours=81), wechat_status="MERCHANT_EXCHANGE_SUCCESS")
    assert kinds(wechat_agrees) == []
    assert wechat_agrees.case.version == replaced.case.version  # only the status we recorded differs
    assert wechat_agrees.case.model_copy(update={"wechat_status": ""}) == replaced.case.model_copy(
        update={"wechat_status": ""}
    )
    assert run.all_kinds == [A.ACCEPT, A.EXPECT_RETURN, A.EXPECT_RETURN, A.RESHIP, A.ACCEPT_EXCHANGE_RESHIP]


def test_exchange_wechat_success_before_our_replacement_resolves_without_calls() -> None:
    run = Run.start(CaseType.EXCHANGE, Stage.DELIVERED, UNDER_AUTO_APPROVE)
    run.step()
    run.step(supplier_received=True)
    done = run.step(wechat_status="MERCHANT_EXCHANGE_SUCCESS")
    assert (done.case.state, done.case.resolution, kinds(done)) == (
        CaseState.RESOLVED,
        Resolution.EXCHANGED,
        [],
    )
    late = run.step(replacement_shipped=REPLACEMENT)
    assert kinds(late) == []
    assert run.all_kinds == [A.ACCEPT, A.EXPECT_RETURN, A.RESHIP]


UNDELIVERED = [Stage.NOT_DISPATCHED, Stage.NOT_SHIPPED, Stage.CANCELLED, Stage.IN_TRANSIT, Stage.RETURNED]


@pytest.mark.parametrize("stage", UNDELIVERED)
@pytest.mark.parametrize(
    "policy", [POLICY, NO_AUTO_REFUND, UNDER_AUTO_APPROVE], ids=["default", "manual", "small"]
)
def test_exchange_not_delivered_only_a_rejection_ends_it(stage: Stage, policy: Policy) -> None:
    run = Run.start(CaseType.EXCHANGE, stage, policy)
    waiting = run.step()
    assert (waiting.case.state, kinds(waiting)) == (CaseState.AWAITING_OPERATOR, [])
    assert waiting.case.timeline[-1].reason == (
        f"{CaseType.EXCHANGE} of {waiting.case.refund_fen} fen with the goods {stage}: "
        "the shop's policy asks a person"
    )

    # An approval changes nothing: the decision ends where it started (no timeline entry, no version).
    approved = run.step(now=at(minutes=10), operator_decision="approve")
    assert (approved.case.state, kinds(approved)) == (CaseState.AWAITING_OPERATOR, [])
    assert approved.case.version == waiting.case.version
    assert approved.case.timeline == waiting.case.timeline
    assert not approved.case.approved_return

    rejected = run.step(now=at(minutes=20), operator_decision="reject", operator_reason="not delivered")
    assert (rejected.case.state, rejected.case.resolution) == (CaseState.REJECTED, Resolution.REJECTED)
    assert run.all_kinds == [A.REJECT]


@pytest.mark.parametrize("stage", UNDELIVERED)
def test_exchange_not_delivered_approved_before_the_first_decision_tells_the_operator_to_reject(
    stage: Stage,
) -> None:
    case = new_case(CaseType.EXCHANGE).model_copy(update={"operator_decision": "approve"})
    decision = decide(case, fulfilment(stage), UNDER_AUTO_APPROVE, at())
    assert (decision.case.state, kinds(decision)) == (CaseState.AWAITING_OPERATOR, [])
    assert [(e.what, e.reason) for e in decision.case.timeline] == [
        ("-> awaiting_operator", f"an exchange of goods that are {stage}: reject it")
    ]
    assert not decision.case.approved_return


@pytest.mark.parametrize(
    ("policy", "delivered_state", "delivered_kinds"),
    [
        (POLICY, CaseState.AWAITING_OPERATOR, []),
        (UNDER_AUTO_APPROVE, CaseState.AWAITING_RETURN, [A.ACCEPT, A.EXPECT_RETURN]),
    ],
    ids=["default", "small"],
)
def test_exchange_waiting_for_an_operator_then_delivered(
    policy: Policy, delivered_state: CaseState, delivered_kinds: list[ActionKind]
) -> None:
    run = Run.start(CaseType.EXCHANGE, Stage.IN_TRANSIT, policy)
    assert run.step().case.state == CaseState.AWAITING_OPERATOR
    delivered = run.step(stage=Stage.DELIVERED, now=at(hours=20))
    assert (delivered.case.state, kinds(delivered)) == (delivered_state, delivered_kinds)


@pytest.mark.parametrize("stage", list(Stage))
def test_reship_sends_a_replacement_then_resolves(stage: Stage) -> None:
    run = Run.start(CaseType.RESHIP, stage)
    reshipping = run.step()
    assert (reshipping.case.state, kinds(reshipping)) == (CaseState.RESHIPPING, [A.RESHIP])
    assert reshipping.case.sent == ["reship:reship"]
    done = run.step(now=at(hours=20), replacement_shipped=REPLACEMENT)
    assert (done.case.state, done.case.resolution, kinds(done)) == (
        CaseState.RESOLVED,
        Resolution.RESHIPPED,
        [],
    )
    assert run.all_kinds == [A.RESHIP]


# --- Operator ---------------------------------------------------------------------------------------

AWAITING_OPERATOR = [
    # case type, stage, policy, state after approval, actions after approval
    (CaseType.REFUND, Stage.DELIVERED, POLICY, CaseState.REFUNDING, [A.ACCEPT]),
    (CaseType.REFUND, Stage.NOT_DISPATCHED, NO_AUTO_REFUND, CaseState.STOPPING_SHIPMENT, [A.CANCEL_LINES]),
    (CaseType.REFUND, Stage.NOT_SHIPPED, NO_AUTO_REFUND, CaseState.STOPPING_SHIPMENT, [A.CANCEL_LINES]),
    (CaseType.REFUND, Stage.CANCELLED, NO_AUTO_REFUND, CaseState.REFUNDING, [A.ACCEPT]),
    (CaseType.REFUND, Stage.IN_TRANSIT, NO_AUTO_REFUND, CaseState.INTERCEPTING, [A.INTERCEPT]),
    (CaseType.REFUND, Stage.RETURNED, NO_AUTO_REFUND, CaseState.REFUNDING, [A.ACCEPT]),
    (CaseType.RETURN, Stage.NOT_DISPATCHED, NO_AUTO_REFUND, CaseState.STOPPING_SHIPMENT, [A.CANCEL_LINES]),
    (CaseType.RETURN, Stage.NOT_SHIPPED, NO_AUTO_REFUND, CaseState.STOPPING_SHIPMENT, [A.CANCEL_LINES]),
    (CaseType.RETURN, Stage.IN_TRANSIT, NO_AUTO_REFUND, CaseState.INTERCEPTING, [A.INTERCEPT]),
    (CaseType.RETURN, Stage.DELIVERED, POLICY, CaseState.AWAITING_RETURN, [A.ACCEPT, A.EXPECT_RETURN]),
    (CaseType.EXCHANGE, Stage.DELIVERED, POLICY, CaseState.AWAITING_RETURN, [A.ACCEPT, A.EXPECT_RETURN]),
]
AWAITING_IDS = [f"{row[0]}-{row[1]}" for row in AWAITING_OPERATOR]


@pytest.mark.parametrize(
    ("case_type", "stage", "policy", "state", "actions"), AWAITING_OPERATOR, ids=AWAITING_IDS
)
def test_operator_approval_lets_the_case_proceed(
    case_type: CaseType, stage: Stage, policy: Policy, state: CaseState, actions: list[ActionKind]
) -> None:
    run = Run.start(case_type, stage, policy)
    waiting = run.step()
    assert (waiting.case.state, kinds(waiting)) == (CaseState.AWAITING_OPERATOR, [])
    assert waiting.case.timeline[-1].reason  # the reason a person is asked is on record

    approved = run.step(now=at(minutes=30), operator_decision="approve")
    assert (approved.case.state, kinds(approved)) == (state, actions)
    assert approved.case.version == waiting.case.version + 1


@pytest.mark.parametrize(
    ("case_type", "stage", "policy", "state", "actions"), AWAITING_OPERATOR, ids=AWAITING_IDS
)
def test_operator_rejection_rejects_once(
    case_type: CaseType, stage: Stage, policy: Policy, state: CaseState, actions: list[ActionKind]
) -> None:
    run = Run.start(case_type, stage, policy)
    run.step()
    rejected = run.step(
        now=at(minutes=30), operator_decision="reject", operator_reason="photos show no damage"
    )
    assert kinds(rejected) == [A.REJECT]
    assert rejected.actions[0].reason == "photos show no damage"
    assert (rejected.case.state, rejected.case.resolution) == (CaseState.REJECTED, Resolution.REJECTED)
    assert rejected.case.sent == ["reject:operator"]

    assert kinds(run.step(now=at(minutes=31), wechat_status="MERCHANT_REJECT_REFUND")) == []
    assert kinds(run.step(now=at(minutes=32), operator_decision="approve")) == []
    assert kinds(run.step(now=at(minutes=33), operator_decision="reject")) == []
    final = run.step(stage=Stage.CANCELLED).case
    assert (final.state, final.version, final.sent) == (
        CaseState.REJECTED,
        rejected.case.version,
        ["reject:operator"],
    )
    assert run.all_kinds == [A.REJECT]


def test_operator_rejection_without_a_reason_says_who() -> None:
    run = Run.start(CaseType.REFUND, Stage.DELIVERED)
    run.step()
    rejected = run.step(operator_decision="reject")
    assert rejected.actions[0].reason == "rejected by an operator"


def test_operator_rejection_while_waiting_for_the_return() -> None:
    run = Run.start(CaseType.RETURN, Stage.DELIVERED, UNDER_AUTO_APPROVE)
    run.step()
    run.step(return_waybill=RETURN_WAYBILL)
    rejected = run.step(now=at(hours=50), operator_decision="reject", operator_reason="wrong item returned")
    assert (rejected.case.state, kinds(rejected)) == (CaseState.REJECTED, [A.REJECT])


@pytest.mark.parametrize("reason", ["duplicate request", ""])
def test_operator_rejection_of_a_reship_calls_nothing_at_wechat(reason: str) -> None:
    """A re-ship is our own case, not WeChat's: there is nothing to reject there."""
    run = Run.start(CaseType.RESHIP, Stage.DELIVERED)
    run.step()
    rejected = run.step(now=at(minutes=30), operator_decision="reject", operator_reason=reason)
    assert (rejected.case.state, rejected.case.resolution, kinds(rejected)) == (
        CaseState.REJECTED,
        Resolution.REJECTED,
        [],
    )
    assert rejected.case.sent == ["reship:reship"]
    assert rejected.case.timeline[-1].what == "-> rejected"
    assert rejected.case.timeline[-1].reason == (reason or "rejected by an operator")
    assert rejected.case.version == run.decisions[-2].case.version + 1
    assert run.all_kinds == [A.RESHIP]


def test_operator_rejection_of_a_new_reship_calls_nothing() -> None:
    case = new_case(CaseType.RESHIP).model_copy(update={"operator_decision": "reject"})
    decision = decide(case, fulfilment(Stage.DELIVERED), POLICY, at())
    assert (decision.case.state, kinds(decision), decision.case.sent) == (CaseState.REJECTED, [], [])


def test_operator_approval_of_a_case_already_under_way_changes_nothing() -> None:
    run = Run.start(CaseType.REFUND, Stage.NOT_SHIPPED)
    stopping = run.step()
    again = run.step(operator_decision="approve")
    assert kinds(again) == []
    assert again.case.state == CaseState.STOPPING_SHIPMENT
    assert again.case.version == stopping.case.version


# --- One refund per order per minute (10021059) -----------------------------------------------------


def _refunding_run(case_type: CaseType = CaseType.REFUND) -> Run:
    if case_type == CaseType.REFUND:
        run = Run.start(CaseType.REFUND, Stage.CANCELLED)
        assert kinds(run.step()) == [A.ACCEPT]
    else:
        run = Run.start(CaseType.RETURN, Stage.DELIVERED, UNDER_AUTO_APPROVE)
        run.step()
        assert kinds(run.step(now=at(hours=1), supplier_received=True)) == [A.ACCEPT]
    return run


def test_refund_refused_for_now_on_a_final_case_returns_it_unchanged() -> None:
    run = _refunding_run()
    done = run.step(now=at(minutes=1), wechat_status="MERCHANT_REFUND_SUCCESS")
    assert done.case.final
    assert refund_refused_for_now(done.case, at(minutes=2)) is done.case


def test_refund_refused_for_now_records_the_deferral() -> None:
    run = _refunding_run()
    refused_at = at(hours=1, seconds=1)
    deferred = refund_refused_for_now(run.case, refused_at)
    assert deferred.refund_not_before == refused_at + REFUND_RETRY_AFTER
    assert REFUND_RETRY_AFTER.total_seconds() > 60
    assert "accept:refund" not in deferred.sent
    assert deferred.state == CaseState.REFUNDING
    assert deferred.version == run.case.version + 1
    assert (deferred.timeline[-1].what, deferred.timeline[-1].reason) == ("refund deferred", "10021059")


@pytest.mark.parametrize("case_type", [CaseType.REFUND, CaseType.RETURN])
@pytest.mark.parametrize(
    ("seconds_after_refusal", "accepts"),
    [(0, False), (30, False), (60, False), (60.999, False), (61, True), (62, True), (3_600, True)],
)
def test_refund_is_retried_only_at_or_after_refund_not_before(
    case_type: CaseType, seconds_after_refusal: float, accepts: bool
) -> None:
    run = _refunding_run(case_type)
    refused_at = run.now + (at(seconds=5) - at())
    run.case = refund_refused_for_now(run.case, refused_at)
    retry = run.step(now=refused_at + (at(seconds=seconds_after_refusal) - at()))
    assert kinds(retry) == ([A.ACCEPT] if accepts else [])
    assert retry.case.state == CaseState.REFUNDING
    assert ("accept:refund" in retry.case.sent) is accepts


def test_refund_refused_twice_is_retried_twice_then_resolves() -> None:
    run = _refunding_run()
    run.case = refund_refused_for_now(run.case, at(1))
    assert kinds(run.step(now=at(30))) == []
    assert kinds(run.step(now=at(62))) == [A.ACCEPT]
    run.case = refund_refused_for_now(run.case, at(63))
    assert kinds(run.step(now=at(100))) == []
    assert kinds(run.step(now=at(124))) == [A.ACCEPT]
    assert kinds(run.step(now=at(500))) == []
    done = run.step(wechat_status="MERCHANT_REFUND_SUCCESS")
    assert (done.case.state, done.case.resolution) == (CaseState.RESOLVED, Resolution.REFUNDED)
    assert run.all_kinds == [A.ACCEPT, A.ACCEPT, A.ACCEPT]


def test_a_deferred_refund_waits_out_the_minute_even_when_facts_arrive() -> None:
    run = _refunding_run()
    run.case = refund_refused_for_now(run.case, at(1))
    assert kinds(run.step(now=at(10), stage=Stage.RETURNED)) == []
    assert kinds(run.step(now=at(20), wechat_status="MERCHANT_PROCESSING")) == []
    assert kinds(run.step(now=at(30), operator_decision="approve")) == []


# --- decide reaches a fixpoint in one call, even when the approval comes late ----------------------------


@pytest.mark.parametrize(
    ("case_type", "known", "settled_state", "actions"),
    [
        (
            CaseType.RETURN,
            {"return_waybill": RETURN_WAYBILL},
            CaseState.AWAITING_RECEIPT,
            [A.ACCEPT, A.EXPECT_RETURN, A.EXPECT_RETURN],
        ),
        (
            CaseType.RETURN,
            {"supplier_received": True},
            CaseState.REFUNDING,
            [A.ACCEPT, A.EXPECT_RETURN, A.ACCEPT],  # approve the return, then refund
        ),
        (
            CaseType.RETURN,
            {"return_waybill": RETURN_WAYBILL, "supplier_received": True},
            CaseState.REFUNDING,
            [A.ACCEPT, A.EXPECT_RETURN, A.ACCEPT],
        ),
        (
            CaseType.EXCHANGE,
            {"return_waybill": RETURN_WAYBILL},
            CaseState.AWAITING_RECEIPT,
            [A.ACCEPT, A.EXPECT_RETURN, A.EXPECT_RETURN],
        ),
    ],
)
def test_approval_with_the_return_already_known_settles_in_one_decision(
    case_type: CaseType, known: dict[str, object], settled_state: CaseState, actions: list[ActionKind]
) -> None:
    case = new_case(case_type).model_copy(update={**known, "operator_decision": "approve"})
    first = decide(case, fulfilment(Stage.DELIVERED), POLICY, at())
    assert (first.case.state, kinds(first)) == (settled_state, actions)
    assert first.case.version == case.version + 1
    assert_unchanged(first.case, decide(first.case, fulfilment(Stage.DELIVERED), POLICY, at()))


@pytest.mark.parametrize(
    "known",
    [{"supplier_received": True}, {"return_waybill": RETURN_WAYBILL, "supplier_received": True}],
    ids=["received", "shipped_and_received"],
)
def test_exchange_approved_with_the_receipt_already_known_is_accepted_first(known: dict[str, object]) -> None:
    case = new_case(CaseType.EXCHANGE).model_copy(update={**known, "operator_decision": "approve"})
    first = decide(case, fulfilment(Stage.DELIVERED), POLICY, at())
    assert first.case.state == CaseState.RESHIPPING
    assert kinds(first)[0] == A.ACCEPT
    assert first.case.approved_return


@pytest.mark.parametrize("case_type", [CaseType.EXCHANGE, CaseType.RESHIP])
def test_resolving_in_one_decision_records_the_move_once(case_type: CaseType) -> None:
    run = Run.start(case_type, Stage.DELIVERED, UNDER_AUTO_APPROVE)
    run.step()
    if case_type == CaseType.EXCHANGE:
        run.step(now=at(hours=1), supplier_received=True)
    before = run.case
    done = run.step(now=at(hours=2), replacement_shipped=REPLACEMENT)
    assert done.case.state == CaseState.RESOLVED
    added = [entry.what for entry in done.case.timeline[len(before.timeline) :]]
    assert added.count("-> resolved") == 1
