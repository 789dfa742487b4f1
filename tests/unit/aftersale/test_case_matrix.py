"""A new case (WeChat status MERCHANT_PROCESSING): every case type x fulfilment stage x shop policy.

Each row states the expected state and the exact actions, in order. "Approved" is the shop's policy
(refund-only before shipment if auto_refund_before_shipment; any refund strictly under
auto_approve_under_fen, except an exchange of goods not delivered) or an operator; everything else
waits for an operator (AWAITING_OPERATOR, no action).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from services.aftersale.domain.case import ActionKind, Policy, Stage, decide
from shared.events.aftersale import CaseState, CaseType
from tests.unit.aftersale.builders import T0, assert_unchanged, fulfilment, kinds, new_case


@dataclass(frozen=True)
class Outcome:
    state: CaseState
    actions: tuple[ActionKind, ...]


OPERATOR = Outcome(CaseState.AWAITING_OPERATOR, ())
STOP = Outcome(CaseState.STOPPING_SHIPMENT, (ActionKind.CANCEL_LINES,))
REFUND_NOW = Outcome(CaseState.REFUNDING, (ActionKind.ACCEPT,))
INTERCEPT = Outcome(CaseState.INTERCEPTING, (ActionKind.INTERCEPT,))
APPROVE = Outcome(CaseState.AWAITING_RETURN, (ActionKind.ACCEPT, ActionKind.EXPECT_RETURN))
RESHIP = Outcome(CaseState.RESHIPPING, (ActionKind.RESHIP,))

REFUND, RETURN, EXCHANGE, RE_SHIP = CaseType.REFUND, CaseType.RETURN, CaseType.EXCHANGE, CaseType.RESHIP
ND, NS, CANC = Stage.NOT_DISPATCHED, Stage.NOT_SHIPPED, Stage.CANCELLED
TRANSIT, DELIV, BACK = Stage.IN_TRANSIT, Stage.DELIVERED, Stage.RETURNED
AUTO, MANUAL = True, False  # policy.auto_refund_before_shipment
UNDER, OVER = (
    True,
    False,
)  # the refund (5,000 fen) is under policy.auto_approve_under_fen (10,000) / not (1,000)

# fmt: off
MATRIX: list[tuple[CaseType, Stage, bool, bool, Outcome]] = [
    # REFUND: before shipment stop then refund, on its way intercept, delivered -> operator unless small
    (REFUND, ND, AUTO, UNDER, STOP), (REFUND, ND, AUTO, OVER, STOP),
    (REFUND, ND, MANUAL, UNDER, STOP), (REFUND, ND, MANUAL, OVER, OPERATOR),
    (REFUND, NS, AUTO, UNDER, STOP), (REFUND, NS, AUTO, OVER, STOP),
    (REFUND, NS, MANUAL, UNDER, STOP), (REFUND, NS, MANUAL, OVER, OPERATOR),
    (REFUND, CANC, AUTO, UNDER, REFUND_NOW), (REFUND, CANC, AUTO, OVER, REFUND_NOW),
    (REFUND, CANC, MANUAL, UNDER, REFUND_NOW), (REFUND, CANC, MANUAL, OVER, OPERATOR),
    (REFUND, TRANSIT, AUTO, UNDER, INTERCEPT), (REFUND, TRANSIT, AUTO, OVER, INTERCEPT),
    (REFUND, TRANSIT, MANUAL, UNDER, INTERCEPT), (REFUND, TRANSIT, MANUAL, OVER, OPERATOR),
    (REFUND, DELIV, AUTO, UNDER, REFUND_NOW), (REFUND, DELIV, AUTO, OVER, OPERATOR),
    (REFUND, DELIV, MANUAL, UNDER, REFUND_NOW), (REFUND, DELIV, MANUAL, OVER, OPERATOR),
    (REFUND, BACK, AUTO, UNDER, REFUND_NOW), (REFUND, BACK, AUTO, OVER, REFUND_NOW),
    (REFUND, BACK, MANUAL, UNDER, REFUND_NOW), (REFUND, BACK, MANUAL, OVER, OPERATOR),
    # RETURN: before shipment stop, on its way intercept (as REFUND); goods that never reached the buyer
    # (cancelled, returned) -> an operator whatever the policy or amount (WeChat refunds a return only
    # after the buyer sent goods back); delivered -> approve the return and expect it only if approved
    (RETURN, ND, AUTO, UNDER, STOP), (RETURN, ND, AUTO, OVER, STOP),
    (RETURN, ND, MANUAL, UNDER, STOP), (RETURN, ND, MANUAL, OVER, OPERATOR),
    (RETURN, NS, AUTO, UNDER, STOP), (RETURN, NS, AUTO, OVER, STOP),
    (RETURN, NS, MANUAL, UNDER, STOP), (RETURN, NS, MANUAL, OVER, OPERATOR),
    (RETURN, CANC, AUTO, UNDER, OPERATOR), (RETURN, CANC, AUTO, OVER, OPERATOR),
    (RETURN, CANC, MANUAL, UNDER, OPERATOR), (RETURN, CANC, MANUAL, OVER, OPERATOR),
    (RETURN, TRANSIT, AUTO, UNDER, INTERCEPT), (RETURN, TRANSIT, AUTO, OVER, INTERCEPT),
    (RETURN, TRANSIT, MANUAL, UNDER, INTERCEPT), (RETURN, TRANSIT, MANUAL, OVER, OPERATOR),
    (RETURN, DELIV, AUTO, UNDER, APPROVE), (RETURN, DELIV, AUTO, OVER, OPERATOR),
    (RETURN, DELIV, MANUAL, UNDER, APPROVE), (RETURN, DELIV, MANUAL, OVER, OPERATOR),
    (RETURN, BACK, AUTO, UNDER, OPERATOR), (RETURN, BACK, AUTO, OVER, OPERATOR),
    (RETURN, BACK, MANUAL, UNDER, OPERATOR), (RETURN, BACK, MANUAL, OVER, OPERATOR),
    # EXCHANGE: delivered -> approve and expect the goods back only if approved (here: a small amount);
    # not delivered -> an operator, even for a small amount
    (EXCHANGE, ND, AUTO, UNDER, OPERATOR), (EXCHANGE, ND, AUTO, OVER, OPERATOR),
    (EXCHANGE, ND, MANUAL, UNDER, OPERATOR), (EXCHANGE, ND, MANUAL, OVER, OPERATOR),
    (EXCHANGE, NS, AUTO, UNDER, OPERATOR), (EXCHANGE, NS, AUTO, OVER, OPERATOR),
    (EXCHANGE, NS, MANUAL, UNDER, OPERATOR), (EXCHANGE, NS, MANUAL, OVER, OPERATOR),
    (EXCHANGE, CANC, AUTO, UNDER, OPERATOR), (EXCHANGE, CANC, AUTO, OVER, OPERATOR),
    (EXCHANGE, CANC, MANUAL, UNDER, OPERATOR), (EXCHANGE, CANC, MANUAL, OVER, OPERATOR),
    (EXCHANGE, TRANSIT, AUTO, UNDER, OPERATOR), (EXCHANGE, TRANSIT, AUTO, OVER, OPERATOR),
    (EXCHANGE, TRANSIT, MANUAL, UNDER, OPERATOR), (EXCHANGE, TRANSIT, MANUAL, OVER, OPERATOR),
    (EXCHANGE, DELIV, AUTO, UNDER, APPROVE), (EXCHANGE, DELIV, AUTO, OVER, OPERATOR),
    (EXCHANGE, DELIV, MANUAL, UNDER, APPROVE), (EXCHANGE, DELIV, MANUAL, OVER, OPERATOR),
    (EXCHANGE, BACK, AUTO, UNDER, OPERATOR), (EXCHANGE, BACK, AUTO, OVER, OPERATOR),
    (EXCHANGE, BACK, MANUAL, UNDER, OPERATOR), (EXCHANGE, BACK, MANUAL, OVER, OPERATOR),
    # RESHIP: an operator's own case; always a replacement dispatch order
    (RE_SHIP, ND, AUTO, UNDER, RESHIP), (RE_SHIP, ND, AUTO, OVER, RESHIP),
    (RE_SHIP, ND, MANUAL, UNDER, RESHIP), (RE_SHIP, ND, MANUAL, OVER, RESHIP),
    (RE_SHIP, NS, AUTO, UNDER, RESHIP), (RE_SHIP, NS, AUTO, OVER, RESHIP),
    (RE_SHIP, NS, MANUAL, UNDER, RESHIP), (RE_SHIP, NS, MANUAL, OVER, RESHIP),
    (RE_SHIP, CANC, AUTO, UNDER, RESHIP), (RE_SHIP, CANC, AUTO, OVER, RESHIP),
    (RE_SHIP, CANC, MANUAL, UNDER, RESHIP), (RE_SHIP, CANC, MANUAL, OVER, RESHIP),
    (RE_SHIP, TRANSIT, AUTO, UNDER, RESHIP), (RE_SHIP, TRANSIT, AUTO, OVER, RESHIP),
    (RE_SHIP, TRANSIT, MANUAL, UNDER, RESHIP), (RE_SHIP, TRANSIT, MANUAL, OVER, RESHIP),
    (RE_SHIP, DELIV, AUTO, UNDER, RESHIP), (RE_SHIP, DELIV, AUTO, OVER, RESHIP),
    (RE_SHIP, DELIV, MANUAL, UNDER, RESHIP), (RE_SHIP, DELIV, MANUAL, OVER, RESHIP),
    (RE_SHIP, BACK, AUTO, UNDER, RESHIP), (RE_SHIP, BACK, AUTO, OVER, RESHIP),
    (RE_SHIP, BACK, MANUAL, UNDER, RESHIP), (RE_SHIP, BACK, MANUAL, OVER, RESHIP),
]
# fmt: on


def _policy(auto_refund_before_shipment: bool, under: bool) -> Policy:
    return Policy(
        auto_refund_before_shipment=auto_refund_before_shipment,
        auto_approve_under_fen=10_000 if under else 1_000,
    )


def _id(case_type: CaseType, stage: Stage, auto: bool, under: bool) -> str:
    return f"{case_type}-{stage}-{'auto' if auto else 'manual'}-{'under' if under else 'over'}"


def test_the_matrix_covers_every_combination_once() -> None:
    combos = [row[:4] for row in MATRIX]
    assert len(combos) == len(set(combos)) == len(CaseType) * len(Stage) * 2 * 2


@pytest.mark.parametrize(
    ("case_type", "stage", "auto_refund", "under", "expected"),
    [pytest.param(*row, id=_id(*row[:4])) for row in MATRIX],
)
def test_new_case(
    case_type: CaseType, stage: Stage, auto_refund: bool, under: bool, expected: Outcome
) -> None:
    case = new_case(case_type)
    decision = decide(case, fulfilment(stage), _policy(auto_refund, under), T0)

    assert decision.case.state == expected.state
    assert tuple(kinds(decision)) == expected.actions
    assert decision.case.resolution is None
    assert decision.case.version == case.version + 1
    assert decision.case.wechat_status == "MERCHANT_PROCESSING"
    assert len(decision.case.sent) == len(expected.actions)  # every instruction is recorded once
    assert [entry.at for entry in decision.case.timeline] == [T0] * len(decision.case.timeline)
    assert decision.case.timeline  # the move is on record


@pytest.mark.parametrize(("case_type", "stage", "auto_refund", "under"), [row[:4] for row in MATRIX])
def test_new_case_deciding_again_changes_nothing(
    case_type: CaseType, stage: Stage, auto_refund: bool, under: bool
) -> None:
    policy = _policy(auto_refund, under)
    first = decide(new_case(case_type), fulfilment(stage), policy, T0)
    assert_unchanged(first.case, decide(first.case, fulfilment(stage), policy, T0))


# An operator's approval recorded before the first decision: the same for every shop policy.
# fmt: off
APPROVED_MATRIX: list[tuple[CaseType, Stage, Outcome]] = [
    (REFUND, ND, STOP), (REFUND, NS, STOP), (REFUND, CANC, REFUND_NOW),
    (REFUND, TRANSIT, INTERCEPT), (REFUND, DELIV, REFUND_NOW), (REFUND, BACK, REFUND_NOW),
    # a return of goods that never reached the buyer: still an operator (only a rejection helps)
    (RETURN, ND, STOP), (RETURN, NS, STOP), (RETURN, CANC, OPERATOR),
    (RETURN, TRANSIT, INTERCEPT), (RETURN, DELIV, APPROVE), (RETURN, BACK, OPERATOR),
    # an exchange of goods not delivered: still an operator, told to reject it
    (EXCHANGE, ND, OPERATOR), (EXCHANGE, NS, OPERATOR), (EXCHANGE, CANC, OPERATOR),
    (EXCHANGE, TRANSIT, OPERATOR), (EXCHANGE, DELIV, APPROVE), (EXCHANGE, BACK, OPERATOR),
    (RE_SHIP, ND, RESHIP), (RE_SHIP, NS, RESHIP), (RE_SHIP, CANC, RESHIP),
    (RE_SHIP, TRANSIT, RESHIP), (RE_SHIP, DELIV, RESHIP), (RE_SHIP, BACK, RESHIP),
]
# fmt: on


def test_the_approved_matrix_covers_every_combination_once() -> None:
    combos = [row[:2] for row in APPROVED_MATRIX]
    assert len(combos) == len(set(combos)) == len(CaseType) * len(Stage)


@pytest.mark.parametrize("auto_refund", [AUTO, MANUAL], ids=["auto", "manual"])
@pytest.mark.parametrize("under", [UNDER, OVER], ids=["under", "over"])
@pytest.mark.parametrize(
    ("case_type", "stage", "expected"),
    [pytest.param(*row, id=f"{row[0]}-{row[1]}") for row in APPROVED_MATRIX],
)
def test_new_case_approved_by_an_operator(
    case_type: CaseType, stage: Stage, expected: Outcome, auto_refund: bool, under: bool
) -> None:
    case = new_case(case_type).model_copy(update={"operator_decision": "approve"})
    policy = _policy(auto_refund, under)
    decision = decide(case, fulfilment(stage), policy, T0)

    assert decision.case.state == expected.state
    assert tuple(kinds(decision)) == expected.actions
    assert decision.case.resolution is None
    assert decision.case.version == case.version + 1
    assert len(decision.case.sent) == len(expected.actions)
    moves = {entry.what: entry.reason for entry in decision.case.timeline if entry.what.startswith("->")}
    assert f"-> {expected.state}" in moves
    if case_type == EXCHANGE and expected == OPERATOR:
        assert moves[f"-> {expected.state}"] == f"an exchange of goods that are {stage}: reject it"
    if case_type == RETURN and expected == OPERATOR:
        assert (
            "WeChat refunds a return only after the buyer sends goods back" in moves[f"-> {expected.state}"]
        )
    assert_unchanged(decision.case, decide(decision.case, fulfilment(stage), policy, T0))


@pytest.mark.parametrize(
    ("case_type", "approved"),
    [
        (REFUND, Outcome(CaseState.REFUNDING, (ActionKind.ACCEPT,))),
        (RETURN, APPROVE),
        (EXCHANGE, APPROVE),
    ],
)
@pytest.mark.parametrize(
    ("refund_fen", "auto_approve_under_fen", "is_approved"),
    [
        (4_999, 5_000, True),  # strictly below: approved
        (5_000, 5_000, False),  # equal is not below
        (5_001, 5_000, False),
        (0, 5_000, False),  # no amount, nothing to auto-approve
        (1, 0, False),  # the default policy auto-approves nothing
    ],
)
def test_auto_approve_amount_is_strictly_below(
    case_type: CaseType, approved: Outcome, refund_fen: int, auto_approve_under_fen: int, is_approved: bool
) -> None:
    case = new_case(case_type, refund_fen=refund_fen)
    policy = Policy(auto_approve_under_fen=auto_approve_under_fen)
    decision = decide(case, fulfilment(Stage.DELIVERED), policy, T0)
    expected = approved if is_approved else OPERATOR
    assert decision.case.state == expected.state
    assert tuple(kinds(decision)) == expected.actions
