"""Where a case's units are, from the dispatch orders and parcel tracking aftersale has seen."""

import pytest

from services.aftersale.domain.case import Stage
from services.aftersale.fulfilment import DispatchView, OrderFulfilment, ParcelView, Unit, stage_for
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
