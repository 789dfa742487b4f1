"""Where a case's units are, from the dispatch orders and parcel tracking aftersale has seen."""

import pytest

from services.aftersale.domain.case import Stage
from services.aftersale.fulfilment import (
    DispatchView,
    OrderFulfilment,
    ParcelView,
    Unit,
    stage_for,
    units_dropped,
)
from shared.events.aftersale import AffectedLine
from shared.events.dispatch import DispatchState
from shared.events.logistics import TrackingState

SKU = Unit(product_id="p1", sku_id="s1", quantity=3, shipped=3)
LINES = [AffectedLine(product_id="p1", sku_id="s1", count=1)]


def _shipped_in(*states: TrackingState) -> OrderFulfilment:
    """One dispatch order whose units of the SKU left in one parcel per state."""
    parcels = [
        ParcelView(carrier_code="ZTO", waybill_no=f"ZT{n}", units=[SKU.model_copy(update={"quantity": 1})])
        for n in range(len(states))
    ]
    view = DispatchView(
        dispatch_id="o-1",
        supplier_id="alpha",
        state=DispatchState.SHIPPED,
        version=3,
        lines=[SKU],
        original=[SKU],
        parcels=parcels,
    )
    return OrderFulfilment(
        order_id="o",
        shop_id="shop",
        dispatch={"o-1": view},
        parcels={f"ZTO:ZT{n}": state for n, state in enumerate(states)},
    )


@pytest.mark.parametrize(
    ("states", "stage"),
    [
        ((TrackingState.DELIVERED, TrackingState.DELIVERED), Stage.DELIVERED),
        ((TrackingState.RETURNED, TrackingState.RETURNED), Stage.RETURNED),
        ((TrackingState.IN_TRANSIT, TrackingState.DELIVERED), Stage.IN_TRANSIT),
        ((TrackingState.IN_TRANSIT, TrackingState.RETURNED), Stage.RETURNED),
        # Some units reached the buyer, others came back: there is something to return (a sale once
        # looped here: the operator approved a return that the case kept sending back to a person).
        ((TrackingState.DELIVERED, TrackingState.RETURNED), Stage.DELIVERED),
        ((TrackingState.RETURNED, TrackingState.DELIVERED, TrackingState.DELIVERED), Stage.DELIVERED),
    ],
)
def test_the_stage_of_units_shipped_in_several_parcels(
    states: tuple[TrackingState, ...], stage: Stage
) -> None:
    found = stage_for(_shipped_in(*states), LINES)
    assert found.stage == stage
    assert found.dispatch_id == "o-1" and len(found.waybills) == len(states)


def test_nothing_dispatched_yet() -> None:
    assert stage_for(None, LINES).stage == Stage.NOT_DISPATCHED


def _partly_shipped(*, quantity: int, shipped: int, dropped: int = 0) -> OrderFulfilment:
    """One dispatch order of `quantity` units of the SKU (less `dropped` since), `shipped` of them in
    one parcel on its way."""
    view = DispatchView(
        dispatch_id="o-1",
        supplier_id="alpha",
        state=DispatchState.PARTIALLY_SHIPPED if quantity - dropped > shipped else DispatchState.SHIPPED,
        version=3,
        lines=[SKU.model_copy(update={"quantity": quantity - dropped, "shipped": shipped})],
        original=[SKU.model_copy(update={"quantity": quantity, "shipped": 0})],
        parcels=[
            ParcelView(
                carrier_code="ZTO", waybill_no="ZT0", units=[SKU.model_copy(update={"quantity": shipped})]
            )
        ],
    )
    return OrderFulfilment(
        order_id="o", shop_id="shop", dispatch={"o-1": view}, parcels={"ZTO:ZT0": TrackingState.IN_TRANSIT}
    )


def test_a_refund_is_of_units_not_sent_yet_first_a_return_of_shipped_ones() -> None:
    fulfilment = _partly_shipped(quantity=2, shipped=1)
    refund = stage_for(fulfilment, LINES, unshipped_first=True)
    assert (refund.stage, refund.dispatch_id, refund.waybills) == (Stage.NOT_SHIPPED, "o-1", ())
    assert stage_for(fulfilment, LINES).stage == Stage.IN_TRANSIT


def test_a_refund_whose_units_were_dropped_needs_no_interception() -> None:
    found = stage_for(_partly_shipped(quantity=2, shipped=1, dropped=1), LINES, unshipped_first=True)
    assert found.stage == Stage.CANCELLED


def test_a_refund_beyond_the_units_dropped_brings_the_parcel_back() -> None:
    two = [AffectedLine(product_id="p1", sku_id="s1", count=2)]
    before = stage_for(_partly_shipped(quantity=2, shipped=1), two, unshipped_first=True)
    assert before.stage == Stage.NOT_SHIPPED  # the unit not sent is stopped first
    after = stage_for(_partly_shipped(quantity=2, shipped=1, dropped=1), two, unshipped_first=True)
    assert (after.stage, after.waybills) == (Stage.IN_TRANSIT, (("ZTO", "ZT0"),))


def test_a_refund_of_units_all_shipped_goes_by_the_parcels() -> None:
    found = stage_for(_shipped_in(TrackingState.DELIVERED), LINES, unshipped_first=True)
    assert found.stage == Stage.DELIVERED


def test_units_an_earlier_case_dropped_are_not_this_refunds() -> None:
    """Three units, one dropped for an earlier refund: a second refund of one unit still stops one."""
    earlier = _partly_shipped(quantity=3, shipped=0, dropped=1)
    before = units_dropped(earlier, LINES)
    assert before == [AffectedLine(product_id="p1", sku_id="s1", count=1)]
    found = stage_for(earlier, LINES, unshipped_first=True, dropped_before=before)
    assert found.stage == Stage.NOT_SHIPPED
    stopped = stage_for(
        _partly_shipped(quantity=3, shipped=0, dropped=2), LINES, unshipped_first=True, dropped_before=before
    )
    assert stopped.stage == Stage.CANCELLED
    assert units_dropped(None, LINES) == []
