"""Deadlines: which alerts are due at a given time. Pure: the clock is an argument, so tests move
time instead of waiting for it. Each alert is raised once per subject and kind."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.logistics.domain.tracking import ParcelTracking
from shared.events.logistics import AlertKind, TrackingState


@dataclass(frozen=True)
class DeadlinePolicy:
    ship_by_warning_before: timedelta = timedelta(hours=6)
    pickup_within: timedelta = timedelta(hours=24)
    stalled_after: timedelta = timedelta(hours=48)
    unconfirmed_after: timedelta = timedelta(days=7)


@dataclass(frozen=True)
class ShipByWatch:
    """A dispatch order that must ship by WeChat's delivery_deadline."""

    shop_id: str
    order_id: str
    dispatch_id: str
    ship_by: datetime
    shipped: bool = False
    cancelled: bool = False


@dataclass(frozen=True)
class DueAlert:
    kind: AlertKind
    shop_id: str
    order_id: str
    subject: str
    due_at: datetime

    @property
    def key(self) -> str:
        """Raised once: per subject and kind, and per stall (a parcel can stall, move, stall again)."""
        if self.kind == AlertKind.PARCEL_STALLED:
            return f"{self.kind}:{self.subject}@{self.due_at.isoformat()}"
        return f"{self.kind}:{self.subject}"


def ship_by_alerts(watch: ShipByWatch, now: datetime, policy: DeadlinePolicy) -> list[DueAlert]:
    if watch.shipped or watch.cancelled:
        return []
    alerts = []
    warning_at = watch.ship_by - policy.ship_by_warning_before
    if now >= warning_at:
        alerts.append(
            DueAlert(AlertKind.SHIP_BY_WARNING, watch.shop_id, watch.order_id, watch.dispatch_id, warning_at)
        )
    if now >= watch.ship_by:
        alerts.append(
            DueAlert(
                AlertKind.SHIP_BY_BREACHED, watch.shop_id, watch.order_id, watch.dispatch_id, watch.ship_by
            )
        )
    return alerts


def parcel_alerts(
    parcel: ParcelTracking, now: datetime, policy: DeadlinePolicy, *, order_confirmed: bool
) -> list[DueAlert]:
    def alert(kind: AlertKind, due_at: datetime) -> DueAlert:
        return DueAlert(kind, parcel.shop_id, parcel.order_id, parcel.key, due_at)

    match parcel.state:
        case TrackingState.AWAITING_PICKUP:
            due = parcel.registered_at + policy.pickup_within
            return [alert(AlertKind.PICKUP_OVERDUE, due)] if now >= due else []
        case TrackingState.PICKED_UP | TrackingState.IN_TRANSIT | TrackingState.OUT_FOR_DELIVERY:
            last = parcel.last_update_at or parcel.registered_at
            due = last + policy.stalled_after
            return [alert(AlertKind.PARCEL_STALLED, due)] if now >= due else []
        case TrackingState.DELIVERED:
            if order_confirmed or parcel.last_update_at is None:
                return []
            due = parcel.last_update_at + policy.unconfirmed_after
            return [alert(AlertKind.DELIVERED_UNCONFIRMED, due)] if now >= due else []
        case _:
            return []


def new_alerts(due: Iterable[DueAlert], raised: set[str]) -> list[DueAlert]:
    return [a for a in due if a.key not in raised]
