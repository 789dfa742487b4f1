"""A change is serialized once (no I/O): the supplier's view of the order as the change committed
it is the API's answer and the `dispatch_order` of each feed change, byte for byte what the models
would write; and the answer rebuilt from the stored version document is the answer given."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import bson
import pytest
from bson.codec_options import CodecOptions

from services.dispatch.domain import dispatch_order as dispatch
from services.dispatch.domain.dispatch_order import DispatchOrder, Transition
from services.dispatch.store import Relay, feed_change_json, public_json
from shared.api.supplier import FeedChange
from tests.unit.dispatch.builders import accepted, at, offered, parcel, shipped


def _offered_with_microseconds() -> Transition:
    order = offered()
    return dispatch.offer(
        dispatch_id=order.dispatch_id,
        order_id=order.order_id,
        shop_id=order.shop_id,
        supplier_id=order.supplier_id,
        lines=order.lines,
        receiver=order.receiver,
        ship_by=order.ship_by,
        paid_at=order.paid_at,
        now=at(0) + timedelta(microseconds=123_456),
    )


TRANSITIONS: dict[str, Callable[[], Transition]] = {
    "offered": _offered_with_microseconds,
    "accepted": lambda: dispatch.accept(offered(), estimated_ship_at=None, now=at(1)),
    "shipped": lambda: dispatch.ship(
        accepted(),
        parcels=[parcel("W1", (0, 2)), parcel("W2", (1, 1))],
        now=at(2) + timedelta(microseconds=7),
    ),
    "cancel asked after shipping": lambda: dispatch.cancel_for_order(shipped(), now=at(3)),
}


@pytest.mark.parametrize("name", TRANSITIONS)
def test_each_feed_change_is_the_feed_change_model_s_json(name: str) -> None:
    transition: Transition = TRANSITIONS[name]()
    relay = Relay("v#000001", transition.order.supplier_id, list(transition.events), transition.order)
    seqs = list(range(41, 41 + len(transition.events)))
    expected = [
        FeedChange(
            cursor=seq,
            change=event.event_type,
            occurred_at=event.occurred_at,
            dispatch_order=transition.order.public(),
        )
        .model_dump_json()
        .encode()
        for seq, event in zip(seqs, transition.events, strict=True)
    ]
    assert [entry.json for entry in relay.entries(seqs)] == expected
    assert relay.public_json == transition.order.public().model_dump_json().encode()
    assert feed_change_json(7, transition.events[0], relay.public_json) == expected[0].replace(
        b'"cursor":41', b'"cursor":7'
    )


@pytest.mark.parametrize("name", TRANSITIONS)
def test_the_answer_rebuilt_from_the_stored_version_is_the_answer_given(name: str) -> None:
    order = TRANSITIONS[name]().order
    stored: dict[str, Any] = bson.decode(
        bson.encode({"order": order.model_dump(mode="json")}), CodecOptions(tz_aware=True)
    )
    assert public_json(DispatchOrder.model_validate(stored["order"])) == public_json(order)
