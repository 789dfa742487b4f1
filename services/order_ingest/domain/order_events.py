"""Which normalized order events a fresh WeChat order detail calls for. Pure: no I/O.

Decisions compare the new detail with what was already published (`PublishedFacts`), not with the
push that triggered the fetch: pushes arrive duplicated and out of order, but the detail is always
WeChat's current state, so "cancel before pay" or a third copy of a pay push come out right.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from shared.events.orders import (
    OrderAddressChanged,
    OrderCancelled,
    OrderCompleted,
    OrderEvent,
    OrderLine,
    OrderPaid,
    OrderShippingUrged,
    OrderSkuChanged,
    Receiver,
)
from shared.wechat.api import Order, OrderStatus

# Paid and not yet (fully) shipped: the orders fulfilment must act on.
DISPATCHABLE = frozenset({OrderStatus.AWAITING_SHIPMENT, OrderStatus.PARTIALLY_SHIPPED})
CANCELLED = frozenset({OrderStatus.CANCELLED_AFTER_AFTERSALE, OrderStatus.CANCELLED_UNPAID})
EXT_INFO_ADDRESS_CHANGED = 2
EXT_INFO_BUYER_URGES_SHIPPING = 7

_EVENT_NAMESPACE = uuid.UUID("8d2c7a0e-5a43-4f4e-9a51-6a1f0e7b9c11")


@dataclass(frozen=True)
class PublishedFacts:
    """What the orders topic has been told about one order so far (stored beside the order)."""

    paid: bool = False
    cancelled: bool = False
    completed: bool = False
    address_fingerprint: str = ""
    lines_fingerprint: str = ""

    def as_document(self) -> dict[str, Any]:
        return {
            "paid": self.paid,
            "cancelled": self.cancelled,
            "completed": self.completed,
            "address_fingerprint": self.address_fingerprint,
            "lines_fingerprint": self.lines_fingerprint,
        }

    @classmethod
    def from_document(cls, document: dict[str, Any] | None) -> PublishedFacts:
        return cls(**document) if document else cls()


@dataclass(frozen=True)
class PushContext:
    """The push that led to this fetch: only what the detail itself cannot tell."""

    event: str
    create_time: int
    dedupe_key: str
    ext_info_type: int | None = None
    cancel_type: int | None = None


def event_id_for(order_id: str, name: str) -> uuid.UUID:
    """Deterministic ids: re-deriving the same event (a redelivery) gives the same id downstream."""
    return uuid.uuid5(_EVENT_NAMESPACE, f"{order_id}:{name}")


def _fingerprint(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:32]


def order_lines(order: Order) -> list[OrderLine]:
    return [
        OrderLine(
            product_id=p.product_id,
            sku_id=p.sku_id,
            quantity=p.sku_cnt,
            unit_sale_price_fen=p.sale_price,
            unit_paid_price_fen=p.real_price,
            title=p.title,
            sku_code=p.sku_code,
            out_product_id=p.out_product_id,
            out_sku_id=p.out_sku_id,
            sku_attrs=[(a.attr_key, a.attr_value) for a in p.sku_attrs],
        )
        for p in order.order_detail.product_infos
    ]


def receiver(order: Order) -> Receiver:
    address = order.order_detail.delivery_info.address_info
    return Receiver(
        name=address.user_name,
        phone=address.tel_number,
        virtual_phone=address.virtual_order_tel_number,
        province=address.province_name,
        city=address.city_name,
        county=address.county_name,
        detail=address.detail_info,
        postal_code=address.postal_code,
    )


def lines_fingerprint(order: Order) -> str:
    return _fingerprint(sorted((p.product_id, p.sku_id, p.sku_cnt) for p in order.order_detail.product_infos))


def address_fingerprint(order: Order) -> str:
    return _fingerprint(receiver(order).model_dump())


def _utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def ship_by(order: Order) -> datetime | None:
    deadlines = [p.delivery_deadline for p in order.order_detail.product_infos if p.delivery_deadline]
    return _utc(min(deadlines)) if deadlines else None


def decide_order_events(
    *, shop_id: str, order: Order, published: PublishedFacts, push: PushContext
) -> tuple[list[OrderEvent], PublishedFacts]:
    """The events to publish for `order` given what was published, and the facts once they are."""
    status = order.status
    version = order.update_time
    common = {
        "order_id": order.order_id,
        "shop_id": shop_id,
        "version": version,
        "occurred_at": _utc(version),
    }
    events: list[OrderEvent] = []
    facts = published
    address_now, lines_now = address_fingerprint(order), lines_fingerprint(order)

    if status in DISPATCHABLE and not facts.paid and not facts.cancelled:
        detail = order.order_detail
        events.append(
            OrderPaid(
                **common,
                event_id=event_id_for(order.order_id, "paid"),
                paid_at=_utc(detail.pay_info.pay_time or version),
                ship_by=ship_by(order),
                lines=order_lines(order),
                receiver=receiver(order),
                order_price_fen=detail.price_info.order_price,
                freight_fen=detail.price_info.freight,
                customer_notes=detail.ext_info.customer_notes,
                merchant_notes=detail.ext_info.merchant_notes,
            )
        )
        return events, replace(facts, paid=True, address_fingerprint=address_now, lines_fingerprint=lines_now)

    if not facts.paid or facts.cancelled:
        # Unpaid orders are stored, not dispatched; a cancelled one takes no further events.
        return events, replace(facts, cancelled=facts.cancelled or status in CANCELLED)

    if status in CANCELLED:
        events.append(
            OrderCancelled(
                **common,
                event_id=event_id_for(order.order_id, "cancelled"),
                wechat_status=status,
                cancel_type=push.cancel_type,
            )
        )
        return events, replace(facts, cancelled=True)

    if address_now != facts.address_fingerprint:
        events.append(
            OrderAddressChanged(
                **common,
                event_id=event_id_for(order.order_id, f"address:{version}"),
                receiver=receiver(order),
            )
        )
    if lines_now != facts.lines_fingerprint:
        events.append(
            OrderSkuChanged(
                **common, event_id=event_id_for(order.order_id, f"sku:{version}"), lines=order_lines(order)
            )
        )
    if push.ext_info_type == EXT_INFO_BUYER_URGES_SHIPPING and status in DISPATCHABLE:
        events.append(
            OrderShippingUrged(
                **common,
                event_id=event_id_for(order.order_id, f"urge:{push.dedupe_key}"),
                urged_at=_utc(push.create_time),
            )
        )
    if status == OrderStatus.COMPLETED and not facts.completed:
        events.append(OrderCompleted(**common, event_id=event_id_for(order.order_id, "completed")))
        facts = replace(facts, completed=True)
    return events, replace(facts, address_fingerprint=address_now, lines_fingerprint=lines_now)
