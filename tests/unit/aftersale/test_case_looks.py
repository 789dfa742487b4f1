"""Aftersale follows open cases only: by order for the events that move goods, and by the time the
clock alone can move them (a deferred refund's minute, a deadline to warn of)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest

from services.aftersale.domain.case import Case, next_look
from services.aftersale.handlers import Aftersale, ShopPolicies
from shared.events.aftersale import CaseState, CaseType
from tests.unit.aftersale.builders import ORDER_ID, POLICY, SHOP, T0, at, new_case
from tests.unit.logistics.test_shipments import InMemory, Producer


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Recorder:
    """Stands in for the decision and its actions: records which cases were looked at."""

    looked_at: list[str] = field(default_factory=list)
    failing: set[str] = field(default_factory=set)

    async def __call__(self, case: Case, *, cause: str) -> Case:
        self.looked_at.append(case.case_id)
        if case.case_id in self.failing:
            raise RuntimeError("WeChat unavailable")
        return case


def _case(case_id: str, *, order_id: str = ORDER_ID, **facts: Any) -> Case:
    return new_case(CaseType.REFUND).model_copy(update={"case_id": case_id, "order_id": order_id, **facts})


async def _aftersale(clock: Clock, cases: list[Case]) -> tuple[Aftersale, Recorder]:
    projection: InMemory[Case] = InMemory()
    for case in cases:
        await projection.save(case.case_id, case, cause="load")
    aftersale = Aftersale(
        cases=projection,
        orders=InMemory(),
        created={},
        policies=ShopPolicies(InMemory(), POLICY),
        wechat=None,
        producer=Producer(),
        return_addresses=lambda _: None,
        clock=clock,
    )
    recorder = Recorder()
    aftersale._decide_and_act_once = recorder  # type: ignore[method-assign]
    aftersale.index()
    return aftersale, recorder


def test_next_look_is_the_deferred_refund_or_the_deadline_warning_whichever_comes_first() -> None:
    case = new_case(CaseType.REFUND)
    assert next_look(case, POLICY) is None
    assert next_look(case.model_copy(update={"refund_not_before": at(60)}), POLICY) == at(60)
    deadline = at(hours=48)
    warned_at = deadline - POLICY.deadline_warning
    assert next_look(case.model_copy(update={"deadline": deadline}), POLICY) == warned_at
    both = case.model_copy(update={"deadline": deadline, "refund_not_before": at(60)})
    assert next_look(both, POLICY) == at(60)
    warned = case.model_copy(update={"deadline": deadline, "warned_deadline": deadline})
    assert next_look(warned, POLICY) is None
    ended = case.model_copy(update={"state": CaseState.RESOLVED, "refund_not_before": at(60)})
    assert next_look(ended, POLICY) is None
    refunded = both.model_copy(update={"sent": ["accept:refund"]})  # made: its past minute hides nothing
    assert next_look(refunded, POLICY) == warned_at


async def test_a_tick_looks_only_at_the_cases_whose_time_came() -> None:
    clock = Clock()
    deadline = at(hours=48)
    aftersale, recorder = await _aftersale(
        clock,
        [
            _case("deferred", refund_not_before=at(60)),
            _case("deadline", deadline=deadline),
            _case("waiting"),  # only a new fact can move it
            _case("ended", state=CaseState.RESOLVED, refund_not_before=at(30)),
        ],
    )
    await aftersale.tick()
    assert recorder.looked_at == []
    clock.now = at(61)
    await aftersale.tick()
    await aftersale.tick()
    assert recorder.looked_at == ["deferred"]
    clock.now = deadline - POLICY.deadline_warning
    await aftersale.tick()
    assert recorder.looked_at == ["deferred", "deadline"]


async def test_a_timed_step_that_fails_is_looked_at_again_shortly() -> None:
    clock = Clock()
    aftersale, recorder = await _aftersale(clock, [_case("deferred", refund_not_before=at(60))])
    recorder.failing.add("deferred")
    clock.now = at(60)
    await aftersale.tick()
    await aftersale.tick()
    assert recorder.looked_at == ["deferred"]
    recorder.failing.clear()
    clock.now = at(66)
    await aftersale.tick()
    assert recorder.looked_at == ["deferred", "deferred"]


async def test_an_orders_events_reconsider_only_its_open_cases() -> None:
    clock = Clock()
    aftersale, recorder = await _aftersale(
        clock,
        [
            _case("a1"),
            _case("a2"),
            _case("a-ended", state=CaseState.CLOSED),
            _case("b1", order_id="3705115058471209999"),
        ],
    )
    await aftersale.reconsider_order(ORDER_ID, cause="test")
    assert sorted(recorder.looked_at) == ["a1", "a2"]
    assert {c.case_id for c in aftersale.open_cases()} == {"a1", "a2", "b1"}

    await aftersale._case_fact("a1", cause="test", state=CaseState.RESOLVED)  # saved as ended
    recorder.looked_at.clear()
    await aftersale.reconsider_order(ORDER_ID, cause="test")
    assert recorder.looked_at == ["a2"]


async def test_a_step_that_fails_on_an_orders_event_is_looked_at_again_by_the_tick() -> None:
    clock = Clock()
    aftersale, recorder = await _aftersale(clock, [_case("a1"), _case("a2")])
    recorder.failing.add("a1")
    with pytest.raises(RuntimeError):  # the consumer's own retries and dead letter take the message
        await aftersale.reconsider_order(ORDER_ID, cause="test")
    recorder.failing.clear()
    recorder.looked_at.clear()
    clock.now = at(6)
    await aftersale.tick()
    assert recorder.looked_at == ["a1"]


async def test_a_policy_change_reconsiders_every_open_case_of_the_shop_past_a_failing_one() -> None:
    clock = Clock()
    aftersale, recorder = await _aftersale(clock, [_case("a1"), _case("a2"), _case("a3")])
    recorder.failing.add("a2")
    await aftersale.reconsider_shop(SHOP, cause="policy")
    assert sorted(recorder.looked_at) == ["a1", "a2", "a3"]
    await aftersale.reconsider_shop("another-shop", cause="policy")
    assert len(recorder.looked_at) == 3
