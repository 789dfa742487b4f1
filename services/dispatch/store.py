"""Dispatch state: insert-only version documents, an in-memory projection, and the supplier feed.

Why insert-only: FerretDB 1.24 over SQLite answers inserts and `_id` lookups in about a millisecond
but scans the whole collection for every query that is not an `_id` equality (`$in`, secondary
indexes; see `make bench-store`). Updates by `_id` scanned too when this was designed: FerretDB's
`_id` index bug, fixed in our build since (`shared/versioned.py`). Every change of a plan or a
dispatch order is therefore a new document `<id>#<n>` (n = the version the change follows + 1): a
second writer of the same change collides on the unique `_id`, which makes the write a
compare-and-set on MongoDB and FerretDB alike. Open dispatch orders and held plans are read from
memory, built at start-up from the documents; a final dispatch order or any other plan is read back
from its newest version document when asked for, so memory follows the open work.

The version document is also the feed's record: it carries the feed positions (per supplier, or
`OPS_AUDIENCE` for plan events) of its changes, allocated before the write, so a change is in the
supplier's feed exactly when its document is committed, and cursors survive restarts. A position
whose write failed is a gap; readers see positions only in order, never past one still being written.
The feed keeps the JSON of its newest changes only (suppliers read at the head); an older change is
rendered again from its version document when a supplier reads that far back.

Events are published on Kafka after the commit. Which versions were published is recorded in
batches (`dispatch_relayed`, off the hot path); at start-up, the events of versions not recorded are
published again (same deterministic event ids, so consumers drop copies). In between, a process
remembers the versions it published lately, so a change written again (a redelivered message) is
not published again while it is recent; a copy beyond that is harmless.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from aiokafka import AIOKafkaProducer
from bson import decode
from bson.raw_bson import RawBSONDocument
from pydantic import TypeAdapter
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.dispatch.domain.dispatch_order import DispatchOrder, Transition
from services.dispatch.domain.plan import OrderPlan, PlanStatus
from services.dispatch.idempotency import StoredAnswer
from shared.compact import ModelsAsJson
from shared.db import Document, IndexSpec, InsertBatcher, raw_bson
from shared.events.base import Event, utc_now
from shared.events.dispatch import DISPATCH_EVENTS, DispatchOffered, DispatchState
from shared.kafka.producer import publish_all
from shared.kafka.topics import (
    DISPATCH,
    DISPATCH_AFTERSALE,
    DISPATCH_DROPSHIP,
    DISPATCH_PROGRESS,
    TopicSpec,
    topic_carrying,
)
from shared.locks import KeyedLocks

log = logging.getLogger(__name__)

PLAN_VERSIONS = "dispatch_plan_versions"
ORDER_VERSIONS = "dispatch_order_versions"
FEED = "supplier_feed"  # feed positions before they moved into the version documents: read only
RELAYED = "dispatch_relayed"
INDEXES: list[IndexSpec] = []  # `_id` only: see the module docstring
DISPATCH_TOPICS = (DISPATCH, DISPATCH_PROGRESS)  # what moves goods or units; what only tells
OPS_AUDIENCE = "~ops"  # plan events (holds) are relayed through the same feed, under this name
# How many published versions a process remembers (best effort: about 30 s of a 200 orders/s spike,
# hours of a quiet day). Before that, at start-up, the recorded marks decide what to publish.
RELAYED_REMEMBERED = 20_000
NOTHING_TO_SHOW = b"{}"  # a position whose version has no dispatch order to show (a plan's events)


class VersionConflict(Exception):
    """Another writer changed the aggregate first; re-read and decide again."""


def _version_id(aggregate_id: str, follows: int) -> str:
    return f"{aggregate_id}#{follows + 1:06d}"


@dataclass(frozen=True, slots=True)
class IdempotentRequest:
    """The supplier API request a change answers: its Idempotency-Key (scoped to the supplier) and
    its fingerprint. Kept on the change's version document, which is that key's idempotency record
    (idempotency.py)."""

    key: str
    fingerprint: str


class RequestsCommitted(Protocol):
    """Told of every version document that answers a request: as it is committed, and at start-up."""

    def committed(self, key: str, version_id: str, at: datetime) -> None: ...


@dataclass
class Relay:
    version_id: str
    audience: str
    events: list[Event]
    snapshot: DispatchOrder | None
    written_at: datetime | None = None
    _public_json: bytes | None = None

    @property
    def written_order(self) -> tuple[datetime, str]:
        return (self.written_at or datetime.min.replace(tzinfo=UTC), self.version_id)

    @property
    def public_json(self) -> bytes:
        """The supplier's view of the order as this version committed it, serialized once: the
        `dispatch_order` of each of its feed changes, and the supplier API's answer to the change."""
        if self.snapshot is None:
            return NOTHING_TO_SHOW
        if self._public_json is None:
            self._public_json = public_json(self.snapshot)
        return self._public_json

    def body(self, index: int, seq: int) -> bytes:
        """The feed change of the version's `index`th event at position `seq` (a FeedChange's JSON)."""
        if self.snapshot is None or index >= len(self.events):
            return NOTHING_TO_SHOW
        return feed_change_json(seq, self.events[index], self.public_json)

    def entries(self, seqs: Sequence[int]) -> list[FeedEntry]:
        if len(seqs) != len(self.events):
            raise ValueError(f"{self.version_id}: {len(seqs)} positions for {len(self.events)} events")
        return [FeedEntry(seq, self.version_id, self.body(index, seq)) for index, seq in enumerate(seqs)]


