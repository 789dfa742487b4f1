from aiokafka.structs import ConsumerRecord

from shared.events.dead_letter import DeadLetter, DeadLetterReason
from shared.kafka.consumer import InboundMessage, dead_letter_for
from shared.kafka.faust_app import broker_urls


def _record(key: bytes | None, value: bytes) -> InboundMessage:
    return InboundMessage.from_record(
        ConsumerRecord(
            topic="orders",
            partition=3,
            offset=42,
            timestamp=1_763_000_000_000,
            timestamp_type=0,
            key=key,
            value=value,
            checksum=None,
            serialized_key_size=0,
            serialized_value_size=0,
            headers=(("event_type", b"paid"),),
        )
    )


def test_dead_letter_keeps_the_original_bytes_and_where_they_came_from() -> None:
    raw = b"\xff not json"
    letter = dead_letter_for(
        _record(b"3705115058471208928", raw),
        consumer="dispatch",
        reason=DeadLetterReason.UNDECODABLE,
        detail="bad",
        attempts=1,
    )
    again = DeadLetter.model_validate_json(letter.model_dump_json())
    assert again.original_value == raw
    assert again.original_key == b"3705115058471208928"
    assert again.order_id == "3705115058471208928"
    assert (again.source_topic, again.source_partition, again.source_offset) == ("orders", 3, 42)
    assert again.headers == [("event_type", "paid")]
    assert again.reason is DeadLetterReason.UNDECODABLE


def test_dead_letter_without_a_usable_key_has_no_order_id() -> None:
    letter = dead_letter_for(
        _record(None, b"{}"), consumer="x", reason=DeadLetterReason.RETRIES_EXHAUSTED, detail="", attempts=5
    )
    assert letter.order_id is None and letter.original_key is None


def test_broker_urls_use_the_durable_transport_for_every_server() -> None:
    assert broker_urls("a:9092, b:9092") == "lvyue://a:9092;lvyue://b:9092"
