"""The dispatch store on the real FerretDB and Kafka: the feed's positions live in the version
documents, so a restart rebuilds the same feeds; what a crash left unpublished is published at
start-up, and what was published is not published again."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from ops.stack import LocalStack
from services.dispatch.aftersale_follows import AftersaleFollows, MongoFollowRecords
from services.dispatch.catalog import Catalog, Supplier
from services.dispatch.domain import dispatch_order as dispatch
from services.dispatch.domain.plan import OrderPlan, PlanStatus
from services.dispatch.domain.routing import Route
from services.dispatch.handlers import Dispatcher, RouteBook
from services.dispatch.store import OPS_AUDIENCE, DispatchStore, FeedEntry, VersionConflict
from shared.db import Document
from shared.events.dispatch import DispatchState, HoldReason, OrderHeld
from shared.kafka.admin import ensure_topics
from shared.kafka.consumer import InboundMessage
from shared.kafka.producer import create_producer
from shared.kafka.topics import ALL_TOPICS, DISPATCH, DISPATCH_PROGRESS
from shared.settings import KafkaSettings
from shared.wechat.shops import ShopCache, ShopRepository
from tests.integration.dispatch_support import paid_order
from tests.integration.helpers import read_topic
from tests.unit.dispatch.builders import ADDRESS, PAID_AT, SHIP_BY, SHOP, T0, at, dline, parcel

pytestmark = pytest.mark.integration


@asynccontextmanager
async def _stores(stack: LocalStack) -> AsyncIterator[Any]:
    kafka = KafkaSettings(bootstrap_servers=stack.kafka_bootstrap)
    await ensure_topics(kafka, ALL_TOPICS)
    mongo: AsyncMongoClient[Document] = AsyncMongoClient(stack.mongo_uri, tz_aware=True)
    producer = create_producer(kafka, client_id="test-dispatch-store")
    await producer.start()
    db = mongo[f"t_store_{uuid.uuid4().hex[:8]}"]

    async def open_store(feed_cached_changes: int = 5_000, read_backs_at_once: int = 8) -> DispatchStore:
        store = DispatchStore(
            db,
            producer,
            mark_interval_s=0.1,
            feed_cached_changes=feed_cached_changes,
            read_backs_at_once=read_backs_at_once,
        )
        await store.load()
        return store

    try:
        yield open_store
    finally:
        await producer.stop()
        await mongo.close()


def _offer(order_id: str, n: int, supplier: str = "alpha") -> dispatch.Transition:
    return dispatch.offer(
        dispatch_id=f"{order_id}-{n}",
        order_id=order_id,
        shop_id=SHOP,
        supplier_id=supplier,
        lines=[dline(0, 2)],
        receiver=ADDRESS,
        ship_by=SHIP_BY,
        paid_at=PAID_AT,
        now=T0,
    )


async def _feed(store: DispatchStore, audience: str = "alpha") -> list[tuple[int, str, dict[str, Any]]]:
    """The audience's feed as a supplier reads it (uncached changes rendered from the database)."""
    entries = store.feed.after(audience, 0, 1000)
    bodies = await store.feed_bodies(entries)
    return [(e.seq, e.version_id, json.loads(body)) for e, body in zip(entries, bodies, strict=True)]


async def _published(stack: LocalStack, event_ids: set[str]) -> list[str]:
    records = await read_topic(
        stack.kafka_bootstrap,
        (DISPATCH.name, DISPATCH_PROGRESS.name),
        until=lambda rs: event_ids <= {json.loads(r.value)["event_id"] for r in rs if r.value},
    )
    return [
        json.loads(r.value)["event_id"]
        for r in records
        if r.value and json.loads(r.value)["event_id"] in event_ids
    ]


async def _split_and_accepted_by_alpha(
    store: DispatchStore, order_id: str
) -> tuple[dispatch.Transition, dispatch.Transition]:
    """An order offered to alpha (dispatch order 1, then accepted) and beta (2): alpha's offer and
    acceptance."""
    first = _offer(order_id, 1)
    await store.save_transition(first, cause="paid")
    await store.save_transition(_offer(order_id, 2, supplier="beta"), cause="paid")
    accept = dispatch.accept(first.order, estimated_ship_at=None, now=at(1))
    await store.save_transition(accept, cause="accept-1")
    return first, accept


