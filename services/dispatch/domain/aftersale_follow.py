"""Aftersale's follow of an order: which cases follow it, and the snapshot that answers a follow. Pure.

Aftersale acts on the few orders with an after-sale case, so it does not read every dispatch change:
a case asks dispatch to follow its order (`FollowRequested`), dispatch answers with every dispatch
order of the order as it stands, then copies each of their changes to aftersale, until every case
that asked has ended (`UnfollowRequested`). Both are decided under the order's lock, with the same
changes committed: no change falls between the snapshot and the copies.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from services.dispatch.domain.dispatch_order import DispatchOrder, offered_lines
from shared.events.aftersale import FollowRequested, UnfollowRequested
from shared.events.dispatch import AftersaleInstructionKind, DispatchFulfilmentSnapshot, DispatchOrderFacts


def cases_following(cases: frozenset[str], event: FollowRequested | UnfollowRequested) -> frozenset[str]:
    """The order's following cases after a follow or an unfollow (the order is followed while any)."""
    if isinstance(event, FollowRequested):
        return cases | {event.case_id}
    return cases - {event.case_id}


def snapshot(
    event: FollowRequested, orders: Sequence[DispatchOrder], now: datetime
) -> DispatchFulfilmentSnapshot:
    """The order's dispatch orders (oldest first) as aftersale needs them, in answer to this follow."""
    return DispatchFulfilmentSnapshot(
        order_id=event.order_id,
        occurred_at=now,
        shop_id=event.shop_id,
        case_id=event.case_id,
        dispatch_orders=[facts(order) for order in orders],
    )


def facts(order: DispatchOrder) -> DispatchOrderFacts:
    return DispatchOrderFacts(
        dispatch_id=order.dispatch_id,
        supplier_id=order.supplier_id,
        state=order.state,
        version=order.version,
        lines=order.lines,
        offered_lines=offered_lines(order),
        parcels=order.parcels,
        receiver=order.receiver,
        aftersale_case_id=order.aftersale_case_id,
        returns_received=[
            i.case_id
            for i in order.aftersale_instructions
            if i.kind == AftersaleInstructionKind.RETURN_EXPECTED and i.done_at is not None
        ],
    )
