"""Dispatch state: insert-only version documents, an in-memory projection, and the supplier feed.

Why insert-only: FerretDB 1.24 over SQLite answers inserts and `_id` lookups in about a millisecond
but scans the whole collection for every update, delete or secondary-index query (see
`make bench-store`), so an update costs more the more orders there are. Every change of a plan or a
dispatch order is therefore a new document `<id>#<n>` (n = the version the change follows + 1): a
second writer of the same change collides on the unique `_id`, which makes the write a
compare-and-set on MongoDB and FerretDB alike. Reads come from the projection held in memory, built
at start-up from the documents.

Effects are made durable before they are announced: the version document (with its events) is the
commit; events are then published on Kafka and appended to the supplier's feed. A feed entry is
the record that an event was relayed: at start-up, events of version documents with no feed entry
are relayed again (same deterministic event ids, so consumers drop copies).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.dispatch.domain.dispatch_order import DispatchOrder, Transition
from services.dispatch.domain.plan import OrderPlan, PlanStatus
from shared.api.supplier import FeedChange
from shared.db import Document, IndexSpec, InsertBatcher
from shared.events.base import Event, utc_now
from shared.events.dispatch import DISPATCH_EVENTS, DispatchOffered, DispatchState
from shared.kafka.producer import publish
from shared.kafka.topics import DISPATCH

log = logging.getLogger(__name__)

PLAN_VERSIONS = "dispatch_plan_versions"
ORDER_VERSIONS = "dispatch_order_versions"
FEED = "supplier_feed"
INDEXES: list[IndexSpec] = []  # `_id` only: see the module docstring
OPS_AUDIENCE = "~ops"  # plan events (holds) are relayed through the same feed, under this name


class VersionConflict(Exception):
    """Another writer changed the aggregate first; re-read and decide again."""


def _version_id(aggregate_id: str, follows: int) -> str:
    return f"{aggregate_id}#{follows + 1:06d}"


@dataclass
class Relay:
    version_id: str
    audience: str
    events: list[Event]
    snapshot: DispatchOrder | None

    def changes(self) -> list[FeedChange | None]:
        """The feed changes of this version: one per event, each with the order as committed."""
        if self.snapshot is None:
            return [None for _ in self.events]
        public = self.snapshot.public()
        return [
            FeedChange(cursor=0, change=e.event_type, occurred_at=e.occurred_at, dispatch_order=public)
            for e in self.events
        ]


@dataclass(frozen=True)
class FeedEntry:
    seq: int
    version_id: str
    json: bytes  # FeedChange, serialized once


class SupplierFeed:
    """Per-supplier ordered changes. Cursors are durable: an entry is readable only after its
    document (`<supplier>#<seq>`) is written, so a supplier never skips a change after a restart."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._collection = db[FEED]
        self._inserts = InsertBatcher(self._collection)
        self._entries: dict[str, list[FeedEntry]] = defaultdict(list)
        self._next_seq: dict[str, int] = defaultdict(lambda: 1)
        self._committed_seq: dict[str, int] = defaultdict(int)
        self._changed: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._relayed: set[str] = set()
        # Per audience: seq order = write order = read order within one supplier's feed.
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._closing = False

    def relayed(self, version_id: str) -> bool:
        return version_id in self._relayed

    async def load(self, changes_of: Callable[[str], list[FeedChange | None]]) -> None:
        """`changes_of(version_id)`: the feed changes of a version document, rebuilt from it (the feed
        stores only references, so a snapshot is written once, in its version document)."""
        documents = [d async for d in self._collection.find({})]
        rebuilt: dict[str, list[FeedChange | None]] = {}
        for document in sorted(documents, key=lambda d: (d["audience"], d["seq"])):
            audience, version_id = document["audience"], document["version_id"]
            if version_id not in rebuilt:
                rebuilt[version_id] = changes_of(version_id)
            changes = rebuilt[version_id]
            index = document.get("index", 0)
            change = changes[index] if index < len(changes) else None
            self._entries[audience].append(
                FeedEntry(document["seq"], version_id, _body(change, document["seq"]))
            )
            self._next_seq[audience] = document["seq"] + 1
            self._committed_seq[audience] = document["seq"]
            self._relayed.add(document["version_id"])

    async def append(self, audience: str, version_id: str, changes: Sequence[FeedChange | None]) -> None:
        """One entry per change (None: an event with no supplier-facing snapshot, still recorded)."""
        async with self._locks[audience]:
            documents, entries = [], []
            for index, change in enumerate(changes):
                seq = self._next_seq[audience]
                self._next_seq[audience] = seq + 1
                body = _body(change, seq)
                documents.append(
                    {
                        "_id": f"{audience}#{seq:012d}",
                        "audience": audience,
                        "seq": seq,
                        "version_id": version_id,
                        "index": index,
                    }
                )
                entries.append(FeedEntry(seq, version_id, body))
            written = await asyncio.gather(
                *(self._inserts.insert(document) for document in documents), return_exceptions=True
            )
            failures = [w for w in written if isinstance(w, BaseException)]
            if failures:  # another process wrote these seqs: the next append takes later ones
                self._next_seq[audience] += len(documents)
                raise VersionConflict(f"feed {audience}: {failures[0]}") from failures[0]
            self._entries[audience].extend(entries)
            self._committed_seq[audience] = entries[-1].seq if entries else self._committed_seq[audience]
            self._relayed.add(version_id)
        self._changed[audience].set()
        self._changed[audience] = asyncio.Event()

    def after(self, audience: str, cursor: int, limit: int) -> list[FeedEntry]:
        entries = self._entries.get(audience, [])
        start = bisect.bisect_right(entries, cursor, key=lambda e: e.seq)
        return [e for e in entries[start : start + limit] if e.json != b"{}"]

    async def wait(self, audience: str, cursor: int, timeout_s: float) -> None:
        """Return when the audience has a committed entry after `cursor`, at the timeout, or at shutdown."""
        if self._committed_seq[audience] > cursor or timeout_s <= 0 or self._closing:
            return
        changed = self._changed[audience]
        try:
            async with asyncio.timeout(timeout_s):
                await changed.wait()
        except TimeoutError:
            return

    def close(self) -> None:
        """Answer every parked long poll now (shutdown must not wait out their timeouts)."""
        self._closing = True
        for event in self._changed.values():
            event.set()


