"""The orders aftersale follows (an open after-sale case each; `domain/aftersale_follow.py`): dispatch
answers a follow with a snapshot of the order's dispatch orders on `dispatch.aftersale`, and its store
copies every later change of a followed order there (`copies`), so aftersale reads a few percent of
the orders instead of every dispatch change.

One small document per followed order (`dispatch_aftersale_follows`, `_id` the order id, the cases
that follow it), written before the snapshot is published and deleted when the last case ends: all
of them are in memory, read at start-up before the store publishes anything.

A dispatch answers only for the shops it serves (registered in its database): an empty snapshot
tells aftersale "nothing dispatched yet", which another line's dispatch on the same Kafka (the
integration tests' session stack beside a test's own line) must not say for an order it never had.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

from aiokafka import AIOKafkaProducer
from prometheus_client import Gauge
from pymongo.asynchronous.database import AsyncDatabase

from services.dispatch.domain.aftersale_follow import cases_following, snapshot
from services.dispatch.domain.dispatch_order import DispatchOrder
from shared.db import Document
from shared.events.aftersale import FollowRequested, UnfollowRequested
from shared.events.base import Event, utc_now
from shared.kafka.producer import publish_all
from shared.kafka.topics import DISPATCH, DISPATCH_AFTERSALE
from shared.wechat.shops import Shop

log = logging.getLogger(__name__)
FOLLOWS = "dispatch_aftersale_follows"
# The changes aftersale acts on: every one on `dispatch`; a followed order's are copied.
COPIED_EVENTS = DISPATCH.carries

FOLLOWED_ORDERS = Gauge(
    "lvyue_dispatch_aftersale_followed_orders",
    "Orders whose dispatch changes are copied to aftersale (an after-sale case of each is open).",
)


class FollowRecords(Protocol):
    """Where the follows are kept: each followed order's cases."""

    async def load(self) -> dict[str, frozenset[str]]: ...

    async def put(self, order_id: str, cases: frozenset[str]) -> None:
        """Record the order's following cases (none: the order is no longer followed)."""
        ...


class Shops(Protocol):
    """The shops this dispatch serves (`ShopCache`)."""

    async def get(self, shop_id: str) -> Shop | None: ...


class MongoFollowRecords:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._collection = db[FOLLOWS]

    async def load(self) -> dict[str, frozenset[str]]:
        return {d["_id"]: frozenset(d["case_ids"]) async for d in self._collection.find({})}

    async def put(self, order_id: str, cases: frozenset[str]) -> None:
        # One writer per order (dispatch's lock of the order, one process): no version guard needed.
        if cases:
            document = {"_id": order_id, "case_ids": sorted(cases), "updated_at": utc_now()}
            await self._collection.replace_one({"_id": order_id}, document, upsert=True)
        else:
            await self._collection.delete_one({"_id": order_id})


class AftersaleFollows:
    def __init__(
        self,
        records: FollowRecords,
        producer: AIOKafkaProducer,
        shops: Shops,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._records = records
        self._producer = producer
        self._shops = shops
        self._clock = clock
        self._following: dict[str, frozenset[str]] = {}

    async def load(self) -> None:
        self._following = await self._records.load()
        FOLLOWED_ORDERS.set(len(self._following))

    def cases(self, order_id: str) -> frozenset[str]:
        return self._following.get(order_id, frozenset())

    def copies(self, event: Event) -> bool:
        """Whether the store copies this committed change to `dispatch.aftersale` (asked under the
        order's lock, as `apply` is)."""
        return event.event_type in COPIED_EVENTS and event.order_id in self._following

    async def apply(
        self, event: FollowRequested | UnfollowRequested, orders: Sequence[DispatchOrder]
    ) -> None:
        """A follow or an unfollow, under the order's lock; `orders` are its dispatch orders as
        committed. A follow is recorded before its snapshot is published: a failed publish is retried
        with the message, and a change committed after this is copied."""
        if isinstance(event, FollowRequested) and await self._shops.get(event.shop_id) is None:
            log.warning(
                "follow of order %s: shop %s is not served here; not answered", event.order_id, event.shop_id
            )
            return
        before = self.cases(event.order_id)
        after = cases_following(before, event)
        if after != before:
            await self._records.put(event.order_id, after)
            if after:
                self._following[event.order_id] = after
            else:
                del self._following[event.order_id]
            FOLLOWED_ORDERS.set(len(self._following))
        if isinstance(event, FollowRequested):
            await publish_all(self._producer, [(DISPATCH_AFTERSALE, snapshot(event, orders, self._clock()))])
