"""decide_order_events: every transition, duplicates and out-of-order details."""

from typing import Any

from services.order_ingest.domain.order_events import (
    PublishedFacts,
    PushContext,
    decide_order_events,
    event_id_for,
)
from services.order_ingest.worker import StoredOrder
from shared.events.orders import (
    OrderAddressChanged,
    OrderCancelled,
    OrderCompleted,
    OrderPaid,
    OrderShippingUrged,
    OrderSkuChanged,
)
from shared.wechat.api import Order

ORDER_ID = 3705115058471208928
PAY = PushContext("channels_ec_order_pay", 1_763_000_100, "pay")


def detail(status: int, update_time: int, **changes: Any) -> Order:
    document: dict[str, Any] = {
        "order_id": ORDER_ID,
        "status": status,
        "create_time": 1_763_000_000,
        "update_time": update_time,
        "order_detail": {
            "product_infos": [
                {
                    "product_id": "10000001",
                    "sku_id": "20000001",
                    "sku_cnt": 2,
                    "sale_price": 1990,
                    "real_price": 1890,
                    "title": "T-shirt",
                    "delivery_deadline": 1_763_172_900,
                },
                {
                    "product_id": "10000002",
                    "sku_id": 20000002,
                    "sku_cnt": 1,
                    "sale_price": 990,
                    "real_price": 990,
                    "delivery_deadline": 1_763_172_800,
                },
            ],
            "pay_info": {"pay_time": 1_763_000_100},
            "price_info": {"order_price": 4770, "freight": 0},
            "delivery_info": {
                "address_info": {
                    "user_name": "张三",
                    "tel_number": "13800000000",
                    "province_name": "广东省",
                    "city_name": "广州市",
                    "county_name": "天河区",
                    "detail_info": "1号",
                }
            },
        },
    }
    document["order_detail"].update(changes)
    return Order.model_validate(document)


def decide(order: Order, facts: PublishedFacts, push: PushContext = PAY) -> tuple[list[Any], PublishedFacts]:
    return decide_order_events(shop_id="shop-1", order=order, published=facts, push=push)


def test_paid_order_is_published_once_with_lines_receiver_and_ship_by() -> None:
    events, facts = decide(detail(20, 200), PublishedFacts())
    assert [type(e) for e in events] == [OrderPaid]
    paid = events[0]
    assert paid.order_id == str(ORDER_ID) and paid.version == 200
    assert [(line.sku_id, line.quantity) for line in paid.lines] == [("20000001", 2), ("20000002", 1)]
    assert paid.receiver.name == "张三"
    assert int(paid.ship_by.timestamp()) == 1_763_172_800  # the earliest line deadline
    assert facts.paid
    again, same = decide(detail(20, 200), facts)  # duplicate push, same detail
    assert again == [] and same == facts


def test_unpaid_orders_are_not_dispatched() -> None:
    events, facts = decide(detail(10, 100), PublishedFacts())
    assert events == [] and not facts.paid


def test_cancel_before_pay_publishes_nothing_and_later_details_cannot_revive_it() -> None:
    events, facts = decide(
        detail(250, 300), PublishedFacts(), PushContext("channels_ec_order_cancel", 1, "c", cancel_type=2)
    )
    assert events == [] and facts.cancelled
    # A pay push processed late still fetches the current (cancelled) detail, or an older one.
    assert decide(detail(20, 200), facts)[0] == []


def test_cancellation_of_a_paid_order() -> None:
    _, paid = decide(detail(20, 200), PublishedFacts())
    events, facts = decide(
        detail(200, 400), paid, PushContext("channels_ec_order_cancel", 1, "c", cancel_type=3)
    )
    assert [type(e) for e in events] == [OrderCancelled]
    assert events[0].cancel_type == 3 and events[0].wechat_status == 200
    assert facts.cancelled and decide(detail(200, 400), facts)[0] == []


def test_address_and_sku_changes_after_payment() -> None:
    _, paid = decide(detail(20, 200), PublishedFacts())
    moved = detail(
        20,
        300,
        delivery_info={
            "address_info": {
                "user_name": "张三",
                "tel_number": "13800000000",
                "province_name": "广东省",
                "city_name": "深圳市",
                "county_name": "南山区",
                "detail_info": "2号",
            }
        },
    )
    events, facts = decide(moved, paid)
    assert [type(e) for e in events] == [OrderAddressChanged]
    assert events[0].receiver.city == "深圳市"
    resized = detail(
        20,
        400,
        product_infos=[{"product_id": "10000001", "sku_id": "20000009", "sku_cnt": 2}],
        delivery_info=moved.order_detail.delivery_info.model_dump(),
    )
    events, _ = decide(resized, facts)
    assert [type(e) for e in events] == [OrderSkuChanged]
    assert [line.sku_id for line in events[0].lines] == ["20000009"]


def test_buyer_urging_shipping_and_completion() -> None:
    _, paid = decide(detail(20, 200), PublishedFacts())
    urge = PushContext("channels_ec_order_ext_info_update", 1_763_000_500, "urge-1", ext_info_type=7)
    events, facts = decide(detail(20, 200), paid, urge)
    assert [type(e) for e in events] == [OrderShippingUrged]
    assert (
        events[0].event_id == decide(detail(20, 200), paid, urge)[0][0].event_id
    )  # a duplicate keeps its id
    events, facts = decide(detail(100, 900), facts)
    assert [type(e) for e in events] == [OrderCompleted]
    assert decide(detail(100, 900), facts)[0] == []


def test_event_ids_are_deterministic() -> None:
    first, _ = decide(detail(20, 200), PublishedFacts())
    second, _ = decide(detail(20, 200), PublishedFacts())
    assert first[0].event_id == second[0].event_id == event_id_for(str(ORDER_ID), "paid")


def test_facts_round_trip_through_a_document() -> None:
    _, facts = decide(detail(20, 200), PublishedFacts())
    assert PublishedFacts.from_document(facts.as_document()) == facts
    assert PublishedFacts.from_document(None) == PublishedFacts()


def test_a_stored_order_written_with_the_old_status_fields_still_reads() -> None:
    order = detail(20, 1_700_000_100)
    old_document = {
        "shop_id": "shop-1",
        "status": 20,
        "update_time": 1_700_000_100,
        "order": order.model_dump(mode="json"),
        "published": {},
    }
    stored = StoredOrder.model_validate(old_document)
    assert stored.order == order and stored.shop_id == "shop-1"
    assert "status" not in stored.model_dump()
