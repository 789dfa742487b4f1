"""The after-sale case: one state machine that knows where the order's goods are. Pure.

Inputs are facts, each idempotent: WeChat's current view of the case (fetched on every push, so a
duplicate or late push just re-reads the same status), the order's fulfilment (from dispatch and
logistics events), an operator's decision, a supplier's receipt of a return, the replacement's
shipment, and the clock. `decide` returns the new case and the actions to carry out: WeChat calls
and instructions for dispatch and logistics.

    REFUND   before shipping      -> stop the lines at the supplier -> refund
             on its way           -> intercept -> refund once it is back with the sender
             delivered            -> (approved) refund
    RETURN   before shipping      -> stop the lines, or intercept -> an operator decides (WeChat
                                     refunds a return only after the buyer sent goods back)
             delivered            -> (approved) approve the return -> buyer ships -> supplier
                                     confirms receipt -> refund
    EXCHANGE delivered            -> (approved) approve -> buyer ships back -> supplier confirms ->
                                     replacement dispatch order -> it ships -> acceptexchangereship
             not delivered        -> an operator (only a rejection makes sense)
    RESHIP   (operator)           -> replacement dispatch order -> it ships -> resolved

"(approved)": by the shop's policy (refund-only before shipment; any refund under an amount) or by
an operator; everything else waits for an operator (`lvyue aftersale approve|reject`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from shared.events.aftersale import AffectedLine, CaseState, CaseType, Resolution

REFUND_RETRY_AFTER = timedelta(seconds=61)  # WeChat: one refund per order per minute (10021059)

# WeChat statuses that end a case whatever we were doing.
WITHDRAWN = frozenset({"USER_CANCELD"})
CLOSED = frozenset({"RETURN_CLOSED"})
REFUNDED = frozenset(
    {"MERCHANT_REFUND_SUCCESS", "MERCHANT_RETURN_SUCCESS", "PLATFORM_REFUNDING", "MERCHANT_OVERDUE_REFUND"}
)
REJECTED_AT_WECHAT = frozenset(
    {"MERCHANT_REJECT_REFUND", "MERCHANT_REJECT_RETURN", "MERCHANT_REJECT_EXCHANGE"}
)
EXCHANGED = frozenset({"MERCHANT_EXCHANGE_SUCCESS"})
# A return or exchange approved: WeChat waits for (or has) the buyer's parcel back.
APPROVED_AT_WECHAT = frozenset({"USER_WAIT_RETURN", "MERCHANT_WAIT_RECEIPT"})
FINAL_STATES = frozenset({CaseState.RESOLVED, CaseState.REJECTED, CaseState.CLOSED})


class Stage(StrEnum):
    """Where the affected units are."""

    NOT_DISPATCHED = "not_dispatched"  # held, or not routed yet
    NOT_SHIPPED = "not_shipped"  # with a supplier, not shipped
    CANCELLED = "cancelled"  # the supplier will not ship them (cancelled or confirmed)
    IN_TRANSIT = "in_transit"  # shipped, not delivered
    DELIVERED = "delivered"
    RETURNED = "returned"  # back with the sender (intercepted or refused)


@dataclass(frozen=True)
class Fulfilment:
    """What aftersale knows of the affected units: the stage, the dispatch order and parcels."""

    stage: Stage
    dispatch_id: str | None = None
    supplier_id: str | None = None
    waybills: tuple[tuple[str, str], ...] = ()  # (carrier_code, waybill_no) of the affected parcels
    return_address_known: bool = True


@dataclass(frozen=True)
class Policy:
    """Per shop: what may be approved without a person."""

    auto_refund_before_shipment: bool = True
    auto_approve_under_fen: int = 0  # refunds strictly below this amount are approved anywhere
    deadline_warning: timedelta = timedelta(hours=12)


class TimelineEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    at: datetime
    what: str
    reason: str = ""


class Case(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    case_id: str
    order_id: str
    shop_id: str
    case_type: CaseType
    lines: list[AffectedLine]
    refund_fen: int = 0
    wechat_status: str = ""
    state: CaseState | None = None  # None: not decided yet
    resolution: Resolution | None = None
    deadline: datetime | None = None
    return_waybill: tuple[str, str] | None = None  # (delivery_id, waybill_id) of the buyer's return
    exchange_sku_id: str | None = None
    operator_decision: str | None = None  # "approve" | "reject"
    operator_reason: str = ""
    supplier_received: bool = False
    replacement_shipped: tuple[str, str] | None = None  # (delivery_id, waybill_id)
    refund_not_before: datetime | None = None
    approved_return: bool = False  # acceptapply approved the return / exchange at WeChat
    # A refund's units that earlier cases had already dropped from the dispatch orders when it was
    # first decided: only drops beyond these are its own.
    dropped_before: list[AffectedLine] | None = None
    sent: list[str] = Field(default_factory=list, description="instructions already given (kind:key)")
    timeline: list[TimelineEntry] = Field(default_factory=list)
    version: int = 1
    deadline_warned: bool = False
    warned_deadline: datetime | None = None  # the deadline last warned about (WeChat moves it)

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


class ActionKind(StrEnum):
    ACCEPT = "accept"  # acceptapply: approve a return/exchange, or refund
    REJECT = "reject"  # rejectapply
    ACCEPT_EXCHANGE_RESHIP = "accept_exchange_reship"
    CANCEL_LINES = "cancel_lines"  # -> dispatch
    INTERCEPT = "intercept"  # -> logistics and the supplier
    EXPECT_RETURN = "expect_return"  # -> the supplier
    RESHIP = "reship"  # -> dispatch: a replacement dispatch order
    WARN_DEADLINE = "warn_deadline"


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    reason: str = ""


@dataclass(frozen=True)
class Decision:
    case: Case
    actions: list[Action] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.actions)


class _Builder:
    def __init__(self, case: Case, now: datetime) -> None:
        self.case = case
        self.original = case
        self.initial_state = case.state
        self.now = now
        self.actions: list[Action] = []
        self.notes: list[TimelineEntry] = []
        self.dirty = False

    def set(self, **changes: object) -> None:
        if any(getattr(self.case, k) != v for k, v in changes.items()):
            self.case = self.case.model_copy(update=changes)
            self.dirty = True

    def move(self, state: CaseState, why: str, resolution: Resolution | None = None) -> None:
        if self.case.state == state and resolution in (None, self.case.resolution):
            return
        self.set(state=state, resolution=resolution or self.case.resolution)
        if state == self.initial_state and resolution is None:
            return  # back where this decision started: nothing happened
        self.notes.append(TimelineEntry(at=self.now, what=f"-> {state}", reason=why))

    def act(self, kind: ActionKind, why: str, *, once: str | None = None) -> None:
        """An action; with `once`, at most once per case (instructions must not repeat)."""
        if once is not None:
            key = f"{kind}:{once}"
            if key in self.case.sent:
                return
            self.set(sent=[*self.case.sent, key])
        self.actions.append(Action(kind, why))
        self.notes.append(TimelineEntry(at=self.now, what=str(kind), reason=why))

    def done(self) -> Decision:
        if self.case == self.original and not self.actions:
            return Decision(self.original)
        case = self.case.model_copy(
            update={"timeline": [*self.case.timeline, *self.notes], "version": self.case.version + 1}
        )
        return Decision(case, self.actions)


def decide(case: Case, fulfilment: Fulfilment, policy: Policy, now: datetime) -> Decision:
    """Everything that follows from the case's facts now. Calling it again with the same facts
    changes nothing (no action is repeated)."""
    b = _Builder(case, now)
    if case.final:
        return b.done()
    status = case.wechat_status
    if status in APPROVED_AT_WECHAT and case.case_type in (CaseType.RETURN, CaseType.EXCHANGE):
        b.set(approved_return=True)  # WeChat says so (it may have been approved in its back office)
    if status in WITHDRAWN:
        b.move(CaseState.CLOSED, "the buyer withdrew the request", Resolution.WITHDRAWN)
        return b.done()
    if status in CLOSED:
        b.move(CaseState.CLOSED, f"WeChat closed the case ({status})", Resolution.CLOSED_BY_WECHAT)
        return b.done()
    if status in REFUNDED:
        resolution = Resolution.RETURNED_AND_REFUNDED if case.approved_return else Resolution.REFUNDED
        b.move(CaseState.RESOLVED, f"WeChat refunded ({status})", resolution)
        return b.done()
    if status in REJECTED_AT_WECHAT:
        b.move(CaseState.REJECTED, f"rejected ({status})", Resolution.REJECTED)
        return b.done()
    if status in EXCHANGED:
        b.move(CaseState.RESOLVED, "the replacement is on its way", Resolution.EXCHANGED)
        return b.done()
    _warn_deadline(b, policy)
    if case.operator_decision == "reject":
        if case.state != CaseState.REJECTED:
            if case.case_type != CaseType.RESHIP:  # a re-ship is our own case, not WeChat's
                b.act(ActionKind.REJECT, case.operator_reason or "rejected by an operator", once="operator")
            b.move(CaseState.REJECTED, case.operator_reason or "rejected by an operator", Resolution.REJECTED)
        return b.done()
    if case.state is None or case.state == CaseState.AWAITING_OPERATOR:
        if not _may_proceed(case, fulfilment, policy):
            b.move(CaseState.AWAITING_OPERATOR, _why_operator(case, fulfilment))
            return b.done()
        b.set(state=None)  # approved: start from the facts
    for _ in range(4):  # until nothing more follows from the facts (one call does it all)
        before = (b.case.state, len(b.actions))
        _advance(b, fulfilment, policy)
        if (b.case.state, len(b.actions)) == before:
            break
    return b.done()


def next_look(case: Case, policy: Policy) -> datetime | None:
    """When time alone can change what `decide` says for the case: a deferred refund's minute, or
    the time to warn of WeChat's deadline. None when only a new fact can (or the case ended)."""
    if case.final:
        return None
    times = []
    if case.refund_not_before is not None and f"{ActionKind.ACCEPT}:refund" not in case.sent:
        times.append(case.refund_not_before)  # a deferred refund not made yet
    if case.deadline is not None and case.warned_deadline != case.deadline:
        times.append(case.deadline - policy.deadline_warning)
    return min(times, default=None)


