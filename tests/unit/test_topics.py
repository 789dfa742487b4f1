from typing import Any

import pytest
from pydantic import TypeAdapter

from services.aftersale.handlers import DISPATCH_EVENTS_ACTED_ON as AFTERSALE_DISPATCH_EVENTS
from services.dispatch.aftersale_follows import COPIED_EVENTS
from services.dispatch.dropship import RELEVANT_EVENTS
from services.logistics.handlers import DISPATCH_EVENTS_ACTED_ON as LOGISTICS_DISPATCH_EVENTS
from shared.events.aftersale import AFTERSALE_EVENTS
from shared.events.dispatch import DISPATCH_AFTERSALE_EVENTS, DISPATCH_EVENTS
from shared.events.orders import ORDER_EVENTS
from shared.kafka.topics import (
    AFTERSALE,
    AFTERSALE_INSTRUCTIONS,
    ALL_TOPICS,
    DEAD_LETTER_RETENTION_MS,
    DISPATCH,
    DISPATCH_AFTERSALE,
    DISPATCH_DROPSHIP,
    DISPATCH_PROGRESS,
    ORDERS,
    ORDERS_COMPLETED,
    CleanupPolicy,
    TopicSpec,
    dead_letter_spec,
    topic_carrying,
    topics_to_create,
)


def test_every_topic_is_keyed_by_order_id_and_each_consumed_one_has_a_dead_letter_topic() -> None:
    names = {spec.name for spec in topics_to_create()}
    for spec in ALL_TOPICS:
        assert spec.key == "order_id"
        assert (spec.dead_letter_name in names) == bool(spec.audience), spec.name
        assert spec.has_dead_letter == bool(spec.audience), spec.name
    assert len(names) == len(ALL_TOPICS) + sum(bool(spec.audience) for spec in ALL_TOPICS)


def _event_types(adapter: TypeAdapter[Any]) -> set[str]:
    return set(adapter.json_schema()["discriminator"]["mapping"])


@pytest.mark.parametrize(
    ("adapter", "topics"),
    [
        (ORDER_EVENTS, (ORDERS, ORDERS_COMPLETED)),
        (DISPATCH_EVENTS, (DISPATCH, DISPATCH_PROGRESS)),
        (AFTERSALE_EVENTS, (AFTERSALE, AFTERSALE_INSTRUCTIONS)),
    ],
)
def test_each_event_type_of_a_stage_has_exactly_one_of_its_topics(
    adapter: TypeAdapter[Any], topics: tuple[TopicSpec, ...]
) -> None:
    types = _event_types(adapter)
    assert set().union(*(t.carries for t in topics)) == types
    for event_type in types:
        assert topic_carrying(event_type, topics) in topics


def test_a_type_carried_by_none_or_two_of_the_choices_is_refused() -> None:
    with pytest.raises(ValueError, match="carried by 0"):
        topic_carrying("dispatch_offered", (ORDERS, AFTERSALE))
    with pytest.raises(ValueError, match="carried by 2"):
        topic_carrying("dispatch_offered", (DISPATCH, DISPATCH_DROPSHIP))


def test_commands_and_facts_of_aftersale_are_on_different_topics() -> None:
    assert AFTERSALE.carries == {"aftersale_case_updated"}
    assert not AFTERSALE.audience
    assert AFTERSALE_INSTRUCTIONS.audience == ("dispatch",)
    assert "aftersale_case_updated" not in AFTERSALE_INSTRUCTIONS.carries


def test_the_mirror_topic_carries_what_the_mirror_acts_on_and_only_dispatch_order_changes() -> None:
    assert RELEVANT_EVENTS is DISPATCH_DROPSHIP.carries
    assert DISPATCH.carries >= DISPATCH_DROPSHIP.carries >= {"dispatch_offered", "dispatch_cancelled"}


def test_logistics_acts_on_part_of_the_dispatch_topic_and_aftersale_on_copies_of_all_of_it() -> None:
    assert DISPATCH.carries > LOGISTICS_DISPATCH_EVENTS
    assert DISPATCH.audience == ("logistics",)
    assert "dispatch_accepted" not in DISPATCH.carries  # nobody downstream acts on it
    # Aftersale reads the orders it follows only: every `dispatch` change of theirs, and snapshots.
    assert DISPATCH_AFTERSALE.audience == ("aftersale",)
    assert DISPATCH.carries == COPIED_EVENTS
    assert (
        DISPATCH_AFTERSALE.carries
        == AFTERSALE_DISPATCH_EVENTS
        == COPIED_EVENTS | {"dispatch_fulfilment_snapshot"}
    )
    assert _event_types(DISPATCH_AFTERSALE_EVENTS) == DISPATCH_AFTERSALE.carries
    assert {"aftersale_follow", "aftersale_unfollow"} <= AFTERSALE_INSTRUCTIONS.carries


def test_dead_letter_topics_keep_messages_longer_and_have_no_dead_letters_of_their_own() -> None:
    dlq = dead_letter_spec(ALL_TOPICS[0])
    assert dlq.name == f"{ALL_TOPICS[0].name}.dlq"
    assert dlq.retention_ms == DEAD_LETTER_RETENTION_MS > ALL_TOPICS[0].retention_ms
    assert not dlq.has_dead_letter


def test_topic_config_carries_retention_and_cleanup_policy() -> None:
    spec = TopicSpec("x", "test", retention_ms=1000, cleanup_policy=CleanupPolicy.COMPACT)
    assert spec.config() == {"cleanup.policy": "compact", "retention.ms": "1000"}


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        topics_to_create((TopicSpec("a", "one"), TopicSpec("a", "two")))
