"""What the bots did, kept so a test or a run report can hold it against what dispatch recorded."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from shared.api.supplier import ParcelToShip


class ShipmentRecord(BaseModel):
    """One shipment report dispatch accepted (HTTP 200): exactly the parcels it now holds."""

    supplier_id: str
    dispatch_id: str
    order_id: str
    parcels: list[ParcelToShip]
    waybill_source: Literal["own", "logistics"]
    reported_at: datetime


class SupplierStats(BaseModel):
    supplier_id: str
    cursor: int
    active_orders: int = Field(description="dispatch orders the bot is still working on")
    counters: dict[str, int]
    shipments: list[ShipmentRecord]


class SavedCursors(BaseModel):
    """The fleet's cursor file: per supplier, the feed cursor a restarted bot reads after."""

    schema_version: Literal[1] = 1
    cursors: dict[str, int] = Field(default_factory=dict)


class FleetStats(BaseModel):
    seed: int
    suppliers: dict[str, SupplierStats]

    def totals(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for stats in self.suppliers.values():
            total.update(stats.counters)
        return dict(sorted(total.items()))

    def shipments(self) -> list[ShipmentRecord]:
        return [s for stats in self.suppliers.values() for s in stats.shipments]