def _body(change: FeedChange | None, seq: int) -> bytes:
    return b"{}" if change is None else change.model_copy(update={"cursor": seq}).model_dump_json().encode()


class DispatchStore:
    def __init__(self, db: AsyncDatabase[Document], producer: AIOKafkaProducer) -> None:
        self._plans_collection = db[PLAN_VERSIONS]
        self._orders_collection = db[ORDER_VERSIONS]
        self._plan_inserts = InsertBatcher(self._plans_collection)
        self._order_inserts = InsertBatcher(self._orders_collection)
        self.feed = SupplierFeed(db)
        self._producer = producer
        self.plans: dict[str, OrderPlan] = {}
        self._plan_revisions: dict[str, int] = {}
        self.orders: dict[str, DispatchOrder] = {}
        self._order_revisions: dict[str, int] = {}  # the `n` of the newest version document
        self.by_supplier: dict[str, list[str]] = defaultdict(list)
        self.by_order: dict[str, list[str]] = defaultdict(list)
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._allocated: dict[str, int] = {}

    def lock(self, order_id: str) -> asyncio.Lock:
        """Serializes the changes of one WeChat order (its plan and dispatch orders) in this process."""
        return self._locks[order_id]

    # --- start-up ---
    async def load(self) -> int:
        """Build the projection; relay what a crash left unannounced. Returns how many were relayed."""
        versions: dict[str, Relay] = {}
        order_documents = [d async for d in self._orders_collection.find({})]
        plan_documents = [d async for d in self._plans_collection.find({})]
        for document in order_documents:
            versions[document["_id"]] = _relay_of(document, DispatchOrder.model_validate(document["order"]))
        for document in plan_documents:
            if document.get("events"):
                versions[document["_id"]] = _relay_of(document, None)

        def changes_of(version_id: str) -> list[FeedChange | None]:
            relay = versions.get(version_id)
            return [] if relay is None else relay.changes()

        await self.feed.load(changes_of)
        pending: list[Relay] = []
        newest_orders: dict[str, Document] = {}
        for document in order_documents:
            key = document["dispatch_id"]
            if key not in newest_orders or document["revision"] > newest_orders[key]["revision"]:
                newest_orders[key] = document
            if not self.feed.relayed(document["_id"]):
                pending.append(versions[document["_id"]])
        for document in sorted(newest_orders.values(), key=lambda d: d["order"]["created_at"]):
            self._remember_order(DispatchOrder.model_validate(document["order"]), document["revision"])
        for document in plan_documents:
            key = document["order_id"]
            if document["revision"] > self._plan_revisions.get(key, 0):
                self.plans[key] = OrderPlan.model_validate(document["plan"])
                self._plan_revisions[key] = document["revision"]
            if document.get("events") and not self.feed.relayed(document["_id"]):
                pending.append(versions[document["_id"]])
        for relay in pending:
            await self.relay(relay)
        return len(pending)

    def _remember_order(self, order: DispatchOrder, revision: int) -> None:
        previous = self.orders.get(order.dispatch_id)
        if previous is None:
            self.by_supplier[order.supplier_id].append(order.dispatch_id)
            self.by_order[order.order_id].append(order.dispatch_id)
        else:
            self._count_allocations(previous, -1)
        self._count_allocations(order, +1)
        self.orders[order.dispatch_id] = order
        self._order_revisions[order.dispatch_id] = revision

    # --- reads ---
    def orders_of(self, order_id: str) -> list[DispatchOrder]:
        return [self.orders[d] for d in self.by_order.get(order_id, [])]

    def supplier_orders(self, supplier_id: str) -> list[DispatchOrder]:
        return [self.orders[d] for d in self.by_supplier.get(supplier_id, [])]

    def held_plans(self) -> list[OrderPlan]:
        return [p for p in self.plans.values() if p.status == PlanStatus.HELD]

    def allocated(self) -> dict[str, int]:
        """Units each capped route has given to dispatch orders still live or shipped (kept as orders
        change, so routing a paid order does not scan every order)."""
        return self._allocated

    def _count_allocations(self, order: DispatchOrder, sign: int) -> None:
        if order.state in (DispatchState.CANCELLED, DispatchState.REJECTED):
            return
        for route_id, units in order.allocations.items():
            self._allocated[route_id] = self._allocated.get(route_id, 0) + sign * units

    # --- writes ---
    async def save_transition(self, transition: Transition, *, cause: str) -> None:
        """Commit one dispatch order change (compare-and-set on its revision), then announce it."""
        relay = await self.write_transition(transition, cause=cause)
        if relay is not None:
            await self.relay(relay)

    async def write_transition(self, transition: Transition, *, cause: str) -> Relay | None:
        """Commit one dispatch order change; what to announce once the caller's commit is complete."""
        if not transition.changed:
            return None
        order = transition.order
        created = isinstance(transition.events[0], DispatchOffered)
        revision = 0 if created else self._order_revisions.get(order.dispatch_id, 0)
        version_id = _version_id(order.dispatch_id, revision)
        document = {
            "_id": version_id,
            "dispatch_id": order.dispatch_id,
            "supplier_id": order.supplier_id,
            "revision": revision + 1,
            "cause": cause,
            "order": order.model_dump(mode="json"),
            "events": [e.model_dump(mode="json") for e in transition.events],
            "written_at": utc_now(),
        }
        try:
            await self._order_inserts.insert(document)
        except DuplicateKeyError as exc:
            stored = await self._orders_collection.find_one({"_id": version_id})
            if stored is None or stored.get("cause") != cause:
                raise VersionConflict(f"{order.dispatch_id} changed meanwhile") from exc
            # The same change, written before a crash: carry on from what is stored.
            document = stored
            order = DispatchOrder.model_validate(stored["order"])
        self._remember_order(order, revision + 1)
        return _relay_of(document, order)

    async def save_plan(self, plan: OrderPlan, events: Sequence[Event], *, cause: str) -> None:
        relay = await self.write_plan(plan, events, cause=cause)
        if relay is not None:
            await self.relay(relay)

    async def write_plan(self, plan: OrderPlan, events: Sequence[Event], *, cause: str) -> Relay | None:
        revision = self._plan_revisions.get(plan.order_id, 0)
        version_id = _version_id(f"plan:{plan.order_id}", revision)
        document = {
            "_id": version_id,
            "order_id": plan.order_id,
            "revision": revision + 1,
            "cause": cause,
            "plan": plan.model_dump(mode="json"),
            "events": [e.model_dump(mode="json") for e in events],
            "written_at": utc_now(),
        }
        try:
            await self._plan_inserts.insert(document)
        except DuplicateKeyError as exc:
            stored = await self._plans_collection.find_one({"_id": version_id})
            if stored is None or stored.get("cause") != cause:
                raise VersionConflict(f"plan {plan.order_id} changed meanwhile") from exc
            document, plan = stored, OrderPlan.model_validate(stored["plan"])
        self.plans[plan.order_id] = plan
        self._plan_revisions[plan.order_id] = revision + 1
        return _relay_of(document, None) if events else None

    async def relay(self, relay: Relay) -> None:
        """Announce a committed change: Kafka first, then the feed (whose entry records the relay)."""
        if self.feed.relayed(relay.version_id):
            return
        await asyncio.gather(*(publish(self._producer, DISPATCH, event) for event in relay.events))
        await self.feed.append(relay.audience, relay.version_id, relay.changes())


def _relay_of(document: Document, snapshot: DispatchOrder | None) -> Relay:
    events: list[Event] = [DISPATCH_EVENTS.validate_python(e) for e in document.get("events", [])]
    audience = snapshot.supplier_id if snapshot is not None else OPS_AUDIENCE
    return Relay(document["_id"], audience, events, snapshot)
