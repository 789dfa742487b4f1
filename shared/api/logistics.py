"""The logistics service's internal API (port 8003, `/internal/v1`), called by dispatch: waybills
for a dispatch order's parcels, and their labels."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.events.dispatch import ShippingAddress

INTERNAL_PREFIX = "/internal/v1"


class GoodsLine(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    line_no: int = Field(ge=0)
    product_id: str
    sku_id: str
    title: str = ""
    sku_attrs: str = ""
    quantity: int = Field(ge=1)


class ParcelToIssue(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    lines: list[GoodsLine] = Field(min_length=1)
    weight_grams: int | None = Field(default=None, ge=1)


class WaybillIssueRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    issue_key: str = Field(min_length=8, max_length=128, description="same key, same numbers: retry-safe")
    shop_id: str
    order_id: str
    dispatch_id: str
    supplier_id: str
    supplier_name: str
    carrier_code: str = Field(description="WeChat delivery_id")
    sender: ShippingAddress
    receiver: ShippingAddress
    parcels: list[ParcelToIssue] = Field(min_length=1, max_length=50)


class LogisticsErrorCode:
    UNKNOWN_CARRIER = "unknown_carrier"
    CARRIER_REFUSED = "carrier_refused"  # no number allocated (WeChat 10025005 / aggregator refusal)
    NO_SUCH_WAYBILL = "no_such_waybill"
