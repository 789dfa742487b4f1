"""The envelope every Kafka message carries: typed, versioned, keyed by the WeChat order id."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID, uuid4

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, field_validator


def _order_id_exactly(value: Any) -> Any:
    """WeChat order ids are 64-bit integers above 2^53: accept int or digit strings, never floats."""
    if isinstance(value, bool):
        raise ValueError("order_id must be an integer or a string of digits, not a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("order_id must not be negative")
        return str(value)
    if isinstance(value, float):
        raise ValueError("order_id must not be a float: it would lose precision above 2^53")
    return value


# Carried as a decimal string everywhere (Kafka key, JSON, MongoDB) so no hop can round it.
OrderId = Annotated[
    str,
    BeforeValidator(_order_id_exactly),
    Field(pattern=r"^[0-9]{1,20}$", description="WeChat order_id, exact, as a decimal string"),
]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """Base of every event. Subclasses fix ``event_type`` with a Literal and bump ``schema_version``
    when they change incompatibly; consumers read the versions they know and dead-letter the rest."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: UUID = Field(default_factory=uuid4)
    occurred_at: AwareDatetime = Field(default_factory=utc_now)
    order_id: OrderId
    schema_version: int = Field(ge=1)
    event_type: str

    @field_validator("occurred_at")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @property
    def kafka_key(self) -> bytes:
        return self.order_id.encode()

    def to_kafka_value(self) -> bytes:
        return self.model_dump_json().encode()
