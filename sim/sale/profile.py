"""The sale's schedule (pure): when each order arrives, and what its buyer will do with it.

Arrivals follow the profile's rate (warm-up, the 10× spike, a falling tail) as an open loop: the
arrival times are fixed before the sale starts and never wait for the system. Exactly
`total_orders` arrive: they are the order statistics of draws from the rate's density, which is a
Poisson process conditioned on its count.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass
from enum import StrEnum

from sim.sale.settings import Profile, SaleSettings, Shares
from sim.sale.world import SaleShop, Sku, World


class Phase(StrEnum):
    WARM_UP = "warm_up"
    SPIKE = "spike"
    TAIL = "tail"


def base_rate(profile: Profile) -> float:
    """Orders per sale second outside the spike (given, or derived from the total)."""
    if profile.base_rate is not None:
        return profile.base_rate
    weight = profile.warm_up_s + profile.spike_multiplier * profile.spike_s + _tail_weight(profile)
    return profile.total_orders / weight


def _tail_weight(profile: Profile) -> float:
    # The tail falls linearly from 1× to tail_floor× the base rate: its mean is their average.
    return profile.tail_s * (1 + profile.tail_floor) / 2


def phase_at(profile: Profile, t: float) -> Phase:
    if t < profile.warm_up_s:
        return Phase.WARM_UP
    if t < profile.warm_up_s + profile.spike_s:
        return Phase.SPIKE
    return Phase.TAIL


def rate_at(profile: Profile, t: float) -> float:
    """Orders per sale second at sale time `t` (0 outside the sale)."""
    if t < 0 or t > profile.duration_s:
        return 0.0
    rate = base_rate(profile)
    match phase_at(profile, t):
        case Phase.WARM_UP:
            return rate
        case Phase.SPIKE:
            return rate * profile.spike_multiplier
        case Phase.TAIL:
            into = (t - profile.warm_up_s - profile.spike_s) / profile.tail_s if profile.tail_s else 1.0
            return rate * (1 - (1 - profile.tail_floor) * into)


def _cumulative(profile: Profile, t: float) -> float:
    """Expected orders in [0, t] (up to a constant factor: the base rate)."""
    w, s = profile.warm_up_s, profile.spike_s
    if t <= w:
        return t
    if t <= w + s:
        return w + profile.spike_multiplier * (t - w)
    x = min(t - w - s, profile.tail_s)
    slope = (1 - profile.tail_floor) / profile.tail_s if profile.tail_s else 0.0
    return w + profile.spike_multiplier * s + x - slope * x * x / 2


def _invert(profile: Profile, target: float) -> float:
    low, high = 0.0, profile.duration_s
    for _ in range(60):
        mid = (low + high) / 2
        if _cumulative(profile, mid) < target:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def arrival_times(profile: Profile, rng: random.Random) -> list[float]:
    """`total_orders` arrival times in sale seconds, ascending, following the rate."""
    total = _cumulative(profile, profile.duration_s)
    return sorted(_invert(profile, rng.random() * total) for _ in range(profile.total_orders))


class Fate(StrEnum):
    """The one thing (beyond paying, changing the address or urging) the buyer does with the order."""

    KEEP = "keep"  # paid, delivered, receipt confirmed
    UNPAID_TIMEOUT = "unpaid_timeout"
    CANCEL_UNPAID = "cancel_unpaid"
    CANCEL_BEFORE_SHIP = "cancel_before_ship"  # refund-only of everything, before it ships
    REFUND_IN_TRANSIT = "refund_in_transit"
    REFUND_UNSENT = "refund_unsent"  # once part of the order shipped, refund-only of units not sent yet
    REFUND_AFTER_DELIVERY = "refund_after_delivery"
    RETURN_AFTER_DELIVERY = "return_after_delivery"
    EXCHANGE_AFTER_DELIVERY = "exchange_after_delivery"

    @property
    def paid(self) -> bool:
        return self not in (Fate.UNPAID_TIMEOUT, Fate.CANCEL_UNPAID)

    @property
    def aftersale_type(self) -> str | None:
        return {
            Fate.CANCEL_BEFORE_SHIP: "REFUND",
            Fate.REFUND_IN_TRANSIT: "REFUND",
            Fate.REFUND_UNSENT: "REFUND",
            Fate.REFUND_AFTER_DELIVERY: "REFUND",
            Fate.RETURN_AFTER_DELIVERY: "RETURN",
            Fate.EXCHANGE_AFTER_DELIVERY: "EXCHANGE",
        }.get(self)


AFTER_DELIVERY = frozenset(
    {Fate.REFUND_AFTER_DELIVERY, Fate.RETURN_AFTER_DELIVERY, Fate.EXCHANGE_AFTER_DELIVERY}
)


@dataclass(frozen=True)
class PlannedLine:
    sku: Sku
    count: int


@dataclass(frozen=True)
class PlannedOrder:
    index: int
    at_s: float  # sale seconds after the start
    phase: Phase
    shop: SaleShop
    lines: tuple[PlannedLine, ...]
    fate: Fate
    address_change: bool
    urge: bool
    withdraw: bool  # the buyer withdraws the after-sale request before it is decided
    buyer: int  # index into the buyer addresses

    @property
    def units(self) -> int:
        return sum(line.count for line in self.lines)


def draw_fate(shares: Shares, rng: random.Random) -> Fate:
    unpaid = rng.random()
    if unpaid < shares.unpaid_timeout:
        return Fate.UNPAID_TIMEOUT
    if unpaid < shares.unpaid_timeout + shares.cancel_unpaid:
        return Fate.CANCEL_UNPAID
    draw = rng.random()
    for share, fate in (
        (shares.cancel_before_ship, Fate.CANCEL_BEFORE_SHIP),
        (shares.refund_in_transit, Fate.REFUND_IN_TRANSIT),
        (shares.refund_unsent, Fate.REFUND_UNSENT),
        (shares.refund_after_delivery, Fate.REFUND_AFTER_DELIVERY),
        (shares.return_after_delivery, Fate.RETURN_AFTER_DELIVERY),
        (shares.exchange_after_delivery, Fate.EXCHANGE_AFTER_DELIVERY),
    ):
        if draw < share:
            return fate
        draw -= share
    return Fate.KEEP


def plan_sale(settings: SaleSettings, world: World) -> list[PlannedOrder]:
    """Every order of the sale, decided up front from the seed."""
    rng = random.Random(f"sale|{settings.seed}")
    shares = settings.shares
    orders: list[PlannedOrder] = []
    for index, at in enumerate(arrival_times(settings.profile, rng)):
        shop = world.shops[rng.randrange(len(world.shops))]
        fate = draw_fate(shares, rng)
        # A buyer who cancels everything before shipping asks for one refund: a single-line order
        # (WeChat refunds one order at most once a minute, so several lines would take minutes).
        # One who refunds what is not sent yet needs several lines, so that part can ship first.
        drawn = rng.random()
        multi = fate is Fate.REFUND_UNSENT or (
            drawn < shares.multi_line and fate is not Fate.CANCEL_BEFORE_SHIP
        )
        count = rng.randint(2, min(shares.max_lines, len(shop.skus))) if multi else 1
        skus = rng.sample(shop.skus, count) if count <= len(shop.skus) else list(shop.skus)
        lines = tuple(PlannedLine(sku, rng.randint(1, shares.max_units_per_line)) for sku in skus)
        orders.append(
            PlannedOrder(
                index=index,
                at_s=at,
                phase=phase_at(settings.profile, at),
                shop=shop,
                lines=lines,
                fate=fate,
                address_change=fate.paid and rng.random() < shares.address_change,
                urge=fate.paid and rng.random() < shares.urge,
                withdraw=fate in AFTER_DELIVERY and rng.random() < shares.withdraw_aftersale,
                buyer=rng.randrange(1 << 16),
            )
        )
    return orders


def orders_due(arrivals: list[float], elapsed_s: float) -> int:
    """How many of the (ascending) arrival times are due after `elapsed_s` sale seconds."""
    return bisect.bisect_right(arrivals, elapsed_s)