_DATETIME = TypeAdapter(datetime)


def public_json(order: DispatchOrder) -> bytes:
    """The supplier's view of a dispatch order (DispatchOrderPublic) as JSON."""
    return order.public().model_dump_json().encode()


def feed_change_json(seq: int, event: Event, dispatch_order_json: bytes) -> bytes:
    """A FeedChange's JSON, put together around the order's JSON, serialized once per version."""
    return b'{"cursor":%d,"change":%s,"occurred_at":%s,"dispatch_order":%s}' % (
        seq,
        json.dumps(event.event_type).encode(),
        _DATETIME.dump_json(event.occurred_at),
        dispatch_order_json,
    )


@dataclass(frozen=True, slots=True)
class OrderGist:
    """What scans of every dispatch order read (the list filters, the backlog gauges, stock caps),
    kept beside the order's JSON so that a scan parses nothing."""

    supplier_id: str
    order_id: str
    state: DispatchState
    updated_at: datetime
    live_allocations: tuple[tuple[str, int], ...]  # (route id, units) it holds of capped routes

    @classmethod
    def of(cls, order: DispatchOrder) -> OrderGist:
        return cls(
            order.supplier_id,
            order.order_id,
            order.state,
            order.updated_at,
            tuple(_live_allocations(order).items()),
        )


@dataclass(slots=True)
class FeedEntry:
    seq: int
    version_id: str
    # The FeedChange serialized once; None when not cached (rendered from the version document).
    json: bytes | None


