"""A parcel's tracking change reaches the topics even when a publish fails the first time, and
tracking that came before the shipment is told once the parcel is registered."""

from __future__ import annotations

from typing import Any

import pytest

from shared.events.logistics import ParcelTrackingChanged, TrackingState
from shared.kafka.topics import LOGISTICS_PARCEL_STAGES
from tests.unit.logistics.builders import entry
from tests.unit.logistics.test_shipments import Producer, WeChat, logistics_world, shipped


class FailingOnce(Producer):
    """The broker refuses the first send, then takes everything."""

    failed: bool = False

    async def send(self, topic: str, *, value: bytes, key: bytes | None, **kwargs: Any) -> Any:
        if not self.failed:
            self.failed = True
            raise ConnectionError("broker unavailable")
        return await super().send(topic, value=value, key=key, **kwargs)


def _stages(producer: Producer) -> list[TrackingState]:
    return [
        ParcelTrackingChanged.model_validate_json(value).state
        for topic, value in producer.sent
        if topic == LOGISTICS_PARCEL_STAGES.name
    ]


async def test_a_delivery_whose_publish_failed_is_told_when_the_message_is_retried() -> None:
    world = logistics_world(WeChat())
    await world.deliver(shipped("d-1", "W1", case_id=None))
    producer = FailingOnce()
    world.logistics._producer = producer
    delivered = [entry(30, TrackingState.DELIVERED)]

    with pytest.raises(ConnectionError):
        await world.logistics.track("ZTO", "W1", delivered, source="kuaidi100", cause="push-1")
    assert await world.logistics.track("ZTO", "W1", delivered, source="kuaidi100", cause="push-1")

    assert _stages(producer) == [TrackingState.DELIVERED]
    parcel = world.logistics.parcels.get("ZTO:W1")
    assert parcel is not None and parcel.state == TrackingState.DELIVERED


async def test_tracking_that_came_before_the_shipment_is_told_when_the_parcel_is_registered() -> None:
    world = logistics_world(WeChat())
    early = [entry(1, TrackingState.PICKED_UP), entry(30, TrackingState.DELIVERED)]
    assert not await world.logistics.track("ZTO", "W2", early, source="kuaidi100", cause="push-0")

    await world.deliver(shipped("d-2", "W2", case_id=None))

    assert _stages(world.producer) == [TrackingState.DELIVERED]
