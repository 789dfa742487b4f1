"""Aftersale handlers: a WeChat after-sale push, a dispatch or logistics event about the order, an
operator's decision, or the clock each load the case and the order's fulfilment, ask the pure state
machine what follows, carry out its actions (WeChat calls, instructions to dispatch on
`aftersale.instructions`) and store the case.

Aftersale reads the dispatch changes of the orders it follows only (`dispatch.aftersale`): a case
asks dispatch to follow its order, and is decided once dispatch's snapshot of the order answered
(`OrderFulfilment.knows_for`); until then its facts are kept and nothing is decided, so it never
stops lines or refunds on "nothing known" when the goods have shipped. An ended case lets go."""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from prometheus_client import Counter, Gauge, Histogram
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.aftersale.domain.case import (
    Action,
    ActionKind,
    Case,
    Policy,
    decide,
    next_look,
    refund_refused_for_now,
)
from services.aftersale.fulfilment import (
    OrderFulfilment,
    apply_dispatch_event,
    apply_snapshot,
    apply_tracking,
    stage_for,
    units_dropped,
)
from shared.events.aftersale import (
    AffectedLine,
    CancelLinesRequested,
    CaseType,
    CaseUpdated,
    FollowRequested,
    InterceptRequested,
    ReshipRequested,
    ReturnExpected,
    UnfollowRequested,
)
from shared.events.base import Event, utc_now
from shared.events.dead_letter import DeadLetterReason
from shared.events.dispatch import (
    DISPATCH_AFTERSALE_EVENTS,
    DispatchEvent,
    DispatchFulfilmentSnapshot,
    ShippingAddress,
    SupplierReturnReceived,
)
from shared.events.logistics import LOGISTICS_EVENTS, ParcelTrackingChanged
from shared.events.shop_events import WeChatPushReceived
from shared.kafka.consumer import InboundMessage, PermanentFailure
from shared.kafka.producer import publish_all
from shared.kafka.topics import AFTERSALE, AFTERSALE_INSTRUCTIONS, DISPATCH_AFTERSALE, topic_carrying
from shared.versioned import VersionedProjection
from shared.wechat.client import WeChatApiError

log = logging.getLogger(__name__)

AFTERSALE_TOPICS = (AFTERSALE, AFTERSALE_INSTRUCTIONS)  # case facts; instructions to dispatch
# Dispatch's snapshots of followed orders and copies of their changes (each moves goods or units).
DISPATCH_EVENTS_ACTED_ON = DISPATCH_AFTERSALE.carries
GET_CASE = "/channels/ec/aftersale/getaftersaleorder"
ACCEPT = "/channels/ec/aftersale/acceptapply"
REJECT = "/channels/ec/aftersale/rejectapply"
ACCEPT_EXCHANGE_RESHIP = "/channels/ec/aftersale/acceptexchangereship"
REFUND_TOO_SOON = 10021059

CASES = Counter("lvyue_aftersale_cases_total", "After-sale cases seen, by type.", ["type"])
OUTCOMES = Counter(
    "lvyue_aftersale_outcomes_total", "Cases ended, by type and resolution.", ["type", "resolution"]
)
ACTIONS = Counter(
    "lvyue_aftersale_actions_total", "Actions carried out, by kind and result.", ["kind", "result"]
)
OPEN_CASES = Gauge("lvyue_aftersale_open_cases", "Open cases, by our state.", ["state"])
NEAR_DEADLINE = Gauge(
    "lvyue_aftersale_cases_near_deadline", "Open cases within the warning window of WeChat's deadline."
)
RESOLUTION_SECONDS = Histogram(
    "lvyue_aftersale_resolution_seconds",
    "From the case's creation at WeChat to its end, by type.",
    ["type"],
    buckets=(1, 10, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 72 * 3600, 7 * 24 * 3600),
)


