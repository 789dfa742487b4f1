"""The aftersale service's state: cases, the orders' fulfilment and shop policies (insert-only
versioned projections, see shared/versioned.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from services.aftersale.domain.case import Case
from services.aftersale.fulfilment import OrderFulfilment
from services.aftersale.handlers import ShopPolicy
from shared.db import Document
from shared.versioned import VersionedProjection


@dataclass
class AftersaleState:
    cases: VersionedProjection[Case]
    orders: VersionedProjection[OrderFulfilment]
    policies: VersionedProjection[ShopPolicy]

    def projections(self) -> list[VersionedProjection[Any]]:
        return [self.cases, self.orders, self.policies]

    async def load(self) -> None:
        for projection in self.projections():
            await projection.load()


def open_state(db: AsyncDatabase[Document]) -> AftersaleState:
    return AftersaleState(
        cases=VersionedProjection(db, "aftersale_cases", Case),
        # The orders that had an after-sale case (dispatch's snapshot and copies of their changes),
        # read by key only (one event or case at a time): as JSON, 0.8 KB an order against 6.4 KB as
        # pydantic objects.
        orders=VersionedProjection(db, "aftersale_order_fulfilment", OrderFulfilment, compact=True),
        policies=VersionedProjection(db, "aftersale_shop_policies", ShopPolicy),
    )
