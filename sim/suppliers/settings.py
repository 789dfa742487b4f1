"""The fleet's settings: how each supplier bot behaves, and where it finds the supplier API.

Delays are in seconds of "supplier time": a real 一件代发 supplier answers an offer within minutes and
prints labels within hours. `time_scale` divides every delay, so a run can compress a day into a minute
without changing the behaviour being modelled. Only the fleet's own settings live here: nothing reads
the environment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.events.dispatch import RejectReason
from shared.settings import DispatchSettings

# WeChat delivery_id of the carriers a small Chinese supplier typically uses, with their share.
DEFAULT_CARRIERS: dict[str, float] = {
    "ZTO": 0.3,
    "YTO": 0.2,
    "YUNDA": 0.2,
    "STO": 0.15,
    "SF": 0.1,
    "JD": 0.05,
}


class Delay(BaseModel):
    """A delay drawn uniformly between `min_s` and `max_s`; a bare number means exactly that long."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_s: float = Field(ge=0)
    max_s: float = Field(ge=0)

    @model_validator(mode="before")
    @classmethod
    def _from_shorthand(cls, value: Any) -> Any:
        if isinstance(value, int | float):
            return {"min_s": value, "max_s": value}
        if isinstance(value, list | tuple) and len(value) == 2:
            return {"min_s": value[0], "max_s": value[1]}
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Delay:
        if self.max_s < self.min_s:
            raise ValueError("max_s must not be below min_s")
        return self


class Behaviour(BaseModel):
    """What one supplier's software and warehouse do; every share is a probability per dispatch order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    accept_delay: Delay = Delay(min_s=30, max_s=900)  # from offer to accept/reject
    reject_share: float = Field(default=0.05, ge=0, le=1)
    # Why it rejects, by weight: mostly the stock ran out, sometimes the shop listed a SKU it does not have.
    reject_reasons: dict[RejectReason, float] = Field(
        default_factory=lambda: {RejectReason.OUT_OF_STOCK: 0.85, RejectReason.INVALID_SKU: 0.15}
    )
    ship_delay: Delay = Delay(min_s=1800, max_s=8 * 3600)  # from accept to the first parcels leaving
    split_share: float = Field(default=0.1, ge=0, le=1)  # a shipment goes out in several parcels
    max_parcels: int = Field(default=3, ge=2, le=50)
    partial_share: float = Field(default=0.05, ge=0, le=1)  # part ships now, the rest later
    rest_delay: Delay = Delay(min_s=3600, max_s=24 * 3600)  # from a partial shipment to the rest
    answer_delay: Delay = Delay(min_s=10, max_s=120)  # from a change request to its answer
    # From an after-sale return being shipped back (return_expected with the buyer's waybill) to the
    # warehouse confirming it arrived intact: the return parcel's journey plus unpacking.
    receipt_delay: Delay = Delay(min_s=86400, max_s=3 * 86400)
    confirm_returns: bool = True
    carriers: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_CARRIERS), min_length=1)
    # Ask the API (logistics) for waybill numbers; on 503 logistics_unavailable fall back to own numbers.
    request_waybills: bool = False

    @field_validator("reject_reasons", "carriers")
    @classmethod
    def _positive_weights(cls, weights: dict[Any, float]) -> dict[Any, float]:
        if not weights or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError("weights must be non-negative with a positive sum")
        return weights


class SupplierConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    supplier_id: str = Field(min_length=1)
    api_key: str = Field(min_length=1, repr=False)
    # Fields given here replace the fleet's default behaviour for this supplier only.
    behaviour: dict[str, Any] = Field(default_factory=dict)


class RetryPolicy(BaseModel):
    """Retries of one call on network errors, 5xx and 429 (Retry-After wins over the backoff)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(default=8, ge=1)
    max_elapsed_s: float = Field(default=120, gt=0)
    initial_backoff_s: float = Field(default=0.2, gt=0)
    max_backoff_s: float = Field(default=10, gt=0)
    max_retry_after_s: float = Field(default=30, gt=0)  # never wait longer than this for one Retry-After


class FleetSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    api_url: str = "http://127.0.0.1:8002"
    suppliers: list[SupplierConfig] = Field(default_factory=list)
    behaviour: Behaviour = Behaviour()
    time_scale: float = Field(default=1.0, gt=0)  # every behaviour delay is divided by this
    # Requests per second per supplier, paced on our side as a supplier's integration would: the supplier
    # API allows DISPATCH_SUPPLIER_RATE_PER_S per supplier (bursts of _BURST) and answers 429 beyond;
    # the default is dispatch's own. Unpaced, a supplier with hundreds of offers at once sent them all and
    # retried them all together on Retry-After, until calls gave up.
    requests_per_s: float = Field(default=DispatchSettings.model_fields["supplier_rate_per_s"].default, gt=0)
    # Connections per supplier: calls beyond them wait on our side (a supplier's integration has a few
    # workers, not one connection per open order). More than DISPATCH_SUPPLIER_MAX_IN_FLIGHT (16) would
    # meet 429s.
    connections: int = Field(default=8, ge=1, le=64)
    seed: int | None = None  # None: a random seed, shown in stats() so a run can be repeated
    feed_wait_s: float = Field(default=20, ge=0, le=60)
    feed_limit: int = Field(default=100, ge=1, le=1000)
    http_timeout_s: float = Field(default=15, gt=0)  # per call; the long poll adds feed_wait_s
    retry: RetryPolicy = RetryPolicy()
    # After a call gave up or met a conflict, wait this long (not scaled) before deciding again;
    # after `max_failures_per_order` such rounds the bot leaves the dispatch order alone.
    failure_pause_s: float = Field(default=1.0, ge=0)
    max_failures_per_order: int = Field(default=5, ge=1)
    # Where each bot's feed cursor is kept between runs, as a supplier's integration keeps it: a bot
    # restarted on a stack with history resumes there instead of reading every change since the first.
    # None: start at the beginning of the feed.
    cursor_file: Path | None = None
    cursor_save_every_s: float = Field(default=5.0, gt=0)

    def behaviour_of(self, supplier: SupplierConfig) -> Behaviour:
        if not supplier.behaviour:
            return self.behaviour
        return Behaviour.model_validate({**self.behaviour.model_dump(), **supplier.behaviour})

    def scaled(self, seconds: float) -> float:
        return seconds / self.time_scale


def parse_supplier(value: str) -> SupplierConfig:
    """`ID=KEY` from the command line."""
    supplier_id, sep, key = value.partition("=")
    if not sep or not supplier_id.strip() or not key.strip():
        raise ValueError(f"expected SUPPLIER_ID=API_KEY, got {value!r}")
    return SupplierConfig(supplier_id=supplier_id.strip(), api_key=key.strip())


def load_settings(path: Path) -> FleetSettings:
    """A JSON or YAML file (by suffix) holding FleetSettings' fields."""
    text = path.read_text(encoding="utf-8")
    data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    return FleetSettings.model_validate(data or {})
