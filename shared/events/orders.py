"""Normalized order events (topic `orders`), published by order_ingest, consumed by dispatch and
aftersale. `version` is WeChat's `update_time` of the order detail the event was derived from."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from shared.events.base import Event


class OrderLine(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    product_id: str
    sku_id: str
    quantity: int = Field(ge=0, description="sku_cnt")
    unit_sale_price_fen: int = Field(ge=0, description="sale_price")
    unit_paid_price_fen: int = Field(ge=0, description="real_price")
    title: str = ""
    sku_code: str = ""
    out_product_id: str = ""
    out_sku_id: str = ""
    sku_attrs: list[tuple[str, str]] = Field(default_factory=list)


class Receiver(BaseModel):
    """delivery_info.address_info: what shipping needs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    phone: str
    virtual_phone: str = ""
    province: str
    city: str
    county: str
    detail: str
    postal_code: str = ""


class OrderEvent(Event):
    shop_id: str
    version: int = Field(description="WeChat update_time of the order detail")


class OrderPaid(OrderEvent):
    event_type: Literal["order_paid"] = "order_paid"
    schema_version: int = 1
    paid_at: datetime
    ship_by: datetime | None = Field(description="earliest delivery_deadline of the lines")
    lines: list[OrderLine]
    receiver: Receiver
    order_price_fen: int
    freight_fen: int = 0
    customer_notes: str = ""
    merchant_notes: str = ""


class OrderCancelled(OrderEvent):
    event_type: Literal["order_cancelled"] = "order_cancelled"
    schema_version: int = 1
    wechat_status: int
    cancel_type: int | None = Field(default=None, description="1 buyer, 2 timeout, 3 all items after-sold")


class OrderAddressChanged(OrderEvent):
    event_type: Literal["order_address_changed"] = "order_address_changed"
    schema_version: int = 1
    receiver: Receiver


class OrderSkuChanged(OrderEvent):
    event_type: Literal["order_sku_changed"] = "order_sku_changed"
    schema_version: int = 1
    lines: list[OrderLine]


class OrderShippingUrged(OrderEvent):
    event_type: Literal["order_shipping_urged"] = "order_shipping_urged"
    schema_version: int = 1
    urged_at: datetime


class OrderCompleted(OrderEvent):
    event_type: Literal["order_completed"] = "order_completed"
    schema_version: int = 1


AnyOrderEvent = Annotated[
    OrderPaid | OrderCancelled | OrderAddressChanged | OrderSkuChanged | OrderShippingUrged | OrderCompleted,
    Field(discriminator="event_type"),
]


# Parses any order event by its `event_type`: `ORDER_EVENTS.validate_json(raw)`.
ORDER_EVENTS: TypeAdapter[AnyOrderEvent] = TypeAdapter(AnyOrderEvent)
