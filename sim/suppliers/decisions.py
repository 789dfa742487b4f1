"""What a supplier bot does, as pure functions of a feed change and the bot's own knowledge.

No I/O and no clock: the bot (`bot.py`) only carries these decisions out, so "what does the supplier
do when a cancellation arrives after it handed the goods to the carrier" is answered here, once.

Randomness comes from a `random.Random` seeded per (seed, supplier, dispatch order), so one dispatch
order gets the same plan however the bot's calls interleave, and a run with the same seed repeats.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar

from shared.api.supplier import ChangeAnswer, DispatchOrderPublic, FeedChange
from shared.events.dispatch import (
    ChangeKind,
    ChangeRefusal,
    ChangeRequest,
    ChangeStatus,
    DispatchState,
    ParcelLine,
    RejectReason,
)
from sim.suppliers.settings import Behaviour

FINAL_STATES = frozenset({DispatchState.REJECTED, DispatchState.CANCELLED, DispatchState.SHIPPED})
SHIPPING_STATES = frozenset({DispatchState.ACCEPTED, DispatchState.PARTIALLY_SHIPPED})
REJECT_TEXT = {
    RejectReason.OUT_OF_STOCK: "库存不足，暂无法发货",
    RejectReason.INVALID_SKU: "该规格我方无此货品",
    RejectReason.BAD_ADDRESS: "地址无法送达",
    RejectReason.OTHER: "无法承接",
}
CONFIRM_TEXT = {
    ChangeKind.CANCEL: "未发货，已取消",
    ChangeKind.ADDRESS: "已改地址",
    ChangeKind.SKU: "已改规格",
}

# Waybill numbers as each carrier prints them: a prefix and a number of digits.
WAYBILL_FORMATS: dict[str, tuple[str, int]] = {
    "ZTO": ("ZT", 12),
    "YTO": ("YT", 13),
    "SF": ("SF", 13),
    "STO": ("77", 11),
    "YUNDA": ("46", 11),
    "JD": ("JDVA", 11),
    "JTSD": ("JT", 13),
    "EMS": ("98", 11),
}

K = TypeVar("K")


def order_rng(seed: int, supplier_id: str, dispatch_id: str, *salt: object) -> random.Random:
    """A generator private to one dispatch order (and one purpose, by `salt`)."""
    return random.Random("|".join(map(str, (seed, supplier_id, dispatch_id, *salt))))


def weighted(rng: random.Random, weights: Mapping[K, float]) -> K:
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


def draw(rng: random.Random, low: float, high: float) -> float:
    return low if high <= low else rng.uniform(low, high)


@dataclass(frozen=True)
class OrderPlan:
    """Decided once when the offer is first seen. Delays are in unscaled supplier seconds."""

    rejection: RejectReason | None
    accept_delay_s: float
    ship_delay_s: float
    rest_delay_s: float
    carrier: str
    split: bool
    partial: bool


def plan_order(behaviour: Behaviour, rng: random.Random) -> OrderPlan:
    # Every draw happens whatever the outcome, so a share change does not reshuffle the other choices.
    rejects = rng.random() < behaviour.reject_share
    reason = weighted(rng, behaviour.reject_reasons)
    return OrderPlan(
        rejection=reason if rejects else None,
        accept_delay_s=draw(rng, behaviour.accept_delay.min_s, behaviour.accept_delay.max_s),
        ship_delay_s=draw(rng, behaviour.ship_delay.min_s, behaviour.ship_delay.max_s),
        rest_delay_s=draw(rng, behaviour.rest_delay.min_s, behaviour.rest_delay.max_s),
        carrier=weighted(rng, behaviour.carriers),
        split=rng.random() < behaviour.split_share,
        partial=rng.random() < behaviour.partial_share,
    )


@dataclass(frozen=True)
class OrderKnowledge:
    """What the bot knows about one dispatch order: the newest snapshot and its own doings."""

    order: DispatchOrderPublic
    plan: OrderPlan
    # Units per line handed to a carrier whose shipment report has not been answered yet.
    in_transit: Mapping[int, int] = field(default_factory=dict)
    answering: frozenset[str] = frozenset()  # change requests the bot is about to answer
    answered: frozenset[str] = frozenset()
    failures: int = 0  # calls that gave up or met a conflict
    abandoned: bool = False

    @property
    def dispatch_id(self) -> str:
        return self.order.dispatch_id


def in_warehouse(knowledge: OrderKnowledge) -> dict[int, int]:
    """Units per line still on the supplier's shelf: neither reported shipped nor being shipped."""
    left: dict[int, int] = {}
    for line in knowledge.order.lines:
        units = line.quantity - line.shipped_quantity - knowledge.in_transit.get(line.line_no, 0)
        if units > 0:
            left[line.line_no] = units
    return left


def absorb(knowledge: OrderKnowledge, snapshot: DispatchOrderPublic) -> OrderKnowledge:
    """A newer snapshot (by version) replaces the known one; older or equal ones are stale copies."""
    if snapshot.dispatch_id != knowledge.dispatch_id or snapshot.version <= knowledge.order.version:
        return knowledge
    return replace(knowledge, order=snapshot)


@dataclass(frozen=True)
class Reaction:
    knowledge: OrderKnowledge
    start_work: bool  # a new dispatch order with something left to do
    answer: tuple[ChangeRequest, ...] = ()  # change requests to answer now


