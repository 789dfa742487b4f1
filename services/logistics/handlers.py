"""Logistics handlers: shipments told to WeChat, parcel tracking from every source, deadline alerts.
Each handler loads what it needs from the projections, asks the pure domain, commits, publishes."""

from __future__ import annotations

import base64
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from contextlib import AsyncExitStack
from datetime import datetime, timedelta
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from prometheus_client import Counter, Gauge, Histogram
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.logistics.domain import deadlines
from services.logistics.domain.delivery import (
    RECHECKED,
    REFUNDED_CASE_STATUSES,
    NextStep,
    ParcelFate,
    ParcelTold,
    Recheck,
    delivery_request,
    judge,
    recheck,
    refunded_units,
    told_with_delivery_send,
)
from services.logistics.domain.tracking import ParcelTracking, apply_entries, moves_whereabouts, parcel_key
from shared.events.base import Event, utc_now
from shared.events.dead_letter import DeadLetter, DeadLetterReason
from shared.events.dispatch import (
    DISPATCH_EVENTS,
    DispatchCancelled,
    DispatchChangeAnswered,
    DispatchEvent,
    DispatchOffered,
    DispatchRejected,
    DispatchShipped,
    DispatchState,
    Parcel,
)
from shared.events.logistics import (
    AlertKind,
    DeadlineAlert,
    DeliveryOutcome,
    ParcelRef,
    ParcelTrackingChanged,
    ShipmentReported,
    TraceEntry,
    TrackingState,
)
from shared.events.orders import ORDER_EVENTS, OrderCompleted
from shared.kafka.consumer import InboundMessage, PermanentFailure, send_dead_letter
from shared.kafka.producer import publish_all
from shared.kafka.topics import DISPATCH, LOGISTICS, LOGISTICS_PARCEL_STAGES, TopicSpec
from shared.settings import LogisticsSettings
from shared.versioned import VersionedProjection
from shared.wechat.api import OrderGetResponse
from shared.wechat.client import WeChatApiError

log = logging.getLogger(__name__)

SHIPMENTS_TOLD = Counter(
    "lvyue_logistics_shipments_total",
    "Parcels told to WeChat (delivery/send), by outcome; aftersale_replacement: not sent, by design.",
    ["outcome"],
)
DELIVERY_CALLS = Counter(
    "lvyue_logistics_delivery_send_total", "delivery/send answers by errcode.", ["errcode"]
)
TRACKING_UPDATES = Counter(
    "lvyue_logistics_tracking_updates_total",
    "Tracking updates by source and result (changed, duplicate, unknown_parcel).",
    ["source", "result"],
)
PARCELS_BY_STATE = Gauge("lvyue_logistics_parcels", "Parcels by tracking state.", ["state"])
ALERTS = Counter("lvyue_logistics_deadline_alerts_total", "Deadline alerts raised, by kind.", ["kind"])
ALERTS_OPEN = Gauge(
    "lvyue_logistics_deadline_alerts_open", "Deadlines passed and not resolved, by kind.", ["kind"]
)
SHIP_TO_TOLD = Histogram(
    "lvyue_logistics_shipped_to_wechat_seconds",
    "From the supplier reporting a shipment to WeChat accepting it.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15, 60, 300, 1800),
)


class RetryLater(Exception):
    """WeChat asked us to come back later (100003, busy, quota): the consumer retries with backoff."""


class WeChatApi(Protocol):
    """A shop's WeChat Shop API (token handled inside); raises WeChatApiError for errcode != 0
    after its own retries of transient codes, WeChatUnavailableError when it cannot be reached."""

    async def call(self, shop_id: str, path: str, body: dict[str, Any]) -> dict[str, Any]: ...


class TrackingSubscriber(Protocol):
    """Asks the carrier aggregator to push tracking of a waybill to our callback."""

    async def subscribe(self, carrier_code: str, waybill_no: str) -> None: ...


DELIVERY_SEND = "/channels/ec/order/delivery/send"
ORDER_GET = "/channels/ec/order/get"
# What logistics does with the dispatch topic: watch ship-by, tell WeChat of parcels, close watches.
DISPATCH_EVENTS_ACTED_ON = frozenset(
    {
        "dispatch_offered",
        "dispatch_shipped",
        "dispatch_change_answered",
        "dispatch_cancelled",
        "dispatch_rejected",
    }
)
GET_AFTERSALE = "/channels/ec/aftersale/getaftersaleorder"


