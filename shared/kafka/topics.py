"""The topic registry: every topic the services use, created before any agent starts.

Every topic is keyed by the WeChat order id, so one order's events stay in order on one partition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

DAY_MS = 24 * 60 * 60 * 1000


class CleanupPolicy(StrEnum):
    DELETE = "delete"
    COMPACT = "compact"


def dead_letter_topic(topic_name: str) -> str:
    """The dead-letter topic of a topic: where its consumers park what they cannot process."""
    return f"{topic_name}.dlq"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    description: str
    retention_ms: int = 7 * DAY_MS
    cleanup_policy: CleanupPolicy = CleanupPolicy.DELETE
    # None: KafkaSettings.default_partitions. Topics joined in one stream must share the count.
    partitions: int | None = None
    key: str = "order_id"
    # Whether consumers of this topic park unprocessable messages on `<name>.dlq`.
    has_dead_letter: bool = True
    extra_config: dict[str, str] = field(default_factory=dict)

    @property
    def dead_letter_name(self) -> str:
        return dead_letter_topic(self.name)

    def config(self) -> dict[str, str]:
        return {
            "cleanup.policy": self.cleanup_policy.value,
            "retention.ms": str(self.retention_ms),
            **self.extra_config,
        }


# Dead letters are kept long enough for a weekend's backlog to be investigated and replayed.
DEAD_LETTER_RETENTION_MS = 30 * DAY_MS

WECHAT_SHOP_EVENTS = TopicSpec(
    "wechat.shop-events",
    "Verified, decrypted WeChat Shop pushes as received by the webhook (order_ingest).",
)
WECHAT_AFTERSALE_EVENTS = TopicSpec(
    "wechat.aftersale-events",
    "WeChat after-sale pushes (channels_ec_aftersale_update), for aftersale.",
)
WECHAT_EWAYBILL_EVENTS = TopicSpec(
    "wechat.ewaybill-events",
    "WeChat e-waybill tracking pushes (ewaybill_push_path), for logistics.",
)
ORDERS = TopicSpec("orders", "Normalized order events: paid, cancelled, address/SKU changed, completed.")
DISPATCH = TopicSpec("dispatch", "Dispatch order state changes (supplier accepted, rejected, shipped, ...).")
LOGISTICS = TopicSpec("logistics", "Waybills, shipments told to WeChat, tracking states, deadlines.")
AFTERSALE = TopicSpec("aftersale", "After-sale case decisions and instructions.")

ALL_TOPICS: tuple[TopicSpec, ...] = (
    WECHAT_SHOP_EVENTS,
    WECHAT_AFTERSALE_EVENTS,
    WECHAT_EWAYBILL_EVENTS,
    ORDERS,
    DISPATCH,
    LOGISTICS,
    AFTERSALE,
)


def dead_letter_spec(spec: TopicSpec) -> TopicSpec:
    return TopicSpec(
        spec.dead_letter_name,
        f"Dead letters of {spec.name}: messages a consumer could not process, with a reason code.",
        retention_ms=DEAD_LETTER_RETENTION_MS,
        partitions=spec.partitions,
        has_dead_letter=False,
    )


def topics_to_create(topics: tuple[TopicSpec, ...] = ALL_TOPICS) -> list[TopicSpec]:
    """Every topic plus the dead-letter topic of each that has one."""
    specs = list(topics)
    specs.extend(dead_letter_spec(t) for t in topics if t.has_dead_letter)
    names = [s.name for s in specs]
    if len(names) != len(set(names)):
        raise ValueError(f"duplicate topic names in the registry: {sorted(names)}")
    return specs
