"""A push needs its own order/get unless the stored detail was fetched well after the push arrived,
or already shows the step the push announces."""

from __future__ import annotations

from services.order_ingest.domain.fetch_policy import (
    RECEIVED_BEFORE_FETCH_MARGIN_S,
    detail_after_push,
    push_needs_fetch,
    push_shown_by_stored,
)
from shared.wechat.api import Order, OrderStatus

FETCHED_AT = 1_700_000_100.0


def test_nothing_fetched_yet_means_fetch() -> None:
    assert push_needs_fetch(received_at=FETCHED_AT, newest_fetch_started_at=None)


def test_a_push_received_long_before_the_fetch_is_already_in_the_detail() -> None:
    assert not push_needs_fetch(received_at=FETCHED_AT - 30, newest_fetch_started_at=FETCHED_AT)


def test_a_push_received_after_the_fetch_began_needs_a_fetch() -> None:
    assert push_needs_fetch(received_at=FETCHED_AT + 0.001, newest_fetch_started_at=FETCHED_AT)


def test_within_the_margin_the_push_is_fetched_again() -> None:
    just_inside = FETCHED_AT - RECEIVED_BEFORE_FETCH_MARGIN_S + 0.01
    just_outside = FETCHED_AT - RECEIVED_BEFORE_FETCH_MARGIN_S - 0.01
    assert push_needs_fetch(received_at=just_inside, newest_fetch_started_at=FETCHED_AT)
    assert not push_needs_fetch(received_at=just_outside, newest_fetch_started_at=FETCHED_AT)


def test_the_margin_can_be_chosen() -> None:
    assert push_needs_fetch(received_at=FETCHED_AT - 5, newest_fetch_started_at=FETCHED_AT, margin_s=10)
    assert not push_needs_fetch(received_at=FETCHED_AT - 5, newest_fetch_started_at=FETCHED_AT, margin_s=1)


def test_a_new_order_push_is_shown_by_any_stored_detail() -> None:
    for status in OrderStatus:
        assert push_shown_by_stored("channels_ec_order_new", status)


def test_a_pay_push_is_shown_only_once_the_order_is_past_payment() -> None:
    shown = {s for s in OrderStatus if push_shown_by_stored("channels_ec_order_pay", s)}
    assert shown == {
        OrderStatus.AWAITING_SHIPMENT,
        OrderStatus.PARTIALLY_SHIPPED,
        OrderStatus.AWAITING_RECEIPT,
        OrderStatus.COMPLETED,
        OrderStatus.CANCELLED_AFTER_AFTERSALE,
    }
    # unpaid, and the gift and group-buy orders still waiting after their payment, ask WeChat again
    assert not push_shown_by_stored("channels_ec_order_pay", OrderStatus.UNPAID)
    assert not push_shown_by_stored("channels_ec_order_pay", OrderStatus.GROUP_BUY_PENDING)
    assert not push_shown_by_stored("channels_ec_order_pay", OrderStatus.CANCELLED_UNPAID)


def test_a_cancel_push_is_shown_only_by_a_cancelled_order() -> None:
    shown = {s for s in OrderStatus if push_shown_by_stored("channels_ec_order_cancel", s)}
    assert shown == {OrderStatus.CANCELLED_AFTER_AFTERSALE, OrderStatus.CANCELLED_UNPAID}


def test_other_pushes_are_never_answered_by_the_status() -> None:
    for event in ("channels_ec_order_ext_info_update", "lvyue_reconcile_order"):
        assert not any(push_shown_by_stored(event, s) for s in OrderStatus)


def _order(status: OrderStatus, update_time: int = 1_700_000_000) -> Order:
    return Order.model_validate(
        {
            "order_id": "3705115058471208928",
            "status": int(status),
            "create_time": 1_699_999_000,
            "update_time": update_time,
            "order_detail": {},
        }
    )


def test_a_delivery_push_of_a_paid_order_needs_no_fetch_it_tells_of_our_own_shipment() -> None:
    for status in (
        OrderStatus.AWAITING_SHIPMENT,
        OrderStatus.PARTIALLY_SHIPPED,
        OrderStatus.AWAITING_RECEIPT,
    ):
        assert push_shown_by_stored("channels_ec_order_deliver", status)
    assert not push_shown_by_stored("channels_ec_order_deliver", OrderStatus.UNPAID)


def test_a_confirmation_of_a_paid_order_is_answered_by_completing_the_stored_detail() -> None:
    assert push_shown_by_stored("channels_ec_order_confirm", OrderStatus.AWAITING_SHIPMENT)
    assert push_shown_by_stored("channels_ec_order_confirm", OrderStatus.AWAITING_RECEIPT)
    assert not push_shown_by_stored("channels_ec_order_confirm", OrderStatus.UNPAID)
    assert not push_shown_by_stored("channels_ec_order_confirm", OrderStatus.CANCELLED_AFTER_AFTERSALE)

    completed = detail_after_push(
        "channels_ec_order_confirm", _order(OrderStatus.AWAITING_RECEIPT), 1_700_000_500
    )
    assert completed.status == OrderStatus.COMPLETED and completed.update_time == 1_700_000_500


def test_completing_never_moves_the_detail_back_in_time_or_out_of_a_cancellation() -> None:
    late = detail_after_push(
        "channels_ec_order_confirm", _order(OrderStatus.AWAITING_RECEIPT, 1_700_000_900), 1
    )
    assert late.status == OrderStatus.COMPLETED and late.update_time == 1_700_000_901
    cancelled = _order(OrderStatus.CANCELLED_AFTER_AFTERSALE)
    assert detail_after_push("channels_ec_order_confirm", cancelled, 1_700_000_500) is cancelled


def test_other_pushes_leave_the_stored_detail_as_it_is() -> None:
    stored = _order(OrderStatus.AWAITING_SHIPMENT)
    for event in ("channels_ec_order_deliver", "channels_ec_order_pay", "channels_ec_order_ext_info_update"):
        assert detail_after_push(event, stored, 1_700_000_500) is stored
