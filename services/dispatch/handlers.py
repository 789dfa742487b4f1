"""Dispatch handlers: one per order event and per supplier command. They load the aggregate from
the store, ask the pure domain what to do, and commit what it decided."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol, assert_never

from prometheus_client import Counter, Gauge, Histogram
from pydantic import ValidationError

from services.dispatch.aftersale_follows import AftersaleFollows
from services.dispatch.catalog import Catalog
from services.dispatch.domain import dispatch_order as dispatch
from services.dispatch.domain import plan as planning
from services.dispatch.domain.dispatch_order import DispatchOrder, Transition
from services.dispatch.domain.plan import PlanOutcome, PlanStatus, RoutingContext
from services.dispatch.domain.routing import Route
from services.dispatch.store import DispatchStore, IdempotentRequest, OrderGist, public_json
from shared.events.aftersale import (
    AFTERSALE_EVENTS,
    CancelLinesRequested,
    FollowRequested,
    InterceptRequested,
    ReshipRequested,
    ReturnExpected,
    UnfollowRequested,
)
from shared.events.base import utc_now
from shared.events.dead_letter import DeadLetterReason
from shared.events.dispatch import (
    AftersaleInstruction,
    AftersaleInstructionKind,
    DispatchState,
    InstructionLine,
    OrderHeld,
    WaybillRef,
)
from shared.events.orders import (
    ORDER_EVENTS,
    OrderAddressChanged,
    OrderCancelled,
    OrderCompleted,
    OrderPaid,
    OrderShippingUrged,
    OrderSkuChanged,
)
from shared.kafka.consumer import InboundMessage, PermanentFailure

log = logging.getLogger(__name__)

GAUGE_INTERVAL_S = 15.0

ORDER_EVENTS_HANDLED = Counter(
    "lvyue_dispatch_order_events_total",
    "Order events handled by dispatch, by type and result.",
    ["event_type", "result"],
)
TRANSITIONS = Counter(
    "lvyue_dispatch_transitions_total", "Dispatch order changes, by event type.", ["event_type"]
)
HOLDS = Gauge("lvyue_dispatch_holds", "Orders on hold now, by reason.", ["reason"])
HOLDS_PLACED = Counter("lvyue_dispatch_holds_placed_total", "Orders put on hold, by reason.", ["reason"])
BACKLOG = Gauge(
    "lvyue_dispatch_backlog",
    "Dispatch orders waiting on a supplier, by supplier and state.",
    ["supplier", "state"],
)
_STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 72 * 3600)
STAGE_SECONDS = Histogram(
    "lvyue_dispatch_stage_seconds",
    "Time between fulfilment stages: paid->dispatched, dispatched->accepted, accepted->shipped.",
    ["stage"],
    buckets=_STAGE_BUCKETS,
)


class DispatchNotFound(Exception):
    pass


@dataclass(frozen=True)
class CommandDone:
    """A supplier command's result: the dispatch order as it now is, its supplier view as JSON (the
    bytes its feed changes carry), and whether a version document was written for it."""

    order: DispatchOrder
    public_json: bytes
    committed: bool


class LineKeys(Protocol):
    """What routing reads of a line (an order line or a dispatch line)."""

    @property
    def product_id(self) -> str: ...

    @property
    def sku_id(self) -> str: ...

    @property
    def sku_code(self) -> str: ...


# A write that bypassed the catalog (an operator's shell) is seen within this long.
FULL_CATALOG_READ_EVERY_S = 60.0


class RouteBook:
    """The routes and active suppliers, reloaded from the catalog; a change retries the holds.
    Indexed by what a route matches, so routing a line looks at its candidates only."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        full_read_every_s: float = FULL_CATALOG_READ_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._catalog = catalog
        self._index: dict[tuple[str, ...], list[Route]] = {}
        self._active: set[str] = set()
        self._fingerprint: tuple[object, ...] = ()
        self._revision: int | None = None
        self._full_read_every_s = full_read_every_s
        self._next_full_read = 0.0
        self._clock = clock
        self.generation = 0  # bumped by every change: a decision knows which routes it saw

    async def reload(self) -> bool:
        """True if anything changed since the last load. Routes and suppliers are read again only when
        the catalog's revision moved, or every `full_read_every_s` for a write made around the catalog."""
        revision = await self._catalog.revision()
        now = self._clock()
        if revision == self._revision and now < self._next_full_read:
            return False
        # The revision is read first: a write during the reads below moves it, and the next round reloads.
        self._revision, self._next_full_read = revision, now + self._full_read_every_s
        routes = await self._catalog.routes()
        suppliers = await self._catalog.suppliers()
        fingerprint = (tuple(routes), tuple(sorted((s.supplier_id, s.active) for s in suppliers)))
        if fingerprint == self._fingerprint:
            return False
        index: dict[tuple[str, ...], list[Route]] = defaultdict(list)
        for route in routes:
            if route.product_id:
                index[(route.shop_id, "sku", route.product_id, route.sku_id)].append(route)
            elif route.sku_code:
                index[(route.shop_id, "code", route.sku_code)].append(route)
            else:
                index[(route.shop_id, "default")].append(route)
        self._index = dict(index)
        self._active = {s.supplier_id for s in suppliers if s.active}
        self._fingerprint = fingerprint
        self.generation += 1
        return True

    def context(self, shop_id: str, lines: Iterable[LineKeys], allocated: dict[str, int]) -> RoutingContext:
        """The routes that can match these lines, with their stock caps' current use."""
        candidates: dict[str, Route] = {}
        for line in lines:
            keys = [(shop_id, "sku", line.product_id, line.sku_id), (shop_id, "default")]
            if line.sku_code:
                keys.append((shop_id, "code", line.sku_code))
            for key in keys:
                for route in self._index.get(key, ()):
                    candidates[route.route_id] = route
        routes = [
            replace(r, allocated=allocated.get(r.route_id, 0)) if r.stock_cap is not None else r
            for r in candidates.values()
        ]
        return RoutingContext(routes=routes, active_suppliers=self._active)