class DeliveryRecord(BaseModel):
    """What WeChat was told about one parcel (or that it is not told: an after-sale replacement), as
    recorded before the parcel itself kept it (ParcelTracking.told): read, never written."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    shop_id: str
    order_id: str
    parcel: ParcelRef
    outcome: DeliveryOutcome
    errcode: int = 0
    at: datetime
    # Kept for a held shipment, so it can be sent again once the after-sale closes.
    product_infos: list[dict[str, Any]] = Field(default_factory=list)


class ShipByRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    shop_id: str
    order_id: str
    dispatch_id: str
    ship_by: datetime
    shipped: bool = False
    cancelled: bool = False
    version: int = 0  # the dispatch order version last applied

    def watch(self, completed_version: int = 0) -> deadlines.ShipByWatch:
        """`completed_version`: the version of the dispatch order whose shipment a parcel completed
        (ParcelTracking.completes_dispatch_version): a later one than the record's is shipped."""
        shipped = self.shipped or (completed_version > self.version and not self.cancelled)
        return deadlines.ShipByWatch(
            self.shop_id, self.order_id, self.dispatch_id, self.ship_by, shipped, self.cancelled
        )


class HeldShipment(BaseModel):
    """A shipment WeChat would not take while an after-sale case was open (108009)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    shipment: DispatchShipped
    done: bool = False
    refused: str | None = None  # WeChat's final refusal once the case closed (e.g. the order cancelled)

    @property
    def key(self) -> str:
        return f"{self.shipment.order_id}:{self.shipment.dispatch_id}:{self.shipment.version}"


class OrphanTrace(BaseModel):
    """Tracking that arrived before we knew the parcel (a race with the shipment event)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    carrier_code: str
    waybill_no: str
    entries: list[TraceEntry]


