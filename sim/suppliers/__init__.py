"""Supplier stand-in: bots that work the dispatch service's supplier API like a 一件代发 supplier's
software does (long-polled feed, accept/reject, print and ship, answer change requests)."""

from sim.suppliers.fleet import SupplierFleet
from sim.suppliers.records import FleetStats, ShipmentRecord, SupplierStats
from sim.suppliers.settings import Behaviour, Delay, FleetSettings, SupplierConfig

__all__ = [
    "Behaviour",
    "Delay",
    "FleetSettings",
    "FleetStats",
    "ShipmentRecord",
    "SupplierConfig",
    "SupplierFleet",
    "SupplierStats",
]