def _may_proceed(case: Case, fulfilment: Fulfilment, policy: Policy) -> bool:
    if case.operator_decision == "approve" or case.case_type == CaseType.RESHIP:
        return True
    if case.case_type == CaseType.EXCHANGE and fulfilment.stage != Stage.DELIVERED:
        return False  # nothing to exchange yet: a person decides
    if 0 < case.refund_fen < policy.auto_approve_under_fen:
        return True
    if case.case_type == CaseType.RETURN and fulfilment.stage in (Stage.CANCELLED, Stage.RETURNED):
        return False  # see _refund_or_return: a return without goods to send back
    before_shipment = fulfilment.stage in (Stage.NOT_DISPATCHED, Stage.NOT_SHIPPED, Stage.CANCELLED)
    if case.case_type in (CaseType.REFUND, CaseType.RETURN) and before_shipment:
        return policy.auto_refund_before_shipment
    if case.case_type == CaseType.RETURN and fulfilment.stage == Stage.IN_TRANSIT:
        return policy.auto_refund_before_shipment  # it has not reached the buyer: bring it back
    if case.case_type == CaseType.REFUND and fulfilment.stage in (Stage.IN_TRANSIT, Stage.RETURNED):
        return policy.auto_refund_before_shipment
    return False


def _why_operator(case: Case, fulfilment: Fulfilment) -> str:
    return (
        f"{case.case_type} of {case.refund_fen} fen with the goods {fulfilment.stage}: "
        "the shop's policy asks a person"
    )


