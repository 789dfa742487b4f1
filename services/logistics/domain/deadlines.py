"""Deadlines: which alerts are due at a given time, and when each subject must be looked at again.
Pure: the clock is an argument, so tests move time instead of waiting for it. Each alert is raised
once per subject and kind."""

from __future__ import annotations

import heapq
from collections import Counter
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


def ship_by_checks(watch: ShipByWatch, policy: DeadlinePolicy) -> list[datetime]:
    """When the watch's alerts can next change: its warning and its deadline (none once it ended)."""
    if watch.shipped or watch.cancelled:
        return []
    return [watch.ship_by - policy.ship_by_warning_before, watch.ship_by]


def parcel_checks(parcel: ParcelTracking, policy: DeadlinePolicy, *, order_confirmed: bool) -> list[datetime]:
    """When the parcel's alert can next come due, in its present state (none when it cannot)."""
    match parcel.state:
        case TrackingState.AWAITING_PICKUP:
            return [parcel.registered_at + policy.pickup_within]
        case TrackingState.PICKED_UP | TrackingState.IN_TRANSIT | TrackingState.OUT_FOR_DELIVERY:
            return [(parcel.last_update_at or parcel.registered_at) + policy.stalled_after]
        case TrackingState.DELIVERED if not order_confirmed and parcel.last_update_at is not None:
            return [parcel.last_update_at + policy.unconfirmed_after]
        case _:
            return []


class DeadlineSchedule:
    """Subjects (ship-by watches, parcels) by the time they must be looked at again, and the alerts
    due for each as of its last look: a scan pops what came due instead of reading every subject
    ever seen. A subject that changes is planned again; an entry made stale by a change costs one
    look that finds nothing new."""

    def __init__(self) -> None:
        self._checks: list[tuple[datetime, str]] = []
        self._due: dict[str, list[DueAlert]] = {}
        self.open_by_kind: Counter[AlertKind] = Counter()

    def plan(self, subject: str, checks: Iterable[datetime]) -> None:
        for at in checks:
            heapq.heappush(self._checks, (at, subject))

    def come_due(self, now: datetime) -> list[str]:
        """The subjects with a check at or before `now`, each once, taken off the schedule."""
        subjects: dict[str, None] = {}
        while self._checks and self._checks[0][0] <= now:
            subjects[heapq.heappop(self._checks)[1]] = None
        return list(subjects)

    def set_due(self, subject: str, alerts: list[DueAlert]) -> None:
        """The alerts due for the subject now (none: it is on time, or it ended)."""
        self.open_by_kind.subtract(a.kind for a in self._due.pop(subject, []))
        if alerts:
            self._due[subject] = alerts
            self.open_by_kind.update(a.kind for a in alerts)

    def due(self) -> list[DueAlert]:
        """Every alert due and not resolved, as of each subject's last look, oldest first."""
        return sorted((a for alerts in self._due.values() for a in alerts), key=lambda a: a.due_at)

    def __len__(self) -> int:
        return len(self._checks)
