"""The sale simulator without a network: the profile and its schedule, the planned orders, the world,
the operator's decisions, and the report's computations over hand-made records."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.events.aftersale import CaseState, CaseType, CaseUpdated, Resolution
from shared.events.dead_letter import DeadLetter, DeadLetterReason
from shared.events.dispatch import (
    DispatchAccepted,
    DispatchCancelled,
    DispatchLine,
    DispatchOffered,
    DispatchRejected,
    DispatchShipped,
    DispatchState,
    HoldReason,
    OrderHeld,
    Parcel,
    ParcelLine,
    RejectReason,
    ShippingAddress,
)
from shared.events.orders import OrderPaid, Receiver
from sim.sale.desk import operator_decision
from sim.sale.observer import ParcelView, parcels_of
from sim.sale.profile import (
    Fate,
    Phase,
    arrival_times,
    base_rate,
    draw_fate,
    orders_due,
    plan_sale,
    rate_at,
)
from sim.sale.report import Facts, compute_report, latency_stats, percentile
from sim.sale.settings import Profile, SaleSettings, Shares, ShopsSettings, SuppliersSettings
from sim.sale.world import build_world

T0 = datetime(2026, 11, 11, 20, 0, tzinfo=UTC)
ADDRESS = ShippingAddress(
    name="张三", phone="138", province="广东省", city="广州市", county="海珠区", detail="1 号"
)

# --- the profile ---------------------------------------------------------------------------------


def test_the_base_rate_is_derived_from_the_total() -> None:
    profile = Profile(total_orders=8400, warm_up_s=1800, spike_s=300, tail_s=3600, tail_floor=0.2)
    # 1800 + 10 × 300 + 3600 × (1 + 0.2) / 2 = 6960 weighted seconds
    assert base_rate(profile) == pytest.approx(8400 / 6960)
    assert base_rate(Profile(base_rate=2.5)) == 2.5


def test_the_rate_follows_warm_up_spike_and_a_falling_tail() -> None:
    profile = Profile(total_orders=1000, warm_up_s=100, spike_s=10, tail_s=100, tail_floor=0.2)
    base = base_rate(profile)
    assert rate_at(profile, 50) == pytest.approx(base)
    assert rate_at(profile, 105) == pytest.approx(10 * base)
    assert rate_at(profile, 110) == pytest.approx(base)
    assert rate_at(profile, 160) == pytest.approx(0.6 * base)
    assert rate_at(profile, 210) == pytest.approx(0.2 * base)
    assert rate_at(profile, -1) == rate_at(profile, 211) == 0


def test_exactly_the_total_arrives_with_the_spike_ten_times_as_dense() -> None:
    profile = Profile(total_orders=20_000, warm_up_s=1000, spike_s=100, tail_s=1000, tail_floor=1.0)
    times = arrival_times(profile, random.Random(1))
    assert len(times) == 20_000 and times == sorted(times)
    assert times[0] >= 0 and times[-1] <= profile.duration_s
    warm = sum(1 for t in times if t < 1000) / 1000
    spike = sum(1 for t in times if 1000 <= t < 1100) / 100
    assert spike / warm == pytest.approx(10, rel=0.1)
    assert orders_due(times, 1000) == sum(1 for t in times if t <= 1000)


def test_the_same_seed_gives_the_same_sale() -> None:
    settings = SaleSettings(profile=Profile(total_orders=300), seed=3)
    world = build_world(settings)
    first, again = plan_sale(settings, world), plan_sale(settings, build_world(settings))
    assert [(p.at_s, p.fate, p.shop.shop_id, p.lines) for p in first] == [
        (p.at_s, p.fate, p.shop.shop_id, p.lines) for p in again
    ]
    other = plan_sale(settings.model_copy(update={"seed": 4}), world)
    assert [p.at_s for p in other] != [p.at_s for p in first]


def test_fates_follow_the_shares() -> None:
    shares = Shares(unpaid_timeout=0.1, cancel_unpaid=0.1, return_after_delivery=0.5)
    rng = random.Random(5)
    fates = Counter(draw_fate(shares, rng) for _ in range(20_000))
    assert fates[Fate.UNPAID_TIMEOUT] / 20_000 == pytest.approx(0.1, abs=0.01)
    # after-sale shares are of paid orders: 0.8 × 0.5
    assert fates[Fate.RETURN_AFTER_DELIVERY] / 20_000 == pytest.approx(0.4, abs=0.015)


def test_shares_that_add_up_to_more_than_everything_are_refused() -> None:
    with pytest.raises(ValueError, match="sum to at most 1"):
        Shares(refund_after_delivery=0.6, return_after_delivery=0.6)


def test_planned_orders_are_consistent() -> None:
    settings = SaleSettings(
        profile=Profile(total_orders=2000),
        shares=Shares(cancel_before_ship=0.3, refund_unsent=0.1, multi_line=0.5, withdraw_aftersale=0.5),
    )
    plan = plan_sale(settings, build_world(settings))
    assert {p.phase for p in plan} == set(Phase)
    for order in plan:
        assert 1 <= len(order.lines) <= settings.shares.max_lines
        assert len({(line.sku.product_id, line.sku.sku_id) for line in order.lines}) == len(order.lines)
        assert all(line.sku in order.shop.skus for line in order.lines)
        if order.fate is Fate.CANCEL_BEFORE_SHIP:
            assert len(order.lines) == 1  # one refund cancels everything
        if order.fate is Fate.REFUND_UNSENT:
            assert len(order.lines) > 1  # part of it can ship before the rest is refunded
        if not order.fate.paid:
            assert not order.address_change and not order.urge and not order.withdraw
        if order.withdraw:
            assert order.fate.aftersale_type is not None
    assert any(len(o.lines) > 1 for o in plan)
    assert any(o.fate is Fate.REFUND_UNSENT for o in plan)


# --- the world -----------------------------------------------------------------------------------


def test_every_sku_has_two_suppliers_and_the_backstop_takes_the_rest() -> None:
    settings = SaleSettings(shops=ShopsSettings(count=2), suppliers=SuppliersSettings(count=3))
    world = build_world(settings)
    assert len({s.appid for s in world.shops}) == 2 and len({s.shop_id for s in world.shops}) == 2
    backstop = world.suppliers[0]
    assert backstop.behaviour == {"reject_share": 0.0}
    for shop in world.shops:
        routes = [r for r in world.routes if r.shop_id == shop.shop_id]
        assert [r.supplier_id for r in routes if not r.product_id] == [backstop.supplier_id]
        for sku in shop.skus:
            mine = sorted((r.priority, r.supplier_id) for r in routes if r.sku_id == sku.sku_id)
            assert [p for p, _ in mine] == [10, 20] and mine[0][1] != mine[1][1]
    assert build_world(settings) == world


# --- what the buyers and the desk see ------------------------------------------------------------


def _wechat_order(
    order_id: str, *, status: int = 30, parcels: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "status": status,
        "update_time": 1,
        "order_detail": {
            "product_infos": [
                {"product_id": "p1", "sku_id": "s1", "sku_cnt": 2, "finish_aftersale_sku_cnt": 0},
                {"product_id": "p2", "sku_id": "s2", "sku_cnt": 1, "finish_aftersale_sku_cnt": 0},
            ],
            "pay_info": {"pay_time": 1700000000},
            "delivery_info": {"delivery_product_info": parcels or []},
        },
    }


def _parcel(waybill: str, *lines: tuple[str, str, int]) -> dict[str, Any]:
    return {
        "waybill_id": waybill,
        "delivery_id": "ZTO",
        "product_infos": [{"product_id": p, "sku_id": s, "product_cnt": n} for p, s, n in lines],
    }


def test_parcels_carry_their_tracking() -> None:
    order = _wechat_order("1", parcels=[_parcel("ZT1", ("p1", "s1", 2)), _parcel("ZT2", ("p2", "s2", 1))])
    waybills = {
        "ZT1": {"tracking": {"state": 3, "finished": True}},
        "ZT2": {"tracking": {"state": 4, "finished": True}},
    }
    first, second = parcels_of(order, waybills)
    assert first.delivered and first.units == {("p1", "s1"): 2}
    assert second.returned and not second.delivered
    (untracked,) = parcels_of(_wechat_order("2", parcels=[_parcel("ZT3", ("p1", "s1", 1))]), {})
    assert untracked.state is None and not untracked.finished


@pytest.mark.parametrize(
    ("kind", "delivered", "decision"),
    [
        ("RETURN", True, "approve"),
        ("EXCHANGE", True, "approve"),
        ("RETURN", False, "reject"),
        ("EXCHANGE", False, "reject"),
        ("REFUND", False, "approve"),
        ("REFUND", True, "approve"),
    ],
)
def test_the_operator_approves_returns_only_of_goods_received(
    kind: str, delivered: bool, decision: str
) -> None:
    case = {"case_type": kind, "lines": [{"product_id": "p1", "sku_id": "s1", "count": 1}]}
    parcel = ParcelView("ZT1", "ZTO", {("p1", "s1"): 1}, 3 if delivered else 6, finished=True)
    assert operator_decision(case, [parcel])[0] == decision


# --- the report ----------------------------------------------------------------------------------


def test_percentiles_by_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99 and percentile(values, 100) == 100
    assert percentile([], 50) == 0
    stats = latency_stats([0.010, 0.020, 0.030])
    assert (stats.count, stats.p50_ms, stats.max_ms) == (3, 20.0, 30.0)


def _offer(
    dispatch_id: str, order_id: str, lines: list[tuple[int, int]], at: datetime, **extra: Any
) -> DispatchOffered:
    return DispatchOffered(
        order_id=order_id,
        occurred_at=at,
        dispatch_id=dispatch_id,
        shop_id="shop",
        supplier_id="alpha",
        version=1,
        state=DispatchState.OFFERED,
        lines=[
            DispatchLine(line_no=n, product_id=f"p{n + 1}", sku_id=f"s{n + 1}", quantity=q) for n, q in lines
        ],
        receiver=ADDRESS,
        ship_by=None,
        paid_at=at,
        **extra,
    )


def _shipped(dispatch_id: str, order_id: str, waybill: str, at: datetime) -> DispatchShipped:
    return DispatchShipped(
        order_id=order_id,
        occurred_at=at,
        dispatch_id=dispatch_id,
        shop_id="shop",
        supplier_id="alpha",
        version=3,
        state=DispatchState.SHIPPED,
        parcels=[
            Parcel(
                parcel_no=1,
                carrier_code="ZTO",
                waybill_no=waybill,
                lines=[ParcelLine(line_no=0, quantity=2)],
                shipped_at=at,
            )
        ],
        lines=[],
    )


def _told(order_id: str, waybill: str, at: float, errcode: int = 0) -> dict[str, Any]:
    return {
        "at": at,
        "path": "/channels/ec/order/delivery/send",
        "appid": "wx1",
        "errcode": errcode,
        "request": {
            "order_id": int(order_id),
            "delivery_list": [{"delivery_id": "ZTO", "waybill_id": waybill}],
        },
    }


def _paid(order_id: str, at: datetime) -> OrderPaid:
    return OrderPaid(
        order_id=order_id,
        occurred_at=at,
        shop_id="shop",
        version=1,
        paid_at=at,
        ship_by=None,
        lines=[],
        receiver=Receiver(
            name="张三", phone="138", province="广东省", city="广州市", county="海珠区", detail="1 号"
        ),
        order_price_fen=100,
    )


def _facts(**changes: Any) -> Facts:
    """One order of two lines: line 0 rejected by one supplier then dispatched with line 1 to another,
    shipped in one parcel, told once, delivered; one return, resolved on both sides."""
    order = _wechat_order("101", status=100, parcels=[_parcel("ZT1", ("p1", "s1", 2), ("p2", "s2", 1))])
    rejected = DispatchRejected(
        order_id="101",
        occurred_at=T0 + timedelta(seconds=2),
        dispatch_id="101-1",
        shop_id="shop",
        supplier_id="beta",
        version=2,
        state=DispatchState.REJECTED,
        reason=RejectReason.OUT_OF_STOCK,
    )
    events: list[Any] = [
        _offer("101-1", "101", [(0, 2)], T0 + timedelta(seconds=1)),
        rejected,
        _offer("101-2", "101", [(0, 2), (1, 1)], T0 + timedelta(seconds=3), replaces_dispatch_id="101-1"),
        DispatchAccepted(
            order_id="101",
            occurred_at=T0 + timedelta(seconds=4),
            dispatch_id="101-2",
            shop_id="shop",
            supplier_id="alpha",
            version=2,
            state=DispatchState.ACCEPTED,
            estimated_ship_at=None,
        ),
        _shipped("101-2", "101", "ZT1", T0 + timedelta(seconds=10)),
        _offer(
            "101-3",
            "101",
            [(0, 1)],
            T0 + timedelta(seconds=30),
            aftersale_case_id="A1",
            replaces_dispatch_id="101-2",
        ),
    ]
    case = {
        "after_sale_order_id": "A1",
        "order_id": "101",
        "type": "EXCHANGE",
        "status": "MERCHANT_EXCHANGE_SUCCESS",
    }
    ours = CaseUpdated(
        order_id="101",
        shop_id="shop",
        case_id="A1",
        case_type=CaseType.EXCHANGE,
        state=CaseState.RESOLVED,
        wechat_status="MERCHANT_EXCHANGE_SUCCESS",
        resolution=Resolution.EXCHANGED,
        version=5,
    )
    facts = Facts(
        orders=[order],
        cases=[case],
        calls=[_told("101", "ZT1", (T0 + timedelta(seconds=11)).timestamp())],
        pushes=[
            {
                "push_id": 1,
                "event": "channels_ec_order_pay",
                "subject_id": "101",
                "status": "delivered",
                "queued_at": T0.timestamp() - 0.5,
            }
        ],
        paid=[_paid("101", T0)],
        dispatch=events,
        aftersale=[ours],
    )
    for name, value in changes.items():
        setattr(facts, name, value)
    return facts


def _report(facts: Facts) -> Any:
    return compute_report(facts, seed=1, shops=1, suppliers=2)


def test_a_clean_sale_passes_every_invariant_and_counts_its_stages() -> None:
    report = _report(_facts())
    assert report.ok, [i for i in report.invariants if not i.ok]
    assert report.stages["dispatched"] == report.stages["shipped"] == report.stages["wechat_told"] == 1
    assert report.stages["completed"] == 1 and report.stages["held"] == 0
    assert report.latency["paid→dispatched"].p50_ms == 1000  # the first offer, rejected or not
    assert report.latency["accepted→shipped"].p50_ms == 6000
    assert report.latency["shipped→WeChat told"].p50_ms == 1000
    assert report.latency["push→paid event"].p50_ms == 500
    assert report.aftersale_outcomes == {"EXCHANGE → exchanged": 1}
    assert '"ok": true' in report.to_json()
    assert "Result: OK" in report.text()


def test_a_line_dispatched_twice_or_not_at_all_is_named() -> None:
    facts = _facts()
    twice = _offer("101-9", "101", [(1, 1)], T0 + timedelta(seconds=5))
    report = _report(_facts(dispatch=[*facts.dispatch, twice]))
    failed = {i.name: i for i in report.failed()}
    assert set(failed) == {"lines_dispatched_exactly_once", "no_duplicate_dispatch_orders"}
    assert failed["lines_dispatched_exactly_once"].offending == ["101#1: ordered 1, refunded 0, dispatched 2"]
    assert failed["no_duplicate_dispatch_orders"].offending == ["101#1: 101-2, 101-9"]

    held = OrderHeld(order_id="101", shop_id="shop", reason=HoldReason.NO_ROUTE, line_nos=[0, 1])
    report = _report(_facts(dispatch=[facts.dispatch[0], facts.dispatch[1], held]))
    (failed_check,) = [i for i in report.failed() if i.name == "lines_dispatched_exactly_once"]
    assert failed_check.offending_count == 2 and "(held)" in failed_check.offending[0]
    assert report.holds == {"no_route": 1} and report.stages["held"] == 1


def test_units_refunded_before_dispatch_may_be_missing_and_cancelled_orders_still_count() -> None:
    facts = _facts()
    order = facts.orders[0]
    order["order_detail"]["product_infos"][0]["finish_aftersale_sku_cnt"] = 1
    shrunk = _offer("101-2", "101", [(0, 1), (1, 1)], T0 + timedelta(seconds=3), replaces_dispatch_id="101-1")
    cancelled = DispatchCancelled(
        order_id="101",
        occurred_at=T0 + timedelta(seconds=6),
        dispatch_id="101-2",
        shop_id="shop",
        supplier_id="alpha",
        version=9,
        state=DispatchState.CANCELLED,
        cause="order_cancelled",
    )
    report = _report(
        _facts(orders=[order], dispatch=[facts.dispatch[0], facts.dispatch[1], shrunk, cancelled], calls=[])
    )
    assert next(i for i in report.invariants if i.name == "lines_dispatched_exactly_once").ok


def test_a_parcel_told_twice_or_never_fails_the_told_check() -> None:
    facts = _facts()
    twice = _report(_facts(calls=[*facts.calls, _told("101", "ZT1", T0.timestamp() + 20)]))
    (told,) = [i for i in twice.failed() if i.name == "wechat_told_once_per_parcel"]
    assert told.offending == ["101/ZT1: told 2×"]
    refused_only = _report(_facts(calls=[_told("101", "ZT1", T0.timestamp(), errcode=108009)]))
    assert [i.offending for i in refused_only.failed()] == [["101/ZT1: told 0×"]]


def test_a_parcel_refused_for_good_after_a_refund_is_excused_once_and_must_not_be_sent_again() -> None:
    refunded = [
        {
            "after_sale_order_id": "A2",
            "order_id": "101",
            "type": "REFUND",
            "status": "MERCHANT_REFUND_SUCCESS",
        }
    ]
    held_then_cancelled = [
        _told("101", "ZT1", T0.timestamp() + 11, errcode=108009),
        _told("101", "ZT1", T0.timestamp() + 12, errcode=101100),
    ]
    facts = _facts()
    excused = _report(_facts(calls=held_then_cancelled, cases=[*facts.cases, *refunded]))
    assert "wechat_told_once_per_parcel" not in [i.name for i in excused.failed()]
    looping = _report(
        _facts(
            calls=[*held_then_cancelled, _told("101", "ZT1", T0.timestamp() + 13, errcode=101100)],
            cases=[*facts.cases, *refunded],
        )
    )
    (told,) = [i for i in looping.failed() if i.name == "wechat_told_once_per_parcel"]
    assert told.offending == ["101/ZT1: sent 1× after a final refusal"]
    # Without a refund behind it, a refusal is a parcel WeChat never heard of: a failure.
    unexcused = _report(_facts(calls=held_then_cancelled))
    (told,) = [i for i in unexcused.failed() if i.name == "wechat_told_once_per_parcel"]
    assert told.offending == ["101/ZT1: told 0×"]


def test_a_failed_invariant_tells_the_offending_orders_story() -> None:
    report = _report(_facts(calls=[_told("101", "ZT1", T0.timestamp() + 11, errcode=108009)]))
    story = report.order_stories["101"]
    assert story[0] == "order status at WeChat: 100"
    assert any("push channels_ec_order_pay" in line for line in story)
    assert any("delivery/send errcode 108009" in line for line in story)
    assert any("DispatchShipped dispatch_id=101-2" in line and "ZT1" in line for line in story)
    assert "Order 101:" in report.text(width=200)
    assert _report(_facts()).order_stories == {}


def test_open_cases_lost_pushes_and_unfinished_orders_fail() -> None:
    facts = _facts()
    facts.cases[0]["status"] = "USER_WAIT_RETURN"
    facts.pushes[0]["status"] = "failed"
    facts.orders[0]["status"] = 30
    report = _report(facts)
    assert {i.name for i in report.failed()} == {"aftersales_resolved", "pushes_acknowledged", "orders_ended"}
    assert not report.ok
    unknown = _report(_facts(aftersale=[]))
    assert [i.offending for i in unknown.failed()] == [
        ["A1: MERCHANT_EXCHANGE_SUCCESS at WeChat, unknown to us"]
    ]


def test_dead_letters_are_counted_by_topic_and_reason() -> None:
    letter = DeadLetter(
        order_id="101",
        consumer="logistics",
        reason=DeadLetterReason.PERMANENT_API_ERROR,
        detail="delivery/send 108009",
        attempts=1,
        source_topic="dispatch",
        source_partition=0,
        source_offset=7,
        value_b64="e30=",
    )
    report = _report(_facts(dead_letters=[letter, letter]))
    assert report.dead_letters == {"dispatch: permanent_api_error": 2}
    assert report.dead_letter_samples[0].startswith("dispatch 101 permanent_api_error")


def test_the_default_sales_longest_story_fits_its_settle_time() -> None:
    """`make run`'s sale: an exchange after delivery (ship, the buyer asks, the desk approves, the
    goods go back and arrive, the replacement is accepted and ships) ends well within the settle time
    after the stream, leaving room for the carriers' own legs and a backlog."""
    from ops.sale import default_sale

    sale = default_sale()
    supplier, buyer, desk = sale.suppliers.behaviour, sale.delays, sale.operator
    legs = [
        supplier.accept_delay,
        supplier.ship_delay,
        buyer.aftersale_after_delivery,
        desk.decide_delay,
        buyer.send_return,
        supplier.receipt_delay,
        supplier.accept_delay,
        supplier.ship_delay,
    ]
    longest_story_s = sale.scaled(sum(leg.max_s for leg in legs))
    assert longest_story_s <= sale.settle_timeout_s / 2, longest_story_s
    assert sale.profile.total_orders == 5000 and sale.scaled(sale.profile.duration_s) <= 120
