"""Dispatch follows the orders aftersale asks about: a snapshot of the order's dispatch orders, then a
copy of each of their changes on `dispatch.aftersale`, while a case that asked is open."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

from pydantic import SecretStr

from services.dispatch.aftersale_follows import AftersaleFollows
from services.dispatch.catalog import Catalog
from services.dispatch.domain import dispatch_order as dispatch
from services.dispatch.domain.aftersale_follow import facts
from services.dispatch.domain.dispatch_order import DispatchOrder
from services.dispatch.handlers import Dispatcher, RouteBook
from services.dispatch.store import DispatchStore, Relay
from shared.events.aftersale import FollowRequested, UnfollowRequested
from shared.events.base import Event
from shared.events.dispatch import (
    AftersaleInstruction,
    AftersaleInstructionKind,
    DispatchFulfilmentSnapshot,
    DispatchState,
    InstructionLine,
)
from shared.kafka.consumer import InboundMessage
from shared.kafka.topics import AFTERSALE_INSTRUCTIONS, DISPATCH, DISPATCH_AFTERSALE
from shared.wechat.shops import Shop
from tests.unit.dispatch.builders import ORDER_ID, SHOP, at, dline, offered, parcel, shipped
from tests.unit.logistics.test_shipments import Producer

CASE = "14000000000000000001"
OTHER_CASE = "14000000000000000002"


@dataclass
class Records:
    """The follows' documents, in memory; each put notes what was published before it."""

    kept: dict[str, frozenset[str]] = field(default_factory=dict)
    published_before_put: list[int] = field(default_factory=list)
    producer: Producer | None = None

    async def load(self) -> dict[str, frozenset[str]]:
        return dict(self.kept)

    async def put(self, order_id: str, cases: frozenset[str]) -> None:
        self.published_before_put.append(len(self.producer.sent) if self.producer else 0)
        if cases:
            self.kept[order_id] = cases
        else:
            self.kept.pop(order_id, None)


class Shops:
    """This dispatch serves SHOP only."""

    async def get(self, shop_id: str) -> Shop | None:
        if shop_id != SHOP:
            return None
        return Shop(
            shop_id=SHOP,
            appid="wx0000000000000001",
            app_secret=SecretStr("s"),
            token=SecretStr("t"),
            encoding_aes_key=SecretStr("A" * 43),
        )


def _follows(records: Records, producer: Producer) -> AftersaleFollows:
    return AftersaleFollows(records, cast(Any, producer), Shops())


def _follow(case_id: str = CASE, order_id: str = ORDER_ID, shop_id: str = SHOP) -> FollowRequested:
    return FollowRequested(order_id=order_id, shop_id=shop_id, case_id=case_id)


def _unfollow(case_id: str = CASE) -> UnfollowRequested:
    return UnfollowRequested(order_id=ORDER_ID, shop_id=SHOP, case_id=case_id)


def _snapshots(producer: Producer) -> list[DispatchFulfilmentSnapshot]:
    return [
        DispatchFulfilmentSnapshot.model_validate_json(value)
        for topic, value in producer.sent
        if topic == DISPATCH_AFTERSALE.name
    ]


def _cancelled(order: DispatchOrder) -> Event:
    return dispatch.cancel_for_order(order, now=at(1)).events[0]


