"""Whether a push needs an order/get of its own. Pure: no I/O.

Two ways a push is already answered by the stored detail:

- By time. Under a backlog an order's pushes (new, then pay a moment later) wait in Kafka side by side,
  and each fetched the same detail again: half the worker's calls to WeChat in a live sale's spike. A
  detail fetched after a push arrived already shows that push's change (WeChat pushes once the change
  is made), so a push received well before the newest fetch of its order began is answered from the
  stored detail. The margin covers the webhook's and the worker's clocks (different hosts) and
  WeChat's lag.
- By content. A push announcing a step the stored detail has already taken (a new order we have
  stored, a payment when the stored order is awaiting shipment or later, a cancellation when it is
  cancelled) can only be a late or repeated copy: any later change has a push of its own.
- By what it says. Once the stored order is paid, a delivery push announces a shipment logistics
  told WeChat of (delivery/send): the detail would show our own parcels and nothing an order event
  is made of. A confirmation push (确认收货) completes the order: the stored detail, completed at the
  push's time, answers it (`detail_after_push`). So the happy path asks order/get once per order.
"""

from __future__ import annotations

from shared.wechat.api import Order, OrderStatus

RECEIVED_BEFORE_FETCH_MARGIN_S = 2.0

ORDER_NEW = "channels_ec_order_new"
ORDER_PAY = "channels_ec_order_pay"
ORDER_CANCEL = "channels_ec_order_cancel"
ORDER_DELIVER = "channels_ec_order_deliver"
ORDER_CONFIRM = "channels_ec_order_confirm"

# Statuses an order reaches only after its payment has gone through (gift and group-buy orders wait in
# 12 and 13 after paying, and the step to 20 comes with a push of its own: not past the pay push).
_PAID_AND_BEYOND = frozenset(
    {
        OrderStatus.AWAITING_SHIPMENT,
        OrderStatus.PARTIALLY_SHIPPED,
        OrderStatus.AWAITING_RECEIPT,
        OrderStatus.COMPLETED,
        OrderStatus.CANCELLED_AFTER_AFTERSALE,
    }
)
_CANCELLED = frozenset({OrderStatus.CANCELLED_AFTER_AFTERSALE, OrderStatus.CANCELLED_UNPAID})
# Paid, not cancelled: a buyer confirms receipt of such an order (the stored detail may not show
# the shipment, whose push needs no fetch).
_CONFIRMABLE = frozenset(
    {
        OrderStatus.AWAITING_SHIPMENT,
        OrderStatus.PARTIALLY_SHIPPED,
        OrderStatus.AWAITING_RECEIPT,
        OrderStatus.COMPLETED,
    }
)


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


def push_shown_by_stored(event: str, stored_status: int) -> bool:
    """True when the stored detail (status `stored_status`) answers the push `event` (see the module
    docstring); False for every other push (they may carry changes the status does not show)."""
    if event == ORDER_NEW:
        return True
    if event == ORDER_PAY:
        return stored_status in _PAID_AND_BEYOND
    if event == ORDER_CANCEL:
        return stored_status in _CANCELLED
    if event == ORDER_DELIVER:
        return stored_status in _PAID_AND_BEYOND
    if event == ORDER_CONFIRM:
        return stored_status in _CONFIRMABLE
    return False


def detail_after_push(event: str, order: Order, create_time: int) -> Order:
    """The stored detail as a push it answers leaves it: a confirmation completes the order at the
    push's time (unix seconds), and never at or before the stored detail's own time, so the
    completed detail is the newest; any other push changes nothing the stored detail shows."""
    if event == ORDER_CONFIRM and order.status in _CONFIRMABLE - {OrderStatus.COMPLETED}:
        return order.model_copy(
            update={"status": OrderStatus.COMPLETED, "update_time": max(order.update_time + 1, create_time)}
        )
    return order