def react(known: OrderKnowledge | None, change: FeedChange, plan: Callable[[], OrderPlan]) -> Reaction:
    """One feed change. Changes repeat (restarts, several events per commit) and may be stale:
    only a newer version counts, and each change request is answered once."""
    if known is None:
        knowledge = OrderKnowledge(order=change.dispatch_order, plan=plan())
        start = knowledge.order.state not in FINAL_STATES
    else:
        knowledge, start = absorb(known, change.dispatch_order), False
    to_answer: tuple[ChangeRequest, ...] = ()
    if knowledge.order.state not in FINAL_STATES and not knowledge.abandoned:
        seen = knowledge.answering | knowledge.answered
        to_answer = tuple(
            r
            for r in knowledge.order.change_requests
            if r.status == ChangeStatus.OPEN and r.request_id not in seen
        )
    if to_answer:
        knowledge = replace(knowledge, answering=knowledge.answering | {r.request_id for r in to_answer})
    return Reaction(knowledge, start, to_answer)


def answer_change(knowledge: OrderKnowledge, request_id: str) -> ChangeAnswer | None:
    """Confirm while anything is still on the shelf (the rest of a partial shipment is stopped or
    changed); refuse with already_shipped once every unit has gone to a carrier. None: the request is
    no longer open (superseded, or the shipment report answered it)."""
    request = next((r for r in knowledge.order.change_requests if r.request_id == request_id), None)
    if request is None or request.status != ChangeStatus.OPEN:
        return None
    if knowledge.order.state == DispatchState.SHIPPED or not in_warehouse(knowledge):
        return ChangeAnswer(decision="refuse", refusal=ChangeRefusal.ALREADY_SHIPPED, text="已发货，请拦截")
    return ChangeAnswer(decision="confirm", text=CONFIRM_TEXT[request.kind])


@dataclass(frozen=True)
class Done:
    reason: str


@dataclass(frozen=True)
class WaitForAnswers:
    """Change requests are being answered: nothing leaves the warehouse until they are."""


@dataclass(frozen=True)
class AnswerOffer:
    delay_s: float
    rejection: RejectReason | None  # None: accept

    @property
    def key(self) -> str:
        return "offer"


@dataclass(frozen=True)
class Ship:
    delay_s: float
    parcels_before: int  # parcels already reported: tells the first shipment from the rest

    @property
    def key(self) -> str:
        return f"ship@{self.parcels_before}"


Step = Done | WaitForAnswers | AnswerOffer | Ship


def next_step(knowledge: OrderKnowledge) -> Step:
    """The next thing to do for one dispatch order, and after how long (unscaled seconds)."""
    order, plan = knowledge.order, knowledge.plan
    if knowledge.abandoned:
        return Done("abandoned")
    if order.state in FINAL_STATES:
        return Done(order.state.value)
    if knowledge.answering:
        return WaitForAnswers()
    if order.state == DispatchState.OFFERED:
        return AnswerOffer(plan.accept_delay_s, plan.rejection)
    if not in_warehouse(knowledge):
        return Done("nothing on the shelf")  # the open shipment report decides the state
    return Ship(plan.rest_delay_s if order.parcels else plan.ship_delay_s, len(order.parcels))


def shipment_contents(
    on_shelf: Mapping[int, int], *, partial: bool, split: bool, max_parcels: int, rng: random.Random
) -> list[list[ParcelLine]]:
    """The parcels of one shipment: everything on the shelf, or (partial) only part of it now;
    in one parcel, or (split) in 2..max_parcels, each with at least one unit."""
    units = [line_no for line_no, count in sorted(on_shelf.items()) for _ in range(count)]
    if not units:
        return []
    if partial and len(units) >= 2:
        units = units[: rng.randint(1, len(units) - 1)]
    chunks = [units]
    if split and len(units) >= 2:
        count = rng.randint(2, min(max_parcels, len(units)))
        cuts = sorted(rng.sample(range(1, len(units)), count - 1))
        chunks = [units[a:b] for a, b in zip([0, *cuts], [*cuts, len(units)], strict=True)]
    return [
        [ParcelLine(line_no=line_no, quantity=n) for line_no, n in sorted(Counter(chunk).items())]
        for chunk in chunks
    ]


def waybill_number(carrier_code: str, rng: random.Random) -> str:
    prefix, digits = WAYBILL_FORMATS.get(carrier_code, (_letters(carrier_code)[:2] or "WB", 12))
    return prefix + "".join(rng.choice("0123456789") for _ in range(digits))


def own_waybills(carrier_code: str, count: int, rng: random.Random, used: Iterable[str] = ()) -> list[str]:
    """`count` new numbers, none already used on this dispatch order."""
    taken = set(used)
    numbers: list[str] = []
    while len(numbers) < count:
        number = waybill_number(carrier_code, rng)
        if number not in taken:
            taken.add(number)
            numbers.append(number)
    return numbers


def parcel_weight_grams(lines: Iterable[ParcelLine], rng: random.Random) -> int:
    """A plausible weight for a waybill request: 150-1500 g per unit."""
    return min(100_000, sum(line.quantity for line in lines) * rng.randint(150, 1500))


def _letters(text: str) -> str:
    return "".join(c for c in text.upper() if c.isascii() and c.isalnum())