class Database:
    """Collections by name, never used: the store's relay publishes only."""

    def __getitem__(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(name=name)


def _message(event: Event) -> InboundMessage:
    return InboundMessage(
        topic=AFTERSALE_INSTRUCTIONS.name,
        partition=0,
        offset=0,
        key=event.kafka_key,
        value=event.to_kafka_value(),
    )


def _dispatcher(follows: AftersaleFollows, producer: Producer) -> tuple[Dispatcher, DispatchStore]:
    """A dispatcher whose store has no database: nothing here reads or writes one."""
    store = DispatchStore(cast(Any, Database()), cast(Any, producer), aftersale_follows=follows.copies)
    return Dispatcher(store, RouteBook(cast(Catalog, None)), follows), store


async def test_a_follow_is_recorded_then_answered_with_every_dispatch_order_of_the_order() -> None:
    producer = Producer()
    records = Records(producer=producer)
    follows = _follows(records, producer)
    replacement = dispatch.offer(
        dispatch_id=f"{ORDER_ID}-2",
        order_id=ORDER_ID,
        shop_id=SHOP,
        supplier_id="sup-a",
        lines=[dline(0)],
        receiver=shipped().receiver,
        ship_by=None,
        paid_at=at(0),
        now=at(5),
        aftersale_case_id=CASE,
    ).order
    await follows.apply(_follow(), [shipped(), replacement])

    assert records.kept == {ORDER_ID: frozenset({CASE})}
    assert records.published_before_put == [0]  # durable before the snapshot is out
    [snapshot] = _snapshots(producer)
    assert (snapshot.order_id, snapshot.shop_id, snapshot.case_id) == (ORDER_ID, SHOP, CASE)
    first, second = snapshot.dispatch_orders
    assert (first.dispatch_id, first.state, first.version) == (f"{ORDER_ID}-1", DispatchState.SHIPPED, 3)
    assert [(x.quantity, x.shipped_quantity) for x in first.lines] == [(2, 2), (1, 1)]
    assert [p.waybill_no for p in first.parcels] == ["W1"]
    assert (second.aftersale_case_id, second.state) == (CASE, DispatchState.OFFERED)


async def test_an_order_dispatch_has_not_seen_is_followed_by_its_id_and_its_offer_is_copied() -> None:
    """A refund push can overtake order_paid: the snapshot is empty, the changes that follow come."""
    producer = Producer()
    follows = _follows(Records(), producer)
    dispatcher, store = _dispatcher(follows, producer)
    await dispatcher.handle_aftersale_event(_message(_follow()))
    [snapshot] = _snapshots(producer)
    assert snapshot.dispatch_orders == []

    transition = dispatch.offer(
        dispatch_id=f"{ORDER_ID}-1",
        order_id=ORDER_ID,
        shop_id=SHOP,
        supplier_id="sup-a",
        lines=[dline(0)],
        receiver=shipped().receiver,
        ship_by=None,
        paid_at=at(0),
        now=at(1),
    )
    await store.relay(Relay(f"{ORDER_ID}-1#000001", "sup-a", list(transition.events), transition.order))
    topics = [topic for topic, _ in producer.sent]
    assert topics == [DISPATCH_AFTERSALE.name, DISPATCH.name, DISPATCH_AFTERSALE.name]


async def test_an_order_is_followed_while_a_case_that_asked_is_open_and_after_a_restart() -> None:
    producer = Producer()
    records = Records()
    follows = _follows(records, producer)
    offer = _cancelled(offered())
    assert not follows.copies(offer)
    await follows.apply(_follow(CASE), [])
    await follows.apply(_follow(OTHER_CASE), [])
    await follows.apply(_unfollow(CASE), [])
    assert follows.copies(offer)

    restarted = _follows(records, producer)
    await restarted.load()
    assert restarted.copies(offer)
    await restarted.apply(_unfollow(OTHER_CASE), [])
    await restarted.apply(_unfollow(OTHER_CASE), [])  # again (a redelivery): nothing to do
    assert not restarted.copies(offer)
    assert records.kept == {}
    assert len(_snapshots(producer)) == 2  # unfollows answer nothing


async def test_only_the_changes_aftersale_acts_on_are_copied() -> None:
    follows = _follows(Records(), Producer())
    await follows.apply(_follow(), [])
    accepted = dispatch.accept(offered(), estimated_ship_at=None, now=at(1)).events[0]
    assert accepted.event_type not in DISPATCH.carries  # nobody downstream acts on it
    assert not follows.copies(accepted)
    cancelled = _cancelled(offered())
    assert follows.copies(cancelled)
    other_order = cancelled.model_copy(update={"order_id": "3705115058471208929"})
    assert not follows.copies(other_order)


def test_the_snapshot_tells_the_lines_as_offered_and_the_returns_received() -> None:
    order = shipped()
    assert facts(order).offered_lines == order.lines  # never changed: kept once only
    reduced = dispatch.reduce_lines(offered(), units={("p-sku-0", "sku-0"): 1}, now=at(1)).order
    assert [x.quantity for x in reduced.lines] == [1, 1]
    assert [x.quantity for x in facts(reduced).offered_lines] == [2, 1]
    shipped_part = dispatch.ship(
        dispatch.accept(offered(), estimated_ship_at=None, now=at(1)).order,
        parcels=[parcel("W1", (0, 1))],
        now=at(2),
    ).order
    assert shipped_part.offered_lines is None  # a shipment changes what was sent, not what is asked

    instruction = AftersaleInstruction(
        case_id=CASE,
        kind=AftersaleInstructionKind.RETURN_EXPECTED,
        lines=[InstructionLine(product_id="p-sku-0", sku_id="sku-0", count=1)],
        given_at=at(3),
    )
    expecting = dispatch.instruct(order, instruction, now=at(3)).order
    assert facts(expecting).returns_received == []
    received = dispatch.confirm_return(expecting, case_id=CASE, condition="ok", now=at(4)).order
    assert facts(received).returns_received == [CASE]


async def test_a_follow_for_a_shop_this_dispatch_does_not_serve_is_not_answered() -> None:
    """Another line's dispatch on the same Kafka must not answer "nothing dispatched" for its order."""
    producer = Producer()
    records = Records()
    follows = _follows(records, producer)
    await follows.apply(_follow(shop_id="shop-of-another-line"), [])
    assert producer.sent == [] and records.kept == {}
