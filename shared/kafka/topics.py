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
    # Whether consumers of this topic park unprocessable messages on `<name>.dlq` (none without one).
    has_dead_letter: bool = True
    audience: tuple[str, ...] = ()
    carries: frozenset[str] = frozenset()
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

# Each topic has one audience: a service consumes only topics whose messages it acts on, so no
# consumer fetches and skips another stage's events. `audience` names the consumers (none: the topic
# is a record for operators, the sale's report and the benches); `carries` the event types on it.
WECHAT_SHOP_EVENTS = TopicSpec(
    "wechat.shop-events",
    "Verified, decrypted WeChat order pushes as received by the webhook (order_ingest).",
    audience=("order_ingest.worker",),
    carries=frozenset({"wechat_push_received"}),
)
WECHAT_AFTERSALE_EVENTS = TopicSpec(
    "wechat.aftersale-events",
    "WeChat after-sale pushes (channels_ec_aftersale_update), routed here by the webhook.",
    audience=("aftersale",),
    carries=frozenset({"wechat_push_received"}),
)
WECHAT_EWAYBILL_EVENTS = TopicSpec(
    "wechat.ewaybill-events",
    "WeChat e-waybill tracking pushes (ewaybill_push_path), routed here by the webhook.",
    audience=("logistics",),
    carries=frozenset({"wechat_push_received"}),
)
ORDERS = TopicSpec(
    "orders",
    "Order events dispatch acts on: paid, cancelled, address or SKU changed (and the buyer urging).",
    audience=("dispatch",),
    carries=frozenset(
        {
            "order_paid",
            "order_cancelled",
            "order_address_changed",
            "order_sku_changed",
            "order_shipping_urged",
        }
    ),
)
ORDERS_COMPLETED = TopicSpec(
    "orders.completed",
    "Orders the buyer confirmed or WeChat completed: logistics closes their delivery watch.",
    audience=("logistics",),
    carries=frozenset({"order_completed"}),
)
DISPATCH = TopicSpec(
    "dispatch",
    "Dispatch order changes that move goods or units: offered, updated, rejected, cancelled, shipped, "
    "a change answered, an interception required, a return received.",
    audience=("logistics",),
    carries=frozenset(
        {
            "dispatch_offered",
            "dispatch_updated",
            "dispatch_rejected",
            "dispatch_cancelled",
            "dispatch_shipped",
            "dispatch_change_answered",
            "interception_required",
            "supplier_return_received",
        }
    ),
)
DISPATCH_PROGRESS = TopicSpec(
    "dispatch.progress",
    "Dispatch facts no service acts on: accepted, a change or an after-sale instruction put to the "
    "supplier, holds and their release, the WeChat drop-ship mirror's outcomes.",
    has_dead_letter=False,  # no consumer
    carries=frozenset(
        {
            "dispatch_accepted",
            "dispatch_change_requested",
            "dispatch_aftersale_instructed",
            "order_held",
            "order_hold_released",
            "dispatch_mirrored",
            "dispatch_mirror_cancelled",
            "dispatch_mirror_failed",
        }
    ),
)
DISPATCH_DROPSHIP = TopicSpec(
    "dispatch.dropship",
    "Copies of the dispatch order changes of shops with the WeChat drop-ship mirror on (or of dispatch "
    "orders it mirrored), for the mirror: empty while no shop uses it.",
    audience=("dispatch.dropship",),
    carries=frozenset(
        {
            "dispatch_offered",
            "dispatch_updated",
            "dispatch_shipped",
            "dispatch_cancelled",
            "dispatch_rejected",
            "dispatch_change_answered",
        }
    ),
)
DISPATCH_AFTERSALE = TopicSpec(
    "dispatch.aftersale",
    "For aftersale, the orders it follows (an open case each): a snapshot of the order's dispatch "
    "orders when a case asks, then copies of their changes on `dispatch`.",
    audience=("aftersale",),
    carries=DISPATCH.carries | {"dispatch_fulfilment_snapshot"},
)
LOGISTICS = TopicSpec(
    "logistics",
    "Waybills issued and cancelled, shipments told to WeChat, every tracking change, deadline alerts.",
    has_dead_letter=False,  # no consumer
    carries=frozenset(
        {
            "waybill_issued",
            "waybill_cancelled",
            "shipment_reported",
            "parcel_tracking_changed",
            "deadline_alert",
        }
    ),
)
LOGISTICS_PARCEL_STAGES = TopicSpec(
    "logistics.parcel-stages",
    "Tracking changes that move a parcel into or out of delivered or returned (where the goods are), "
    "for aftersale; copies of those on `logistics`.",
    audience=("aftersale",),
    carries=frozenset({"parcel_tracking_changed"}),
)
AFTERSALE = TopicSpec(
    "aftersale",
    "After-sale case facts: a case's state after each decision.",
    has_dead_letter=False,  # no consumer
    carries=frozenset({"aftersale_case_updated"}),
)
AFTERSALE_INSTRUCTIONS = TopicSpec(
    "aftersale.instructions",
    "Commands from aftersale to dispatch: stop lines, intercept a parcel, expect a return, re-ship; "
    "follow an order with an open case (and stop when the case ends).",
    audience=("dispatch",),
    carries=frozenset(
        {
            "aftersale_cancel_lines",
            "aftersale_intercept",
            "aftersale_return_expected",
            "aftersale_reship",
            "aftersale_follow",
            "aftersale_unfollow",
        }
    ),
)

ALL_TOPICS: tuple[TopicSpec, ...] = (
    WECHAT_SHOP_EVENTS,
    WECHAT_AFTERSALE_EVENTS,
    WECHAT_EWAYBILL_EVENTS,
    ORDERS,
    ORDERS_COMPLETED,
    DISPATCH,
    DISPATCH_PROGRESS,
    DISPATCH_DROPSHIP,
    DISPATCH_AFTERSALE,
    LOGISTICS,
    LOGISTICS_PARCEL_STAGES,
    AFTERSALE,
    AFTERSALE_INSTRUCTIONS,
)


def topic_carrying(event_type: str, among: tuple[TopicSpec, ...]) -> TopicSpec:
    """The one topic of `among` that carries this event type (a producer's choice between its topics)."""
    found = [spec for spec in among if event_type in spec.carries]
    if len(found) != 1:
        raise ValueError(f"{event_type!r} is carried by {len(found)} of {[s.name for s in among]}")
    return found[0]


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