def _warn_deadline(b: _Builder, policy: Policy) -> None:
    """Once per deadline: WeChat sets a new one as the case moves (e.g. to confirm a receipt)."""
    deadline = b.case.deadline
    if deadline is None or b.case.warned_deadline == deadline or b.now < deadline - policy.deadline_warning:
        return
    b.set(deadline_warned=True, warned_deadline=deadline)
    b.act(ActionKind.WARN_DEADLINE, f"WeChat's deadline is {deadline.isoformat()}")


def _refund(b: _Builder, why: str) -> None:
    b.move(CaseState.REFUNDING, why)
    if b.case.refund_not_before is None or b.now >= b.case.refund_not_before:
        b.act(ActionKind.ACCEPT, why, once="refund")


def _advance(b: _Builder, fulfilment: Fulfilment, policy: Policy) -> None:
    case = b.case
    match case.case_type:
        case CaseType.REFUND | CaseType.RETURN:
            _refund_or_return(b, fulfilment, policy)
        case CaseType.EXCHANGE:
            _exchange(b, fulfilment)
        case CaseType.RESHIP:
            _reship(b, fulfilment)


def _refund_or_return(b: _Builder, fulfilment: Fulfilment, policy: Policy) -> None:
    case = b.case
    if case.state == CaseState.REFUNDING:
        _refund(b, "refund pending")
        return
    if case.approved_return:  # a return approved at WeChat: wait for the goods, then refund
        if case.supplier_received:
            _refund(b, "the supplier received the return")
        elif case.return_waybill is not None:
            b.move(CaseState.AWAITING_RECEIPT, f"the buyer shipped the return ({case.return_waybill[1]})")
            b.act(
                ActionKind.EXPECT_RETURN, "the return is on its way", once=f"waybill:{case.return_waybill[1]}"
            )
        else:
            b.move(CaseState.AWAITING_RETURN, "waiting for the buyer to ship the return")
        return
    match fulfilment.stage:
        case Stage.NOT_DISPATCHED | Stage.NOT_SHIPPED:
            b.move(CaseState.STOPPING_SHIPMENT, "not shipped yet: the supplier is told to stop")
            b.act(ActionKind.CANCEL_LINES, "stop the affected units", once="cancel")
        case Stage.CANCELLED | Stage.RETURNED:
            if case.case_type == CaseType.REFUND:
                _refund(b, f"the goods are {fulfilment.stage}: nothing reaches the buyer")
            else:
                b.move(
                    CaseState.AWAITING_OPERATOR,
                    f"a return of goods that are {fulfilment.stage}: WeChat refunds a return only after the "
                    "buyer sends goods back; reject it so that the buyer asks for a refund instead",
                )
        case Stage.IN_TRANSIT:
            b.move(CaseState.INTERCEPTING, "already shipped: the parcel is asked back")
            b.act(ActionKind.INTERCEPT, "bring the parcel back", once="intercept")
        case Stage.DELIVERED:
            if case.case_type == CaseType.REFUND:
                if case.operator_decision == "approve" or 0 < case.refund_fen < policy.auto_approve_under_fen:
                    _refund(b, "delivered; refund approved")
                else:  # e.g. the interception failed and the buyer has the goods
                    b.move(CaseState.AWAITING_OPERATOR, "refund-only, but the goods reached the buyer")
            elif (
                case.operator_decision != "approve"
                and not 0 < case.refund_fen < policy.auto_approve_under_fen
            ):
                b.move(
                    CaseState.AWAITING_OPERATOR,
                    "a return of delivered goods: the shop's policy asks a person",
                )
            else:
                b.set(approved_return=True)
                b.act(
                    ActionKind.ACCEPT, "approve the return to the supplier's address", once="approve_return"
                )
                b.act(ActionKind.EXPECT_RETURN, "a return is coming", once="expect")
                b.move(CaseState.AWAITING_RETURN, "return approved; the buyer sends the goods back")


