"""The sale's settings: the world (shops, catalogue, suppliers and their routes), the live-stream
profile, what buyers do (shares and delays) and the time compression. Nothing reads the environment.

Every duration is in "sale seconds" (a real live stream and real buyers); `time_scale` divides them
all, so a two-hour stream with day-long deliveries can run in a minute without changing its shape.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sim.suppliers.settings import Behaviour, Delay


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ShopsSettings(_Frozen):
    count: int = Field(default=3, ge=1, le=100)
    id_prefix: str = Field(default="sale-shop", pattern=r"^[A-Za-z0-9_-]{1,40}$")


class CatalogueSettings(_Frozen):
    """Per shop: `products` products of `skus_per_product` SKUs each, priced between the bounds (fen)."""

    products: int = Field(default=8, ge=1, le=500)
    skus_per_product: int = Field(default=3, ge=1, le=20)
    min_price_fen: int = Field(default=1900, ge=1)
    max_price_fen: int = Field(default=29900, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> CatalogueSettings:
        if self.max_price_fen < self.min_price_fen:
            raise ValueError("max_price_fen must not be below min_price_fen")
        return self


class SuppliersSettings(_Frozen):
    """Each SKU is routed to a primary and a secondary supplier (by product_id + sku_id); with
    `backstop`, the first supplier also takes every shop's default route and never rejects, so a line
    both SKU suppliers reject still ships (no order is held for lack of a supplier)."""

    count: int = Field(default=6, ge=1, le=500)
    id_prefix: str = Field(default="sale-sup", pattern=r"^[A-Za-z0-9_-]{1,40}$")
    backstop: bool = True
    behaviour: Behaviour = Field(default_factory=Behaviour)
    # Per supplier (by index) overrides of the behaviour, e.g. {1: {"reject_share": 0.3}}.
    overrides: dict[int, dict[str, Any]] = Field(default_factory=dict)


class Profile(_Frozen):
    """The live stream: a warm-up at the base rate, "3-2-1, 上链接!" at `spike_multiplier` times the
    base rate for `spike_s`, then a tail that falls from the base rate to a trickle. With `base_rate`
    None, it is derived so the sale produces `total_orders`."""

    total_orders: int = Field(default=5000, ge=1)
    base_rate: float | None = Field(default=None, gt=0, description="orders per sale second")
    warm_up_s: float = Field(default=1800, ge=0)
    spike_multiplier: float = Field(default=10, ge=1)
    spike_s: float = Field(default=300, gt=0)
    tail_s: float = Field(default=3600, ge=0)
    tail_floor: float = Field(default=0.2, gt=0, le=1, description="tail rate at its end, × base")

    @property
    def duration_s(self) -> float:
        return self.warm_up_s + self.spike_s + self.tail_s


class Shares(_Frozen):
    """What buyers do, each a probability per order (the after-sale shares are of paid orders)."""

    unpaid_timeout: float = Field(default=0.04, ge=0, le=1)  # placed, never paid: WeChat cancels it
    cancel_unpaid: float = Field(default=0.03, ge=0, le=1)  # the buyer cancels before paying
    cancel_before_ship: float = Field(default=0.03, ge=0, le=1)  # paid, then refund-only before shipping
    address_change: float = Field(default=0.05, ge=0, le=1)
    urge: float = Field(default=0.03, ge=0, le=1)  # 催发货
    refund_in_transit: float = Field(default=0.02, ge=0, le=1)  # refund-only while the parcel travels
    refund_unsent: float = Field(default=0.02, ge=0, le=1)  # partly shipped: refund-only of the rest
    refund_after_delivery: float = Field(default=0.02, ge=0, le=1)
    return_after_delivery: float = Field(default=0.03, ge=0, le=1)
    exchange_after_delivery: float = Field(default=0.02, ge=0, le=1)
    withdraw_aftersale: float = Field(default=0.1, ge=0, le=1, description="of after-sale requests")
    multi_line: float = Field(default=0.2, ge=0, le=1)
    max_lines: int = Field(default=3, ge=2, le=10)
    max_units_per_line: int = Field(default=3, ge=1, le=20)

    @model_validator(mode="after")
    def _fits(self) -> Shares:
        unpaid = self.unpaid_timeout + self.cancel_unpaid
        paid_paths = (
            self.cancel_before_ship
            + self.refund_in_transit
            + self.refund_unsent
            + self.refund_after_delivery
            + self.return_after_delivery
            + self.exchange_after_delivery
        )
        if unpaid > 1 or paid_paths > 1:
            raise ValueError("the unpaid shares and the after-sale shares must each sum to at most 1")
        return self


class BuyerDelays(_Frozen):
    pay: Delay = Delay(min_s=5, max_s=90)  # from placing the order to paying
    unpaid_timeout: Delay = Delay(min_s=1800, max_s=1800)  # WeChat closes unpaid orders
    cancel_unpaid: Delay = Delay(min_s=30, max_s=600)
    address_change: Delay = Delay(min_s=30, max_s=900)  # after paying
    urge: Delay = Delay(min_s=3600, max_s=6 * 3600)
    cancel_before_ship: Delay = Delay(min_s=30, max_s=600)  # after paying
    aftersale_after_delivery: Delay = Delay(min_s=3600, max_s=2 * 86400)
    send_return: Delay = Delay(min_s=3600, max_s=86400)  # approved return: the buyer ships it back
    withdraw: Delay = Delay(min_s=600, max_s=3600)
    confirm_receipt: Delay = Delay(min_s=3600, max_s=3 * 86400)  # buyer confirms (else WeChat does)


class OperatorSettings(_Frozen):
    """The shop's customer-service desk: after-sale cases awaiting a person, and interceptions."""

    decide_delay: Delay = Delay(min_s=300, max_s=3600)
    auto_approve_under_fen: int = Field(default=0, ge=0, description="the shops' after-sale policy")
    intercept_delay: Delay = Delay(min_s=600, max_s=7200)  # the carrier turns a parcel around


