"""What logistics writes for a shipment (no I/O): each new parcel once, with what WeChat was told of
it and whether it completed its dispatch order, whose ship-by watch that meets without a write of its
own; a restart reads back the same, and a redelivered shipment is not told twice."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest

from services.logistics.domain.deadlines import DeadlinePolicy
from services.logistics.domain.tracking import ParcelTracking, parcel_key
from services.logistics.handlers import DELIVERY_SEND, DeliveryRecord, Logistics, RetryLater, due_alerts
from shared.events.logistics import (
    AlertKind,
    DeliveryOutcome,
    ParcelRef,
    ParcelTrackingChanged,
    TrackingState,
)
from tests.unit.logistics.builders import ORDER_ID, SHOP, T0, entry
from tests.unit.logistics.test_shipments import InMemory, WeChat, World, logistics_world, offered, shipped

DISPATCH_ID = f"{ORDER_ID}-1"
WAYBILL = "78800000011"
KEY = parcel_key("ZTO", WAYBILL)
SHIP_BY_BREACHED_AT = T0 + timedelta(days=2)


@pytest.fixture
def world() -> World:
    return logistics_world(WeChat())


def _revisions(projection: object) -> dict[str, int]:
    assert isinstance(projection, InMemory)
    return dict(projection._revisions)


def _restarted(world: World, wechat: WeChat, now: datetime) -> World:
    """A new process over what the first one saved."""
    old = world.logistics
    logistics = Logistics(
        parcels=old.parcels,
        deliveries=old.deliveries,
        ship_by=old.ship_by,
        orphans=old.orphans,
        alerts=old.alerts,
        confirmed_orders=old.confirmed_orders,
        held=old.held,
        producer=world.producer,
        wechat=wechat,
        subscriber=world.subscriber,
        policy=DeadlinePolicy(),
        clock=lambda: now,
    )
    logistics.index()
    return World(logistics, wechat, world.producer, world.subscriber, world.offset)


async def test_a_shipment_told_at_once_writes_each_parcel_once_and_meets_its_ship_by(world: World) -> None:
    await world.deliver(offered(DISPATCH_ID, case_id=None))
    await world.deliver(shipped(DISPATCH_ID, WAYBILL, case_id=None))

    assert _revisions(world.logistics.parcels) == {KEY: 1}
    assert _revisions(world.logistics.ship_by) == {DISPATCH_ID: 1}  # opened, not written again
    assert _revisions(world.logistics.deliveries) == {}
    tracking = world.logistics.parcels.get(KEY)
    assert tracking is not None and tracking.told is not None
    assert (tracking.told.outcome, tracking.completes_dispatch_version) == (DeliveryOutcome.TOLD, 3)
    watch = world.logistics.ship_by_watch(DISPATCH_ID)
    assert watch is not None and watch.shipped


async def test_a_restart_finds_the_watch_met_and_tells_a_redelivered_shipment_nothing(world: World) -> None:
    await world.deliver(offered(DISPATCH_ID, case_id=None))
    event = shipped(DISPATCH_ID, WAYBILL, case_id=None)
    await world.deliver(event)

    again = _restarted(world, WeChat(), SHIP_BY_BREACHED_AT)
    watch = again.logistics.ship_by_watch(DISPATCH_ID)
    assert watch is not None and watch.shipped
    raised = await again.logistics.raise_due_alerts()  # past the ship-by: met, no ship-by alert
    assert [a.kind for a in raised] == [AlertKind.PICKUP_OVERDUE]
    assert not [
        a
        for a in due_alerts(
            again.logistics.ship_by,
            again.logistics.parcels,
            again.logistics.confirmed_orders,
            SHIP_BY_BREACHED_AT,
            DeadlinePolicy(),
        )
        if a.kind in (AlertKind.SHIP_BY_WARNING, AlertKind.SHIP_BY_BREACHED)
    ]
    reports = len(world.reports())
    await again.deliver(event)  # redelivered after the restart
    assert again.wechat.calls == [] and len(again.reports()) == reports
    assert _revisions(again.logistics.parcels) == {KEY: 1}


async def test_a_parcel_wechat_is_too_busy_for_is_tracked_meanwhile_and_told_on_the_retry() -> None:
    wechat = WeChat(errcode=45011)  # the minute's quota
    world = logistics_world(wechat)
    await world.deliver(offered(DISPATCH_ID, case_id=None))
    event = shipped(DISPATCH_ID, WAYBILL, case_id=None)

    with pytest.raises(RetryLater):
        await world.deliver(event)
    tracking = world.logistics.parcels.get(KEY)
    assert tracking is not None and tracking.told is None  # registered, tracked
    watch = world.logistics.ship_by_watch(DISPATCH_ID)
    assert watch is not None and watch.shipped  # shipped, whatever WeChat says

    wechat.errcode = 0
    await world.deliver(event)  # the retry
    tracking = world.logistics.parcels.get(KEY)
    assert (
        tracking is not None and tracking.told is not None and tracking.told.outcome == DeliveryOutcome.TOLD
    )
    assert _revisions(world.logistics.parcels) == {KEY: 2}
    assert len(world.delivery_sends()) == 2 and len(world.reports()) == 1


async def test_a_parcel_told_before_parcels_kept_it_is_not_told_again(world: World) -> None:
    event = shipped(DISPATCH_ID, WAYBILL, case_id=None)
    ref = ParcelRef(dispatch_id=DISPATCH_ID, parcel_no=1, carrier_code="ZTO", waybill_no=WAYBILL)
    # As an earlier version stored it: the parcel, and WeChat's answer in a delivery record.
    await world.logistics.parcels.save(
        KEY, ParcelTracking(shop_id=SHOP, order_id=ORDER_ID, parcel=ref, registered_at=T0), cause="old"
    )
    await world.logistics.deliveries.save(
        f"{ORDER_ID}:{KEY}",
        DeliveryRecord(shop_id=SHOP, order_id=ORDER_ID, parcel=ref, outcome=DeliveryOutcome.TOLD, at=T0),
        cause="old",
    )

    await world.deliver(event)

    assert world.wechat.calls == [] and world.reports() == []
    assert world.logistics.told(ORDER_ID, event.parcels[0]) == DeliveryOutcome.TOLD


@dataclass
class TrackedWhileAsked(WeChat):
    """A carrier's push arrives (from another request) while delivery/send is being answered."""

    logistics: Logistics | None = None
    pushes: list[asyncio.Task[bool]] = field(default_factory=list)

    async def call(self, shop_id: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if path == DELIVERY_SEND and self.logistics is not None:
            entries = [entry(1, TrackingState.PICKED_UP)]
            push = self.logistics.track("ZTO", WAYBILL, entries, source="kuaidi100", cause="k100:1")
            self.pushes.append(asyncio.create_task(push))
            await asyncio.sleep(0.01)  # it runs meanwhile
        return await super().call(shop_id, path, body)


async def test_tracking_that_comes_while_wechat_is_asked_waits_for_the_parcel_to_be_saved() -> None:
    wechat = TrackedWhileAsked()
    world = logistics_world(wechat)
    wechat.logistics = world.logistics

    await world.deliver(shipped(DISPATCH_ID, WAYBILL, case_id=None))
    assert [await push for push in wechat.pushes] == [True]  # applied to the parcel, not an orphan

    tracking = world.logistics.parcels.get(KEY)
    assert tracking is not None and tracking.state == TrackingState.PICKED_UP and tracking.told is not None
    assert _revisions(world.logistics.parcels) == {KEY: 2}  # saved with WeChat's answer, then tracked
    assert list(world.logistics.orphans) == []
    changes = [e for e in world.producer.published() if isinstance(e, ParcelTrackingChanged)]
    assert [(c.parcel.waybill_no, c.state) for c in changes] == [(WAYBILL, TrackingState.PICKED_UP)]