async def test_a_restart_rebuilds_the_same_feeds_and_publishes_nothing_twice(stack: LocalStack) -> None:
    order_id = str(7_000_000_000_000_000_000 + uuid.uuid4().int % 10**15)
    async with _stores(stack) as open_store:
        store = await open_store()
        first, accept = await _split_and_accepted_by_alpha(store, order_id)
        held = OrderHeld(
            order_id=order_id,
            occurred_at=T0,
            shop_id=SHOP,
            reason=HoldReason.NO_ROUTE,
            line_nos=[1],
        )
        plan = OrderPlan(order_id=order_id, shop_id=SHOP, version=1, status=PlanStatus.HELD)
        await store.save_plan(plan, [held], cause="paid")
        feed_before = await _feed(store)
        assert [(seq, change["change"]) for seq, _, change in feed_before] == [
            (1, "dispatch_offered"),
            (2, "dispatch_accepted"),
        ]
        assert [change["cursor"] for _, _, change in feed_before] == [1, 2]
        assert len(await _feed(store, "beta")) == 1
        await store.close()  # records what was published

        again = await open_store()
        assert [e.json for e in again.feed.after("alpha", 0, 10)] == [None, None]  # read from the database
        assert await _feed(again) == feed_before
        assert await _feed(again, "beta") == await _feed(store, "beta")
        assert [e.seq for e in again.feed.after(OPS_AUDIENCE, 0, 10)] == [
            e.seq for e in store.feed.after(OPS_AUDIENCE, 0, 10)
        ]
        assert await again.order(f"{order_id}-1") == accept.order
        assert await again.plan(order_id) == plan
        assert again.feed.reserve("alpha", 1) == [3]  # positions go on after a restart
        ids = {str(e.event_id) for t in (first, accept) for e in t.events}
        assert sorted(await _published(stack, ids)) == sorted(ids)  # once each: not again at load
        await again.close()


async def test_positions_written_before_the_version_documents_held_them_are_read_at_start_up(
    stack: LocalStack,
) -> None:
    """Feed positions of the first format lived in their own collection, one document each."""
    order_id = str(7_050_000_000_000_000_000 + uuid.uuid4().int % 10**15)
    async with _stores(stack) as open_store:
        store = await open_store()
        offer = _offer(order_id, 1)
        relay = await store.write_transition(offer, cause="paid")
        assert relay is not None
        await store.relay(relay)
        feed_before = await _feed(store)
        await store.close()
        versions, legacy = store._orders_collection, store._legacy_feed
        await versions.update_one({"_id": relay.version_id}, {"$unset": {"feed": ""}})
        await legacy.insert_one(
            {
                "_id": uuid.uuid4().hex,
                "audience": "alpha",
                "seq": 1,
                "version_id": relay.version_id,
                "index": 0,
            }
        )

        restarted = await open_store()
        assert [(seq, change["change"]) for seq, _, change in await _feed(restarted)] == [
            (1, "dispatch_offered")
        ]
        assert await _feed(restarted) == feed_before
        (event_id,) = {str(e.event_id) for e in offer.events}
        assert await _published(stack, {event_id}) == [event_id]  # not again at start-up
        await restarted.close()


async def _offered_and_accepted_beyond_a_cache_of_one(store: DispatchStore, order_id: str) -> list[FeedEntry]:
    """Two changes in alpha's feed, only the newest of them cached."""
    first = _offer(order_id, 1)
    await store.save_transition(first, cause="paid")
    accept = dispatch.accept(first.order, estimated_ship_at=None, now=at(1))
    await store.save_transition(accept, cause="accept-1")
    entries = store.feed.after("alpha", 0, 10)
    assert entries[0].json is None and entries[1].json is not None  # only the newest is kept
    return entries


async def test_changes_beyond_the_cache_read_the_same_from_the_database(stack: LocalStack) -> None:
    order_id = str(7_200_000_000_000_000_000 + uuid.uuid4().int % 10**15)
    async with _stores(stack) as open_store:
        store = await open_store(feed_cached_changes=1)
        await _offered_and_accepted_beyond_a_cache_of_one(store, order_id)
        read = await _feed(store)
        assert [(seq, change["change"], change["cursor"]) for seq, _, change in read] == [
            (1, "dispatch_offered", 1),
            (2, "dispatch_accepted", 2),
        ]
        assert read[0][2]["dispatch_order"]["state"] == "offered"  # the order as that change left it
        assert read[1][2]["dispatch_order"]["state"] == "accepted"
        await store.close()


