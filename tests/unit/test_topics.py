import pytest

from shared.kafka.topics import (
    ALL_TOPICS,
    DEAD_LETTER_RETENTION_MS,
    CleanupPolicy,
    TopicSpec,
    dead_letter_spec,
    topics_to_create,
)


def test_every_topic_is_keyed_by_order_id_and_has_a_dead_letter_topic() -> None:
    names = {spec.name for spec in topics_to_create()}
    for spec in ALL_TOPICS:
        assert spec.key == "order_id"
        assert spec.dead_letter_name in names
    assert len(names) == len(ALL_TOPICS) * 2


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
