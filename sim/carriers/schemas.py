"""The control API's bodies (not the carriers'): deliberate public views of the world's records."""

from __future__ import annotations

from pydantic import BaseModel, Field

from shared.carriers.kuaidi100 import TrackingState
from sim.carriers.settings import FaultShares
from sim.carriers.state import (
    AttemptOutcome,
    Channel,
    IssuedWaybill,
    Parcel,
    PushRecord,
    PushStatus,
    TraceEvent,
)
from sim.carriers.timeline import Outcome
from sim.carriers.tracker import beijing


class IssuedOut(BaseModel):
    key: str
    task_id: str
    order_id: str | None
    issued_at: float
    cancelled: bool


class ScanOut(BaseModel):
    state: int  # Kuaidi100 state
    kdniao_state: int
    kdniao_state_ex: int
    context: str
    city: str
    at: float  # simulated unix time
    time: str  # Beijing time, as pushed
    forced: bool


class TrackingOut(BaseModel):
    outcome: Outcome
    state: int | None  # latest Kuaidi100 state, None before the first scan
    finished: bool
    next_state: int | None
    remaining: list[int]  # Kuaidi100 states still planned
    history: list[ScanOut]
    kuaidi100_callback: str | None
    kdniao_subscribers: list[str]  # EBusinessIDs


class WaybillOut(BaseModel):
    number: str
    delivery_id: str
    kuaidi100: str
    kdniao: str
    name: str
    issued: IssuedOut | None
    tracking: TrackingOut | None


class WaybillRef(BaseModel):
    number: str = Field(min_length=1, max_length=64)
    delivery_id: str = Field(min_length=1, max_length=32, description="the carrier's WeChat code")


class WaybillLookupIn(BaseModel):
    waybills: list[WaybillRef] = Field(max_length=20_000)


class AttemptOut(BaseModel):
    number: int
    at: float
    outcome: AttemptOutcome
    status_code: int | None
    answer: str
    error: str
    duration_ms: float


class PushOut(BaseModel):
    push_id: int
    channel: Channel
    number: str
    step_index: int
    state: int
    url: str
    status: PushStatus
    duplicate_of: int | None
    held_back: bool
    body: str
    attempts: list[AttemptOut]


class CallOut(BaseModel):
    at: float
    method: str
    path: str
    request: dict[str, object]
    reply: dict[str, object]


class ForceStateIn(BaseModel):
    state: TrackingState  # Kuaidi100 state code
    context: str | None = None


class FaultsIn(BaseModel):
    """A partial update of the fault shares."""

    problem_share: float | None = Field(default=None, ge=0, le=1)
    return_share: float | None = Field(default=None, ge=0, le=1)
    refusal_share: float | None = Field(default=None, ge=0, le=1)
    duplicate_share: float | None = Field(default=None, ge=0, le=1)
    out_of_order_share: float | None = Field(default=None, ge=0, le=1)
    subscribe_server_errors: int | None = Field(default=None, ge=0)

    def apply(self, current: FaultShares) -> FaultShares:
        return current.model_copy(update=self.model_dump(exclude_none=True))


def scan_out(event: TraceEvent) -> ScanOut:
    return ScanOut(
        state=int(event.step.state),
        kdniao_state=int(event.step.kdniao_state),
        kdniao_state_ex=int(event.step.kdniao_state_ex),
        context=event.step.context,
        city=event.step.city,
        at=event.at,
        time=beijing(event.at),
        forced=event.forced,
    )


def tracking_out(parcel: Parcel) -> TrackingOut:
    upcoming = parcel.next_step
    return TrackingOut(
        outcome=parcel.outcome,
        state=int(parcel.history[-1].step.state) if parcel.history else None,
        finished=parcel.finished,
        next_state=int(upcoming.state) if upcoming else None,
        remaining=[] if parcel.finished else [int(s.state) for s in parcel.plan[parcel.next_index :]],
        history=[scan_out(e) for e in parcel.history],
        kuaidi100_callback=parcel.kuaidi100.callback_url if parcel.kuaidi100 else None,
        kdniao_subscribers=[s.account.ebusiness_id for s in parcel.kdniao],
    )


def issued_out(waybill: IssuedWaybill) -> IssuedOut:
    return IssuedOut(
        key=waybill.key,
        task_id=waybill.task_id,
        order_id=waybill.order_id,
        issued_at=waybill.issued_at,
        cancelled=waybill.cancelled_at is not None,
    )


def push_out(push: PushRecord) -> PushOut:
    return PushOut(
        push_id=push.push_id,
        channel=push.channel,
        number=push.number,
        step_index=push.step_index,
        state=push.state,
        url=push.url,
        status=push.status,
        duplicate_of=push.duplicate_of,
        held_back=push.held_back,
        body=push.body.decode("ascii"),
        attempts=[
            AttemptOut(
                number=a.number,
                at=a.at,
                outcome=a.outcome,
                status_code=a.status_code,
                answer=a.answer,
                error=a.error,
                duration_ms=a.duration_ms,
            )
            for a in push.attempts
        ],
    )