async def test_feed_pages_of_many_suppliers_read_back_at_most_so_many_documents_at_once(
    stack: LocalStack,
) -> None:
    """Suppliers far behind the cache, polling together, put a bounded load on the database."""
    base = 7_400_000_000_000_000_000 + uuid.uuid4().int % 10**15
    async with _stores(stack) as open_store:
        store = await open_store(feed_cached_changes=1, read_backs_at_once=2)
        for n in range(6):
            for supplier in ("alpha", "beta"):
                await store.save_transition(
                    _offer(str(base + n), 1 if supplier == "alpha" else 2, supplier), cause="paid"
                )
        in_flight, most = 0, 0
        collection = store._orders_collection
        find_one = collection.find_one

        async def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            try:
                return await find_one(*args, **kwargs)
            finally:
                in_flight -= 1

        collection.find_one = counted
        pages = await asyncio.gather(
            *(_feed(store, supplier) for supplier in ("alpha", "beta") for _ in range(3))
        )

        assert most == 2
        for page in pages:
            assert len(page) == 6 and all(change["change"] == "dispatch_offered" for _, _, change in page)
            assert len({change["dispatch_order"]["order_id"] for _, _, change in page}) == 6
        await store.close()


async def test_a_change_pushed_out_of_the_cache_during_a_read_is_answered_from_before(
    stack: LocalStack,
) -> None:
    """A supplier reading back (an uncached change) while new changes push the cached ones out: each
    entry answers with the JSON it had when the read began (a sale's feed once failed with KeyError)."""
    order_id = str(7_300_000_000_000_000_000 + uuid.uuid4().int % 10**15)
    async with _stores(stack) as open_store:
        store = await open_store(feed_cached_changes=1)
        entries = await _offered_and_accepted_beyond_a_cache_of_one(store, order_id)

        reading = asyncio.create_task(store.feed_bodies(entries))
        await asyncio.sleep(0)  # the read is waiting for the database
        assert not reading.done()
        entries[1].json = None  # what the cache does to its oldest entry when a change is saved
        bodies = [json.loads(body) for body in await reading]
        assert [(body["change"], body["cursor"]) for body in bodies] == [
            ("dispatch_offered", 1),
            ("dispatch_accepted", 2),
        ]
        await store.close()


async def test_what_a_crash_left_unpublished_is_published_at_start_up(stack: LocalStack) -> None:
    order_id = str(7_100_000_000_000_000_000 + uuid.uuid4().int % 10**15)
    async with _stores(stack) as open_store:
        store = await open_store()
        offer = _offer(order_id, 1)
        relay = await store.write_transition(offer, cause="paid")  # committed, then the process dies
        assert relay is not None
        assert [seq for seq, _, _ in await _feed(store)] == [1]  # in the feed from the commit on
        restarted = await open_store()
        assert [seq for seq, _, _ in await _feed(restarted)] == [1]
        (event_id,) = {str(e.event_id) for e in offer.events}
        assert await _published(stack, {event_id}) == [event_id]
        # The same change again (the message redelivered): nothing new, nothing published twice.
        again = await restarted.write_transition(offer, cause="paid")
        assert again is not None and again.version_id == relay.version_id
        await restarted.relay(again)
        assert [seq for seq, _, _ in await _feed(restarted)] == [1]
        with pytest.raises(VersionConflict):  # another change of the same version: a conflict
            await restarted.write_transition(_offer(order_id, 1), cause="someone else")
        second = _offer(order_id, 2)
        await restarted.save_transition(second, cause="paid-2")
        # 2 and 3 were reserved by the redelivered write and the conflict: gaps, holding nothing back
        assert [seq for seq, _, _ in await _feed(restarted)] == [1, 4]
        await restarted.close()


