"""delivery/send: one delivery_list element per parcel, the products in it, an exact order id, and
what each errcode means."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from services.logistics.domain.delivery import (
    COURIER,
    DeliveryErrCode,
    NextStep,
    ParcelFate,
    Verdict,
    delivery_request,
    judge,
    recheck,
    refunded_units,
    told_with_delivery_send,
)
from shared.events.dispatch import DispatchLine, Parcel, ParcelLine
from shared.events.logistics import DeliveryOutcome
from shared.wechat.api import Order
from tests.unit.logistics.builders import ORDER_ID, T0

BIG_ORDER_ID = 3705115058471208928


def dline(line_no: int, quantity: int, *, shipped: int = 0) -> DispatchLine:
    return DispatchLine(
        line_no=line_no,
        product_id=f"1000{line_no}",
        sku_id=f"2000{line_no}",
        quantity=quantity,
        shipped_quantity=shipped,
    )


def parcel(no: int, *items: tuple[int, int], carrier: str = "ZTO", waybill: str | None = None) -> Parcel:
    return Parcel(
        parcel_no=no,
        carrier_code=carrier,
        waybill_no=waybill or f"7881234567890{no}",
        lines=[ParcelLine(line_no=line_no, quantity=qty) for line_no, qty in items],
        shipped_at=T0,
    )


def _list(request: dict[str, object]) -> list[dict[str, object]]:
    delivery_list = request["delivery_list"]
    assert isinstance(delivery_list, list)
    return delivery_list


# ---------------------------------------------------------------------------------------------------
# delivery_request
# ---------------------------------------------------------------------------------------------------


def test_whole_order_in_one_parcel() -> None:
    lines = [dline(0, 2), dline(1, 1)]

    request = delivery_request(ORDER_ID, [parcel(1, (0, 2), (1, 1), waybill="YT100")], lines)

    assert request == {
        "order_id": BIG_ORDER_ID,
        "delivery_list": [
            {
                "delivery_id": "ZTO",
                "waybill_id": "YT100",
                "deliver_type": 1,
                "product_infos": [
                    {"product_id": "10000", "sku_id": "20000", "product_cnt": 2},
                    {"product_id": "10001", "sku_id": "20001", "product_cnt": 1},
                ],
            }
        ],
    }


def test_split_shipment_one_element_per_parcel_with_only_its_products() -> None:
    lines = [dline(0, 3), dline(1, 1), dline(2, 2)]
    parcels = [
        parcel(1, (0, 2), carrier="SF", waybill="SF001"),
        parcel(2, (0, 1), (2, 2), carrier="ZTO", waybill="ZT002"),
        parcel(3, (1, 1), carrier="YUNDA", waybill="YD003"),
    ]

    delivery_list = _list(delivery_request(ORDER_ID, parcels, lines))

    assert delivery_list == [
        {
            "delivery_id": "SF",
            "waybill_id": "SF001",
            "deliver_type": 1,
            "product_infos": [{"product_id": "10000", "sku_id": "20000", "product_cnt": 2}],
        },
        {
            "delivery_id": "ZTO",
            "waybill_id": "ZT002",
            "deliver_type": 1,
            "product_infos": [
                {"product_id": "10000", "sku_id": "20000", "product_cnt": 1},
                {"product_id": "10002", "sku_id": "20002", "product_cnt": 2},
            ],
        },
        {
            "delivery_id": "YUNDA",
            "waybill_id": "YD003",
            "deliver_type": 1,
            "product_infos": [{"product_id": "10001", "sku_id": "20001", "product_cnt": 1}],
        },
    ]


def test_partial_shipment_counts_what_is_in_the_parcel_not_the_line() -> None:
    lines = [dline(0, 5), dline(1, 4)]

    delivery_list = _list(delivery_request(ORDER_ID, [parcel(1, (0, 2))], lines))

    assert delivery_list == [
        {
            "delivery_id": "ZTO",
            "waybill_id": "78812345678901",
            "deliver_type": 1,
            "product_infos": [{"product_id": "10000", "sku_id": "20000", "product_cnt": 2}],
        }
    ]


def test_second_partial_shipment_after_an_earlier_one() -> None:
    lines = [dline(0, 5, shipped=2), dline(1, 4, shipped=4)]

    delivery_list = _list(delivery_request(ORDER_ID, [parcel(2, (0, 3))], lines))

    assert delivery_list[0]["product_infos"] == [{"product_id": "10000", "sku_id": "20000", "product_cnt": 3}]


def test_product_infos_follow_the_parcel_and_lines_are_looked_up_by_line_no() -> None:
    lines = [dline(2, 1), dline(0, 1), dline(1, 1)]

    delivery_list = _list(delivery_request(ORDER_ID, [parcel(1, (1, 1), (2, 1), (0, 1))], lines))

    infos = delivery_list[0]["product_infos"]
    assert isinstance(infos, list)
    assert [(i["product_id"], i["sku_id"]) for i in infos] == [
        ("10001", "20001"),
        ("10002", "20002"),
        ("10000", "20000"),
    ]


def test_every_element_is_a_courier_delivery() -> None:
    lines = [dline(0, 3)]
    parcels = [parcel(n, (0, 1)) for n in (1, 2, 3)]

    delivery_list = _list(delivery_request(ORDER_ID, parcels, lines))

    assert COURIER == 1
    assert [e["deliver_type"] for e in delivery_list] == [1, 1, 1]
    assert all(
        set(e) == {"delivery_id", "waybill_id", "deliver_type", "product_infos"} for e in delivery_list
    )
    assert [e["waybill_id"] for e in delivery_list] == [p.waybill_no for p in parcels]


def test_order_id_is_an_exact_integer_above_2_to_the_53() -> None:
    request = delivery_request("3705115058471208928", [parcel(1, (0, 1))], [dline(0, 1)])

    order_id = request["order_id"]
    assert type(order_id) is int
    assert order_id == 3705115058471208928
    assert order_id > 2**53
    assert float(order_id) != order_id  # a float could not carry it
    body = json.dumps(request, ensure_ascii=False)
    assert '"order_id": 3705115058471208928' in body
    assert json.loads(body)["order_id"] == 3705115058471208928


@pytest.mark.parametrize("order_id", ["9007199254740993", "18446744073709551615", "1"])
def test_order_id_survives_the_round_trip_exactly(order_id: str) -> None:
    request = delivery_request(order_id, [parcel(1, (0, 1))], [dline(0, 1)])
    assert str(request["order_id"]) == order_id
    assert set(request) == {"order_id", "delivery_list"}


# ---------------------------------------------------------------------------------------------------
# judge
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("errcode", "step", "outcome"),
    [
        (0, NextStep.DONE, DeliveryOutcome.TOLD),
        (109001, NextStep.DONE, DeliveryOutcome.ALREADY_SHIPPED),
        (100003, NextStep.RETRY_LATER, None),
        (-1, NextStep.RETRY_LATER, None),
        (45011, NextStep.RETRY_LATER, None),
        (108009, NextStep.HOLD_FOR_AFTERSALE, DeliveryOutcome.HELD_FOR_AFTERSALE),
        (101100, NextStep.DEAD_LETTER, DeliveryOutcome.REFUSED),
        (109000, NextStep.DEAD_LETTER, DeliveryOutcome.REFUSED),
    ],
)
def test_documented_errcodes(errcode: int, step: NextStep, outcome: DeliveryOutcome | None) -> None:
    assert judge(errcode) == Verdict(step, outcome)


@pytest.mark.parametrize("errcode", [1, -2, 47001, 40097, 100002, 109002, 10025010, 999999])
def test_unknown_errcodes_are_dead_lettered_as_refused(errcode: int) -> None:
    verdict = judge(errcode)
    assert verdict.step is NextStep.DEAD_LETTER
    assert verdict.outcome is DeliveryOutcome.REFUSED


def test_errcode_constants_match_the_reference() -> None:
    assert DeliveryErrCode.OK == 0
    assert DeliveryErrCode.BUSY == -1
    assert DeliveryErrCode.MINUTE_QUOTA == 45011
    assert DeliveryErrCode.UPDATED_TOO_OFTEN == 100003
    assert DeliveryErrCode.STATUS_FORBIDS_SHIPPING == 101100
    assert DeliveryErrCode.OPEN_AFTERSALE == 108009
    assert DeliveryErrCode.SHIPPING_FAILED == 109000
    assert DeliveryErrCode.ALREADY_FULLY_SHIPPED == 109001


def test_only_retry_later_has_no_outcome_to_record() -> None:
    documented = [0, -1, 40001, 42001, 41001, 45009, 45011, 47001, 40097, 48001, 45035, 61004]
    documented += [100002, 100003, 101100, 108009, 109000, 109001, 10025005, 10025010]
    for code in [*range(-5, 50), *documented]:
        verdict = judge(code)
        assert (verdict.outcome is None) == (verdict.step is NextStep.RETRY_LATER)


def test_only_the_orders_own_shipments_go_to_delivery_send() -> None:
    assert told_with_delivery_send(aftersale_case_id=None)
    assert not told_with_delivery_send(aftersale_case_id="4500000001")  # an after-sale replacement


# --- after a 109000/109001: what WeChat's order says of each parcel ------------------------------


def _order(*products: tuple[str, int, int], told: Sequence[tuple[str, list[tuple[str, int]]]] = ()) -> Order:
    """Products (sku, ordered, refunded) and parcels told (waybill, [(sku, count)])."""
    return Order.model_validate(
        {
            "order_id": ORDER_ID,
            "status": 21,
            "order_detail": {
                "product_infos": [
                    {"product_id": "1", "sku_id": sku, "sku_cnt": n, "finish_aftersale_sku_cnt": refunded}
                    for sku, n, refunded in products
                ],
                "delivery_info": {
                    "delivery_product_info": [
                        {
                            "waybill_id": waybill,
                            "product_infos": [
                                {"product_id": "1", "sku_id": sku, "product_cnt": n} for sku, n in lines
                            ],
                        }
                        for waybill, lines in told
                    ]
                },
            },
        }
    )


def _refunded(order: Order) -> dict[tuple[str, str], int]:
    """The fixtures' finished after-sale units, taken as refund-only cases' units."""
    return {(p.product_id, p.sku_id): p.finish_aftersale_sku_cnt for p in order.order_detail.product_infos}


def _parcel(waybill: str, *lines: tuple[str, int]) -> dict[str, object]:
    infos = [{"product_id": "1", "sku_id": sku, "product_cnt": n} for sku, n in lines]
    return {"delivery_id": "ZTO", "waybill_id": waybill, "deliver_type": COURIER, "product_infos": infos}


def test_a_parcel_already_on_wechats_order_was_told() -> None:
    """109001 after our earlier call got through and its answer was lost."""
    order = _order(("a", 1, 0), told=[("ZT1", [("a", 1)])])
    [found] = recheck(order, [_parcel("ZT1", ("a", 1))], _refunded(order))
    assert found.fate == ParcelFate.TOLD


def test_goods_refunded_before_wechat_was_told_are_left_out() -> None:
    """Three of sku a (one told, one refunded while WeChat saw it unshipped) and one of b: the parcel
    with two of a and one of b is told with one a and the b."""
    order = _order(("a", 3, 1), ("b", 1, 0), told=[("ZT1", [("a", 1)])])
    [found] = recheck(order, [_parcel("ZT2", ("a", 2), ("b", 1))], _refunded(order))
    assert found.fate == ParcelFate.SEND
    assert [(x["sku_id"], x["product_cnt"]) for x in found.product_infos] == [("a", 1), ("b", 1)]


def test_a_parcel_whose_goods_were_all_refunded_is_not_told() -> None:
    order = _order(("a", 2, 1), told=[("ZT1", [("a", 1)])])
    told, refunded = recheck(order, [_parcel("ZT1", ("a", 1)), _parcel("ZT2", ("a", 1))], _refunded(order))
    assert (told.fate, refunded.fate, refunded.product_infos) == (ParcelFate.TOLD, ParcelFate.REFUNDED, [])


def test_parcels_share_what_is_still_expected_in_turn() -> None:
    order = _order(("a", 3, 1))
    first, second = recheck(order, [_parcel("ZT1", ("a", 2)), _parcel("ZT2", ("a", 1))], _refunded(order))
    assert (first.fate, first.product_infos[0]["product_cnt"]) == (ParcelFate.SEND, 2)
    assert (second.fate, second.product_infos) == (ParcelFate.REFUNDED, [])


@pytest.mark.parametrize(
    "parcel",
    [
        _parcel("ZT2", ("zzz", 1)),  # goods the order does not have
        _parcel("ZT2", ("a", 3)),  # more than ordered, and nothing refunded
    ],
)
def test_a_real_mismatch_is_sent_as_it_was(parcel: dict[str, object]) -> None:
    """Nothing refunded explains the refusal: the parcel stays as it was (refused, dead-lettered)."""
    [found] = recheck(_order(("a", 2, 0)), [parcel], {})
    assert (found.fate, found.product_infos) == (ParcelFate.SEND, parcel["product_infos"])


def test_units_a_return_took_back_are_not_refunded_before_telling() -> None:
    """Two ordered, one told and returned (a return is of goods told): the other is still expected."""
    order = _order(("a", 2, 1), told=[("ZT1", [("a", 1)])])
    [found] = recheck(order, [_parcel("ZT2", ("a", 1))], refunded={})
    assert (found.fate, found.product_infos[0]["product_cnt"]) == (ParcelFate.SEND, 1)


def test_refunded_units_count_refund_only_cases_that_refunded() -> None:
    def case(kind: str, status: str, sku: str, count: int) -> dict[str, object]:
        return {
            "type": kind,
            "status": status,
            "product_info": {"product_id": "1", "sku_id": sku, "count": count},
        }

    cases = [
        case("REFUND", "MERCHANT_REFUND_SUCCESS", "a", 1),
        case("REFUND", "MERCHANT_REFUND_SUCCESS", "a", 2),
        case("RETURN", "MERCHANT_RETURN_SUCCESS", "a", 1),
        case("REFUND", "MERCHANT_PROCESSING", "b", 1),
        case("REFUND", "PLATFORM_REFUNDING", "b", 1),
    ]
    assert refunded_units(cases) == {("1", "a"): 3, ("1", "b"): 1}