class SupplierFeed:
    """Per-supplier ordered changes. An entry is readable once its version document is written and
    every position before it is written or abandoned (see the module docstring). The JSON of the
    newest `cached_changes` changes is kept; older entries keep only their position and version."""

    def __init__(self, cached_changes: int = 5_000) -> None:
        self._cached_changes = cached_changes
        self._cached: deque[FeedEntry] = deque()
        self._entries: dict[str, list[FeedEntry]] = defaultdict(list)
        self._next_seq: dict[str, int] = defaultdict(lambda: 1)
        self._settled: dict[str, dict[int, FeedEntry | None]] = defaultdict(dict)  # beyond the visible
        self._visible_seq: dict[str, int] = defaultdict(int)  # every position up to here is settled
        self._changed: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._closing = False

    def restore(self, entries: Iterable[tuple[str, FeedEntry]]) -> None:
        """At start-up: the committed entries, from the version documents (uncached: JSON None)."""
        for audience, entry in sorted(entries, key=lambda item: (item[0], item[1].seq)):
            self._entries[audience].append(entry)
        for audience, listed in self._entries.items():
            self._next_seq[audience] = listed[-1].seq + 1
            self._visible_seq[audience] = listed[-1].seq

    def reserve(self, audience: str, count: int) -> list[int]:
        first = self._next_seq[audience]
        self._next_seq[audience] = first + count
        return list(range(first, first + count))

    def commit(self, audience: str, entries: Sequence[FeedEntry]) -> None:
        settled = self._settled[audience]
        for entry in entries:
            settled[entry.seq] = entry
        self._advance(audience)

    def abandon(self, audience: str, seqs: Iterable[int]) -> None:
        """Positions whose write failed: gaps, so later ones are not held back."""
        settled = self._settled[audience]
        for seq in seqs:
            settled[seq] = None
        self._advance(audience)

    def _advance(self, audience: str) -> None:
        settled, visible = self._settled[audience], self._visible_seq[audience]
        appended = False
        while visible + 1 in settled:
            visible += 1
            entry = settled.pop(visible)
            if entry is not None:
                self._entries[audience].append(entry)
                self._cache(entry)
                appended = True
        self._visible_seq[audience] = visible
        if appended:
            self._changed[audience].set()
            self._changed[audience] = asyncio.Event()

    def _cache(self, entry: FeedEntry) -> None:
        if entry.json is None or entry.json == NOTHING_TO_SHOW:
            return
        self._cached.append(entry)
        while len(self._cached) > self._cached_changes:
            self._cached.popleft().json = None

    def after(self, audience: str, cursor: int, limit: int) -> list[FeedEntry]:
        """Up to `limit` readable entries after `cursor`; an entry's JSON may need rendering (None)."""
        entries = self._entries.get(audience, [])
        start = bisect.bisect_right(entries, cursor, key=lambda e: e.seq)
        return [e for e in entries[start : start + limit] if e.json != NOTHING_TO_SHOW]

    def _last_seq(self, audience: str) -> int:
        entries = self._entries.get(audience)
        return entries[-1].seq if entries else 0

    async def wait(self, audience: str, cursor: int, timeout_s: float) -> None:
        """Return when the audience has a readable entry after `cursor`, at the timeout, or at shutdown."""
        if self._last_seq(audience) > cursor or timeout_s <= 0 or self._closing:
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


def within_reads(entries: list[FeedEntry], most: int) -> list[FeedEntry]:
    """The entries before the first whose JSON would take more than `most` version documents read
    back (at least one): a supplier far behind the cache gets shorter pages, and the database a
    bounded load per poll (pages of 500 uncached changes, one read each, once swamped FerretDB)."""
    versions: set[str] = set()
    for index, entry in enumerate(entries):
        if entry.json is None and entry.version_id not in versions:
            if len(versions) >= max(1, most):
                return entries[:index]
            versions.add(entry.version_id)
    return entries


