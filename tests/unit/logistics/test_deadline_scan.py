"""The deadline scan looks only at what came due or changed, and finds what a scan over every
ship-by watch and parcel would."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.logistics.domain.deadlines import (
    DeadlinePolicy,
    DeadlineSchedule,
    DueAlert,
    ShipByWatch,
    parcel_checks,
    ship_by_checks,
)
from services.logistics.domain.tracking import parcel_key
from services.logistics.handlers import Logistics, ShipByRecord, due_alerts
from shared.events.logistics import AlertKind, TrackingState
from shared.events.orders import OrderCompleted
from shared.kafka.consumer import InboundMessage
from shared.kafka.topics import ORDERS_COMPLETED
from tests.unit.logistics.builders import CARRIER, ORDER_ID, SHOP, T0, WAYBILL, at, entry, tracking
from tests.unit.logistics.test_shipments import WeChat, logistics_world, offered, shipped

POLICY = DeadlinePolicy()
PARCEL_KEY = parcel_key(CARRIER, WAYBILL)


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


def _full_scan(logistics: Logistics, now: datetime) -> list[DueAlert]:
    return due_alerts(logistics.ship_by, logistics.parcels, logistics.confirmed_orders, now, POLICY)


def _keys(alerts: list[DueAlert]) -> set[str]:
    return {a.key for a in alerts}


def test_checks_are_the_times_a_subjects_alerts_can_next_change() -> None:
    ship_by = T0 + timedelta(days=2)
    assert ship_by_checks(ShipByWatch(SHOP, ORDER_ID, "d-1", ship_by), POLICY) == [
        ship_by - timedelta(hours=6),
        ship_by,
    ]
    assert ship_by_checks(ShipByWatch(SHOP, ORDER_ID, "d-1", ship_by, shipped=True), POLICY) == []
    assert parcel_checks(tracking(), POLICY, order_confirmed=False) == [T0 + timedelta(hours=24)]
    moving = tracking(state=TrackingState.IN_TRANSIT, last_update_at=at(5))
    assert parcel_checks(moving, POLICY, order_confirmed=False) == [at(5) + timedelta(hours=48)]
    delivered = tracking(state=TrackingState.DELIVERED, last_update_at=at(9))
    assert parcel_checks(delivered, POLICY, order_confirmed=False) == [at(9) + timedelta(days=7)]
    assert parcel_checks(delivered, POLICY, order_confirmed=True) == []
    assert parcel_checks(tracking(state=TrackingState.RETURNED), POLICY, order_confirmed=False) == []


def test_the_schedule_hands_out_each_subject_once_when_its_first_check_comes() -> None:
    schedule = DeadlineSchedule()
    schedule.plan("b", [at(3), at(1)])
    schedule.plan("a", [at(2)])
    schedule.plan("b", [at(2)])  # planned again after a change: one look is enough
    assert schedule.come_due(at(0)) == []
    assert schedule.come_due(at(2)) == ["b", "a"]
    assert len(schedule) == 1
    assert schedule.come_due(at(10)) == ["b"]
    assert schedule.come_due(at(20)) == []


def test_the_schedule_counts_open_alerts_by_kind_as_they_come_and_go() -> None:
    schedule = DeadlineSchedule()
    warning = DueAlert(AlertKind.SHIP_BY_WARNING, SHOP, ORDER_ID, "d-1", at(1))
    breach = DueAlert(AlertKind.SHIP_BY_BREACHED, SHOP, ORDER_ID, "d-1", at(2))
    schedule.set_due("ship_by:d-1", [warning])
    schedule.set_due("ship_by:d-1", [warning, breach])
    assert schedule.open_by_kind[AlertKind.SHIP_BY_WARNING] == 1
    assert schedule.open_by_kind[AlertKind.SHIP_BY_BREACHED] == 1
    assert schedule.due() == [warning, breach]
    schedule.set_due("ship_by:d-1", [])  # shipped
    assert schedule.due() == [] and not +schedule.open_by_kind


async def test_a_watch_warns_then_breaches_once_each_and_shipping_ends_it() -> None:
    clock = Clock()
    world = logistics_world(WeChat(), clock)
    await world.deliver(offered("d-1", case_id=None))  # ship by T0 + 2 days
    await world.deliver(offered("d-2", case_id=None))
    assert await world.logistics.raise_due_alerts() == []

    clock.now = T0 + timedelta(days=2) - timedelta(hours=6)
    warned = await world.logistics.raise_due_alerts()
    assert sorted((a.kind, a.subject) for a in warned) == [
        (AlertKind.SHIP_BY_WARNING, "d-1"),
        (AlertKind.SHIP_BY_WARNING, "d-2"),
    ]
    assert await world.logistics.raise_due_alerts() == []  # raised once

    await world.deliver(shipped("d-1", "W1", case_id=None, occurred_at=clock.now))
    clock.now = T0 + timedelta(days=2)
    breached = await world.logistics.raise_due_alerts()
    assert [(a.kind, a.subject) for a in breached] == [(AlertKind.SHIP_BY_BREACHED, "d-2")]


async def test_the_scan_finds_what_a_scan_over_everything_finds_at_every_step() -> None:
    clock = Clock()
    world = logistics_world(WeChat(), clock)
    logistics = world.logistics
    for n in range(4):
        await world.deliver(offered(f"d-{n}", case_id=None))
    await world.deliver(shipped("d-0", "W0", case_id=None, occurred_at=at(2)))
    await world.deliver(shipped("d-1", "W1", case_id=None, occurred_at=at(3)))
    steps: list[tuple[datetime, Callable[[], Awaitable[bool]] | None]] = [
        (
            at(30),
            lambda: logistics.track("ZTO", "W0", [entry(29, TrackingState.PICKED_UP)], source="k", cause="1"),
        ),
        (
            at(40),
            lambda: logistics.track("ZTO", "W0", [entry(39, TrackingState.DELIVERED)], source="k", cause="2"),
        ),
        (at(50), None),
        (
            at(100),
            lambda: logistics.track(
                "ZTO", "W1", [entry(99, TrackingState.IN_TRANSIT)], source="k", cause="3"
            ),
        ),
        (at(160), None),
        (at(24 * 9), None),
    ]
    for now, change in steps:
        clock.now = now
        if change is not None:
            await change()
        await logistics.raise_due_alerts()
        assert _keys(logistics.schedule.due()) == _keys(_full_scan(logistics, now)), now
    raised = {alert.key for alert in logistics.alerts}
    assert {a.kind for a in _full_scan(logistics, clock.now)} >= {AlertKind.DELIVERED_UNCONFIRMED}
    assert _keys(_full_scan(logistics, clock.now)) <= raised

    completed = OrderCompleted(order_id=ORDER_ID, shop_id=SHOP, version=2, occurred_at=clock.now)
    message = InboundMessage(ORDERS_COMPLETED.name, 0, 1, ORDER_ID.encode(), completed.to_kafka_value())
    await logistics.handle_order_event(message)
    assert AlertKind.DELIVERED_UNCONFIRMED not in {a.kind for a in logistics.schedule.due()}
    assert _keys(logistics.schedule.due()) == _keys(_full_scan(logistics, clock.now))


async def test_a_restart_puts_every_open_deadline_on_the_schedule_once() -> None:
    clock = Clock(at(30))
    world = logistics_world(WeChat(), clock)
    logistics = world.logistics
    # As loaded from the database at start-up: saved before the service looked at anything.
    await logistics.ship_by.save(
        "d-9", ShipByRecord(shop_id=SHOP, order_id=ORDER_ID, dispatch_id="d-9", ship_by=at(100)), cause="load"
    )
    await logistics.parcels.save(PARCEL_KEY, tracking(), cause="load")
    assert len(logistics.schedule) == 0

    logistics.index()
    alerts = await logistics.raise_due_alerts()
    assert [a.kind for a in alerts] == [AlertKind.PICKUP_OVERDUE]  # 24 h after registration at T0
    assert _keys(logistics.schedule.due()) == _keys(_full_scan(logistics, clock.now))
