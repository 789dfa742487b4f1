"""The sale's report (pure): orders per stage, latency per stage, holds, dead letters, after-sale
outcomes, and the invariants held against the stand-ins' records.

`compute_report` takes `Facts`, everything already read (the stand-ins' records as JSON, our events
parsed from the topics), so each computation is a plain function tested without a network
(`sim.sale.collect` does the reading)."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from rich.console import Console, Group
from rich.table import Table

from shared.events.aftersale import CaseState, CaseUpdated
from shared.events.dead_letter import DeadLetter
from shared.events.dispatch import (
    DispatchAccepted,
    DispatchCancelled,
    DispatchEvent,
    DispatchOffered,
    DispatchShipped,
    DispatchState,
    OrderHeld,
    OrderHoldReleased,
)
from shared.events.logistics import ParcelTrackingChanged, TrackingState
from shared.events.orders import OrderPaid
from shared.wechat.api import OrderStatus
from sim.sale.observer import FINAL_CASE_STATUSES, FINAL_ORDER_STATUSES

DELIVERY_SEND = "/channels/ec/order/delivery/send"
ENDED_CASE_STATES = frozenset({CaseState.RESOLVED, CaseState.CLOSED, CaseState.REJECTED})
STAGES = (
    "created",
    "paid",
    "dispatched",
    "accepted",
    "shipped",
    "wechat_told",
    "delivered",
    "completed",
    "cancelled",
    "held",
)
OFFENDERS_KEPT = 50
STORIES_PER_INVARIANT = 3


@dataclass
class Facts:
    """What the report is computed from. `orders`/`cases`/`calls`/`pushes` are the WeChat stand-in's
    records (JSON as its control API answers), `events` ours from the topics (of the sale's orders)."""

    orders: list[dict[str, Any]]
    cases: list[dict[str, Any]]
    calls: list[dict[str, Any]]
    pushes: list[dict[str, Any]]
    waybills: list[dict[str, Any]] = field(default_factory=list)
    paid: list[OrderPaid] = field(default_factory=list)
    dispatch: list[Any] = field(default_factory=list)  # dispatch topic events (DispatchEvent | holds)
    logistics: list[Any] = field(default_factory=list)
    aftersale: list[Any] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


class LatencyStats(BaseModel):
    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


class Invariant(BaseModel):
    name: str
    description: str
    ok: bool
    checked: int
    offending: list[str] = Field(default_factory=list, description=f"at most {OFFENDERS_KEPT} ids")
    offending_count: int = 0


class SaleReport(BaseModel):
    seed: int
    shops: int
    suppliers: int
    duration_s: float = 0.0
    stages: dict[str, int]
    latency: dict[str, LatencyStats]
    holds: dict[str, int]
    dead_letters: dict[str, int]
    dead_letter_samples: list[str] = Field(default_factory=list)
    aftersale_outcomes: dict[str, int]
    wechat_case_statuses: dict[str, int]
    invariants: list[Invariant]
    driver: dict[str, int] = Field(default_factory=dict)
    driver_errors: dict[str, int] = Field(default_factory=dict)
    driver_request_ms: dict[str, float] = Field(default_factory=dict)
    suppliers_totals: dict[str, int] = Field(default_factory=dict)
    desk: dict[str, int] = Field(default_factory=dict)
    order_stories: dict[str, list[str]] = Field(
        default_factory=dict,
        description="for the first offending orders of each failed invariant: what WeChat saw and we did",
    )
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return all(i.ok for i in self.invariants) and not self.timed_out

    def failed(self) -> list[Invariant]:
        return [i for i in self.invariants if not i.ok]

    def to_json(self) -> str:
        return json.dumps({**self.model_dump(mode="json"), "ok": self.ok}, ensure_ascii=False, indent=2)

    def render(self) -> Group:
        return render(self)

    def text(self, width: int = 120) -> str:
        console = Console(width=width, record=True, force_terminal=False, color_system=None)
        with console.capture() as capture:
            console.print(render(self))
        return capture.get()


# --- small helpers -------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted values; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def latency_stats(seconds: Iterable[float]) -> LatencyStats:
    values = [max(0.0, s) * 1000 for s in seconds]
    return LatencyStats(
        count=len(values),
        p50_ms=round(percentile(values, 50), 1),
        p95_ms=round(percentile(values, 95), 1),
        p99_ms=round(percentile(values, 99), 1),
        max_ms=round(max(values, default=0.0), 1),
    )


def _invariant(name: str, description: str, checked: int, offending: Iterable[str]) -> Invariant:
    found = sorted(set(offending))
    return Invariant(
        name=name,
        description=description,
        ok=not found,
        checked=checked,
        offending=found[:OFFENDERS_KEPT],
        offending_count=len(found),
    )


def _seconds(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds()


def _latest(events: Iterable[DispatchEvent]) -> dict[str, DispatchEvent]:
    """The newest event (by version) of each dispatch order."""
    latest: dict[str, DispatchEvent] = {}
    for event in events:
        known = latest.get(event.dispatch_id)
        if known is None or event.version >= known.version:
            latest[event.dispatch_id] = event
    return latest


# --- the computations ----------------------------------------------------------------------------


@dataclass
class _Dispatch:
    """The sale's dispatch orders, read from their events."""

    offered: dict[str, DispatchOffered]
    latest: dict[str, DispatchEvent]
    cancelled: dict[str, DispatchCancelled]
    accepted: dict[str, DispatchAccepted]
    shipped: dict[str, list[DispatchShipped]]
    held: dict[str, OrderHeld]  # orders still held
    holds: list[OrderHeld]

    @classmethod
    def of(cls, events: list[Any]) -> _Dispatch:
        offered: dict[str, DispatchOffered] = {}
        cancelled: dict[str, DispatchCancelled] = {}
        accepted: dict[str, DispatchAccepted] = {}
        shipped: dict[str, list[DispatchShipped]] = defaultdict(list)
        held: dict[str, OrderHeld] = {}
        holds: list[OrderHeld] = []
        seen_shipments: set[tuple[str, int]] = set()
        for event in sorted(events, key=lambda e: e.occurred_at):
            match event:
                case DispatchOffered():
                    offered.setdefault(event.dispatch_id, event)
                case DispatchAccepted():
                    accepted.setdefault(event.dispatch_id, event)
                case DispatchCancelled():
                    cancelled[event.dispatch_id] = event
                case DispatchShipped():
                    if (event.dispatch_id, event.version) not in seen_shipments:
                        seen_shipments.add((event.dispatch_id, event.version))
                        shipped[event.dispatch_id].append(event)
                case OrderHeld():
                    holds.append(event)
                    held[event.order_id] = event
                case OrderHoldReleased():
                    held.pop(event.order_id, None)
        dispatch_events = [e for e in events if isinstance(e, DispatchEvent)]
        return cls(offered, _latest(dispatch_events), cancelled, accepted, dict(shipped), held, holds)

    def is_replacement(self, dispatch_id: str) -> bool:
        offer = self.offered.get(dispatch_id)
        return offer is not None and offer.aftersale_case_id is not None

    def counts_as_dispatch(self, dispatch_id: str) -> bool:
        """A dispatch order that fulfils order lines: not an after-sale replacement, not rejected,
        not cancelled to be routed elsewhere."""
        if self.is_replacement(dispatch_id):
            return False
        latest = self.latest.get(dispatch_id)
        if latest is not None and latest.state == DispatchState.REJECTED:
            return False
        cancel = self.cancelled.get(dispatch_id)
        return not (cancel is not None and cancel.cause in ("rerouted", "operator"))


def _paid_orders(orders: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in orders if o.get("order_detail", {}).get("pay_info", {}).get("pay_time")]


def _told_calls(calls: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Successful delivery/send calls per waybill_id."""
    told: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for call in calls:
        if call["path"] != DELIVERY_SEND or call["errcode"] != 0:
            continue
        for parcel in (call.get("request") or {}).get("delivery_list", []):
            told[str(parcel.get("waybill_id", ""))].append(call)
    return told


def check_lines_dispatched_once(orders: list[dict[str, Any]], d: _Dispatch) -> Invariant:
    """Per paid order and line: the units offered to suppliers (rejected and re-routed dispatch orders
    and after-sale replacements left out) are exactly the ordered units; only units refunded by an
    after-sale may be missing (the refund came before the dispatch)."""
    offered: dict[tuple[str, int], int] = Counter()
    for dispatch_id, offer in d.offered.items():
        if d.counts_as_dispatch(dispatch_id):
            for line in offer.lines:
                offered[(offer.order_id, line.line_no)] += line.quantity
    paid = _paid_orders(orders)
    bad: list[str] = []
    for order in paid:
        order_id = str(order["order_id"])
        for line_no, product in enumerate(order["order_detail"]["product_infos"]):
            ordered = int(product["sku_cnt"])
            refunded = int(product.get("finish_aftersale_sku_cnt", 0))
            got = offered.get((order_id, line_no), 0)
            if not ordered - refunded <= got <= ordered:
                held = " (held)" if order_id in d.held else ""
                bad.append(
                    f"{order_id}#{line_no}: ordered {ordered}, refunded {refunded}, dispatched {got}{held}"
                )
    return _invariant(
        "lines_dispatched_exactly_once",
        "every paid order's every line is dispatched exactly once (its units in live, non-replacement "
        "dispatch orders = ordered, less units refunded before dispatch)",
        len(paid),
        bad,
    )


def check_no_duplicate_dispatch(d: _Dispatch) -> Invariant:
    """No line is in two live dispatch orders, and no dispatch id is offered with two versions."""
    owners: dict[tuple[str, int], list[str]] = defaultdict(list)
    for dispatch_id, offer in d.offered.items():
        if d.counts_as_dispatch(dispatch_id):
            for line in offer.lines:
                owners[(offer.order_id, line.line_no)].append(dispatch_id)
    bad = [
        f"{order_id}#{line_no}: {', '.join(sorted(ids))}"
        for (order_id, line_no), ids in owners.items()
        if len(ids) > 1
    ]
    return _invariant(
        "no_duplicate_dispatch_orders",
        "no order line is in two live dispatch orders",
        len(d.offered),
        bad,
    )


# delivery/send: the order or these goods can no longer ship (109001 too when a refund took the
# goods before WeChat was told of them)
FINAL_REFUSALS = frozenset({101100, 109000, 109001})


def _calls_per_waybill(calls: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    per_waybill: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for call in sorted(calls, key=lambda c: float(c["at"])):
        if call["path"] == DELIVERY_SEND:
            for parcel in (call.get("request") or {}).get("delivery_list", []):
                per_waybill[str(parcel.get("waybill_id", ""))].append(call)
    return per_waybill


def check_told_once(calls: list[dict[str, Any]], d: _Dispatch, cases: list[dict[str, Any]]) -> Invariant:
    """Every parcel a supplier shipped (not a replacement) reached WeChat by exactly one successful
    delivery/send, and WeChat was told of no parcel nobody shipped. The exception: a parcel WeChat
    refused for good (the order cancelled, or its goods refunded, by an after-sale case) is told
    never, and after that refusal is never sent again."""
    told = _told_calls(calls)
    per_waybill = _calls_per_waybill(calls)
    refunded_orders = {
        str(c["order_id"])
        for c in cases
        if c["status"] in ("MERCHANT_REFUND_SUCCESS", "MERCHANT_RETURN_SUCCESS")
    }
    parcels: dict[str, str] = {}  # waybill -> order
    for dispatch_id, shipments in d.shipped.items():
        if d.is_replacement(dispatch_id):
            continue
        for shipment in shipments:
            for parcel in shipment.parcels:
                parcels[parcel.waybill_no] = shipment.order_id
    bad: list[str] = []
    for waybill, order_id in parcels.items():
        sent = per_waybill.get(waybill, [])
        refusal = next((i for i, c in enumerate(sent) if c["errcode"] in FINAL_REFUSALS), None)
        times_told = len(told.get(waybill, []))
        if refusal is not None and order_id in refunded_orders and times_told == 0:
            if len(sent) > refusal + 1:
                bad.append(f"{order_id}/{waybill}: sent {len(sent) - refusal - 1}× after a final refusal")
            continue
        if times_told != 1:
            bad.append(f"{order_id}/{waybill}: told {times_told}×")
    order_ids = set(parcels.values()) | {o.order_id for o in d.offered.values()}
    bad += [
        f"{waybill}: told but never shipped"
        for waybill, told_calls in told.items()
        if waybill not in parcels and any(str(c["request"].get("order_id")) in order_ids for c in told_calls)
    ]
    return _invariant(
        "wechat_told_once_per_parcel",
        "every shipped parcel is told to WeChat exactly once (delivery/send errcode 0 per waybill = 1), "
        "or, if an after-sale refund made WeChat refuse it for good, never and not sent again",
        len(parcels),
        bad,
    )


def _our_cases(events: list[Any]) -> dict[str, CaseUpdated]:
    latest: dict[str, CaseUpdated] = {}
    for event in events:
        if isinstance(event, CaseUpdated):
            known = latest.get(event.case_id)
            if known is None or event.version >= known.version:
                latest[event.case_id] = event
    return latest


def check_aftersales_resolved(cases: list[dict[str, Any]], ours: dict[str, CaseUpdated]) -> Invariant:
    bad: list[str] = []
    for case in cases:
        case_id = str(case["after_sale_order_id"])
        mine = ours.get(case_id)
        if str(case["status"]) not in FINAL_CASE_STATUSES:
            bad.append(
                f"{case_id}: open at WeChat ({case['status']}; ours {mine.state if mine else 'unknown'})"
            )
        elif mine is None:
            bad.append(f"{case_id}: {case['status']} at WeChat, unknown to us")
        elif mine.state not in ENDED_CASE_STATES:
            bad.append(f"{case_id}: {case['status']} at WeChat, ours {mine.state}")
    return _invariant(
        "aftersales_resolved",
        "every after-sale case ended at WeChat (final status) and ours is resolved, closed or rejected",
        len(cases),
        bad,
    )


def check_pushes_acknowledged(pushes: list[dict[str, Any]]) -> Invariant:
    bad = [
        f"push {p['push_id']} {p['event']} {p['subject_id']}: {p['status']}"
        for p in pushes
        if p["status"] != "delivered"
    ]
    return _invariant(
        "pushes_acknowledged",
        "every WeChat push was acknowledged with 'success' (nothing lost at the door)",
        len(pushes),
        bad,
    )


def check_orders_ended(orders: list[dict[str, Any]]) -> Invariant:
    bad = [
        f"{o['order_id']}: status {o['status']}"
        for o in orders
        if int(o["status"]) not in FINAL_ORDER_STATUSES
    ]
    return _invariant(
        "orders_ended",
        "every order ended at WeChat (completed, or cancelled before or after paying)",
        len(orders),
        bad,
    )


def _stages(facts: Facts, d: _Dispatch) -> dict[str, int]:
    told = _told_calls(facts.calls)
    told_orders = {str(c["request"].get("order_id")) for calls in told.values() for c in calls}
    delivered = {
        e.order_id
        for e in facts.logistics
        if isinstance(e, ParcelTrackingChanged) and e.state == TrackingState.DELIVERED
    }
    live = [o for i, o in d.offered.items() if not d.is_replacement(i)]
    statuses = Counter(int(o["status"]) for o in facts.orders)
    return {
        "created": len(facts.orders),
        "paid": len(_paid_orders(facts.orders)),
        "dispatched": len({o.order_id for o in live}),
        "accepted": len({a.order_id for i, a in d.accepted.items() if not d.is_replacement(i)}),
        "shipped": len({s[0].order_id for i, s in d.shipped.items() if s and not d.is_replacement(i)}),
        "wechat_told": len(told_orders & {o.order_id for o in live}),
        "delivered": len(delivered),
        "completed": statuses[OrderStatus.COMPLETED],
        "cancelled": statuses[OrderStatus.CANCELLED_UNPAID] + statuses[OrderStatus.CANCELLED_AFTER_AFTERSALE],
        "held": len(d.held),
    }


def _latencies(facts: Facts, d: _Dispatch) -> dict[str, LatencyStats]:
    pay_pushes = {
        str(p["subject_id"]): float(p["queued_at"])
        for p in facts.pushes
        if p["event"] == "channels_ec_order_pay"
    }
    paid: dict[str, OrderPaid] = {}
    for event in facts.paid:
        paid.setdefault(event.order_id, event)
    push_to_paid = [
        event.occurred_at.timestamp() - pay_pushes[order_id]
        for order_id, event in paid.items()
        if order_id in pay_pushes
    ]
    first_offer: dict[str, DispatchOffered] = {}
    for dispatch_id, offer in sorted(d.offered.items(), key=lambda kv: kv[1].occurred_at):
        if not d.is_replacement(dispatch_id):
            first_offer.setdefault(offer.order_id, offer)
    paid_to_dispatched = [
        _seconds(offer.occurred_at, paid[order_id].occurred_at)
        for order_id, offer in first_offer.items()
        if order_id in paid
    ]
    dispatched_to_accepted = [
        _seconds(a.occurred_at, d.offered[i].occurred_at) for i, a in d.accepted.items() if i in d.offered
    ]
    accepted_to_shipped = [
        _seconds(s[0].occurred_at, d.accepted[i].occurred_at)
        for i, s in d.shipped.items()
        if s and i in d.accepted
    ]
    shipped_at: dict[str, datetime] = {}
    for dispatch_id, shipments in d.shipped.items():
        if d.is_replacement(dispatch_id):
            continue
        for shipment in shipments:
            for parcel in shipment.parcels:
                shipped_at.setdefault(parcel.waybill_no, shipment.occurred_at)
    told = _told_calls(facts.calls)
    shipped_to_told = [
        min(float(c["at"]) for c in told[w]) - at.timestamp() for w, at in shipped_at.items() if w in told
    ]
    delivered_at: dict[str, datetime] = {}
    for event in facts.logistics:
        if isinstance(event, ParcelTrackingChanged) and event.state == TrackingState.DELIVERED:
            delivered_at.setdefault(event.parcel.waybill_no, event.occurred_at)
    shipped_to_delivered = [
        _seconds(delivered_at[w], at) for w, at in shipped_at.items() if w in delivered_at
    ]
    return {
        "push→paid event": latency_stats(push_to_paid),
        "paid→dispatched": latency_stats(paid_to_dispatched),
        "dispatched→accepted": latency_stats(dispatched_to_accepted),
        "accepted→shipped": latency_stats(accepted_to_shipped),
        "shipped→WeChat told": latency_stats(shipped_to_told),
        "shipped→delivered": latency_stats(shipped_to_delivered),
    }


def compute_report(facts: Facts, *, seed: int, shops: int, suppliers: int) -> SaleReport:
    d = _Dispatch.of(facts.dispatch)
    ours = _our_cases(facts.aftersale)
    case_types = {str(c["after_sale_order_id"]): str(c["type"]) for c in facts.cases}
    outcomes = Counter(
        f"{c.case_type} → {c.resolution or c.state}" for c in ours.values() if c.case_id in case_types
    )
    invariants = [
        check_lines_dispatched_once(facts.orders, d),
        check_no_duplicate_dispatch(d),
        check_told_once(facts.calls, d, facts.cases),
        check_aftersales_resolved(facts.cases, ours),
        check_pushes_acknowledged(facts.pushes),
        check_orders_ended(facts.orders),
    ]
    failed = [inv for inv in invariants if not inv.ok]
    return SaleReport(
        seed=seed,
        shops=shops,
        suppliers=suppliers,
        stages=_stages(facts, d),
        latency=_latencies(facts, d),
        holds=dict(sorted(Counter(str(h.reason) for h in d.holds).items())),
        dead_letters=dict(
            sorted(Counter(f"{dl.source_topic}: {dl.reason}" for dl in facts.dead_letters).items())
        ),
        dead_letter_samples=[
            f"{dl.source_topic} {dl.order_id} {dl.reason}: {dl.detail[:200]}"
            for dl in facts.dead_letters[:10]
        ],
        aftersale_outcomes=dict(sorted(outcomes.items())),
        wechat_case_statuses=dict(sorted(Counter(f"{c['type']} {c['status']}" for c in facts.cases).items())),
        invariants=invariants,
        order_stories={
            order_id: order_story(facts, order_id)
            for order_id in _offending_orders(
                failed, {str(c["after_sale_order_id"]): str(c["order_id"]) for c in facts.cases}
            )
        },
    )


_LEADING_ORDER_ID = re.compile(r"^(\d+)")


def _offending_orders(invariants: Iterable[Invariant], case_orders: dict[str, str]) -> list[str]:
    """The orders the offenders name (an after-sale case's offender names its case: its order)."""
    ids: list[str] = []
    for inv in invariants:
        found = [
            case_orders.get(m.group(1), m.group(1)) for m in map(_LEADING_ORDER_ID.match, inv.offending) if m
        ]
        for order_id in list(dict.fromkeys(found))[:STORIES_PER_INVARIANT]:
            if order_id not in ids:
                ids.append(order_id)
    return ids


def _event_line(event: Any) -> tuple[float, str]:
    fields = {
        name: getattr(event, name)
        for name in ("dispatch_id", "version", "state", "cause", "case_id", "case_type", "resolution")
        if getattr(event, name, None) is not None
    }
    parcels = getattr(event, "parcels", None)
    if parcels:
        fields["parcels"] = [getattr(p, "waybill_no", "?") for p in parcels]
    described = " ".join(f"{k}={getattr(v, 'value', v)}" for k, v in fields.items())
    return event.occurred_at.timestamp(), f"{type(event).__name__} {described}".rstrip()


def order_story(facts: Facts, order_id: str) -> list[str]:
    """One order's timeline: the calls WeChat received about it, and our events, oldest first."""
    lines: list[tuple[float, str]] = []
    for call in facts.calls:
        request = call.get("request") or {}
        if isinstance(request, dict) and str(request.get("order_id", "")) == order_id:
            lines.append(
                (
                    float(call["at"]),
                    f"WeChat {call['path'].rsplit('/channels/ec/', 1)[-1]} errcode {call['errcode']}",
                )
            )
    for push in facts.pushes:
        if str(push.get("subject_id")) == order_id:
            lines.append((float(push["queued_at"]), f"push {push['event']} ({push.get('status')})"))
    for event in (*facts.dispatch, *facts.logistics, *facts.aftersale):
        if getattr(event, "order_id", None) == order_id:
            lines.append(_event_line(event))
    if not lines:
        return []
    start = min(at for at, _ in lines)
    story = [f"+{at - start:7.2f}s {text}" for at, text in sorted(lines, key=lambda item: item[0])]
    status = next((o["status"] for o in facts.orders if str(o["order_id"]) == order_id), "?")
    return [f"order status at WeChat: {status}", *story]


# --- rendering -----------------------------------------------------------------------------------


def _counts_table(title: str, counts: dict[str, int], key: str = "what") -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column(key)
    table.add_column("count", justify="right")
    for name, count in counts.items():
        table.add_row(name, str(count))
    if not counts:
        table.add_row("(none)", "0")
    return table


def render(report: SaleReport) -> Group:
    stages = _counts_table("Orders per stage", report.stages, "stage")
    latency = Table(title="Latency per stage (real time)", title_justify="left")
    for column in ("stage", "n", "p50 ms", "p95 ms", "p99 ms", "max ms"):
        latency.add_column(column, justify="left" if column == "stage" else "right")
    for name, stats in report.latency.items():
        latency.add_row(
            name,
            str(stats.count),
            f"{stats.p50_ms:.0f}",
            f"{stats.p95_ms:.0f}",
            f"{stats.p99_ms:.0f}",
            f"{stats.max_ms:.0f}",
        )
    invariants = Table(title="Invariants", title_justify="left")
    for column in ("check", "result", "checked", "offending (first)"):
        invariants.add_column(column)
    for inv in report.invariants:
        invariants.add_row(
            inv.name,
            "PASS" if inv.ok else f"FAIL ({inv.offending_count})",
            str(inv.checked),
            "\n".join(inv.offending[:5]),
        )
    parts: list[Any] = [
        f"Sale: seed {report.seed}, {report.shops} shops, {report.suppliers} suppliers, "
        f"{report.duration_s:.1f} s{' (TIMED OUT before quiescence)' if report.timed_out else ''}",
        stages,
        latency,
        _counts_table("Holds by reason", report.holds, "reason"),
        _counts_table("Dead letters by reason", report.dead_letters, "topic: reason"),
        _counts_table("After-sale outcomes (ours)", report.aftersale_outcomes, "type → outcome"),
        _counts_table("After-sale status at WeChat", report.wechat_case_statuses, "type status"),
        _counts_table("Buyers (driver)", report.driver, "step"),
    ]
    if report.driver_errors:
        parts.append(_counts_table("Driver errors", report.driver_errors, "error"))
    if report.driver_request_ms:
        parts.append(
            "Driver control requests (ms): "
            + ", ".join(f"{k} {v:.1f}" for k, v in report.driver_request_ms.items())
        )
    if report.suppliers_totals:
        parts.append(_counts_table("Supplier bots", report.suppliers_totals, "counter"))
    if report.desk:
        parts.append(_counts_table("Operator desk and carrier counter", report.desk, "action"))
    if report.dead_letter_samples:
        parts.append("Dead letter samples:\n  " + "\n  ".join(report.dead_letter_samples))
    parts.append(invariants)
    for order_id, story in report.order_stories.items():
        parts.append(f"Order {order_id}:\n  " + "\n  ".join(story))
    parts.append(f"Result: {'OK' if report.ok else 'FAILED'}")
    return Group(*parts)