class DispatchStore:
    def __init__(
        self,
        db: AsyncDatabase[Document],
        producer: AIOKafkaProducer,
        *,
        mark_interval_s: float = 1.0,
        feed_cached_changes: int = 5_000,
        read_backs_at_once: int = 8,
        mirror_follows: Callable[[Event], Awaitable[bool]] | None = None,
        aftersale_follows: Callable[[Event], bool] | None = None,
    ) -> None:
        self._plans_collection = db[PLAN_VERSIONS]
        self._orders_collection = db[ORDER_VERSIONS]
        self._marks_collection = db[RELAYED]
        self._legacy_feed = db[FEED]
        self._plan_inserts = InsertBatcher(self._plans_collection)
        self._order_inserts = InsertBatcher(self._orders_collection)
        self.feed = SupplierFeed(feed_cached_changes)
        # Version documents read back (feed pages, final orders), across all callers: suppliers far
        # behind the cache get their pages more slowly instead of swamping the database (20 behind at
        # 50 reads a page once put a thousand lookups on FerretDB at once, and every API call waited).
        self._read_backs = asyncio.Semaphore(read_backs_at_once)
        self._producer = producer
        # Whether the WeChat drop-ship mirror reads an event: it gets a copy on its own topic.
        self._mirror_follows = mirror_follows
        # Whether aftersale follows the event's order (an open case): it gets a copy on its own topic.
        self._aftersale_follows = aftersale_follows
        # Told of the versions that answer supplier API requests (the Idempotency-Key index): set
        # before load(), which names those already written.
        self.requests: RequestsCommitted | None = None
        # Held plans only: the hold scans read them all. Any other plan is read when a later order
        # event or a rejection arrives for it (a few orders in a sale), from its newest version
        # document: a dispatched plan in memory took 1 KB per open order, 15 MiB at a sale's peak.
        self._held_plans: ModelsAsJson[OrderPlan] = ModelsAsJson(OrderPlan)
        self._plan_revisions: dict[str, int] = {}
        # Open dispatch orders, read by supplier commands and order events a few times each: kept as
        # JSON (1.1 KB against 3.5 KB as pydantic objects). A final one (shipped, cancelled, rejected)
        # is read back from its newest version document when an after-sale or a supplier asks for it,
        # so memory follows the open work, not the history. Every order keeps the gist scans read.
        self._open_orders: ModelsAsJson[DispatchOrder] = ModelsAsJson(DispatchOrder)
        self.gists: dict[str, OrderGist] = {}
        self._order_revisions: dict[str, int] = {}  # the `n` of the newest version document
        self.by_supplier: dict[str, list[str]] = defaultdict(list)
        self.by_order: dict[str, list[str]] = defaultdict(list)
        self._locks = KeyedLocks()
        self._allocated: dict[str, int] = {}
        self._allocating: dict[str, int] = {}  # decided, not yet written (see hold_allocations)
        self._holding: dict[str, dict[str, int]] = {}  # dispatch id -> its units in _allocating
        # Versions published lately, so a redelivered change is not published again (a copy is
        # harmless: consumers drop it by event id). Bounded: all of them would grow with the history.
        self._relayed: dict[str, None] = {}
        self._unmarked: list[str] = []  # published, not yet recorded as such
        self._mark_interval_s = mark_interval_s
        self._marker: asyncio.Task[None] | None = None

    def lock(self, order_id: str) -> AbstractAsyncContextManager[None]:
        """Serializes the changes of one WeChat order (its plan and dispatch orders) in this process."""
        return self._locks.hold(order_id)

    # --- start-up and shutdown ---
    async def load(self) -> int:
        """Build the projection and the feeds; publish what a crash left unpublished. Returns how many
        versions were published again.

        The version collections are streamed, each document decoded only down to its top level: a
        feed position needs no model (an order's change is rendered when read), so only each order's
        and plan's newest revision is validated, and only the versions still to publish (or named
        by a legacy position) become relays. Start-up memory and CPU follow the open work, not the
        history (every version held as a dict and validated made both grow with every sale)."""
        started = time.monotonic()
        read = 0
        relayed: set[str] = set()
        async for mark in self._marks_collection.find({}):
            relayed.update(mark["version_ids"])
        legacy_feed = [d async for d in self._legacy_feed.find({})]  # positions written before v2
        legacy_ids = {d["version_id"] for d in legacy_feed}
        relayed |= legacy_ids
        codec_options = self._orders_collection.codec_options
        entries: list[tuple[str, FeedEntry]] = []
        to_relay: dict[str, Relay] = {}  # unpublished versions, and those legacy positions name
        # Newest revisions as BSON bytes (a raw sub-document can be a view of its whole version
        # document: bytes keep only its own).
        newest_orders: dict[str, tuple[int, str, bytes]] = {}  # revision, created_at (ISO), order
        newest_plans: dict[str, tuple[int, bytes]] = {}

        def take_version(document: RawBSONDocument, entry_json: bytes | None, has_order: bool) -> None:
            """A version's feed positions, and its relay when one is needed."""
            version_id = document["_id"]
            has_events = bool(document.get("events"))
            feed = document.get("feed")
            if feed:
                audience = feed["audience"]
                entries.extend((audience, FeedEntry(seq, version_id, entry_json)) for seq in feed["seqs"])
            elif has_events and version_id not in relayed:
                log.warning("version %s predates feed positions and was never relayed", version_id)
                relayed.add(version_id)
            if (has_events and version_id not in relayed) or version_id in legacy_ids:
                decoded = decode(document.raw, codec_options)
                snapshot = DispatchOrder.model_validate(decoded["order"]) if has_order else None
                to_relay[version_id] = _relay_of(decoded, snapshot)

        async for document in raw_bson(self._orders_collection).find({}):
            read += 1
            take_version(document, None, has_order=True)  # None: the change is rendered when read
            request = document.get("request")
            if request is not None and self.requests is not None:
                self.requests.committed(request["key"], document["_id"], document["written_at"])
            kept_order = newest_orders.get(document["dispatch_id"])
            if kept_order is None or document["revision"] > kept_order[0]:
                order = document["order"]
                created_at = order["created_at"]
                newest_orders[document["dispatch_id"]] = (document["revision"], created_at, bytes(order.raw))
        async for document in raw_bson(self._plans_collection).find({}):
            read += 1
            if document.get("events"):
                take_version(document, NOTHING_TO_SHOW, has_order=False)
            kept_plan = newest_plans.get(document["order_id"])
            if kept_plan is None or document["revision"] > kept_plan[0]:
                newest_plans[document["order_id"]] = (document["revision"], bytes(document["plan"].raw))

        for position in legacy_feed:
            relay = to_relay.get(position["version_id"])
            seq = position["seq"]
            body = relay.body(position.get("index", 0), seq) if relay is not None else NOTHING_TO_SHOW
            entries.append((position["audience"], FeedEntry(seq, position["version_id"], body)))
        self.feed.restore(entries)

        # One model at a time: only the open orders stay in memory as models.
        by_creation = sorted(newest_orders.values(), key=lambda item: item[1])
        newest_orders.clear()
        for revision, _, raw in by_creation:
            self._remember_order(DispatchOrder.model_validate(decode(raw, codec_options)), revision)
        for order_id, (revision, raw) in newest_plans.items():
            if revision > self._plan_revisions.get(order_id, 0):
                self._keep_plan(OrderPlan.model_validate(decode(raw, codec_options)))
                self._plan_revisions[order_id] = revision
        pending = sorted(
            (relay for version_id, relay in to_relay.items() if relay.events and version_id not in relayed),
            key=lambda relay: relay.written_order,
        )
        for relay in pending:
            await self.relay(relay)
        self._marker = asyncio.create_task(self._mark_forever())
        log.info(
            "loaded dispatch: %d version documents, %d orders open, %d republished in %.1f s",
            read,
            len(self._open_orders),
            len(pending),
            time.monotonic() - started,
        )
        return len(pending)

    async def close(self) -> None:
        """Stop the marker, recording what was published (a copy more is harmless; one less is not)."""
        self.feed.close()
        if self._marker is not None:
            self._marker.cancel()
            await asyncio.gather(self._marker, return_exceptions=True)
        await self._mark()

    async def _mark_forever(self) -> None:
        while True:
            await asyncio.sleep(self._mark_interval_s)
            try:
                await self._mark()
            except Exception:  # the next round retries; at worst a restart publishes copies
                log.exception("recording published versions failed")

    async def _mark(self) -> None:
        if not self._unmarked:
            return
        version_ids, self._unmarked = self._unmarked, []
        try:
            await self._marks_collection.insert_one(
                {"_id": uuid.uuid4().hex, "version_ids": version_ids, "written_at": utc_now()}
            )
        except BaseException:
            self._unmarked[:0] = version_ids
            raise

    def _remember_order(self, order: DispatchOrder, revision: int) -> None:
        self._release(order.dispatch_id)  # its held units are counted as written below
        previous = self.gists.get(order.dispatch_id)
        if previous is None:
            self.by_supplier[order.supplier_id].append(order.dispatch_id)
            self.by_order[order.order_id].append(order.dispatch_id)
        else:
            self._count_allocations(previous, -1)
        gist = self.gists[order.dispatch_id] = OrderGist.of(order)
        self._count_allocations(gist, +1)
        if order.is_final:
            self._open_orders.discard(order.dispatch_id)
        else:
            self._open_orders[order.dispatch_id] = order
        self._order_revisions[order.dispatch_id] = revision

    # --- reads ---
    async def order(self, dispatch_id: str) -> DispatchOrder | None:
        """The dispatch order as last written: from memory while open, else from its version document."""
        kept = self._open_orders.get(dispatch_id)
        if kept is not None:
            return kept
        revision = self._order_revisions.get(dispatch_id)
        if revision is None:
            return None
        version_id = _version_id(dispatch_id, revision - 1)
        document = await self._read_version(version_id)
        if document is None:  # written before it was remembered: never expected
            raise LookupError(f"dispatch order version {version_id} is not stored")
        return DispatchOrder.model_validate(document["order"])

    async def orders(self, dispatch_ids: Sequence[str]) -> list[DispatchOrder]:
        """These dispatch orders (unknown ids left out), in the order asked."""
        if all(d in self._open_orders for d in dispatch_ids):  # the usual case: no read, no tasks
            return [self._open_orders[d] for d in dispatch_ids]
        found = await asyncio.gather(*(self.order(d) for d in dispatch_ids))
        return [order for order in found if order is not None]

    async def orders_of(self, order_id: str) -> list[DispatchOrder]:
        """The WeChat order's dispatch orders, oldest first."""
        return await self.orders(self.by_order.get(order_id, []))

    def is_open(self, dispatch_id: str) -> bool:
        return dispatch_id in self._open_orders

    def supplier_gists(self, supplier_id: str) -> list[tuple[str, OrderGist]]:
        """(dispatch id, gist) of the supplier's dispatch orders, oldest first."""
        return [(d, self.gists[d]) for d in self.by_supplier.get(supplier_id, [])]

    async def plan(self, order_id: str) -> OrderPlan | None:
        """The order's plan as last written: from memory while held, else from its version document."""
        kept = self._held_plans.get(order_id)
        if kept is not None:
            return kept
        revision = self._plan_revisions.get(order_id)
        if revision is None:
            return None
        version_id = _version_id(f"plan:{order_id}", revision - 1)
        # Not behind `_read_backs`: an order event or a rejection waits on it, under the order's lock.
        document = await self._plans_collection.find_one({"_id": version_id})
        if document is None:  # written before it was remembered: never expected
            raise LookupError(f"plan version {version_id} is not stored")
        return OrderPlan.model_validate(document["plan"])

    def held_plan(self, order_id: str) -> OrderPlan | None:
        """The order's plan if it is on hold now (no read)."""
        return self._held_plans.get(order_id)

    def held_plans(self) -> list[OrderPlan]:
        """Oldest hold first: that order gets a capped route first when routes change."""
        plans = [self._held_plans[order_id] for order_id in self._held_plans]
        return sorted(plans, key=lambda p: (p.held_since or datetime.min.replace(tzinfo=UTC), p.order_id))

    def _keep_plan(self, plan: OrderPlan) -> None:
        if plan.status == PlanStatus.HELD:
            self._held_plans[plan.order_id] = plan
        else:
            self._held_plans.discard(plan.order_id)

    def allocated(self) -> dict[str, int]:
        """Units each capped route has given to dispatch orders still live or shipped (kept as orders
        change, so routing a paid order does not scan every order), with those decided and still
        being written."""
        if not self._allocating:
            return self._allocated
        merged = dict(self._allocated)
        for route_id, units in self._allocating.items():
            merged[route_id] = merged.get(route_id, 0) + units
        return merged

    def hold_allocations(self, transitions: Sequence[Transition]) -> list[str]:
        """Count these changes' stock-cap units at once, before their writes: orders decided while
        they are written (other orders of the batch, the next batch) see the cap already taken.
        Each change's units move to the written count when it is remembered; `release_allocations`
        gives back those of changes that were not written."""
        held: list[str] = []
        for transition in transitions:
            order = transition.order
            delta = dict(_live_allocations(order))
            previous = self.gists.get(order.dispatch_id)
            if previous is not None:
                for route_id, units in previous.live_allocations:
                    delta[route_id] = delta.get(route_id, 0) - units
            delta = {route_id: units for route_id, units in delta.items() if units}
            if not delta:
                continue
            self._release(order.dispatch_id)  # the lock serializes an order's changes: none is left
            self._holding[order.dispatch_id] = delta
            for route_id, units in delta.items():
                self._allocating[route_id] = self._allocating.get(route_id, 0) + units
            held.append(order.dispatch_id)
        return held

    def release_allocations(self, dispatch_ids: Iterable[str]) -> None:
        for dispatch_id in dispatch_ids:
            self._release(dispatch_id)

    def _release(self, dispatch_id: str) -> None:
        for route_id, units in self._holding.pop(dispatch_id, {}).items():
            left = self._allocating.get(route_id, 0) - units
            if left:
                self._allocating[route_id] = left
            else:
                self._allocating.pop(route_id, None)

    def _count_allocations(self, gist: OrderGist, sign: int) -> None:
        for route_id, units in gist.live_allocations:
            self._allocated[route_id] = self._allocated.get(route_id, 0) + sign * units

    # --- writes ---
    async def save_transition(
        self, transition: Transition, *, cause: str, request: IdempotentRequest | None = None
    ) -> Relay | None:
        """Commit one dispatch order change (compare-and-set on its revision), then announce it.
        Returns what was committed (None: the transition changed nothing)."""
        relay = await self.write_transition(transition, cause=cause, request=request)
        if relay is not None:
            await self.relay(relay)
        return relay

    async def write_transition(
        self, transition: Transition, *, cause: str, request: IdempotentRequest | None = None
    ) -> Relay | None:
        """Commit one dispatch order change (in its supplier's feed from then on); what to publish.
        `request`: the supplier API request it answers, kept on its version document."""
        if not transition.changed:
            return None
        order = transition.order
        created = isinstance(transition.events[0], DispatchOffered)
        revision = 0 if created else self._order_revisions.get(order.dispatch_id, 0)
        version_id = _version_id(order.dispatch_id, revision)
        relay = Relay(version_id, order.supplier_id, list(transition.events), order)
        seqs = self.feed.reserve(relay.audience, len(relay.events))
        document: Document = {
            "_id": version_id,
            "dispatch_id": order.dispatch_id,
            "supplier_id": order.supplier_id,
            "revision": revision + 1,
            "cause": cause,
            "order": order.model_dump(mode="json"),
            "events": [e.model_dump(mode="json") for e in transition.events],
            "feed": {"audience": relay.audience, "seqs": seqs},
            "written_at": utc_now(),
        }
        if request is not None:
            document["request"] = {"key": request.key, "fingerprint": request.fingerprint}
        try:
            await self._order_inserts.insert(document)
        except DuplicateKeyError as exc:
            self.feed.abandon(relay.audience, seqs)
            stored = await self._orders_collection.find_one({"_id": version_id})
            if stored is None or stored.get("cause") != cause:
                raise VersionConflict(f"{order.dispatch_id} changed meanwhile") from exc
            # The same change, written before (its feed positions are the stored ones): carry on.
            order = DispatchOrder.model_validate(stored["order"])
            relay = _relay_of(stored, order)
            document = stored
        except BaseException:
            self.feed.abandon(relay.audience, seqs)
            raise
        else:
            self.feed.commit(relay.audience, relay.entries(seqs))
        self._remember_order(order, revision + 1)
        answered = document.get("request")
        if answered is not None and self.requests is not None:
            self.requests.committed(answered["key"], version_id, document["written_at"])
        return relay

    async def committed_answer(self, version_id: str) -> StoredAnswer | None:
        """The supplier API's answer to the request a version document answers: the order as that
        version committed it (what the request was answered with), rebuilt from the document."""
        document = await self._read_version(version_id)
        request = document.get("request") if document is not None else None
        if document is None or request is None:
            return None
        return StoredAnswer(
            request["fingerprint"], 200, public_json(DispatchOrder.model_validate(document["order"]))
        )

    async def save_plan(self, plan: OrderPlan, events: Sequence[Event], *, cause: str) -> None:
        relay = await self.write_plan(plan, events, cause=cause)
        if relay is not None:
            await self.relay(relay)

    async def write_plan(self, plan: OrderPlan, events: Sequence[Event], *, cause: str) -> Relay | None:
        revision = self._plan_revisions.get(plan.order_id, 0)
        version_id = _version_id(f"plan:{plan.order_id}", revision)
        relay = Relay(version_id, OPS_AUDIENCE, list(events), None)
        seqs = self.feed.reserve(OPS_AUDIENCE, len(relay.events))
        document: Document = {
            "_id": version_id,
            "order_id": plan.order_id,
            "revision": revision + 1,
            "cause": cause,
            "plan": plan.model_dump(mode="json"),
            "events": [e.model_dump(mode="json") for e in events],
            "written_at": utc_now(),
        }
        if seqs:
            document["feed"] = {"audience": OPS_AUDIENCE, "seqs": seqs}
        try:
            await self._plan_inserts.insert(document)
        except DuplicateKeyError as exc:
            self.feed.abandon(OPS_AUDIENCE, seqs)
            stored = await self._plans_collection.find_one({"_id": version_id})
            if stored is None or stored.get("cause") != cause:
                raise VersionConflict(f"plan {plan.order_id} changed meanwhile") from exc
            plan = OrderPlan.model_validate(stored["plan"])
            relay = _relay_of(stored, None)
        except BaseException:
            self.feed.abandon(OPS_AUDIENCE, seqs)
            raise
        else:
            self.feed.commit(OPS_AUDIENCE, relay.entries(seqs))
        self._keep_plan(plan)
        self._plan_revisions[plan.order_id] = revision + 1
        return relay if relay.events else None

    async def feed_bodies(self, entries: Sequence[FeedEntry]) -> list[bytes]:
        """The JSON of feed entries (one audience's): cached, or rendered from their version documents."""
        # Taken before any read: a change saved meanwhile can push an entry's JSON out of the cache.
        cached = [(e, e.json) for e in entries]
        uncached = list(dict.fromkeys(e.version_id for e, json in cached if json is None))
        if not uncached:  # the long polls at the head: no I/O
            return [json or b"" for _, json in cached]
        rendered: dict[int, bytes] = {}
        # One `_id` lookup each: FerretDB scans the collection for `$in`.
        documents = await asyncio.gather(*(self._read_version(v) for v in uncached))
        for version_id, document in zip(uncached, documents, strict=True):
            if document is None:  # a position is committed with its document: never expected
                raise LookupError(f"feed version {version_id} is not stored")
            relay = _relay_of(document, DispatchOrder.model_validate(document["order"]))
            rendered.update(
                (entry.seq, entry.json or b"") for entry in relay.entries(document["feed"]["seqs"])
            )
        return [json if json is not None else rendered[e.seq] for e, json in cached]

    async def _read_version(self, version_id: str) -> Document | None:
        async with self._read_backs:
            return await self._orders_collection.find_one({"_id": version_id})

    async def relay(self, relay: Relay) -> None:
        """Publish a committed change's events on Kafka (once per process; recorded in batches)."""
        if relay.version_id in self._relayed:
            return
        sends: list[tuple[TopicSpec, Event]] = []
        for event in relay.events:
            sends.append((topic_carrying(event.event_type, DISPATCH_TOPICS), event))
            if self._mirror_follows is not None and await self._mirror_follows(event):
                sends.append((DISPATCH_DROPSHIP, event))
            if self._aftersale_follows is not None and self._aftersale_follows(event):
                sends.append((DISPATCH_AFTERSALE, event))
        await publish_all(self._producer, sends)
        self._relayed[relay.version_id] = None
        while len(self._relayed) > RELAYED_REMEMBERED:
            del self._relayed[next(iter(self._relayed))]
        self._unmarked.append(relay.version_id)


def _live_allocations(order: DispatchOrder) -> dict[str, int]:
    """Stock-cap units the order holds: none once it was cancelled or rejected (given back)."""
    if order.state in (DispatchState.CANCELLED, DispatchState.REJECTED):
        return {}
    return order.allocations


def _relay_of(document: Document, snapshot: DispatchOrder | None) -> Relay:
    events: list[Event] = [DISPATCH_EVENTS.validate_python(e) for e in document.get("events", [])]
    audience = snapshot.supplier_id if snapshot is not None else OPS_AUDIENCE
    return Relay(document["_id"], audience, events, snapshot, document.get("written_at"))
