"""Builders for the after-sale case tests: fixed aware UTC times, small cases, and a `Run` that feeds
facts one at a time and checks, at every step, that deciding again with the same facts is a no-op."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from services.aftersale.domain.case import (
    ActionKind,
    Case,
    Decision,
    Fulfilment,
    Policy,
    Stage,
    decide,
)
from shared.events.aftersale import AffectedLine, CaseState, CaseType

T0 = datetime(2025, 11, 20, 8, 0, tzinfo=UTC)
CASE_ID = "14000000000000000001"
ORDER_ID = "3705115058471208928"
SHOP = "shop-1"
REFUND_FEN = 5_000
RETURN_WAYBILL = ("YTO", "YT7001")
OTHER_RETURN_WAYBILL = ("ZTO", "ZT7002")
REPLACEMENT = ("SF", "SF9001")

# The default shop policy: refunds before shipment are automatic, no amount is auto-approved.
POLICY = Policy()
NO_AUTO_REFUND = Policy(auto_refund_before_shipment=False)
UNDER_AUTO_APPROVE = Policy(auto_approve_under_fen=10_000)  # REFUND_FEN is below it

# WeChat's after-sale statuses (reference section 3), grouped by what they mean for a case.
IN_PROGRESS_STATUSES = ("MERCHANT_PROCESSING", "USER_WAIT_RETURN", "MERCHANT_WAIT_RECEIPT")
REFUNDED_STATUSES = (
    "MERCHANT_REFUND_SUCCESS",
    "MERCHANT_RETURN_SUCCESS",
    "PLATFORM_REFUNDING",
    "MERCHANT_OVERDUE_REFUND",
)
REJECTED_STATUSES = ("MERCHANT_REJECT_REFUND", "MERCHANT_REJECT_RETURN", "MERCHANT_REJECT_EXCHANGE")
ALL_STATUSES = (
    *IN_PROGRESS_STATUSES,
    *REFUNDED_STATUSES,
    *REJECTED_STATUSES,
    "USER_CANCELD",
    "RETURN_CLOSED",
    "MERCHANT_EXCHANGE_SUCCESS",
)
FINAL_STATES = (CaseState.RESOLVED, CaseState.REJECTED, CaseState.CLOSED)


def at(seconds: float = 0, *, minutes: float = 0, hours: float = 0) -> datetime:
    return T0 + timedelta(seconds=seconds, minutes=minutes, hours=hours)


def new_case(
    case_type: CaseType,
    *,
    refund_fen: int = REFUND_FEN,
    wechat_status: str = "MERCHANT_PROCESSING",
    deadline: datetime | None = None,
) -> Case:
    return Case(
        case_id=CASE_ID,
        order_id=ORDER_ID,
        shop_id=SHOP,
        case_type=case_type,
        lines=[AffectedLine(product_id="p-1", sku_id="sku-1", count=1)],
        refund_fen=refund_fen,
        wechat_status=wechat_status,
        deadline=deadline,
        exchange_sku_id="sku-2" if case_type == CaseType.EXCHANGE else None,
    )


def fulfilment(stage: Stage) -> Fulfilment:
    shipped = stage in (Stage.IN_TRANSIT, Stage.DELIVERED, Stage.RETURNED)
    return Fulfilment(
        stage=stage,
        dispatch_id=None if stage == Stage.NOT_DISPATCHED else f"{ORDER_ID}-1",
        supplier_id=None if stage == Stage.NOT_DISPATCHED else "sup-a",
        waybills=(("ZTO", "ZT100"),) if shipped else (),
    )


def kinds(decision: Decision) -> list[ActionKind]:
    return [action.kind for action in decision.actions]


# What `decide` itself may change on a case (the rest are facts recorded by the caller).
DECIDED_FIELDS = (
    "state",
    "resolution",
    "sent",
    "timeline",
    "version",
    "deadline_warned",
    "warned_deadline",
    "approved_return",
    "refund_not_before",
)


def decided(case: Case) -> dict[str, object]:
    return {name: getattr(case, name) for name in DECIDED_FIELDS}


def assert_unchanged(before: Case, decision: Decision) -> None:
    """Nothing happened: no action, and nothing `decide` owns moved (not even the version). `before`
    may lack facts recorded since (a new WeChat status, a stage)."""
    assert decision.actions == []
    assert not decision.changed
    assert decided(decision.case) == decided(before)


@dataclass
class Run:
    """One case followed through its facts. Every `step` also decides a second time with the same
    facts and asserts that nothing more happens (no repeated action, no new version)."""

    case: Case
    stage: Stage
    policy: Policy = POLICY
    now: datetime = T0
    decisions: list[Decision] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        case_type: CaseType,
        stage: Stage,
        policy: Policy = POLICY,
        *,
        refund_fen: int = REFUND_FEN,
        deadline: datetime | None = None,
    ) -> Run:
        return cls(new_case(case_type, refund_fen=refund_fen, deadline=deadline), stage, policy)

    def step(self, *, stage: Stage | None = None, now: datetime | None = None, **facts: object) -> Decision:
        if stage is not None:
            self.stage = stage
        if now is not None:
            assert now >= self.now, "time only moves forward"
            self.now = now
        if facts:
            self.case = self.case.model_copy(update=facts)
        before = self.case
        decision = decide(before, fulfilment(self.stage), self.policy, self.now)
        if decision.changed or decision.case != before:
            assert decision.case.version == before.version + 1
        else:
            assert decision.case.version == before.version
        again = decide(decision.case, fulfilment(self.stage), self.policy, self.now)
        assert_unchanged(decision.case, again)
        self.case = decision.case
        self.decisions.append(decision)
        return decision

    @property
    def all_kinds(self) -> list[ActionKind]:
        return [action.kind for decision in self.decisions for action in decision.actions]