class CarrierFaults(_Frozen):
    """Set on the carrier stand-in for the sale (its shares of problem, returned and refused parcels)."""

    problem_share: float = Field(default=0.03, ge=0, le=1)
    return_share: float = Field(default=0.01, ge=0, le=1)
    refusal_share: float = Field(default=0.01, ge=0, le=1)


class SaleSettings(_Frozen):
    shops: ShopsSettings = Field(default_factory=ShopsSettings)
    catalogue: CatalogueSettings = Field(default_factory=CatalogueSettings)
    suppliers: SuppliersSettings = Field(default_factory=SuppliersSettings)
    profile: Profile = Field(default_factory=Profile)
    shares: Shares = Field(default_factory=Shares)
    delays: BuyerDelays = Field(default_factory=BuyerDelays)
    operator: OperatorSettings = Field(default_factory=OperatorSettings)
    carrier_faults: CarrierFaults | None = Field(default_factory=CarrierFaults)
    time_scale: float = Field(default=1.0, gt=0, description="every sale duration is divided by this")
    seed: int = 20261111
    poll_interval_s: float = Field(default=1.0, gt=0, description="real seconds between looks")
    settle_timeout_s: float = Field(
        default=600, gt=0, description="real seconds after the sale to wait for every story to end, at least"
    )
    # Past settle_timeout_s the wait goes on while the world still changes (a spike's backlog on two
    # cores), until nothing changed for settle_stall_s (stuck: the report fails) or settle_limit_s.
    settle_stall_s: float = Field(default=180, gt=0, description="real seconds without any change")
    settle_limit_s: float = Field(default=1500, gt=0, description="real seconds after the sale, at most")
    request_timeout_s: float = Field(default=15, gt=0)
    max_control_requests: int = Field(default=32, ge=1, description="buyers' calls in flight at once")

    def scaled(self, sale_seconds: float) -> float:
        return sale_seconds / self.time_scale


def with_short_aftermath(settings: SaleSettings) -> SaleSettings:
    """The same sale with what follows each order (suppliers shipping, buyers confirming, after-sale
    cases, returns reaching the supplier) shortened from hours and days to minutes of sale time, so a
    whole sale, every story ended, fits in a few minutes of real time (`make run`)."""
    behaviour = settings.suppliers.behaviour.model_copy(
        update={
            "accept_delay": Delay(min_s=30, max_s=600),
            "ship_delay": Delay(min_s=600, max_s=3600),
            "rest_delay": Delay(min_s=600, max_s=1800),
            "answer_delay": Delay(min_s=10, max_s=120),
            "receipt_delay": Delay(min_s=600, max_s=1800),
        }
    )
    delays = settings.delays.model_copy(
        update={
            "urge": Delay(min_s=600, max_s=3600),
            "aftersale_after_delivery": Delay(min_s=300, max_s=1800),
            "send_return": Delay(min_s=300, max_s=1800),
            "withdraw": Delay(min_s=60, max_s=300),
            "confirm_receipt": Delay(min_s=300, max_s=1800),
        }
    )
    operator = settings.operator.model_copy(
        update={"decide_delay": Delay(min_s=120, max_s=900), "intercept_delay": Delay(min_s=60, max_s=600)}
    )
    return settings.model_copy(
        update={
            "suppliers": settings.suppliers.model_copy(update={"behaviour": behaviour}),
            "delays": delays,
            "operator": operator,
        }
    )
