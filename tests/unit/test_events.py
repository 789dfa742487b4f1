from datetime import UTC, datetime, timedelta, timezone
from typing import Literal
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.events import Event


class SamplePaid(Event):
    event_type: Literal["sample_paid"] = "sample_paid"
    schema_version: int = 1
    amount_fen: int


BIG_ORDER_ID = 3705115058471208928  # from WeChat's docs: above 2^53


def test_order_id_above_2_53_survives_json_exactly() -> None:
    event = SamplePaid(order_id=BIG_ORDER_ID, amount_fen=100)
    assert event.order_id == "3705115058471208928"
    raw = event.to_kafka_value()
    assert b'"order_id":"3705115058471208928"' in raw
    assert SamplePaid.model_validate_json(raw).order_id == str(BIG_ORDER_ID)
    assert event.kafka_key == b"3705115058471208928"


@pytest.mark.parametrize("bad", [3.705115058471209e18, 1.0, True, -5, "12a", "", "1" * 21])
def test_order_id_rejects_lossy_or_malformed_values(bad: object) -> None:
    with pytest.raises(ValidationError):
        SamplePaid(order_id=bad, amount_fen=1)


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_any_64_bit_order_id_round_trips(order_id: int) -> None:
    event = SamplePaid(order_id=order_id, amount_fen=1)
    assert int(SamplePaid.model_validate_json(event.to_kafka_value()).order_id) == order_id


def test_occurred_at_is_normalized_to_utc_and_naive_times_are_refused() -> None:
    beijing = timezone(timedelta(hours=8))
    event = SamplePaid(order_id=1, amount_fen=1, occurred_at=datetime(2026, 11, 11, 20, 0, tzinfo=beijing))
    assert event.occurred_at == datetime(2026, 11, 11, 12, 0, tzinfo=UTC)
    assert event.occurred_at.utcoffset() == timedelta(0)
    with pytest.raises(ValidationError):
        SamplePaid(order_id=1, amount_fen=1, occurred_at=datetime(2026, 11, 11, 20, 0))  # noqa: DTZ001


def test_envelope_defaults_unknown_fields_and_immutability() -> None:
    a = SamplePaid(order_id=1, amount_fen=1)
    b = SamplePaid(order_id=1, amount_fen=1)
    assert isinstance(a.event_id, UUID) and a.event_id != b.event_id
    assert a.schema_version == 1 and a.event_type == "sample_paid"
    with pytest.raises(ValidationError):
        SamplePaid.model_validate({"order_id": "1", "amount_fen": 1, "surprise": True})
    with pytest.raises(ValidationError):
        a.amount_fen = 2  # type: ignore[misc]
