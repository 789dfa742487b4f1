"""A push needs its own order/get unless the stored detail was fetched well after the push arrived."""

from __future__ import annotations

from services.order_ingest.domain.fetch_policy import RECEIVED_BEFORE_FETCH_MARGIN_S, push_needs_fetch

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