class RaisedAlert(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    kind: str
    shop_id: str
    order_id: str
    subject: str
    due_at: datetime
    raised_at: datetime
    resolved: bool = False


def deadline_policy(settings: LogisticsSettings) -> deadlines.DeadlinePolicy:
    return deadlines.DeadlinePolicy(
        ship_by_warning_before=timedelta(hours=settings.ship_by_warning_hours),
        pickup_within=timedelta(hours=settings.pickup_within_hours),
        stalled_after=timedelta(hours=settings.stalled_after_hours),
        unconfirmed_after=timedelta(hours=settings.unconfirmed_after_hours),
    )


class DispatchClosedHook(Protocol):
    async def __call__(self, dispatch_id: str, *, shipped: set[tuple[str, str]], reason: str) -> int: ...


class Logistics:
    def __init__(
        self,
        *,
        parcels: VersionedProjection[ParcelTracking],
        deliveries: VersionedProjection[DeliveryRecord],
        ship_by: VersionedProjection[ShipByRecord],
        orphans: VersionedProjection[OrphanTrace],
        alerts: VersionedProjection[RaisedAlert],
        confirmed_orders: VersionedProjection[ConfirmedOrder],
        held: VersionedProjection[HeldShipment],
        producer: AIOKafkaProducer,
        wechat: WeChatApi,
        subscriber: TrackingSubscriber | None,
        policy: deadlines.DeadlinePolicy,
        clock: Callable[[], datetime] = utc_now,
        service_name: str = "logistics",
    ) -> None:
        self.service_name = service_name
        self.parcels = parcels
        self.deliveries = deliveries
        self.ship_by = ship_by
        self.orphans = orphans
        self.alerts = alerts
        self.confirmed_orders = confirmed_orders
        self.held = held
        self._producer = producer
        self._wechat = wechat
        self._subscriber = subscriber
        self.policy = policy
        self.clock = clock
        self._by_waybill: dict[str, str] = {}
        self.schedule = deadlines.DeadlineSchedule()
        self._parcel_states: defaultdict[TrackingState, int] = defaultdict(int)
        self._parcels_by_order: dict[str, set[str]] = {}
        # Parcels of shipments being told to WeChat, not saved yet: each is saved once, with
        # WeChat's answer when it comes (or on its own when it does not).
        self._unsaved: dict[str, ParcelTracking] = {}
        # Dispatch id -> the version whose shipment a parcel completed (its ship-by met).
        self._completed: dict[str, int] = {}
        # Set by the service: cancels the unused waybills of a dispatch order that ended unshipped.
        self.on_dispatch_closed: DispatchClosedHook | None = None

    def index(self) -> None:
        """After loading the projections: waybill number -> parcel key (WeChat pushes carry no carrier),
        and every open deadline on the schedule (the only time all of them are read)."""
        now = self.clock()
        for parcel in self.parcels:
            self._by_waybill[parcel.parcel.waybill_no] = parcel.key
            self._parcel_states[parcel.state] += 1
            self._parcels_by_order.setdefault(parcel.order_id, set()).add(parcel.key)
            self._note_completion(parcel)
            self._look_at(_PARCEL + parcel.key, now, plan_past=True)
        for record in self.ship_by:
            self._look_at(_SHIP_BY + record.dispatch_id, now, plan_past=True)

    async def _publish(self, events: Sequence[Event]) -> None:
        sends: list[tuple[TopicSpec, Event]] = []
        for event in events:
            sends.append((LOGISTICS, event))
            if isinstance(event, ParcelTrackingChanged) and moves_whereabouts(event):
                sends.append((LOGISTICS_PARCEL_STAGES, event))
        await publish_all(self._producer, sends)

    # --- dispatch events ---
    async def handle_dispatch_event(self, message: InboundMessage) -> None:
        if message.skippable(DISPATCH_EVENTS_ACTED_ON):
            return
        try:
            event = DISPATCH_EVENTS.validate_json(message.value)
        except ValidationError as exc:
            raise PermanentFailure(DeadLetterReason.UNDECODABLE, str(exc)[:1000]) from exc
        if not isinstance(event, DispatchEvent):
            return  # holds are not ours
        if isinstance(event, DispatchOffered):
            await self._watch_ship_by(event)
        elif isinstance(event, DispatchShipped):
            await self._on_shipped(event)
        elif isinstance(event, DispatchChangeAnswered) and event.state == DispatchState.SHIPPED:
            await self._close_watch(event, cancelled=False)  # a refund dropped what was left to send
        elif isinstance(event, DispatchCancelled | DispatchRejected) or (
            isinstance(event, DispatchChangeAnswered) and event.state == DispatchState.CANCELLED
        ):
            await self._close_watch(event, cancelled=True)
            if self.on_dispatch_closed is not None:
                shipped = {
                    (p.parcel.carrier_code, p.parcel.waybill_no)
                    for p in self.parcels
                    if p.parcel.dispatch_id == event.dispatch_id
                }
                await self.on_dispatch_closed(event.dispatch_id, shipped=shipped, reason=event.event_type)

    async def _watch_ship_by(self, event: DispatchOffered) -> None:
        if event.ship_by is None or self.ship_by.get(event.dispatch_id) is not None:
            return
        record = ShipByRecord(
            shop_id=event.shop_id,
            order_id=event.order_id,
            dispatch_id=event.dispatch_id,
            ship_by=event.ship_by,
            version=event.version,
        )
        await self.ship_by.save(event.dispatch_id, record, cause=str(event.event_id))
        self._look_at(_SHIP_BY + event.dispatch_id, self.clock(), plan_past=True)

    def ship_by_watch(self, dispatch_id: str) -> deadlines.ShipByWatch | None:
        """The dispatch order's ship-by watch: its record, met once a parcel completed the order."""
        record = self.ship_by.get(dispatch_id)
        return None if record is None else record.watch(self._completed.get(dispatch_id, 0))

    async def _close_watch(self, event: DispatchEvent, *, cancelled: bool) -> None:
        record = self.ship_by.get(event.dispatch_id)
        if record is None or record.version >= event.version:
            return
        if not cancelled and self._completed.get(event.dispatch_id, 0) >= event.version:
            return  # a parcel completed it: met already
        updated = record.model_copy(
            update={"cancelled": cancelled, "shipped": not cancelled, "version": event.version}
        )
        await self.ship_by.save(event.dispatch_id, updated, cause=str(event.event_id))
        self._look_at(_SHIP_BY + event.dispatch_id, self.clock(), plan_past=True)

    async def _on_shipped(self, event: DispatchShipped) -> None:
        """Register the new parcels, tell WeChat of those not told yet, and save each new parcel once:
        with WeChat's answer when it comes, on its own otherwise (busy, refused, held, nothing to
        tell), so it is tracked meanwhile. A parcel that completes the dispatch order meets its
        ship-by watch. Nothing is saved before WeChat is asked, so a failure in between is retried
        whole: subscribing again and WeChat's "already shipped" (rechecked) are taken as done."""
        new: dict[str, Parcel] = {}
        for parcel in event.parcels:
            key = parcel_key(parcel.carrier_code, parcel.waybill_no)
            if self.parcels.get(key) is None:
                new[key] = parcel
        async with AsyncExitStack() as held:
            # Held until the new parcels are saved: their tracking waits for them (track()), instead
            # of being kept as an orphan their registration has already read.
            for key in sorted(new):
                await held.enter_async_context(self.parcels.lock(key))
            registered: list[str] = []
            for key, parcel in new.items():
                if self.parcels.get(key) is None:  # looked at again under the lock
                    self._unsaved[key] = await self._registration(event, parcel)
                    registered.append(key)
            try:
                untold = [p for p in event.parcels if self.told(event.order_id, p) is None]
                if untold:
                    await self._tell_wechat(event, untold)
            finally:
                for key in registered:
                    tracking = self._unsaved.pop(key, None)
                    if tracking is not None:  # saved with no answer of WeChat's
                        await self._save_parcel(key, tracking, cause=str(event.event_id))

    async def _registration(self, event: DispatchShipped, parcel: Parcel) -> ParcelTracking:
        """A new parcel's tracking (with any that came before it), subscribed to and its early
        stage announced; not saved."""
        key = parcel_key(parcel.carrier_code, parcel.waybill_no)
        tracking = ParcelTracking(
            shop_id=event.shop_id,
            order_id=event.order_id,
            parcel=_ref(event.dispatch_id, parcel),
            registered_at=event.occurred_at,
            completes_dispatch_version=event.version if event.state == DispatchState.SHIPPED else None,
        )
        orphan = self.orphans.get(key)
        early: list[Event] = []
        if orphan is not None:  # tracking that came before the shipment: its stage is told now
            update = apply_entries(tracking, orphan.entries, now=self.clock())
            tracking, early = update.tracking, list(update.events)
        if self._subscriber is not None:
            # Before the parcel is saved: a failed subscription fails the message, whose retry (or
            # replay) subscribes again; saved first, the retry found the parcel and never subscribed
            # (a 5,000-order sale left parcels without tracking). A repeat answers 501, taken as done.
            await self._subscriber.subscribe(parcel.carrier_code, parcel.waybill_no)
        await self._publish(early)
        return tracking

    def told(self, order_id: str, parcel: Parcel) -> DeliveryOutcome | None:
        """What WeChat was told of the parcel (None: not yet), kept on the parcel or, if it was told
        before parcels kept it, in the older delivery records."""
        tracking = self.parcels.get(parcel_key(parcel.carrier_code, parcel.waybill_no))
        if tracking is not None and tracking.told is not None:
            return tracking.told.outcome
        record = self.deliveries.get(_delivery_key(order_id, parcel))
        return record.outcome if record is not None else None

    async def _tell_wechat(self, event: DispatchShipped, parcels: list[Parcel]) -> None:
        if not told_with_delivery_send(aftersale_case_id=event.aftersale_case_id):
            await self._record_replacement(event, parcels)
            return
        body = delivery_request(event.order_id, parcels, event.lines)
        errcode, errmsg = await self._send(event.shop_id, body)
        if errcode in RECHECKED:
            parcels, body, errcode, errmsg = await self._recheck(event, parcels, body, errcode, errmsg)
            if not parcels:
                return
        verdict = judge(errcode)
        if verdict.step == NextStep.RETRY_LATER:
            raise RetryLater(f"delivery/send errcode {errcode}: {errmsg}")
        assert verdict.outcome is not None
        now = self.clock()
        refs = [_ref(event.dispatch_id, p) for p in parcels]
        infos: list[Any] = body["delivery_list"]  # type: ignore[assignment]
        for parcel, ref, info in zip(parcels, refs, infos, strict=True):
            if verdict.step == NextStep.DONE:
                await self._save_delivery(event, parcel, ref, verdict.outcome, errcode, info["product_infos"])
            SHIPMENTS_TOLD.labels(verdict.outcome).inc()
        if verdict.step == NextStep.DONE:
            SHIP_TO_TOLD.observe(max(0.0, (now - event.occurred_at).total_seconds()))
        held_key = f"{event.order_id}:{event.dispatch_id}:{event.version}"
        held_before = self.held.get(held_key) is not None
        if not (verdict.step == NextStep.HOLD_FOR_AFTERSALE and held_before):  # announced once per hold
            await self._publish(
                [
                    ShipmentReported(
                        order_id=event.order_id,
                        shop_id=event.shop_id,
                        parcels=refs,
                        outcome=verdict.outcome,
                        errcode=errcode,
                        errmsg=errmsg,
                    )
                ]
            )
        if verdict.step == NextStep.DEAD_LETTER:
            raise PermanentFailure(
                DeadLetterReason.PERMANENT_API_ERROR, f"delivery/send refused: errcode {errcode} {errmsg}"
            )
        if verdict.step == NextStep.HOLD_FOR_AFTERSALE and not held_before:
            # Not told yet: kept, and sent again on every deadline scan until the after-sale closes.
            await self.held.save(held_key, HeldShipment(shipment=event), cause=f"held:{held_key}")

    async def _send(self, shop_id: str, body: dict[str, object]) -> tuple[int, str]:
        try:
            await self._wechat.call(shop_id, DELIVERY_SEND, body)
            errcode, errmsg = 0, ""
        except WeChatApiError as exc:
            errcode, errmsg = exc.errcode, exc.errmsg
        DELIVERY_CALLS.labels(str(errcode)).inc()
        return errcode, errmsg

    async def _recheck(
        self,
        event: DispatchShipped,
        parcels: list[Parcel],
        body: dict[str, object],
        errcode: int,
        errmsg: str,
    ) -> tuple[list[Parcel], dict[str, object], int, str]:
        """After a 109000/109001, WeChat's order says what each parcel is: told already (a lost answer),
        refunded before it was told (recorded, nothing to tell), or still expected, perhaps with fewer
        goods (sent again with those). Returns what is left to judge: the parcels sent again and
        their answer, or the refusal as it was when WeChat's order explains nothing."""
        try:
            answer = await self._wechat.call(event.shop_id, ORDER_GET, {"order_id": event.order_id})
            order = OrderGetResponse.model_validate(answer).order
            cases = (
                []
                if order is None
                else [
                    (
                        await self._wechat.call(
                            event.shop_id, GET_AFTERSALE, {"after_sale_order_id": ref.aftersale_order_id}
                        )
                    )["after_sale_order"]
                    for ref in order.aftersale_detail.aftersale_order_list
                    if str(ref.status) in REFUNDED_CASE_STATUSES
                ]
            )
        except WeChatApiError as exc:
            if exc.transient:
                raise  # the message is retried, the recheck with it
            # WeChat will not say what the parcel is: the refusal stands (dead-lettered, replayable).
            log.warning("recheck of %s after errcode %d not possible: %s", event.order_id, errcode, exc)
            return parcels, body, errcode, errmsg
        infos: list[dict[str, Any]] = body["delivery_list"]  # type: ignore[assignment]
        if order is None:
            return parcels, body, errcode, errmsg
        rechecked = recheck(order, infos, refunded_units(cases))
        if not rechecked or all(
            r.fate == ParcelFate.SEND and r.product_infos == i["product_infos"]
            for r, i in zip(rechecked, infos, strict=True)
        ):
            return parcels, body, errcode, errmsg
        for fate, outcome in (
            (ParcelFate.TOLD, DeliveryOutcome.ALREADY_SHIPPED),
            (ParcelFate.REFUNDED, DeliveryOutcome.REFUNDED_BEFORE_TOLD),
        ):
            settled = [(p, r) for p, r in zip(parcels, rechecked, strict=True) if r.fate == fate]
            if settled:
                await self._record(event, settled, outcome, errcode)
        to_send = [
            (p, i, r) for p, i, r in zip(parcels, infos, rechecked, strict=True) if r.fate == ParcelFate.SEND
        ]
        if not to_send:
            return [], body, errcode, errmsg
        again: dict[str, object] = {
            "order_id": body["order_id"],
            "delivery_list": [{**i, "product_infos": r.product_infos} for _, i, r in to_send],
        }
        errcode, errmsg = await self._send(event.shop_id, again)
        return [p for p, _, _ in to_send], again, errcode, errmsg

    async def _record(
        self,
        event: DispatchShipped,
        settled: list[tuple[Parcel, Recheck]],
        outcome: DeliveryOutcome,
        errcode: int,
    ) -> None:
        """Parcels a recheck settled without telling WeChat: recorded (never sent again) and announced."""
        refs = [_ref(event.dispatch_id, p) for p, _ in settled]
        for (parcel, rechecked), ref in zip(settled, refs, strict=True):
            await self._save_delivery(event, parcel, ref, outcome, errcode, rechecked.product_infos)
            SHIPMENTS_TOLD.labels(outcome).inc()
        await self._publish(
            [
                ShipmentReported(
                    order_id=event.order_id,
                    shop_id=event.shop_id,
                    parcels=refs,
                    outcome=outcome,
                    errcode=errcode,
                )
            ]
        )

    async def _save_delivery(
        self,
        event: DispatchShipped,
        parcel: Parcel,
        ref: ParcelRef,
        outcome: DeliveryOutcome,
        errcode: int,
        product_infos: list[dict[str, Any]],
    ) -> None:
        """What WeChat now knows of one parcel, kept so it is never sent again."""
        told = ParcelTold(outcome=outcome, errcode=errcode, at=self.clock(), product_infos=product_infos)
        await self._keep_told(event, parcel, told)

    async def _keep_told(self, event: DispatchShipped, parcel: Parcel, told: ParcelTold) -> None:
        """Save the parcel with what WeChat was told of it: with its registration if it is not saved
        yet (one document), else as its next revision."""
        key = parcel_key(parcel.carrier_code, parcel.waybill_no)
        cause = str(event.event_id)
        unsaved = self._unsaved.pop(key, None)
        if unsaved is not None:  # its shipment holds its lock
            await self._save_parcel(key, unsaved.model_copy(update={"told": told}), cause=cause)
            return
        async with self.parcels.lock(key):  # tracking updates of a saved parcel take it too
            tracking = self.parcels.get(key) or ParcelTracking(  # none: never expected
                shop_id=event.shop_id,
                order_id=event.order_id,
                parcel=_ref(event.dispatch_id, parcel),
                registered_at=event.occurred_at,
            )
            await self._save_parcel(key, tracking.model_copy(update={"told": told}), cause=cause)

    async def _record_replacement(self, event: DispatchShipped, parcels: list[Parcel]) -> None:
        """The parcels of an after-sale replacement: tracked like any other (registered already), never
        sent with delivery/send nor held. Recorded, so a redelivered event announces nothing twice, and
        announced once, so nothing waits for a delivery/send that will not come."""
        outcome = DeliveryOutcome.AFTERSALE_REPLACEMENT
        now = self.clock()
        refs = [_ref(event.dispatch_id, p) for p in parcels]
        for parcel in parcels:
            await self._keep_told(event, parcel, ParcelTold(outcome=outcome, at=now))
            SHIPMENTS_TOLD.labels(outcome).inc()
        await self._publish(
            [ShipmentReported(order_id=event.order_id, shop_id=event.shop_id, parcels=refs, outcome=outcome)]
        )

    async def retry_held_shipments(self) -> int:
        """Shipments WeChat refused while an after-sale was open: try again. Returns how many went."""
        told = 0
        for key, held in [(h.key, h) for h in self.held if not h.done]:
            event = held.shipment
            untold = [p for p in event.parcels if self.told(event.order_id, p) is None]
            try:
                if untold:
                    await self._tell_wechat(event, untold)
            except PermanentFailure as exc:
                # Refused for good now (the case cancelled the order, or refunded these goods): kept
                # as a dead letter, replayable, and never sent again on a scan.
                await self._dead_letter_held(held, exc)
                await self.held.save(
                    key, held.model_copy(update={"done": True, "refused": exc.detail}), cause=f"done:{key}"
                )
                continue
            except Exception:  # still busy: the next scan tries again
                continue
            if all(self.told(event.order_id, p) is not None for p in event.parcels) or not untold:
                await self.held.save(key, held.model_copy(update={"done": True}), cause=f"done:{key}")
                told += 1
        return told

    async def _dead_letter_held(self, held: HeldShipment, refusal: PermanentFailure) -> None:
        event = held.shipment
        log.warning("held shipment %s refused: %s", held.key, refusal.detail)
        letter = DeadLetter(
            order_id=event.order_id,
            consumer=self.service_name,
            reason=refusal.reason,
            detail=f"held shipment {held.key}: {refusal.detail}",
            attempts=1,
            source_topic=DISPATCH.name,
            source_partition=-1,  # not read from a partition: re-sent from the held record
            source_offset=-1,
            key_b64=base64.b64encode(event.order_id.encode()).decode(),
            value_b64=base64.b64encode(event.model_dump_json().encode()).decode(),
        )
        await send_dead_letter(self._producer, letter, key=event.order_id.encode())

    # --- orders ---
    async def handle_order_event(self, message: InboundMessage) -> None:
        try:
            event = ORDER_EVENTS.validate_json(message.value)
        except ValidationError as exc:
            raise PermanentFailure(DeadLetterReason.UNDECODABLE, str(exc)[:1000]) from exc
        if isinstance(event, OrderCompleted) and self.confirmed_orders.get(event.order_id) is None:
            await self.confirmed_orders.save(
                event.order_id,
                ConfirmedOrder(order_id=event.order_id, at=event.occurred_at),
                cause=str(event.event_id),
            )
            now = self.clock()
            for parcel in self.parcels_of_order(event.order_id):
                self._look_at(_PARCEL + parcel.key, now, plan_past=False)  # delivered: nothing left due

    def parcels_of_order(self, order_id: str) -> list[ParcelTracking]:
        return [
            parcel
            for key in self._parcels_by_order.get(order_id, ())
            if (parcel := self.parcels.get(key)) is not None
        ]

    async def _save_parcel(self, key: str, tracking: ParcelTracking, *, cause: str) -> None:
        before = self.parcels.get(key)
        await self.parcels.save(key, tracking, cause=cause)
        if before is not None:
            self._parcel_states[before.state] -= 1
        self._parcel_states[tracking.state] += 1
        self._parcels_by_order.setdefault(tracking.order_id, set()).add(key)
        self._by_waybill[tracking.parcel.waybill_no] = key
        now = self.clock()
        self._look_at(_PARCEL + key, now, plan_past=True)
        if before is None and self._note_completion(tracking):
            self._look_at(_SHIP_BY + tracking.parcel.dispatch_id, now, plan_past=True)

    def _note_completion(self, parcel: ParcelTracking) -> bool:
        """Whether the parcel completed its dispatch order (its ship-by watch met from then on)."""
        version = parcel.completes_dispatch_version
        if version is None or version <= self._completed.get(parcel.parcel.dispatch_id, 0):
            return False
        self._completed[parcel.parcel.dispatch_id] = version
        return True

    # --- tracking ---
    async def track(
        self, carrier_code: str | None, waybill_no: str, entries: list[TraceEntry], *, source: str, cause: str
    ) -> bool:
        """Apply tracking entries; False if the parcel is unknown (kept until it is)."""
        key = parcel_key(carrier_code, waybill_no) if carrier_code else self._by_waybill.get(waybill_no)
        if key is None:
            TRACKING_UPDATES.labels(source, "unknown_parcel").inc()
            return False
        # Taken first: a parcel a shipment is registering is saved before this looks at it.
        async with self.parcels.lock(key):
            tracking = self.parcels.get(key)
            if tracking is None:
                if carrier_code is not None:
                    await self._keep_orphan(carrier_code, waybill_no, entries, cause=cause)
                TRACKING_UPDATES.labels(source, "unknown_parcel").inc()
                return False
            update = apply_entries(tracking, entries, now=self.clock())
            if not update.changed:
                TRACKING_UPDATES.labels(source, "duplicate").inc()
                return True
            # Published before saved: a failure between the two is retried as the same change (its
            # copy is dropped by version downstream), never as a duplicate that publishes nothing.
            await self._publish(update.events)
            await self._save_parcel(key, update.tracking, cause=cause)
        TRACKING_UPDATES.labels(source, "changed" if update.events else "trace_only").inc()
        return True

    async def _keep_orphan(
        self, carrier_code: str, waybill_no: str, entries: list[TraceEntry], *, cause: str
    ) -> None:
        """Tracking of a parcel not registered yet, kept until its shipment registers it."""
        key = parcel_key(carrier_code, waybill_no)
        async with self.orphans.lock(key):
            known = self.orphans.get(key)
            merged = [*(known.entries if known else []), *entries]
            await self.orphans.save(
                key,
                OrphanTrace(carrier_code=carrier_code, waybill_no=waybill_no, entries=merged),
                cause=cause,
            )

    # --- deadlines ---
    def _look_at(self, subject: str, now: datetime, *, plan_past: bool) -> None:
        """Which of the subject's alerts are due now, and when to look again: at its checks still to
        come, and (after a change, which may come late) at those already passed, on the next scan."""
        kind, key = subject.split(":", 1)
        due: list[deadlines.DueAlert] = []
        checks: list[datetime] = []
        if kind == _SHIP_BY[:-1]:
            watch = self.ship_by_watch(key)
            if watch is not None:
                due = deadlines.ship_by_alerts(watch, now, self.policy)
                checks = deadlines.ship_by_checks(watch, self.policy)
        else:
            parcel = self.parcels.get(key)
            if parcel is not None:
                confirmed = self.confirmed_orders.get(parcel.order_id) is not None
                due = deadlines.parcel_alerts(parcel, now, self.policy, order_confirmed=confirmed)
                checks = deadlines.parcel_checks(parcel, self.policy, order_confirmed=confirmed)
        self.schedule.set_due(subject, due)
        self.schedule.plan(subject, checks if plan_past else [at for at in checks if at > now])

    async def raise_due_alerts(self) -> list[DeadlineAlert]:
        """Look at the subjects whose checks came due, and raise each alert due for the first time."""
        now = self.clock()
        for subject in self.schedule.come_due(now):
            self._look_at(subject, now, plan_past=False)
        events: list[DeadlineAlert] = []
        for alert in self.schedule.due():
            if self.alerts.get(alert.key) is not None:
                continue
            raised_alert = RaisedAlert(
                key=alert.key,
                kind=alert.kind,
                shop_id=alert.shop_id,
                order_id=alert.order_id,
                subject=alert.subject,
                due_at=alert.due_at,
                raised_at=now,
            )
            await self.alerts.save(alert.key, raised_alert, cause=f"alert:{alert.key}")
            ALERTS.labels(alert.kind).inc()
            events.append(
                DeadlineAlert(
                    order_id=alert.order_id,
                    occurred_at=now,
                    shop_id=alert.shop_id,
                    kind=alert.kind,
                    subject=alert.subject,
                    due_at=alert.due_at,
                )
            )
        await self._publish(events)
        self._update_gauges()
        return events

    def _update_gauges(self) -> None:
        for kind in AlertKind:
            ALERTS_OPEN.labels(kind).set(self.schedule.open_by_kind[kind])
        for state in TrackingState:
            PARCELS_BY_STATE.labels(state).set(self._parcel_states.get(state, 0))


_SHIP_BY = "ship_by:"  # schedule subjects: a ship-by watch by dispatch id, a parcel by its key
_PARCEL = "parcel:"


def due_alerts(
    ship_by: Iterable[ShipByRecord],
    parcels: Iterable[ParcelTracking],
    confirmed_orders: VersionedProjection[ConfirmedOrder],
    now: datetime,
    policy: deadlines.DeadlinePolicy,
) -> list[deadlines.DueAlert]:
    """Every deadline passed at `now` and not resolved."""
    parcels = list(parcels)
    completed: dict[str, int] = {}
    for parcel in parcels:
        version = parcel.completes_dispatch_version or 0
        completed[parcel.parcel.dispatch_id] = max(version, completed.get(parcel.parcel.dispatch_id, 0))
    due: list[deadlines.DueAlert] = []
    for record in ship_by:
        watch = record.watch(completed.get(record.dispatch_id, 0))
        due.extend(deadlines.ship_by_alerts(watch, now, policy))
    for parcel in parcels:
        confirmed = confirmed_orders.get(parcel.order_id) is not None
        due.extend(deadlines.parcel_alerts(parcel, now, policy, order_confirmed=confirmed))
    return sorted(due, key=lambda a: a.due_at)


class ConfirmedOrder(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    order_id: str
    at: datetime


def _ref(dispatch_id: str, parcel: Parcel) -> ParcelRef:
    return ParcelRef(
        dispatch_id=dispatch_id,
        parcel_no=parcel.parcel_no,
        carrier_code=parcel.carrier_code,
        waybill_no=parcel.waybill_no,
    )


def _delivery_key(order_id: str, parcel: Parcel) -> str:
    return f"{order_id}:{parcel_key(parcel.carrier_code, parcel.waybill_no)}"