async def test_a_hold_written_while_the_routes_change_is_routed_at_once(stack: LocalStack) -> None:
    """The scan of held orders after a route change cannot see a hold still being written: the order
    decided with the old routes is routed again as soon as its hold is written."""
    kafka = KafkaSettings(bootstrap_servers=stack.kafka_bootstrap)
    await ensure_topics(kafka, ALL_TOPICS)
    mongo: AsyncMongoClient[Document] = AsyncMongoClient(stack.mongo_uri, tz_aware=True)
    producer = create_producer(kafka, client_id="test-dispatch-routes")
    await producer.start()
    try:
        db = mongo[f"t_routes_{uuid.uuid4().hex[:8]}"]
        catalog = Catalog(db)
        await catalog.add_supplier(Supplier(supplier_id="alpha", name="ALPHA"))
        store = DispatchStore(db, producer)
        await store.load()
        routes = RouteBook(catalog)
        await routes.reload()  # no route yet: the order will be held
        follows = AftersaleFollows(
            MongoFollowRecords(db), producer, ShopCache(ShopRepository(db), ttl_s=30.0)
        )
        dispatcher = Dispatcher(store, routes, follows)
        write_plan = store.write_plan
        scanned: list[int] = []

        async def route_added_meanwhile(plan: OrderPlan, events: Any, *, cause: str) -> Any:
            if plan.status == PlanStatus.HELD and not scanned:
                await catalog.set_route(
                    Route(shop_id=SHOP, supplier_id="alpha", product_id="p1", sku_id="s1")
                )
                assert await routes.reload()
                scanned.append(await dispatcher.retry_holds())
            return await write_plan(plan, events, cause=cause)

        store.write_plan = route_added_meanwhile  # type: ignore[method-assign]
        event = paid_order(SHOP, [("p1", "s1", 1)])
        message = InboundMessage(
            topic="orders",
            partition=0,
            offset=0,
            key=event.kafka_key,
            value=event.to_kafka_value(),
            headers=(),
            timestamp_ms=0,
        )
        await dispatcher.handle_order_event(message)
        assert scanned == [0]  # the scan ran while the hold was being written, and missed it
        routed = await store.plan(event.order_id)
        assert routed is not None and routed.status == PlanStatus.DISPATCHED
        assert [o.supplier_id for o in await store.orders_of(event.order_id)] == ["alpha"]
        await store.close()
    finally:
        await producer.stop()
        await mongo.close()


async def test_a_final_order_is_read_back_from_its_version_and_open_ones_stay_in_memory(
    stack: LocalStack,
) -> None:
    order_id = str(7_500_000_000_000_000_000 + uuid.uuid4().int % 10**15)
    async with _stores(stack) as open_store:
        store = await open_store()
        _, accept = await _split_and_accepted_by_alpha(store, order_id)
        shipped = dispatch.ship(accept.order, parcels=[parcel("W1", (0, 2))], now=at(2))
        await store.save_transition(shipped, cause="ship-1")

        assert not store.is_open(f"{order_id}-1") and store.is_open(f"{order_id}-2")
        assert store.gists[f"{order_id}-1"].state == DispatchState.SHIPPED
        assert await store.order(f"{order_id}-1") == shipped.order  # read back: the version as written
        assert [o.dispatch_id for o in await store.orders_of(order_id)] == [f"{order_id}-1", f"{order_id}-2"]
        assert await store.order("no-such-order") is None
        await store.close()

        again = await open_store()
        assert not again.is_open(f"{order_id}-1") and again.is_open(f"{order_id}-2")
        assert await again.order(f"{order_id}-1") == shipped.order
        assert [o.state for o in await again.orders_of(order_id)] == [
            DispatchState.SHIPPED,
            DispatchState.OFFERED,
        ]
        await again.close()


async def test_only_held_plans_stay_in_memory_and_the_others_are_read_back(stack: LocalStack) -> None:
    order_id = str(7_600_000_000_000_000_000 + uuid.uuid4().int % 10**15)
    held_id = str(int(order_id) + 1)
    async with _stores(stack) as open_store:
        store = await open_store()
        await _split_and_accepted_by_alpha(store, order_id)
        plan = OrderPlan(
            order_id=order_id,
            shop_id=SHOP,
            version=1,
            status=PlanStatus.DISPATCHED,
            dispatch_ids=[f"{order_id}-1", f"{order_id}-2"],
        )
        await store.save_plan(plan, [], cause="paid")
        held = OrderPlan(order_id=held_id, shop_id=SHOP, version=1, status=PlanStatus.HELD)
        await store.save_plan(held, [], cause="paid")
        assert store.held_plan(order_id) is None and store.held_plan(held_id) == held  # in memory
        assert await store.plan(order_id) == plan  # read back: the version as written
        assert store.held_plans() == [held]
        assert await store.plan("no-such-order") is None
        await store.close()

        again = await open_store()
        assert again.held_plan(order_id) is None and again.held_plan(held_id) == held
        assert await again.plan(order_id) == plan
        assert again.held_plans() == [held]
        released = held.model_copy(update={"version": 2, "status": PlanStatus.DISPATCHED})
        await again.save_plan(released, [], cause="routed")
        assert again.held_plan(held_id) is None and again.held_plans() == []
        assert await again.plan(held_id) == released
        await again.close()