class ShopPolicies:
    """The policy of each shop (set with `lvyue aftersale policy`), the default otherwise."""

    def __init__(self, stored: VersionedProjection[ShopPolicy], default: Policy) -> None:
        self._stored = stored
        self._default = default

    async def save(self, policy: ShopPolicy) -> ShopPolicy:
        return await self._stored.save(policy.shop_id, policy, cause=f"policy:{policy.model_dump_json()}")

    async def reload(self) -> set[str]:
        """Read the policies again (set by another process); the shops whose policy changed."""
        before = {record.shop_id: record for record in self._stored}
        await self._stored.load()
        after = {record.shop_id: record for record in self._stored}
        return {shop for shop in before.keys() | after.keys() if before.get(shop) != after.get(shop)}

    def of(self, shop_id: str) -> Policy:
        record = self._stored.get(shop_id)
        if record is None:
            return self._default
        return Policy(
            auto_refund_before_shipment=record.auto_refund_before_shipment,
            auto_approve_under_fen=record.auto_approve_under_fen,
            deadline_warning=self._default.deadline_warning,
        )


class Aftersale:
    def __init__(
        self,
        *,
        cases: VersionedProjection[Case],
        orders: VersionedProjection[OrderFulfilment],
        created: dict[str, datetime],
        policies: ShopPolicies,
        wechat: Any,
        producer: AIOKafkaProducer,
        return_addresses: Callable[[str], ShippingAddress | None],
        clock: Callable[[], datetime] = utc_now,
        retry_after: timedelta = timedelta(seconds=5),
    ) -> None:
        self.cases = cases
        self.orders = orders
        self._created = created
        self.policies = policies
        self._wechat = wechat
        self._producer = producer
        self._return_addresses = return_addresses
        self.clock = clock
        self._retry_after = retry_after
        # Open cases only, so nothing here grows with the cases ever seen: by order, for the events
        # that move an order's goods, and by the time the clock alone can move them (`next_look`).
        self._open_by_order: dict[str, set[str]] = {}
        self._looks: list[tuple[datetime, str]] = []
        # Open cases that asked dispatch to follow their order in this process, until its snapshot
        # answers (after a restart, the first tick asks again for those still waiting).
        self._asked: set[str] = set()

    def index(self) -> None:
        """After loading the cases: the open ones, and when each must be looked at."""
        now = self.clock()
        for case in self.cases:
            self._keep_place(case, now, plan_past=True)

    def _keep_place(self, case: Case, now: datetime, *, plan_past: bool) -> None:
        """Keep an open case's place (by order, by time of its next look); forget a final one. After
        a change the next look is planned even if its time passed (looked at on the next tick)."""
        if case.final:
            open_cases = self._open_by_order.get(case.order_id)
            if open_cases is not None:
                open_cases.discard(case.case_id)
                if not open_cases:
                    del self._open_by_order[case.order_id]
            return
        self._open_by_order.setdefault(case.order_id, set()).add(case.case_id)
        look = next_look(case, self.policies.of(case.shop_id))
        if look is not None and (plan_past or look > now):
            heapq.heappush(self._looks, (look, case.case_id))

    def open_cases(self) -> list[Case]:
        return [
            case
            for ids in self._open_by_order.values()
            for case_id in ids
            if (case := self.cases.get(case_id)) is not None
        ]

    # --- inputs ---
    async def handle_aftersale_push(self, message: InboundMessage) -> None:
        try:
            push = WeChatPushReceived.model_validate_json(message.value)
            info = push.payload["finder_shop_aftersale_status_update"]
            case_id = str(info["after_sale_order_id"])
        except (ValidationError, KeyError, TypeError) as exc:
            raise PermanentFailure(
                DeadLetterReason.UNDECODABLE, f"not an after-sale push: {exc}"[:1000]
            ) from exc
        await self.refresh_from_wechat(push.shop_id, case_id, cause=f"push:{push.dedupe_key}")

    async def refresh_from_wechat(self, shop_id: str, case_id: str, *, cause: str) -> Case:
        """Read the case as WeChat has it now (a duplicate or late push reads the same) and decide."""
        try:
            answer = await self._wechat.call(shop_id, GET_CASE, {"after_sale_order_id": case_id})
        except WeChatApiError as exc:
            if exc.transient:
                raise
            raise PermanentFailure(DeadLetterReason.PERMANENT_API_ERROR, str(exc)) from exc
        document = answer["after_sale_order"]
        async with self.cases.lock(case_id):
            case = self.cases.get(case_id)
            facts = _facts_from_wechat(document)
            if case is None:
                product = document.get("product_info", {})
                case = Case(
                    case_id=case_id,
                    order_id=str(document["order_id"]),
                    shop_id=shop_id,
                    case_type=CaseType(document["type"]),
                    lines=[
                        AffectedLine(
                            product_id=str(product["product_id"]),
                            sku_id=str(product["sku_id"]),
                            count=int(product.get("count", 1)),
                        )
                    ],
                    **facts,
                )
                CASES.labels(case.case_type).inc()
                self._created[case_id] = datetime.fromtimestamp(int(document.get("create_time", 0)), UTC)
            else:
                case = case.model_copy(update=facts)
            return await self._decide_and_act(case, cause=cause)

    async def handle_dispatch_event(self, message: InboundMessage) -> None:
        if message.skippable(DISPATCH_EVENTS_ACTED_ON):
            return
        try:
            event = DISPATCH_AFTERSALE_EVENTS.validate_json(message.value)
        except ValidationError as exc:
            raise PermanentFailure(DeadLetterReason.UNDECODABLE, str(exc)[:1000]) from exc
        if isinstance(event, DispatchFulfilmentSnapshot):
            await self._snapshot(event)
            return
        await self._update_order(
            event.order_id, event.shop_id, cause=str(event.event_id), dispatch_event=event
        )
        if isinstance(event, SupplierReturnReceived):
            await self._case_fact(
                event.instruction.case_id, supplier_received=True, cause=str(event.event_id)
            )
        aftersale_case_id = getattr(event, "aftersale_case_id", None)
        if event.event_type == "dispatch_shipped":
            view = self.orders.get(event.order_id)
            replacement = view.dispatch.get(event.dispatch_id) if view else None
            if replacement is not None and replacement.aftersale_case_id and replacement.replacement_waybill:
                aftersale_case_id = replacement.aftersale_case_id
                await self._case_fact(
                    aftersale_case_id,
                    replacement_shipped=replacement.replacement_waybill,
                    cause=str(event.event_id),
                )
        await self.reconsider_order(event.order_id, cause=str(event.event_id))

    async def _snapshot(self, snapshot: DispatchFulfilmentSnapshot) -> None:
        """Dispatch follows the order for this case from now on: the order's dispatch orders as they
        stand, and the facts only they tell (returns received, replacements shipped)."""
        cause = str(snapshot.event_id)
        await self._update_order(snapshot.order_id, snapshot.shop_id, cause=cause, snapshot=snapshot)
        self._asked.discard(snapshot.case_id)
        order = self.orders.get(snapshot.order_id)
        for facts in snapshot.dispatch_orders:
            for case_id in facts.returns_received:
                await self._case_fact(case_id, supplier_received=True, cause=cause)
            view = order.dispatch.get(facts.dispatch_id) if order else None
            if view is not None and view.aftersale_case_id and view.replacement_waybill:
                await self._case_fact(
                    view.aftersale_case_id, replacement_shipped=view.replacement_waybill, cause=cause
                )
        await self.reconsider_order(snapshot.order_id, cause=cause)

    async def handle_logistics_event(self, message: InboundMessage) -> None:
        try:
            event = LOGISTICS_EVENTS.validate_json(message.value)
        except ValidationError as exc:
            raise PermanentFailure(DeadLetterReason.UNDECODABLE, str(exc)[:1000]) from exc
        if isinstance(event, ParcelTrackingChanged):
            await self._update_order(event.order_id, event.shop_id, cause=str(event.event_id), tracking=event)
            await self.reconsider_order(event.order_id, cause=str(event.event_id))

    async def _update_order(
        self,
        order_id: str,
        shop_id: str,
        *,
        cause: str,
        dispatch_event: DispatchEvent | None = None,
        tracking: ParcelTrackingChanged | None = None,
        snapshot: DispatchFulfilmentSnapshot | None = None,
    ) -> None:
        async with self.orders.lock(order_id):
            current = self.orders.get(order_id) or OrderFulfilment(order_id=order_id, shop_id=shop_id)
            updated = current
            if snapshot is not None:
                updated = apply_snapshot(updated, snapshot)
            if dispatch_event is not None:
                updated = apply_dispatch_event(updated, dispatch_event)
            if tracking is not None:
                updated = apply_tracking(updated, tracking)
            if updated != current:
                await self.orders.save(order_id, updated, cause=cause)

    async def _case_fact(self, case_id: str, *, cause: str, **facts: Any) -> None:
        async with self.cases.lock(case_id):
            case = self.cases.get(case_id)
            if case is None or all(getattr(case, k) == v for k, v in facts.items()):
                return
            saved = await self.cases.save(case_id, case.model_copy(update=facts), cause=f"{cause}:fact")
            self._keep_place(saved, self.clock(), plan_past=True)

    async def reconsider_order(self, order_id: str, *, cause: str) -> None:
        for case_id in sorted(self._open_by_order.get(order_id, ())):
            async with self.cases.lock(case_id):
                current = self.cases.get(case_id)
                if current is not None:
                    await self._decide_and_act(current, cause=cause)

    async def operator_decides(self, case_id: str, decision: str, reason: str) -> Case:
        async with self.cases.lock(case_id):
            case = self.cases.get(case_id)
            if case is None:
                raise KeyError(case_id)
            case = case.model_copy(update={"operator_decision": decision, "operator_reason": reason})
            return await self._decide_and_act(case, cause=f"operator:{decision}:{self.clock().isoformat()}")

    async def open_reship(self, case: Case) -> Case:
        """An operator's re-ship (补发): a case of our own, decided like the others."""
        async with self.cases.lock(case.case_id):
            CASES.labels(case.case_type).inc()
            self._created[case.case_id] = self.clock()
            return await self._decide_and_act(case, cause=f"reship:{case.case_id}")

    async def tick(self) -> None:
        """The cases whose next look came (deferred refunds whose minute has passed, deadline
        warnings), then the gauges, then the follows still to ask for: only open cases are read."""
        now = self.clock()
        due: dict[str, None] = {}
        while self._looks and self._looks[0][0] <= now:
            due[heapq.heappop(self._looks)[1]] = None
        for case_id in due:
            async with self.cases.lock(case_id):
                current = self.cases.get(case_id)
                if current is None or current.final:
                    continue
                try:
                    decided = await self._decide_and_act(current, cause=f"tick:{now.isoformat()}")
                except Exception:  # WeChat or Kafka failed: looked at again shortly
                    log.exception("after-sale case %s: a timed step failed", case_id)
                    continue
                if decided == current:  # unchanged (a change was followed when it was saved)
                    self._keep_place(decided, now, plan_past=False)
        open_cases = self.open_cases()
        OPEN_CASES.clear()
        for case in open_cases:
            if case.state is not None:
                OPEN_CASES.labels(case.state).inc()
        NEAR_DEADLINE.set(sum(case.deadline_warned for case in open_cases if case.state is not None))
        await self.ask_follows()

    async def reconsider_shop(self, shop_id: str | None, *, cause: str) -> None:
        """Every open case of a shop whose policy changed (None: of every shop, when return addresses
        changed). A case whose step fails is looked at again shortly; the others go on."""
        for case in [c for c in self.open_cases() if shop_id is None or c.shop_id == shop_id]:
            async with self.cases.lock(case.case_id):
                current = self.cases.get(case.case_id)
                if current is None:
                    continue
                try:
                    await self._decide_and_act(current, cause=cause)
                except Exception:
                    log.exception("after-sale case %s: reconsidering it failed", case.case_id)

    # --- the state machine and its actions ---
    async def _decide_and_act(self, case: Case, *, cause: str) -> Case:
        """Decide the case and carry its actions out; a step that fails (WeChat, Kafka) is looked at
        again after `retry_after` whoever asked, besides the caller's own retries."""
        try:
            return await self._decide_and_act_once(case, cause=cause)
        except BaseException:
            heapq.heappush(self._looks, (self.clock() + self._retry_after, case.case_id))
            raise

    async def _decide_and_act_once(self, case: Case, *, cause: str) -> Case:
        now = self.clock()
        if not case.final:
            # Followed before the order's goods are read: an event that moves them while this decision
            # is saved finds the case and waits for its lock, then looks at it again.
            self._open_by_order.setdefault(case.order_id, set()).add(case.case_id)
        order = self.orders.get(case.order_id)
        events: list[Event] = []
        if case.final or (order is not None and order.knows_for(case.case_id)):
            case, events = await self._decide(case, order, now)
        elif case.case_id not in self._asked:
            # Where the goods are is not known yet: the case's facts are kept and nothing is decided
            # until dispatch's snapshot answers (its handler looks at the open cases of the order).
            events.append(FollowRequested(order_id=case.order_id, shop_id=case.shop_id, case_id=case.case_id))
        stored = self.cases.get(case.case_id)
        if stored is None or stored != case:
            case = await self.cases.save(case.case_id, case, cause=f"{cause}:{case.version}")
            self._keep_place(case, now, plan_past=True)
        if case.state is not None and (stored is None or stored.state != case.state):
            events.append(
                CaseUpdated(
                    order_id=case.order_id,
                    shop_id=case.shop_id,
                    case_id=case.case_id,
                    case_type=case.case_type,
                    state=case.state,
                    wechat_status=case.wechat_status,
                    resolution=case.resolution,
                    reason=case.timeline[-1].reason if case.timeline else "",
                    version=case.version,
                )
            )
            if case.final and case.resolution is not None:
                OUTCOMES.labels(case.case_type, case.resolution).inc()
                created = self._created.get(case.case_id)
                if created is not None and created.timestamp() > 0:
                    RESOLUTION_SECONDS.labels(case.case_type).observe(
                        max(0.0, (now - created).total_seconds())
                    )
        if case.final and stored is not None and not stored.final:
            # Asked to follow when it was opened: dispatch stops copying once no case of the order asks.
            events.append(
                UnfollowRequested(order_id=case.order_id, shop_id=case.shop_id, case_id=case.case_id)
            )
            self._asked.discard(case.case_id)
        await publish_all(
            self._producer, [(topic_carrying(e.event_type, AFTERSALE_TOPICS), e) for e in events]
        )
        if any(isinstance(e, FollowRequested) for e in events):
            self._asked.add(case.case_id)
        return case

    async def _decide(
        self, case: Case, order: OrderFulfilment | None, now: datetime
    ) -> tuple[Case, list[Event]]:
        """Ask the state machine with where the case's goods are, and carry out its actions."""
        refund = case.case_type == CaseType.REFUND
        if refund and case.dropped_before is None:
            case = case.model_copy(update={"dropped_before": units_dropped(order, case.lines)})
        fulfilment = stage_for(
            order, case.lines, unshipped_first=refund, dropped_before=case.dropped_before or ()
        )
        decision = decide(case, fulfilment, self.policies.of(case.shop_id), now)
        case = decision.case
        events: list[Event] = []
        for action in decision.actions:
            case, produced = await self._carry_out(
                case,
                action,
                fulfilment_dispatch_id=fulfilment.dispatch_id,
                waybills=list(fulfilment.waybills),
            )
            events.extend(produced)
            if (
                action.kind == ActionKind.ACCEPT
                and case.refund_not_before is not None
                and case.refund_not_before > now
            ):
                break  # refund deferred: the rest waits for the next minute
        return case, events

    async def ask_follows(self) -> None:
        """Ask dispatch to follow the order of each open case still waiting for its snapshot and not
        asked in this process. On every tick: the first after start-up asks for the cases of a crash's
        lost asks, and for those opened while aftersale read every dispatch change (an upgrade); later
        ones for an ask whose publish failed."""
        waiting = [
            case
            for case in self.open_cases()
            if case.case_id not in self._asked
            and not ((order := self.orders.get(case.order_id)) is not None and order.knows_for(case.case_id))
        ]
        if not waiting:
            return
        await publish_all(
            self._producer,
            [
                (
                    AFTERSALE_INSTRUCTIONS,
                    FollowRequested(order_id=c.order_id, shop_id=c.shop_id, case_id=c.case_id),
                )
                for c in waiting
            ],
        )
        self._asked.update(c.case_id for c in waiting)

    async def _carry_out(
        self,
        case: Case,
        action: Action,
        *,
        fulfilment_dispatch_id: str | None,
        waybills: list[tuple[str, str]],
    ) -> tuple[Case, list[Event]]:
        base = {"order_id": case.order_id, "shop_id": case.shop_id, "case_id": case.case_id}
        match action.kind:
            case ActionKind.ACCEPT:
                try:
                    await self._wechat.call(case.shop_id, ACCEPT, {"after_sale_order_id": case.case_id})
                except WeChatApiError as exc:
                    if exc.errcode == REFUND_TOO_SOON:
                        ACTIONS.labels(action.kind, "deferred").inc()
                        return refund_refused_for_now(case, self.clock()), []
                    ACTIONS.labels(action.kind, f"errcode_{exc.errcode}").inc()
                    raise
                ACTIONS.labels(action.kind, "ok").inc()
                return await self._reread(case), []
            case ActionKind.REJECT:
                await self._wechat.call(
                    case.shop_id,
                    REJECT,
                    {
                        "after_sale_order_id": case.case_id,
                        "reject_reason_type": 1,
                        "reject_reason": case.operator_reason or "rejected by the merchant",
                    },
                )
                ACTIONS.labels(action.kind, "ok").inc()
                return await self._reread(case), []
            case ActionKind.ACCEPT_EXCHANGE_RESHIP:
                assert case.replacement_shipped is not None
                delivery_id, waybill_id = case.replacement_shipped
                await self._wechat.call(
                    case.shop_id,
                    ACCEPT_EXCHANGE_RESHIP,
                    {
                        "after_sale_order_id": case.case_id,
                        "waybill_id": waybill_id,
                        "delivery_id": delivery_id,
                    },
                )
                ACTIONS.labels(action.kind, "ok").inc()
                return await self._reread(case), []
            case ActionKind.CANCEL_LINES:
                ACTIONS.labels(action.kind, "ok").inc()
                return case, [CancelLinesRequested(**base, lines=case.lines)]
            case ActionKind.INTERCEPT:
                ACTIONS.labels(action.kind, "ok").inc()
                return case, [
                    InterceptRequested(**base, dispatch_id=fulfilment_dispatch_id or "", waybills=waybills)
                ]
            case ActionKind.EXPECT_RETURN:
                address = self._return_addresses(self._supplier_of(case, fulfilment_dispatch_id))
                if address is None or fulfilment_dispatch_id is None:
                    ACTIONS.labels(action.kind, "no_return_address").inc()
                    log.warning(
                        "case %s: no supplier return address; the return instruction waits", case.case_id
                    )
                    return case.model_copy(
                        update={"sent": [k for k in case.sent if not k.startswith("expect_return")]}
                    ), []
                ACTIONS.labels(action.kind, "ok").inc()
                return case, [
                    ReturnExpected(
                        **base,
                        dispatch_id=fulfilment_dispatch_id,
                        lines=case.lines,
                        return_address=address,
                        return_waybill=case.return_waybill,
                    )
                ]
            case ActionKind.RESHIP:
                ACTIONS.labels(action.kind, "ok").inc()
                return case, [
                    ReshipRequested(
                        **base,
                        dispatch_id=fulfilment_dispatch_id or "",
                        lines=case.lines,
                        replacement_sku_id=case.exchange_sku_id,
                        deadline=case.deadline,
                    )
                ]
            case ActionKind.WARN_DEADLINE:
                ACTIONS.labels(action.kind, "ok").inc()
                log.warning(
                    "case %s of order %s is near WeChat's deadline %s",
                    case.case_id,
                    case.order_id,
                    case.deadline,
                )
                return case, []
        raise AssertionError(f"unhandled action {action.kind}")

    def _supplier_of(self, case: Case, dispatch_id: str | None) -> str:
        view = self.orders.get(case.order_id)
        if view is None or dispatch_id is None or dispatch_id not in view.dispatch:
            return ""
        return view.dispatch[dispatch_id].supplier_id

    async def _reread(self, case: Case) -> Case:
        """WeChat's status after our call (the push that follows reads the same)."""
        answer = await self._wechat.call(case.shop_id, GET_CASE, {"after_sale_order_id": case.case_id})
        return case.model_copy(update=_facts_from_wechat(answer["after_sale_order"]))


def _facts_from_wechat(document: dict[str, Any]) -> dict[str, Any]:
    return_info = document.get("return_info") or {}
    exchange = document.get("exchange_product_info") or {}
    deadline = document.get("deadline")
    return {
        "wechat_status": str(document.get("status", "")),
        "refund_fen": int((document.get("refund_info") or {}).get("amount", 0)),
        "deadline": datetime.fromtimestamp(int(deadline), UTC) if deadline else None,
        "return_waybill": (
            (str(return_info["delivery_id"]), str(return_info["waybill_id"]))
            if return_info.get("waybill_id")
            else None
        ),
        "exchange_sku_id": str(exchange["sku_id"]) if exchange.get("sku_id") else None,
    }


class ShopPolicy(BaseModel):
    """A shop's after-sale policy, as stored."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    shop_id: str
    auto_refund_before_shipment: bool = True
    auto_approve_under_fen: int = Field(default=0, ge=0)
