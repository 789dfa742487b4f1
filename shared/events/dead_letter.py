"""Dead letters: what a consumer could not process, with a reason code, replayable to the source topic."""

from __future__ import annotations

import base64
from datetime import datetime
from enum import StrEnum
from uuid import UUID, uuid4

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.events.base import OrderId, utc_now


class DeadLetterReason(StrEnum):
    UNDECODABLE = "undecodable"  # not JSON, or not the shape of any known event
    UNKNOWN_SCHEMA_VERSION = "unknown_schema_version"
    VALIDATION_FAILED = "validation_failed"  # well-formed but breaks a domain rule
    PERMANENT_API_ERROR = "permanent_api_error"  # an outside API refused it for good
    RETRIES_EXHAUSTED = "retries_exhausted"  # transient failures outlasted the retry budget


class DeadLetter(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = 1
    event_id: UUID = Field(default_factory=uuid4)
    occurred_at: AwareDatetime = Field(default_factory=utc_now)
    order_id: OrderId | None = None
    consumer: str = Field(description="service (consumer group) that gave up on the message")
    reason: DeadLetterReason
    detail: str = Field(max_length=4_000)
    attempts: int = Field(ge=1)
    source_topic: str
    source_partition: int
    source_offset: int
    source_timestamp: datetime | None = None
    key_b64: str | None = None
    value_b64: str
    headers: list[tuple[str, str]] = Field(default_factory=list)

    @property
    def original_key(self) -> bytes | None:
        return None if self.key_b64 is None else base64.b64decode(self.key_b64)

    @property
    def original_value(self) -> bytes:
        return base64.b64decode(self.value_b64)
