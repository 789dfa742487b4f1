"""Deadlines with a fake clock: time is an argument, so the tests walk it forward step by step and
check exactly when each alert becomes due, and that it is raised once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pytest

from services.logistics.domain.deadlines import (
    DeadlinePolicy,
    DueAlert,
    ShipByWatch,
    new_alerts,
    parcel_alerts,
    ship_by_alerts,
)
from services.logistics.domain.tracking import ParcelTracking, apply_entries
from shared.events.logistics import AlertKind, TrackingState
from tests.unit.logistics.builders import CARRIER, ORDER_ID, SHOP, T0, WAYBILL, at, entry, tracking

S = TrackingState
POLICY = DeadlinePolicy(
    ship_by_warning_before=timedelta(hours=3),
    pickup_within=timedelta(hours=12),
    stalled_after=timedelta(hours=36),
    unconfirmed_after=timedelta(days=5),
)
KEY = f"{CARRIER}:{WAYBILL}"
TICK = timedelta(minutes=30)
EPS = timedelta(microseconds=1)


def clock(start: datetime, end: datetime, step: timedelta = TICK) -> Iterator[datetime]:
    now = start
    while now <= end:
        yield now
        now += step


def walk(
    due_at: Callable[[datetime], list[DueAlert]], start: datetime, end: datetime
) -> list[tuple[datetime, DueAlert]]:
    """What a scheduler would raise: at each tick the due alerts not raised before."""
    raised: set[str] = set()
    out: list[tuple[datetime, DueAlert]] = []
    for now in clock(start, end):
        for alert in new_alerts(due_at(now), raised):
            raised.add(alert.key)
            out.append((now, alert))
    return out


def watch(*, shipped: bool = False, cancelled: bool = False, ship_by: datetime | None = None) -> ShipByWatch:
    return ShipByWatch(
        shop_id=SHOP,
        order_id=ORDER_ID,
        dispatch_id=f"{ORDER_ID}-1",
        ship_by=ship_by or at(48),
        shipped=shipped,
        cancelled=cancelled,
    )


def moved(parcel: ParcelTracking, hours: float, state: TrackingState) -> ParcelTracking:
    return apply_entries(parcel, [entry(hours, state)], now=at(hours)).tracking


def test_default_policy() -> None:
    policy = DeadlinePolicy()
    assert policy.ship_by_warning_before == timedelta(hours=6)
    assert policy.pickup_within == timedelta(hours=24)
    assert policy.stalled_after == timedelta(hours=48)
    assert policy.unconfirmed_after == timedelta(days=7)


# ---------------------------------------------------------------------------------------------------
# ship by
# ---------------------------------------------------------------------------------------------------


def test_ship_by_walk_warns_then_breaches_exactly_once_each() -> None:
    raised = walk(lambda now: ship_by_alerts(watch(), now, POLICY), T0, at(72))

    assert [(now, a.kind, a.due_at) for now, a in raised] == [
        (at(45), AlertKind.SHIP_BY_WARNING, at(45)),
        (at(48), AlertKind.SHIP_BY_BREACHED, at(48)),
    ]
    for _, alert in raised:
        assert (alert.shop_id, alert.order_id, alert.subject) == (SHOP, ORDER_ID, f"{ORDER_ID}-1")


def test_ship_by_boundaries() -> None:
    w = watch()
    assert ship_by_alerts(w, at(45) - EPS, POLICY) == []
    assert [a.kind for a in ship_by_alerts(w, at(45), POLICY)] == [AlertKind.SHIP_BY_WARNING]
    assert [a.kind for a in ship_by_alerts(w, at(48) - EPS, POLICY)] == [AlertKind.SHIP_BY_WARNING]
    assert [a.kind for a in ship_by_alerts(w, at(48), POLICY)] == [
        AlertKind.SHIP_BY_WARNING,
        AlertKind.SHIP_BY_BREACHED,
    ]


def test_ship_by_warning_uses_the_policy() -> None:
    w = watch()
    assert ship_by_alerts(w, at(42), POLICY) == []
    six_hours = DeadlinePolicy(ship_by_warning_before=timedelta(hours=6))
    assert [a.due_at for a in ship_by_alerts(w, at(42), six_hours)] == [at(42)]


@pytest.mark.parametrize(("shipped", "cancelled"), [(True, False), (False, True), (True, True)])
def test_no_ship_by_alerts_once_shipped_or_cancelled(shipped: bool, cancelled: bool) -> None:
    w = watch(shipped=shipped, cancelled=cancelled)
    for now in clock(T0, at(24 * 30), timedelta(hours=1)):
        assert ship_by_alerts(w, now, POLICY) == []


def test_shipping_after_the_warning_prevents_the_breach() -> None:
    def due(now: datetime) -> list[DueAlert]:
        return ship_by_alerts(watch(shipped=now >= at(46)), now, POLICY)

    raised = walk(due, T0, at(72))
    assert [(now, a.kind) for now, a in raised] == [(at(45), AlertKind.SHIP_BY_WARNING)]


def test_ship_by_alert_keys_are_stable_and_distinct_per_kind() -> None:
    warning, breach = ship_by_alerts(watch(), at(50), POLICY)
    later_warning, later_breach = ship_by_alerts(watch(), at(90), POLICY)
    assert warning.key == later_warning.key
    assert breach.key == later_breach.key
    assert warning.key != breach.key
    other_dispatch = ShipByWatch(shop_id=SHOP, order_id=ORDER_ID, dispatch_id=f"{ORDER_ID}-2", ship_by=at(48))
    assert {a.key for a in ship_by_alerts(other_dispatch, at(50), POLICY)}.isdisjoint(
        {warning.key, breach.key}
    )


# ---------------------------------------------------------------------------------------------------
# pickup overdue
# ---------------------------------------------------------------------------------------------------


def test_pickup_overdue_walk() -> None:
    parcel = tracking(registered_at=at(2))

    raised = walk(lambda now: parcel_alerts(parcel, now, POLICY, order_confirmed=False), T0, at(200))

    assert len(raised) == 1
    now, alert = raised[0]
    assert now == at(14)
    assert alert == DueAlert(AlertKind.PICKUP_OVERDUE, SHOP, ORDER_ID, KEY, at(14))


def test_pickup_overdue_boundary_and_policy() -> None:
    parcel = tracking(registered_at=T0)
    assert parcel_alerts(parcel, at(12) - EPS, POLICY, order_confirmed=False) == []
    assert [a.kind for a in parcel_alerts(parcel, at(12), POLICY, order_confirmed=False)] == [
        AlertKind.PICKUP_OVERDUE
    ]
    assert parcel_alerts(parcel, at(12), DeadlinePolicy(), order_confirmed=False) == []
    assert len(parcel_alerts(parcel, at(24), DeadlinePolicy(), order_confirmed=False)) == 1


def test_pickup_counts_from_registration_even_with_an_awaiting_pickup_entry() -> None:
    parcel = moved(tracking(registered_at=T0), 10, S.AWAITING_PICKUP)
    assert parcel.state is S.AWAITING_PICKUP
    assert parcel.last_update_at == at(10)
    assert [a.due_at for a in parcel_alerts(parcel, at(12), POLICY, order_confirmed=False)] == [at(12)]


def test_no_pickup_alert_once_picked_up() -> None:
    def due(now: datetime) -> list[DueAlert]:
        parcel = tracking(registered_at=T0)
        if now >= at(11):
            parcel = moved(parcel, 11, S.PICKED_UP)
        return parcel_alerts(parcel, now, POLICY, order_confirmed=False)

    raised = walk(due, T0, at(40))
    assert [a.kind for _, a in raised] == []


# ---------------------------------------------------------------------------------------------------
# stalled
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [S.PICKED_UP, S.IN_TRANSIT, S.OUT_FOR_DELIVERY])
def test_stalled_after_the_last_update(state: TrackingState) -> None:
    parcel = moved(tracking(), 4, state)

    raised = walk(lambda now: parcel_alerts(parcel, now, POLICY, order_confirmed=False), T0, at(200))

    assert [(now, a) for now, a in raised] == [
        (at(40), DueAlert(AlertKind.PARCEL_STALLED, SHOP, ORDER_ID, KEY, at(40)))
    ]
    assert parcel_alerts(parcel, at(40) - EPS, POLICY, order_confirmed=False) == []


def test_stalled_without_any_entry_counts_from_registration() -> None:
    parcel = tracking(state=S.IN_TRANSIT, registered_at=at(1))
    assert parcel_alerts(parcel, at(37) - EPS, POLICY, order_confirmed=False) == []
    assert [a.due_at for a in parcel_alerts(parcel, at(37), POLICY, order_confirmed=False)] == [at(37)]


def test_stall_then_movement_then_a_second_stall_is_a_new_alert() -> None:
    picked = moved(tracking(), 1, S.PICKED_UP)
    after_move = moved(picked, 50, S.IN_TRANSIT)

    def due(now: datetime) -> list[DueAlert]:
        parcel = after_move if now >= at(50) else picked
        return parcel_alerts(parcel, now, POLICY, order_confirmed=False)

    raised = walk(due, T0, at(200))

    assert [(now, a.kind, a.due_at) for now, a in raised] == [
        (at(37), AlertKind.PARCEL_STALLED, at(37)),
        (at(86), AlertKind.PARCEL_STALLED, at(86)),
    ]
    first, second = (a for _, a in raised)
    assert first.subject == second.subject == KEY
    assert first.key != second.key


def test_the_same_stall_keeps_its_key_while_it_lasts() -> None:
    parcel = moved(tracking(), 1, S.PICKED_UP)
    keys = {
        a.key
        for now in clock(at(37), at(150))
        for a in parcel_alerts(parcel, now, POLICY, order_confirmed=False)
    }
    assert len(keys) == 1


def test_an_older_entry_arriving_late_does_not_reset_the_stall() -> None:
    parcel = moved(tracking(), 10, S.IN_TRANSIT)
    with_late = apply_entries(parcel, [entry(5, S.PICKED_UP)], now=at(30)).tracking
    assert with_late.last_update_at == at(10)
    assert parcel_alerts(with_late, at(46), POLICY, order_confirmed=False) == parcel_alerts(
        parcel, at(46), POLICY, order_confirmed=False
    )


def test_order_confirmation_does_not_silence_a_stall() -> None:
    parcel = moved(tracking(), 1, S.OUT_FOR_DELIVERY)
    assert [a.kind for a in parcel_alerts(parcel, at(37), POLICY, order_confirmed=True)] == [
        AlertKind.PARCEL_STALLED
    ]


# ---------------------------------------------------------------------------------------------------
# delivered, not confirmed
# ---------------------------------------------------------------------------------------------------


def test_delivered_unconfirmed_walk() -> None:
    parcel = moved(moved(tracking(), 1, S.PICKED_UP), 30, S.DELIVERED)

    raised = walk(lambda now: parcel_alerts(parcel, now, POLICY, order_confirmed=False), T0, at(30 + 24 * 10))

    assert [(now, a) for now, a in raised] == [
        (at(150), DueAlert(AlertKind.DELIVERED_UNCONFIRMED, SHOP, ORDER_ID, KEY, at(150)))
    ]
    assert parcel_alerts(parcel, at(150) - EPS, POLICY, order_confirmed=False) == []


def test_no_unconfirmed_alert_when_the_order_is_confirmed() -> None:
    parcel = moved(tracking(), 30, S.DELIVERED)
    for now in clock(T0, at(24 * 60), timedelta(hours=1)):
        assert parcel_alerts(parcel, now, POLICY, order_confirmed=True) == []


def test_confirmation_before_the_deadline_prevents_the_alert() -> None:
    parcel = moved(tracking(), 30, S.DELIVERED)
    raised = walk(lambda now: parcel_alerts(parcel, now, POLICY, order_confirmed=now >= at(100)), T0, at(400))
    assert raised == []


def test_delivered_is_not_stalled_nor_overdue_for_pickup() -> None:
    parcel = moved(tracking(), 30, S.DELIVERED)
    for now in clock(T0, at(149)):
        assert parcel_alerts(parcel, now, POLICY, order_confirmed=False) == []


# ---------------------------------------------------------------------------------------------------
# returned / exception
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [S.RETURNED, S.EXCEPTION])
@pytest.mark.parametrize("confirmed", [False, True])
def test_no_alerts_for_returned_or_exception(state: TrackingState, confirmed: bool) -> None:
    parcel = moved(moved(tracking(), 1, S.PICKED_UP), 5, state)
    assert parcel.state is state
    for now in clock(T0, at(24 * 60), timedelta(hours=1)):
        assert parcel_alerts(parcel, now, POLICY, order_confirmed=confirmed) == []


# ---------------------------------------------------------------------------------------------------
# a parcel's whole life with the fake clock
# ---------------------------------------------------------------------------------------------------


def test_a_parcel_life_raises_each_alert_exactly_when_due() -> None:
    timeline = {
        13.0: S.PICKED_UP,  # pickup late: overdue at 12
        20.0: S.IN_TRANSIT,
        70.0: S.OUT_FOR_DELIVERY,  # stalled at 56 (20 + 36), moved at 70
        71.0: S.DELIVERED,  # unconfirmed at 191 (71 + 120)
    }
    start = tracking(registered_at=T0)

    def parcel_at(now: datetime) -> ParcelTracking:
        current = start
        for hours, state in timeline.items():
            if now >= at(hours):
                current = moved(current, hours, state)
        return current

    raised = walk(lambda now: parcel_alerts(parcel_at(now), now, POLICY, order_confirmed=False), T0, at(300))

    assert [(now, a.kind, a.due_at) for now, a in raised] == [
        (at(12), AlertKind.PICKUP_OVERDUE, at(12)),
        (at(56), AlertKind.PARCEL_STALLED, at(56)),
        (at(191), AlertKind.DELIVERED_UNCONFIRMED, at(191)),
    ]


# ---------------------------------------------------------------------------------------------------
# new_alerts
# ---------------------------------------------------------------------------------------------------


def test_new_alerts_filters_already_raised_keys_and_keeps_order() -> None:
    a = DueAlert(AlertKind.SHIP_BY_WARNING, SHOP, ORDER_ID, "d-1", at(1))
    b = DueAlert(AlertKind.SHIP_BY_BREACHED, SHOP, ORDER_ID, "d-1", at(2))
    c = DueAlert(AlertKind.PICKUP_OVERDUE, SHOP, ORDER_ID, KEY, at(3))

    assert new_alerts([a, b, c], set()) == [a, b, c]
    assert new_alerts([a, b, c], {b.key}) == [a, c]
    assert new_alerts([a, b, c], {a.key, b.key, c.key}) == []
    assert new_alerts([], {a.key}) == []
    assert new_alerts(iter([c, a]), {"unrelated"}) == [c, a]


def test_alert_keys() -> None:
    pickup = DueAlert(AlertKind.PICKUP_OVERDUE, SHOP, ORDER_ID, KEY, at(12))
    assert pickup.key == f"pickup_overdue:{KEY}"
    assert pickup.key == DueAlert(AlertKind.PICKUP_OVERDUE, SHOP, ORDER_ID, KEY, at(99)).key
    stall = DueAlert(AlertKind.PARCEL_STALLED, SHOP, ORDER_ID, KEY, at(40))
    assert stall.key == f"parcel_stalled:{KEY}@{at(40).isoformat()}"
    assert stall.key != DueAlert(AlertKind.PARCEL_STALLED, SHOP, ORDER_ID, KEY, at(41)).key
    assert pickup.key != DueAlert(AlertKind.PICKUP_OVERDUE, SHOP, ORDER_ID, "SF:1", at(12)).key
