"""Whether a push needs an order/get of its own. Pure: no I/O.

Under a backlog an order's pushes (new, then pay a moment later) wait in Kafka side by side, and each
fetched the same detail again: half the worker's calls to WeChat in a live sale's spike. A detail
fetched after a push arrived already shows that push's change (WeChat pushes once the change is
made), so a push received well before the newest fetch of its order began is answered from the stored
detail. The margin covers the webhook's and the worker's clocks (different hosts) and WeChat's lag.
"""

from __future__ import annotations

RECEIVED_BEFORE_FETCH_MARGIN_S = 2.0


def push_needs_fetch(
    *,
    received_at: float,
    newest_fetch_started_at: float | None,
    margin_s: float = RECEIVED_BEFORE_FETCH_MARGIN_S,
) -> bool:
    """False when the order's stored detail was fetched from WeChat at least `margin_s` after the push
    was received (unix seconds); True when it was not, or when nothing was fetched yet."""
    if newest_fetch_started_at is None:
        return True
    return received_at > newest_fetch_started_at - margin_s
