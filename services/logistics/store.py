"""The logistics service's state: insert-only versioned projections (see shared/versioned.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from services.logistics.domain.tracking import ParcelTracking
from services.logistics.handlers import (
    ConfirmedOrder,
    DeliveryRecord,
    HeldShipment,
    OrphanTrace,
    RaisedAlert,
    ShipByRecord,
)
from shared.db import Document
from shared.versioned import VersionedProjection


@dataclass
class LogisticsState:
    parcels: VersionedProjection[ParcelTracking]
    deliveries: VersionedProjection[DeliveryRecord]
    ship_by: VersionedProjection[ShipByRecord]
    orphans: VersionedProjection[OrphanTrace]
    alerts: VersionedProjection[RaisedAlert]
    confirmed_orders: VersionedProjection[ConfirmedOrder]
    held: VersionedProjection[HeldShipment]

    def projections(self) -> list[VersionedProjection[Any]]:
        return [
            self.parcels,
            self.deliveries,
            self.ship_by,
            self.orphans,
            self.alerts,
            self.confirmed_orders,
            self.held,
        ]

    async def load(self) -> None:
        for projection in self.projections():
            await projection.load()


def open_state(db: AsyncDatabase[Document]) -> LogisticsState:
    return LogisticsState(
        parcels=VersionedProjection(db, "logistics_parcels", ParcelTracking),
        # What WeChat was told of each parcel before parcels kept it (ParcelTracking.told): read only.
        deliveries=VersionedProjection(db, "logistics_wechat_deliveries", DeliveryRecord),
        ship_by=VersionedProjection(db, "logistics_ship_by", ShipByRecord),
        orphans=VersionedProjection(db, "logistics_orphan_tracking", OrphanTrace),
        alerts=VersionedProjection(db, "logistics_alerts", RaisedAlert),
        confirmed_orders=VersionedProjection(db, "logistics_confirmed_orders", ConfirmedOrder),
        held=VersionedProjection(db, "logistics_held_shipments", HeldShipment),
    )