def _exchange(b: _Builder, fulfilment: Fulfilment) -> None:
    """Approved at WeChat first, always: acceptexchangereship needs an approved exchange."""
    case = b.case
    if case.replacement_shipped is not None:
        b.act(
            ActionKind.ACCEPT_EXCHANGE_RESHIP,
            f"replacement shipped ({case.replacement_shipped[1]})",
            once="reship_done",
        )
        b.move(CaseState.RESOLVED, "the replacement shipped", Resolution.EXCHANGED)
        return
    if not case.approved_return:
        if fulfilment.stage != Stage.DELIVERED:
            b.move(
                CaseState.AWAITING_OPERATOR, f"an exchange of goods that are {fulfilment.stage}: reject it"
            )
            return
        b.set(approved_return=True)
        b.act(ActionKind.ACCEPT, "approve the exchange", once="approve_exchange")
        b.act(ActionKind.EXPECT_RETURN, "goods to exchange are coming back", once="expect")
        b.move(CaseState.AWAITING_RETURN, "exchange approved; the buyer sends the goods back")
        case = b.case
    if case.supplier_received:
        b.move(CaseState.RESHIPPING, "the supplier received the exchanged goods: the replacement is sent")
        b.act(ActionKind.RESHIP, "send the replacement", once="reship")
    elif case.return_waybill is not None:
        b.move(CaseState.AWAITING_RECEIPT, f"the buyer shipped the goods back ({case.return_waybill[1]})")
        b.act(
            ActionKind.EXPECT_RETURN,
            "the exchange is on its way back",
            once=f"waybill:{case.return_waybill[1]}",
        )
    else:
        b.move(CaseState.AWAITING_RETURN, "waiting for the buyer to send the goods back")


def _reship(b: _Builder, fulfilment: Fulfilment) -> None:
    if b.case.replacement_shipped is not None:
        b.move(CaseState.RESOLVED, f"re-shipped ({b.case.replacement_shipped[1]})", Resolution.RESHIPPED)
        return
    b.move(CaseState.RESHIPPING, "re-ship requested")
    b.act(ActionKind.RESHIP, "send the lost or damaged units again", once="reship")


def refund_refused_for_now(case: Case, now: datetime) -> Case:
    """WeChat answered 10021059 (one refund per order per minute): the refund is due again in a minute."""
    if case.final:
        return case
    return case.model_copy(
        update={
            "refund_not_before": now + REFUND_RETRY_AFTER,
            "sent": [key for key in case.sent if key != f"{ActionKind.ACCEPT}:refund"],
            "timeline": [*case.timeline, TimelineEntry(at=now, what="refund deferred", reason="10021059")],
            "version": case.version + 1,
        }
    )
