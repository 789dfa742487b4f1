"""What a shipping label shows: one parcel of one dispatch order, as dispatch and logistics hand it over.

`LabelData` is everything `services.logistics.labels.render_label` prints, already resolved: carrier
name, sender and receiver text, line titles. The renderer looks nothing up.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from shared.events.base import OrderId
from shared.events.dispatch import ShippingAddress

# Code 128 encodes printable ASCII; a waybill number is never longer than WeChat's waybill_id field.
WAYBILL_PATTERN = r"^[!-~]{1,64}$"


class LabelSender(BaseModel):
    """The sender as printed (寄件人): usually the supplier's warehouse, one address line."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    phone: str = Field(min_length=1)
    address: str = Field(min_length=1, description="full address, province to house number")


class LabelLine(BaseModel):
    """One order line in the parcel, as the packer reads it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    title: str
    sku_attrs: str = Field(default="", description='SKU attributes as text, e.g. "颜色: 红; 尺码: XL"')
    quantity: int = Field(ge=1)


class LabelData(BaseModel):
    """One parcel's shipping label (面单)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    carrier_code: str = Field(min_length=1, max_length=32, description="WeChat delivery_id, e.g. ZTO")
    carrier_name: str = Field(min_length=1, description="e.g. 中通快递")
    waybill_no: str = Field(pattern=WAYBILL_PATTERN, description="WeChat waybill_id")
    parcel_no: int = Field(ge=1, description="this parcel, 1-based")
    parcel_count: int = Field(ge=1, description="parcels in the dispatch order; printed as 1/2")
    sender: LabelSender
    # The virtual number (13900001111-1234) when WeChat gave one; printed as given.
    receiver: ShippingAddress
    order_id: OrderId
    dispatch_id: str = Field(min_length=1)
    shop_name: str
    lines: list[LabelLine] = Field(default_factory=list)
    printed_at: AwareDatetime
    sorting_code: str | None = Field(
        default=None, description='大头笔: the carrier\'s short routing code printed big, e.g. "杭州 310-02"'
    )
    e_waybill: bool = Field(default=False, description="issued through WeChat's e-waybill (电子面单) service")

    @model_validator(mode="after")
    def _parcel_in_range(self) -> Self:
        if self.parcel_no > self.parcel_count:
            raise ValueError(f"parcel_no {self.parcel_no} is above parcel_count {self.parcel_count}")
        return self
