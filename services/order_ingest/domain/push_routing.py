"""Which topic a verified push goes to: each stage reads only the pushes it acts on. Pure: no I/O.

Order pushes (and reconciliation's) go to the ingest worker, which fetches and normalizes the order;
after-sale pushes go straight to aftersale and e-waybill tracking pushes straight to logistics, which
fetch or read what they need themselves. Unknown events go to the worker, which counts and drops them.
"""

from __future__ import annotations

from shared.kafka.topics import WECHAT_AFTERSALE_EVENTS, WECHAT_EWAYBILL_EVENTS, WECHAT_SHOP_EVENTS, TopicSpec

AFTERSALE_EVENT = "channels_ec_aftersale_update"
EWAYBILL_EVENT = "ewaybill_push_path"

_ROUTED_ELSEWHERE: dict[str, TopicSpec] = {
    AFTERSALE_EVENT: WECHAT_AFTERSALE_EVENTS,
    EWAYBILL_EVENT: WECHAT_EWAYBILL_EVENTS,
}


def topic_for_push(event: str) -> TopicSpec:
    """The topic of a push, by its WeChat `Event`."""
    return _ROUTED_ELSEWHERE.get(event, WECHAT_SHOP_EVENTS)
