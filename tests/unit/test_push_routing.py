from services.order_ingest.domain.push_routing import topic_for_push
from shared.kafka.topics import WECHAT_AFTERSALE_EVENTS, WECHAT_EWAYBILL_EVENTS, WECHAT_SHOP_EVENTS


def test_order_pushes_go_to_the_ingest_worker() -> None:
    for event in ("channels_ec_order_new", "channels_ec_order_pay", "channels_ec_order_deliver", "reconcile"):
        assert topic_for_push(event) is WECHAT_SHOP_EVENTS


def test_after_sale_pushes_go_straight_to_aftersale() -> None:
    assert topic_for_push("channels_ec_aftersale_update") is WECHAT_AFTERSALE_EVENTS
    assert WECHAT_AFTERSALE_EVENTS.audience == ("aftersale",)


def test_e_waybill_pushes_go_straight_to_logistics() -> None:
    assert topic_for_push("ewaybill_push_path") is WECHAT_EWAYBILL_EVENTS
    assert WECHAT_EWAYBILL_EVENTS.audience == ("logistics",)


def test_an_unknown_event_goes_to_the_worker_which_counts_and_drops_it() -> None:
    assert topic_for_push("channels_ec_something_new") is WECHAT_SHOP_EVENTS
