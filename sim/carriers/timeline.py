"""What happens to a parcel (pure): the scripted states of one waybill, from pickup to signature or
back to the sender, with Kuaidi100's state, Kdniao's State/StateEx and a Chinese scan text per step.

Delays are simulated seconds after the previous step (the stand-in divides them by time_scale)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from shared.carriers.kdniao import State, StateEx
from shared.carriers.kuaidi100 import TrackingState

HOUR = 3600.0


class Outcome(StrEnum):
    DELIVERED = "delivered"
    PROBLEM_THEN_DELIVERED = "problem_then_delivered"  # one failed attempt, signed the next day
    RETURNED = "returned"  # undeliverable: back to the sender, who signs for it
    REFUSED = "refused"  # refused at the door, then returned


@dataclass(frozen=True)
class Route:
    origin_city: str
    origin_station: str
    dest_city: str
    dest_station: str
    courier: str
    courier_phone: str


@dataclass(frozen=True)
class Step:
    state: TrackingState  # Kuaidi100 lastResult.state
    kdniao_state: State
    kdniao_state_ex: StateEx
    after_s: float  # simulated seconds after the previous step
    context: str  # the scan text (Kuaidi100 context / Kdniao AcceptStation)
    city: str

    @property
    def is_final(self) -> bool:
        return self.state.is_final


_CITIES = (
    ("广州市", "广州白云区公司"),
    ("深圳市", "深圳龙华区公司"),
    ("杭州市", "杭州余杭区公司"),
    ("上海市", "上海浦东新区公司"),
    ("北京市", "北京朝阳区公司"),
    ("成都市", "成都武侯区公司"),
    ("武汉市", "武汉洪山区公司"),
    ("义乌市", "金华义乌市公司"),
)
_COURIERS = ("王师傅", "李师傅", "张师傅", "刘师傅", "陈师傅")


def random_route(rng: random.Random) -> Route:
    (o_city, o_station), (d_city, d_station) = rng.sample(_CITIES, 2)
    phone = "138" + "".join(str(rng.randint(0, 9)) for _ in range(8))
    return Route(o_city, o_station, d_city, d_station, rng.choice(_COURIERS), phone)


def choose_outcome(rng: random.Random, *, problem: float, returned: float, refused: float) -> Outcome:
    draw = rng.random()
    for share, outcome in (
        (problem, Outcome.PROBLEM_THEN_DELIVERED),
        (returned, Outcome.RETURNED),
        (refused, Outcome.REFUSED),
    ):
        if draw < share:
            return outcome
        draw -= share
    return Outcome.DELIVERED


# (Kuaidi100 state, variant) -> (Kdniao State, StateEx, scan text template, whose city: origin | dest)
_SCANS: dict[tuple[TrackingState, str], tuple[State, StateEx, str, str]] = {
    (TrackingState.PICKED_UP, ""): (State.PICKED_UP, StateEx.PICKED_UP, "【{oc}】{os} 已揽收", "o"),
    (TrackingState.IN_TRANSIT, ""): (
        State.IN_TRANSIT,
        StateEx.IN_TRANSIT,
        "【{oc}】快件已发往【{dc}转运中心】",
        "o",
    ),
    (TrackingState.IN_TRANSIT, "arrived"): (
        State.IN_TRANSIT,
        StateEx.AT_DESTINATION_CITY,
        "快件已到达【{dc}转运中心】",
        "d",
    ),
    (TrackingState.OUT_FOR_DELIVERY, ""): (
        State.IN_TRANSIT,
        StateEx.OUT_FOR_DELIVERY,
        "【{dc}】{ds} 派件员：{courier} 电话：{phone} 正在为您派件",
        "d",
    ),
    (TrackingState.SIGNED, ""): (
        State.SIGNED,
        StateEx.SIGNED_NORMALLY,
        "【{dc}】快件已签收，签收人：本人，如有疑问请联系派件员",
        "d",
    ),
    (TrackingState.SIGNED, "after_problem"): (
        State.SIGNED,
        StateEx.SIGNED_AFTER_EXCEPTION,
        "【{dc}】快件已签收，签收人：本人，感谢使用",
        "d",
    ),
    (TrackingState.PROBLEM, ""): (
        State.PROBLEM,
        StateEx.DELIVERY_EXCEPTION,
        "【{dc}】快件派送不成功（收件人电话无人接听），待再次派送",
        "d",
    ),
    (TrackingState.REFUSED, ""): (
        State.PROBLEM,
        StateEx.REFUSED,
        "【{dc}】收件人拒收，快件将退回寄件人",
        "d",
    ),
    (TrackingState.RETURNED, ""): (
        State.PROBLEM,
        StateEx.RETURN_NOT_SIGNED,
        "【{dc}】快件已退回，正在发往寄件人【{oc}】",
        "d",
    ),
    (TrackingState.RETURN_SIGNED, ""): (
        State.PROBLEM,
        StateEx.RETURN_SIGNED,
        "【{oc}】退回件已由寄件人签收",
        "o",
    ),
    (TrackingState.REDIRECTED, ""): (State.FORWARDED, StateEx.FORWARDED, "【{dc}】快件已转投", "d"),
    (TrackingState.CUSTOMS, ""): (State.IN_TRANSIT, StateEx.IN_TRANSIT, "快件清关中", "d"),
}


def step(state: TrackingState, route: Route, *, after_s: float, variant: str = "") -> Step:
    """The step for `state` on `route` (variant picks among same-state scans: departed/arrived,
    signed after a failed attempt)."""
    kdniao_state, state_ex, template, whose = _SCANS[(state, variant)]
    text = template.format(
        oc=route.origin_city,
        os=route.origin_station,
        dc=route.dest_city,
        ds=route.dest_station,
        courier=route.courier,
        phone=route.courier_phone,
    )
    city = route.origin_city if whose == "o" else route.dest_city
    return Step(state, kdniao_state, state_ex, after_s, text, city)


def plan(outcome: Outcome, route: Route) -> list[Step]:
    """Every step of a parcel that ends in `outcome`."""
    s = TrackingState
    head = [
        step(s.PICKED_UP, route, after_s=2 * HOUR),
        step(s.IN_TRANSIT, route, after_s=4 * HOUR),
        step(s.IN_TRANSIT, route, after_s=20 * HOUR, variant="arrived"),
        step(s.OUT_FOR_DELIVERY, route, after_s=8 * HOUR),
    ]
    match outcome:
        case Outcome.DELIVERED:
            tail = [step(s.SIGNED, route, after_s=3 * HOUR)]
        case Outcome.PROBLEM_THEN_DELIVERED:
            tail = [step(s.PROBLEM, route, after_s=4 * HOUR), *continue_after(s.PROBLEM, route)]
        case Outcome.RETURNED:
            tail = [
                step(s.PROBLEM, route, after_s=4 * HOUR),
                *continue_after(s.RETURNED, route, returning=True),
            ]
        case Outcome.REFUSED:
            tail = [step(s.REFUSED, route, after_s=1 * HOUR), *continue_after(s.REFUSED, route)]
    return head + tail


def continue_after(state: TrackingState, route: Route, *, returning: bool = False) -> list[Step]:
    """The steps that follow `state` (used to re-plan after a forced state). `returning` with
    RETURNED means "the return starts now" (RETURNED itself is included)."""
    s = TrackingState
    match state:
        case s.PROBLEM:
            return [
                step(s.OUT_FOR_DELIVERY, route, after_s=20 * HOUR),
                step(s.SIGNED, route, after_s=3 * HOUR, variant="after_problem"),
            ]
        case s.REFUSED:
            return continue_after(s.RETURNED, route, returning=True)
        case s.RETURNED if returning:
            return [
                step(s.RETURNED, route, after_s=6 * HOUR),
                step(s.RETURN_SIGNED, route, after_s=48 * HOUR),
            ]
        case s.RETURNED:
            return [step(s.RETURN_SIGNED, route, after_s=48 * HOUR)]
        case s.PICKED_UP:
            return plan(Outcome.DELIVERED, route)[1:]
        case s.IN_TRANSIT | s.CUSTOMS | s.REDIRECTED:
            return plan(Outcome.DELIVERED, route)[3:]
        case s.OUT_FOR_DELIVERY:
            return [step(s.SIGNED, route, after_s=3 * HOUR)]
        case _:  # SIGNED, RETURN_SIGNED: the end
            return []


def states(steps: Sequence[Step]) -> list[TrackingState]:
    return [s.state for s in steps]
