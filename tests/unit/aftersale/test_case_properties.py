"""Properties over any sequence of facts: no instruction or WeChat call is ever repeated (except the
refund after WeChat refused it for the minute), one decision reaches a fixpoint (deciding again is a
no-op), a deadline is warned at most once each time one is set, and a final case never changes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from services.aftersale.domain.case import ActionKind, Case, Policy, Stage, decide, refund_refused_for_now
from shared.events.aftersale import CaseType
from tests.unit.aftersale.builders import ALL_STATUSES, T0, fulfilment, new_case

REFUND_KEY = f"{ActionKind.ACCEPT}:refund"


@dataclass(frozen=True)
class StageChanged:
    stage: Stage


@dataclass(frozen=True)
class WeChatStatus:
    status: str  # the push re-reads the case: a duplicate just repeats the status


@dataclass(frozen=True)
class OperatorDecided:
    decision: str


@dataclass(frozen=True)
class SupplierReceived:
    pass


@dataclass(frozen=True)
class BuyerShipped:
    waybill: tuple[str, str]


@dataclass(frozen=True)
class ReplacementShipped:
    waybill: tuple[str, str]


@dataclass(frozen=True)
class TimePassed:
    seconds: int


@dataclass(frozen=True)
class DeadlineMoved:
    """WeChat set a new deadline (hours after T0)."""

    hours: int


@dataclass(frozen=True)
class RefundRefused:
    """WeChat answered the last refund with 10021059."""


Fact = (
    StageChanged
    | WeChatStatus
    | OperatorDecided
    | SupplierReceived
    | BuyerShipped
    | ReplacementShipped
    | TimePassed
    | DeadlineMoved
    | RefundRefused
)

facts: st.SearchStrategy[Fact] = st.one_of(
    st.builds(StageChanged, st.sampled_from(list(Stage))),
    st.builds(WeChatStatus, st.sampled_from(ALL_STATUSES)),
    st.builds(OperatorDecided, st.sampled_from(["approve", "reject"])),
    st.just(SupplierReceived()),
    st.builds(BuyerShipped, st.sampled_from([("YTO", "YT1"), ("ZTO", "ZT2")])),
    st.builds(ReplacementShipped, st.just(("SF", "SF9"))),
    st.builds(TimePassed, st.sampled_from([0, 1, 30, 61, 3_600, 12 * 3_600, 3 * 86_400])),
    st.builds(DeadlineMoved, st.integers(min_value=0, max_value=96)),
    st.just(RefundRefused()),
)
policies = st.builds(
    Policy,
    auto_refund_before_shipment=st.booleans(),
    auto_approve_under_fen=st.sampled_from([0, 1_000, 10_000]),
)


@settings(max_examples=400, deadline=None)
@given(
    case_type=st.sampled_from(list(CaseType)),
    stage=st.sampled_from(list(Stage)),
    policy=policies,
    refund_fen=st.sampled_from([0, 5_000]),
    deadline_hours=st.none() | st.integers(min_value=0, max_value=72),
    steps=st.lists(facts, max_size=30),
)
def test_any_sequence_of_facts(
    case_type: CaseType,
    stage: Stage,
    policy: Policy,
    refund_fen: int,
    deadline_hours: int | None,
    steps: list[Fact],
) -> None:
    deadline = None if deadline_hours is None else T0 + timedelta(hours=deadline_hours)
    case = new_case(case_type, refund_fen=refund_fen, deadline=deadline)
    now = T0
    added: Counter[str] = Counter()
    refusals = 0
    warnings = 0
    deadlines = 0 if deadline is None else 1  # deadline values set in turn
    final_case: Case | None = None

    for fact in [TimePassed(0), *steps]:  # decide once before any fact, as when the case is created
        match fact:
            case StageChanged(stage=new_stage):
                stage = new_stage
            case WeChatStatus(status=status):
                case = case.model_copy(update={"wechat_status": status})
            case OperatorDecided(decision=choice):
                case = case.model_copy(update={"operator_decision": choice})
            case SupplierReceived():
                case = case.model_copy(update={"supplier_received": True})
            case BuyerShipped(waybill=waybill):
                case = case.model_copy(update={"return_waybill": waybill})
            case ReplacementShipped(waybill=waybill):
                case = case.model_copy(update={"replacement_shipped": waybill})
            case TimePassed(seconds=seconds):
                now += timedelta(seconds=seconds)
            case DeadlineMoved(hours=hours):
                if case.deadline != T0 + timedelta(hours=hours):
                    case = case.model_copy(update={"deadline": T0 + timedelta(hours=hours)})
                    deadlines += 1
            case RefundRefused():
                if case.final or REFUND_KEY not in case.sent:
                    continue  # 10021059 only answers a refund we just asked for
                case = refund_refused_for_now(case, now)
                refusals += 1

        decision = decide(case, fulfilment(stage), policy, now)
        if final_case is not None:  # once final, nothing moves, whatever arrives
            assert decision.actions == []
            assert decision.case is case
            assert (case.state, case.resolution, case.sent, case.version) == (
                final_case.state,
                final_case.resolution,
                final_case.sent,
                final_case.version,
            )
            continue

        # Every instruction or WeChat call is keyed in `sent` the moment it is given; none repeats,
        # except the refund after WeChat refused it for the minute.
        new_keys = [key for key in decision.case.sent if key not in case.sent]
        others = [a for a in decision.actions if a.kind != ActionKind.WARN_DEADLINE]
        assert len(others) == len(new_keys)
        added.update(new_keys)
        for key, count in added.items():
            assert count == 1 or (key == REFUND_KEY and count <= refusals + 1), (key, count)
        if REFUND_KEY in new_keys:
            assert case.refund_not_before is None or now >= case.refund_not_before
        warned = [a for a in decision.actions if a.kind == ActionKind.WARN_DEADLINE]
        if warned:
            assert decision.case.warned_deadline == case.deadline != case.warned_deadline
        warnings += len(warned)
        assert warnings <= deadlines  # at most once per deadline set

        # A decision moves the version by one when it changes anything, and never otherwise.
        if decision.case is case:
            assert decision.actions == []
        else:
            assert decision.case.version == case.version + 1
        assert decision.case.state is not None
        assert (decision.case.resolution is not None) == decision.case.final

        # One call reaches the fixpoint: deciding again with the same facts changes nothing.
        again = decide(decision.case, fulfilment(stage), policy, now)
        assert again.actions == []
        assert again.case is decision.case

        case = decision.case
        if case.final:
            final_case = case
