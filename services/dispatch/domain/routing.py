"""Routing: which supplier fulfils each line of a paid order. Pure: no I/O, no clock.

A route matches a line by WeChat product_id + sku_id, by the merchant's sku_code, or is the shop's
default (matches every line). The most specific match wins; within one specificity the lowest
priority number wins, and the next ones are fallbacks: used when a route's stock cap cannot take
the quantity, its supplier is inactive, or the supplier already rejected the line.
If any line cannot be routed, the whole order is held (a drop-shipped order is not half sent).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from shared.events.dispatch import HoldReason


class Specificity(IntEnum):
    SKU = 0  # product_id + sku_id
    SKU_CODE = 1  # the merchant's sku_code (商家编码)
    SHOP_DEFAULT = 2


@dataclass(frozen=True)
class Route:
    shop_id: str
    supplier_id: str
    priority: int = 100
    product_id: str = ""
    sku_id: str = ""
    sku_code: str = ""
    stock_cap: int | None = None  # units this route may take in all; None: unlimited
    allocated: int = 0  # units already dispatched through it

    def __post_init__(self) -> None:
        if bool(self.product_id) != bool(self.sku_id):
            raise ValueError("a SKU route needs both product_id and sku_id")
        if self.product_id and self.sku_code:
            raise ValueError("a route matches by product_id + sku_id or by sku_code, not both")
        if self.stock_cap is not None and self.stock_cap < 0:
            raise ValueError("stock_cap must not be negative")

    @property
    def specificity(self) -> Specificity:
        if self.product_id:
            return Specificity.SKU
        if self.sku_code:
            return Specificity.SKU_CODE
        return Specificity.SHOP_DEFAULT

    @property
    def route_id(self) -> str:
        """Stable identity: one route per shop, match and supplier."""
        match self.specificity:
            case Specificity.SKU:
                target = f"sku:{self.product_id}:{self.sku_id}"
            case Specificity.SKU_CODE:
                target = f"code:{self.sku_code}"
            case Specificity.SHOP_DEFAULT:
                target = "default"
        return f"{self.shop_id}|{target}|{self.supplier_id}"

    @property
    def remaining(self) -> int | None:
        return None if self.stock_cap is None else max(0, self.stock_cap - self.allocated)

    def matches(self, line: LineToRoute) -> bool:
        match self.specificity:
            case Specificity.SKU:
                return (self.product_id, self.sku_id) == (line.product_id, line.sku_id)
            case Specificity.SKU_CODE:
                return bool(line.sku_code) and self.sku_code == line.sku_code
            case Specificity.SHOP_DEFAULT:
                return True


@dataclass(frozen=True)
class LineToRoute:
    line_no: int
    product_id: str
    sku_id: str
    sku_code: str
    quantity: int


@dataclass(frozen=True)
class Routed:
    # supplier id -> the line numbers it fulfils, in order
    lines_by_supplier: dict[str, list[int]]
    # route id -> units taken from its stock cap by this decision
    allocations: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Held:
    reason: HoldReason
    line_nos: list[int]


def candidate_routes(line: LineToRoute, routes: Iterable[Route]) -> list[Route]:
    """Every route that matches the line, best first."""
    matching = [r for r in routes if r.matches(line)]
    return sorted(matching, key=lambda r: (r.specificity, r.priority, r.supplier_id))


def route_lines(
    lines: Sequence[LineToRoute],
    routes: Sequence[Route],
    *,
    active_suppliers: set[str],
    excluded: Mapping[int, Iterable[str]] | None = None,
) -> Routed | Held:
    """Choose a supplier for every line, or say why the order must wait.

    `routes`: the shop's routes. `excluded`: line number -> suppliers that may not take it (they
    rejected it). Stock caps count the units this decision takes from each route across lines.
    """
    excluded = excluded or {}
    taken: dict[str, int] = {}
    chosen: dict[str, list[int]] = defaultdict(list)
    unroutable: dict[int, HoldReason] = {}
    for line in lines:
        candidates = candidate_routes(line, routes)
        if not candidates:
            unroutable[line.line_no] = HoldReason.NO_ROUTE
            continue
        refused = set(excluded.get(line.line_no, ()))
        why_not: list[HoldReason] = []
        for route in candidates:
            if route.supplier_id in refused:
                why_not.append(HoldReason.ALL_SUPPLIERS_REJECTED)
                continue
            if route.supplier_id not in active_suppliers:
                why_not.append(HoldReason.SUPPLIER_INACTIVE)
                continue
            remaining = route.remaining
            if remaining is not None and remaining - taken.get(route.route_id, 0) < line.quantity:
                why_not.append(HoldReason.STOCK_CAP_REACHED)
                continue
            if route.stock_cap is not None:
                taken[route.route_id] = taken.get(route.route_id, 0) + line.quantity
            chosen[route.supplier_id].append(line.line_no)
            break
        else:
            unroutable[line.line_no] = _most_telling(why_not)
    if unroutable:
        first_reason = unroutable[min(unroutable)]
        return Held(first_reason, sorted(unroutable))
    return Routed(dict(chosen), dict(taken))


def _most_telling(reasons: list[HoldReason]) -> HoldReason:
    """The reason an operator can act on first: a cap or an inactive supplier before rejections."""
    for reason in (HoldReason.STOCK_CAP_REACHED, HoldReason.SUPPLIER_INACTIVE):
        if reason in reasons:
            return reason
    return reasons[0]
