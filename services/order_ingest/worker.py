"""The ingest worker: raw pushes -> WeChat order detail -> stored order -> normalized order events.

Idempotent by construction: the order is stored by WeChat's `update_time` (an older detail never
overwrites a newer one), events are derived from the newest stored detail and what was already
published (`PublishedFacts`), and event ids are deterministic. A crash between publishing and
recording the facts republishes the same events with the same ids, which consumers drop.

Orders are stored insert-only (`shared/versioned.py`): a new document per change, read back from the
in-memory projection. It was chosen when every update scanned the whole collection (FerretDB's `_id`
index bug, fixed in our build since; see `shared/versioned.py`). The worker runs as one process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any

from aiokafka import AIOKafkaProducer
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ValidationError
from pymongo.asynchronous.database import AsyncDatabase

from services.order_ingest.domain.fetch_policy import (
    detail_after_push,
    push_needs_fetch,
    push_shown_by_stored,
)
from services.order_ingest.domain.order_events import PublishedFacts, PushContext, decide_order_events
from services.order_ingest.domain.push_routing import topic_for_push
from shared.db import Document, IndexSpec
from shared.events.dead_letter import DeadLetterReason
from shared.events.shop_events import RECONCILE_EVENT, WeChatPushReceived
from shared.kafka.consumer import InboundMessage, MessageProcessor, PermanentFailure
from shared.kafka.producer import publish, publish_all
from shared.kafka.topics import ORDERS, ORDERS_COMPLETED, WECHAT_SHOP_EVENTS, TopicSpec, topic_carrying
from shared.versioned import VersionedProjection, revision_id
from shared.wechat.api import ErrCode, Order
from shared.wechat.client import WeChatApiError, WeChatCircuitOpen, WeChatShopClient
from shared.wechat.shops import Shop, ShopCache

log = logging.getLogger(__name__)

ORDERS_COLLECTION = "order_versions"
INDEXES: list[IndexSpec] = []  # `_id` only: see the module docstring
ORDER_EVENT_PREFIX = "channels_ec_order_"
SETTLED_CACHE_SIZE = 100_000
ORDER_TOPICS = (ORDERS, ORDERS_COMPLETED)

PUSHES_HANDLED = Counter(
    "lvyue_ingest_pushes_total",
    "Raw pushes handled by the ingest worker, by event and result.",
    ["event", "result"],
)
ORDER_EVENTS_PUBLISHED = Counter(
    "lvyue_order_events_published_total", "Order events published.", ["event_type"]
)
FETCHES_SAVED = Counter(
    "lvyue_ingest_fetches_saved_total",
    "Order pushes answered from the stored detail (fetched after they arrived, or already showing their"
    " step), without an order/get of their own.",
)
BREAKER_WAITS = Counter(
    "lvyue_ingest_breaker_waits_total", "Times a push waited for a shop's open WeChat circuit breaker."
)
INGEST_LAG = Histogram(
    "lvyue_ingest_lag_seconds",
    "From the webhook storing a push to its order events being published.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def _push_context(push: WeChatPushReceived) -> PushContext:
    info = push.payload.get("order_info")
    info = info if isinstance(info, dict) else {}

    def as_int(name: str) -> int | None:
        value = info.get(name)
        try:
            return None if value in (None, "") else int(value)
        except (TypeError, ValueError):
            return None

    return PushContext(
        event=push.event,
        create_time=push.create_time,
        dedupe_key=push.dedupe_key,
        ext_info_type=as_int("type") if push.event == "channels_ec_order_ext_info_update" else None,
        cancel_type=as_int("cancel_type") if push.event == "channels_ec_order_cancel" else None,
    )


class StoredOrder(BaseModel):
    """The newest WeChat detail of an order and what has been published of it. (Documents written
    before 2026-12-03 also carry the order's status and update_time beside it: ignored on reading.)"""

    shop_id: str
    order: Order
    published: dict[str, Any]


def stored_key(order_id: str) -> str:
    return order_id


def first_version_id(order_id: str) -> str:
    """The document every stored order has (reconciliation asks which orders are stored)."""
    return revision_id(stored_key(order_id), 1)


class IngestWorker:
    def __init__(
        self,
        *,
        db: AsyncDatabase[Document],
        producer: AIOKafkaProducer,
        shops: ShopCache,
        client: WeChatShopClient,
        processor: MessageProcessor,
        breaker_patience_s: float = 300.0,
    ) -> None:
        self._breaker_patience_s = breaker_patience_s
        self._orders: VersionedProjection[StoredOrder] = VersionedProjection(
            db, ORDERS_COLLECTION, StoredOrder, compact=True
        )
        # order id -> update_time of the newest detail whose events are all published. Orders are
        # partitioned by id, so this process is their only writer; the cache only ever skips work
        # (a detail no newer than one fully handled), it never decides what to publish.
        self._settled: OrderedDict[str, int] = OrderedDict()
        # order id -> when the fetch of its stored detail began (unix s): see domain/fetch_policy.py.
        self._fetch_started: OrderedDict[str, float] = OrderedDict()
        self._producer = producer
        self._shops = shops
        self._client = client
        self._processor = processor

    async def load(self) -> int:
        """Read the stored orders into memory; returns how many."""
        await self._orders.load()
        return len(self._orders)

    @property
    def orders(self) -> VersionedProjection[StoredOrder]:
        return self._orders

    def knows(self, order_id: str) -> bool:
        return stored_key(order_id) in self._orders

    async def handle(self, message: InboundMessage) -> None:
        try:
            push = WeChatPushReceived.model_validate_json(message.value)
        except ValidationError as exc:
            raise PermanentFailure(DeadLetterReason.UNDECODABLE, str(exc)[:1000]) from exc
        audience = topic_for_push(push.event)
        if audience is not WECHAT_SHOP_EVENTS:  # stored before the webhook routed pushes, or replayed
            await self._forward(audience, push)
        elif push.event.startswith(ORDER_EVENT_PREFIX) or push.event == RECONCILE_EVENT:
            await self._ingest_order(push)
            INGEST_LAG.observe(max(0.0, time.time() - push.occurred_at.timestamp()))
        else:
            PUSHES_HANDLED.labels(push.event, "ignored").inc()
            return
        PUSHES_HANDLED.labels(push.event, "ok").inc()

    async def _forward(self, topic: TopicSpec, push: WeChatPushReceived) -> None:
        await publish(self._producer, topic, push)

    async def _ingest_order(self, push: WeChatPushReceived) -> None:
        if push.order_id is None:
            raise PermanentFailure(DeadLetterReason.VALIDATION_FAILED, f"{push.event} without an order_id")
        shop = await self._shops.get(push.shop_id)
        if shop is None:
            raise PermanentFailure(
                DeadLetterReason.VALIDATION_FAILED, f"shop {push.shop_id} is not registered"
            )
        stored_before = self._orders.get(stored_key(push.order_id))
        fetch_started: float | None = None
        if stored_before is not None and (
            push_shown_by_stored(push.event, stored_before.order.status)
            or not push_needs_fetch(
                received_at=push.occurred_at.timestamp(),
                newest_fetch_started_at=self._fetch_started.get(push.order_id),
            )
        ):
            order = detail_after_push(push.event, stored_before.order, push.create_time)
            FETCHES_SAVED.inc()
        else:
            fetch_started = time.time()
            try:
                order = await self._fetch_order(shop, push.order_id)
            except WeChatApiError as exc:
                if exc.transient or exc.errcode == ErrCode.ORDER_NOT_FOUND:
                    raise  # retried with backoff; "not found" can be WeChat's own lag right after a push
                raise PermanentFailure(DeadLetterReason.PERMANENT_API_ERROR, str(exc)) from exc
        context = _push_context(push)
        settled = self._settled.get(order.order_id)
        if settled is not None and order.update_time <= settled and context.ext_info_type is None:
            PUSHES_HANDLED.labels(push.event, "already_settled").inc()
            return
        # Events decided from the newest detail and published, then one write. A crash before the
        # write republishes the same events (same ids) on redelivery; consumers drop the copies.
        key = stored_key(order.order_id)
        async with self._orders.lock(key):
            stored = self._orders.get(key)
            stored_order = stored.order if stored else None
            fetched_is_newer = stored_order is None or order.update_time > stored_order.update_time
            newest = order if fetched_is_newer or stored_order is None else stored_order
            published = PublishedFacts.from_document(stored.published if stored else None)
            events, facts = decide_order_events(
                shop_id=push.shop_id, order=newest, published=published, push=context
            )
            await publish_all(
                self._producer, [(topic_carrying(e.event_type, ORDER_TOPICS), e) for e in events]
            )
            for event in events:
                ORDER_EVENTS_PUBLISHED.labels(event.event_type).inc()
            if fetched_is_newer or facts != published:
                record = StoredOrder(
                    shop_id=push.shop_id,
                    order=newest,
                    published=facts.as_document(),
                )
                await self._orders.save(key, record, cause=f"{push.dedupe_key}|{newest.update_time}")
        self._remember_settled(order.order_id, newest.update_time)
        if fetch_started is not None:  # the stored detail is at least as new as this fetch
            self._remember_fetch(order.order_id, fetch_started)

    async def _fetch_order(self, shop: Shop, order_id: str) -> Order:
        """The order's detail. While the shop's circuit breaker is open, wait for it to close (up to
        `breaker_patience_s`): an outage of a minute must not dead-letter every push it spans."""
        deadline = time.monotonic() + self._breaker_patience_s
        while True:
            try:
                return await self._client.get_order(shop, order_id)
            except WeChatCircuitOpen as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                BREAKER_WAITS.inc()
                await asyncio.sleep(min(max(exc.retry_after_s, 0.5), left))

    def _remember_fetch(self, order_id: str, started_at: float) -> None:
        self._fetch_started[order_id] = max(started_at, self._fetch_started.get(order_id, started_at))
        self._fetch_started.move_to_end(order_id)
        while len(self._fetch_started) > SETTLED_CACHE_SIZE:
            self._fetch_started.popitem(last=False)

    def _remember_settled(self, order_id: str, update_time: int) -> None:
        self._settled[order_id] = update_time
        self._settled.move_to_end(order_id)
        while len(self._settled) > SETTLED_CACHE_SIZE:
            self._settled.popitem(last=False)