class Dispatcher:
    def __init__(
        self,
        store: DispatchStore,
        routes: RouteBook,
        follows: AftersaleFollows,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store = store
        self.routes = routes
        self.follows = follows  # the orders whose changes the store copies to aftersale
        self._clock = clock

    # --- order events (Kafka) ---
    async def handle_order_event(self, message: InboundMessage) -> None:
        try:
            event = ORDER_EVENTS.validate_json(message.value)
        except ValidationError as exc:
            raise PermanentFailure(DeadLetterReason.UNDECODABLE, str(exc)[:1000]) from exc
        if isinstance(event, OrderShippingUrged | OrderCompleted):
            ORDER_EVENTS_HANDLED.labels(event.event_type, "not_for_dispatch").inc()
            return
        now = self._clock()
        async with self.store.lock(event.order_id):
            plan = await self.store.plan(event.order_id)  # from the database unless held (store.py)
            orders = await self.store.orders_of(event.order_id)
            outcome: PlanOutcome
            match event:
                case OrderPaid():
                    outcome = planning.on_paid(plan, event, self._context(event.shop_id, event.lines), now)
                case OrderCancelled():
                    outcome = planning.on_cancelled(plan, orders, event, now)
                case OrderAddressChanged():
                    outcome = planning.on_address_changed(plan, orders, event, now)
                case OrderSkuChanged():
                    outcome = planning.on_sku_changed(
                        plan, orders, event, self._context(event.shop_id, event.lines), now
                    )
                case _:
                    assert_never(event)
            await self._commit(outcome, cause=str(event.event_id))
        if isinstance(event, OrderPaid) and outcome.transitions:
            STAGE_SECONDS.labels("paid_to_dispatched").observe(
                max(0.0, (now - event.paid_at).total_seconds())
            )
        ORDER_EVENTS_HANDLED.labels(event.event_type, "applied" if outcome.plan else "no_change").inc()

    def _context(self, shop_id: str, lines: Iterable[LineKeys]) -> RoutingContext:
        return self.routes.context(shop_id, lines, self.store.allocated())

    async def _commit(self, outcome: PlanOutcome, *, cause: str) -> None:
        # Called right after the decision, with nothing awaited in between (and with the order's lock
        # held): the stock caps it took are counted before any other order is routed, and the routes
        # it was decided with are the current generation.
        generation = self.routes.generation
        held = self.store.hold_allocations(outcome.transitions)
        try:
            await self._write(outcome, cause=cause)
        finally:
            self.store.release_allocations(held)
        plan = outcome.plan
        if plan is not None and plan.status == PlanStatus.HELD and self.routes.generation != generation:
            # Routes changed while this hold was written: the scan of held orders may have missed it.
            retried = planning.retry_hold(plan, self._context(plan.shop_id, plan.lines), self._clock())
            await self._commit(retried, cause=f"retry:{uuid.uuid4()}")

    async def _write(self, outcome: PlanOutcome, *, cause: str) -> None:
        # Dispatch orders first, the plan last: the plan's version is the commit point a redelivered
        # event is checked against, and a recomputed change finds its dispatch orders already written.
        # The dispatch orders are written together, then the plan; only then is anything announced
        # (an unannounced write is relayed at start-up), all at once: one round trip per step.
        written = await asyncio.gather(
            *(self.store.write_transition(t, cause=cause) for t in outcome.transitions)
        )
        for transition in outcome.transitions:
            for event in transition.events:
                TRANSITIONS.labels(event.event_type).inc()
        relays = [r for r in written if r is not None]
        if outcome.plan is not None:
            plan_relay = await self.store.write_plan(outcome.plan, outcome.plan_events, cause=cause)
            if plan_relay is not None:
                relays.append(plan_relay)
        await asyncio.gather(*(self.store.relay(r) for r in relays))
        if outcome.plan is not None:
            for held in outcome.plan_events:
                if isinstance(held, OrderHeld):
                    HOLDS_PLACED.labels(held.reason).inc()

    # --- after-sale instructions (Kafka) ---
    async def handle_aftersale_event(self, message: InboundMessage) -> None:
        try:
            event = AFTERSALE_EVENTS.validate_json(message.value)
        except ValidationError as exc:
            raise PermanentFailure(DeadLetterReason.UNDECODABLE, str(exc)[:1000]) from exc
        now = self._clock()
        cause = str(event.event_id)
        async with self.store.lock(event.order_id):
            orders = await self.store.orders_of(event.order_id)
            transitions: list[Transition] = []
            outcome = PlanOutcome(None)
            match event:
                case CancelLinesRequested():
                    budget = {(line.product_id, line.sku_id): line.count for line in event.lines}
                    for order in orders:
                        if order.is_final or order.aftersale_case_id is not None:
                            continue
                        units = {k: v for k, v in budget.items() if v > 0}
                        lines = dispatch.pending_lines(order)
                        if not any((line.product_id, line.sku_id) in units for line in lines):
                            continue
                        transitions.append(dispatch.reduce_lines(order, units=units, now=now))
                        for line in lines:
                            key = (line.product_id, line.sku_id)
                            if key in budget:
                                budget[key] -= min(budget[key], line.remaining)
                case InterceptRequested() | ReturnExpected():
                    target = await self.store.order(event.dispatch_id)
                    if target is not None and target.order_id == event.order_id:
                        transitions.append(dispatch.instruct(target, _instruction(event, now), now=now))
                case ReshipRequested():
                    outcome = planning.on_reship(
                        await self.store.plan(event.order_id),
                        orders,
                        case_id=event.case_id,
                        replaces=event.dispatch_id,
                        units=[(line.product_id, line.sku_id, line.count) for line in event.lines],
                        replacement_sku_id=event.replacement_sku_id,
                        now=now,
                    )
                case FollowRequested() | UnfollowRequested():
                    # Under the order's lock, as the store's copies are decided: nothing in between.
                    await self.follows.apply(event, orders)
                    return
                case _:
                    return  # the case's own record: not an instruction
            outcome = PlanOutcome(
                outcome.plan, [*outcome.transitions, *(t for t in transitions if t.changed)]
            )
            await self._commit(outcome, cause=cause)

    # --- holds ---
    async def retry_holds(self) -> int:
        """Route held orders again (after routes or suppliers changed); returns how many were released."""
        released = 0
        for held in self.store.held_plans():
            async with self.store.lock(held.order_id):
                plan = self.store.held_plan(held.order_id)
                if plan is None:  # released while this waited for the lock
                    continue
                outcome = planning.retry_hold(plan, self._context(plan.shop_id, plan.lines), self._clock())
                await self._commit(outcome, cause=f"retry:{uuid.uuid4()}")
                released += bool(outcome.transitions)
        return released

    async def watch_routes(self, interval_s: float) -> None:
        next_gauges = 0.0
        while True:
            try:
                if await self.routes.reload():
                    released = await self.retry_holds()
                    if released:
                        log.info("routes changed: %d held orders released", released)
                if time.monotonic() >= next_gauges:  # a scan of every order: not at every reload
                    self.update_gauges()
                    next_gauges = time.monotonic() + GAUGE_INTERVAL_S
            except Exception:  # the next round retries; the service keeps serving
                log.exception("reloading routes failed")
            await asyncio.sleep(interval_s)

    def update_gauges(self) -> None:
        counts: dict[tuple[str, str], int] = {}
        for gist in self.store.gists.values():
            if gist.state in (
                DispatchState.OFFERED,
                DispatchState.ACCEPTED,
                DispatchState.PARTIALLY_SHIPPED,
            ):
                key = (gist.supplier_id, gist.state.value)
                counts[key] = counts.get(key, 0) + 1
        BACKLOG.clear()
        for (supplier, state), count in counts.items():
            BACKLOG.labels(supplier, state).set(count)
        HOLDS.clear()
        for plan in self.store.held_plans():
            HOLDS.labels(plan.hold_reason or "").inc()

    # --- supplier commands (HTTP) ---
    def _owned(self, supplier_id: str, dispatch_id: str) -> OrderGist:
        """The gist of the supplier's own dispatch order: 404 for another's id, as for an unknown one."""
        gist = self.store.gists.get(dispatch_id)
        if gist is None or gist.supplier_id != supplier_id:
            raise DispatchNotFound(dispatch_id)
        return gist

    async def get_for_supplier(self, supplier_id: str, dispatch_id: str) -> DispatchOrder:
        self._owned(supplier_id, dispatch_id)
        order = await self.store.order(dispatch_id)
        if order is None:
            raise DispatchNotFound(dispatch_id)
        return order

    async def run_command(
        self,
        supplier_id: str,
        dispatch_id: str,
        decide: Callable[[DispatchOrder, datetime], Transition],
        *,
        cause: str,
        request: IdempotentRequest | None = None,
    ) -> CommandDone:
        """Apply one supplier command: a 404 for another supplier's id, DispatchError for a refusal.
        `request`: the API request it answers, kept with the change (its idempotency record)."""
        # The gist names the WeChat order to lock; the order itself is read once, under the lock.
        async with self.store.lock(self._owned(supplier_id, dispatch_id).order_id):
            order = await self.get_for_supplier(supplier_id, dispatch_id)
            now = self._clock()
            transition = decide(order, now)
            relay = await self.store.save_transition(transition, cause=cause, request=request)
            for event in transition.events:
                TRANSITIONS.labels(event.event_type).inc()
            new = transition.order
            done = (
                CommandDone(new, public_json(new), committed=False)
                if relay is None or relay.snapshot is None
                else CommandDone(relay.snapshot, relay.public_json, committed=True)
            )
            if new.state == DispatchState.REJECTED and order.state != DispatchState.REJECTED:
                plan = await self.store.plan(new.order_id)
                if plan is not None:
                    outcome = planning.on_dispatch_rejected(
                        plan, new, self._context(new.shop_id, plan.lines), now
                    )
                    await self._commit(outcome, cause=cause)
        self._observe_stage(order, new, now)
        return done

    def _observe_stage(self, before: DispatchOrder, after: DispatchOrder, now: datetime) -> None:
        if before.state == DispatchState.OFFERED and after.state == DispatchState.ACCEPTED:
            STAGE_SECONDS.labels("dispatched_to_accepted").observe((now - before.created_at).total_seconds())
        if (
            after.state == DispatchState.SHIPPED
            and before.state != DispatchState.SHIPPED
            and after.accepted_at
        ):
            STAGE_SECONDS.labels("accepted_to_shipped").observe((now - after.accepted_at).total_seconds())


def _instruction(event: InterceptRequested | ReturnExpected, now: datetime) -> AftersaleInstruction:
    if isinstance(event, InterceptRequested):
        return AftersaleInstruction(
            case_id=event.case_id,
            kind=AftersaleInstructionKind.INTERCEPT,
            waybills=[WaybillRef(carrier_code=c, waybill_no=w) for c, w in event.waybills],
            given_at=now,
        )
    return AftersaleInstruction(
        case_id=event.case_id,
        kind=AftersaleInstructionKind.RETURN_EXPECTED,
        lines=[InstructionLine(product_id=x.product_id, sku_id=x.sku_id, count=x.count) for x in event.lines],
        return_address=event.return_address,
        return_waybill=event.return_waybill,
        given_at=now,
    )
