"""Raw WeChat pushes, verified and decrypted, as the webhook stored them (topic wechat.shop-events),
and as the ingest worker forwards after-sale and e-waybill pushes to their own topics."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal
from uuid import UUID, uuid4

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.events.base import OrderId, utc_now


class PushSource(StrEnum):
    WEBHOOK = "webhook"
    RECONCILIATION = "reconciliation"  # an order the list API showed and no webhook brought
    REPLAY = "replay"


# The event name the reconciliation job uses for "fetch this order and ingest it".
RECONCILE_EVENT = "lvyue_reconcile_order"


class WeChatPushReceived(BaseModel):
    """Keyed by `partition_key`: the order id, else the after-sale or e-waybill id the push is about."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: UUID = Field(default_factory=uuid4)
    occurred_at: AwareDatetime = Field(default_factory=utc_now)
    schema_version: Literal[1] = 1
    event_type: Literal["wechat_push_received"] = "wechat_push_received"
    source: PushSource = PushSource.WEBHOOK
    shop_id: str
    event: str = Field(description="WeChat's Event, e.g. channels_ec_order_pay")
    create_time: int = Field(description="WeChat's CreateTime (unix seconds)")
    dedupe_key: str
    order_id: OrderId | None = None
    partition_key: str
    # The decrypted push as a JSON object; 64-bit ids are exact ints or strings, never floats.
    payload: dict[str, Any]

    @property
    def kafka_key(self) -> bytes:
        return self.partition_key.encode()

    def to_kafka_value(self) -> bytes:
        return self.model_dump_json().encode()
