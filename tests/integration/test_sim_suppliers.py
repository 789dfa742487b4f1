"""The supplier bots against a real dispatch service (Kafka + FerretDB): paid orders end shipped, or
rejected and shipped by the fallback supplier, and what the bots say they shipped is exactly what
dispatch recorded. A cancellation or address change after accept is confirmed."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from ops.stack import LocalStack
from services.dispatch.domain.routing import Route
from shared.api.supplier import DispatchOrderPublic
from shared.events.dispatch import DispatchState
from shared.events.orders import OrderAddressChanged, OrderCancelled, OrderPaid, Receiver
from sim.suppliers import Behaviour, Delay, FleetSettings, SupplierConfig, SupplierFleet
from tests.integration.dispatch_support import DispatchHarness, dispatch_service, paid_order

pytestmark = pytest.mark.integration

T = TypeVar("T")
FAST = Delay(min_s=0.05, max_s=0.3)


def _routes(shop: str) -> list[Route]:
    """alpha carries p1 and p2, beta p3; beta is the fallback for alpha's products."""
    return [
        Route(shop_id=shop, supplier_id="alpha", product_id="p1", sku_id="s1"),
        Route(shop_id=shop, supplier_id="alpha", product_id="p2", sku_id="s2"),
        Route(shop_id=shop, supplier_id="beta", product_id="p3", sku_id="s3"),
        Route(shop_id=shop, supplier_id="beta", product_id="p1", sku_id="s1", priority=200),
        Route(shop_id=shop, supplier_id="beta", product_id="p2", sku_id="s2", priority=200),
    ]


def _fleet_settings(
    harness: DispatchHarness, behaviour: Behaviour, **per_supplier: dict[str, Any]
) -> FleetSettings:
    return FleetSettings(
        api_url=harness.base_url,
        suppliers=[
            SupplierConfig(supplier_id=s, api_key=key, behaviour=per_supplier.get(s, {}))
            for s, key in harness.keys.items()
        ],
        behaviour=behaviour,
        seed=20240501,
        # Shorter than the bots' usual 20 s: dispatch's shutdown waits for a long poll in progress.
        feed_wait_s=5,
    )


async def _orders_by_supplier(
    harness: DispatchHarness, order_ids: set[str]
) -> dict[str, list[DispatchOrderPublic]]:
    """Every dispatch order of these WeChat orders, per supplier (as each supplier lists its own)."""
    found: dict[str, list[DispatchOrderPublic]] = {}
    for supplier in harness.keys:
        found[supplier] = []
        async with harness.client(supplier) as client:
            page_after: str | None = None
            while True:
                params: dict[str, Any] = {"limit": 500, **({"page_after": page_after} if page_after else {})}
                answer = await client.get("/dispatch-orders", params=params)
                if answer.status_code == 429:  # the test shares each supplier's rate limit with its bot
                    await asyncio.sleep(float(answer.headers["Retry-After"]))
                    continue
                answer.raise_for_status()
                listing = answer.json()
                found[supplier] += [
                    DispatchOrderPublic.model_validate(item)
                    for item in listing["items"]
                    if item["order_id"] in order_ids
                ]
                page_after = listing["next_page_after"]
                if page_after is None:
                    break
    return found


async def _orders_of(harness: DispatchHarness, order_ids: set[str]) -> list[DispatchOrderPublic]:
    return [o for orders in (await _orders_by_supplier(harness, order_ids)).values() for o in orders]


async def _eventually(probe: Callable[[], Awaitable[T | None]], *, timeout_s: float, what: str) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = await probe()
        if result is not None:
            return result
        await asyncio.sleep(0.5)
    raise TimeoutError(f"timed out waiting for {what}")


def _shipped_units(orders: list[DispatchOrderPublic]) -> Counter[tuple[str, int]]:
    """(order_id, line_no) -> units in parcels, over every dispatch order given."""
    units: Counter[tuple[str, int]] = Counter()
    for order in orders:
        for parcel in order.parcels:
            for line in parcel.lines:
                units[(order.order_id, line.line_no)] += line.quantity
    return units


async def test_fleet_ships_every_paid_order_and_its_records_match_dispatch(stack: LocalStack) -> None:
    shop = "shop-sim-suppliers"
    async with dispatch_service(
        stack, suppliers=["alpha", "beta"], routes=_routes(shop), shop_id=shop
    ) as harness:
        rng = random.Random(7)
        events: list[OrderPaid] = []
        for i in range(20):
            # Every order has an alpha line (so rejections happen); some also a beta line.
            skus = [(p, s, rng.randint(1, 3)) for p, s in (("p1", "s1"), ("p2", "s2")) if rng.random() < 0.7]
            skus = skus or [("p1", "s1", rng.randint(2, 3))]
            if i % 3 == 0:
                skus.append(("p3", "s3", rng.randint(1, 3)))
            events.append(paid_order(shop, skus))
        ordered = {(e.order_id, n): line.quantity for e in events for n, line in enumerate(e.lines)}
        order_ids = {e.order_id for e in events}

        behaviour = Behaviour(
            accept_delay=FAST,
            ship_delay=Delay(min_s=0.1, max_s=0.6),
            rest_delay=Delay(min_s=0.1, max_s=0.5),
            answer_delay=FAST,
            reject_share=0.3,
            split_share=0.3,
            partial_share=0.2,
        )
        settings = _fleet_settings(harness, behaviour, beta={"reject_share": 0.0})
        async with SupplierFleet(settings) as fleet:
            for event in events:
                await harness.publish(event)

            async def all_done() -> list[DispatchOrderPublic] | None:
                orders = await _orders_of(harness, order_ids)
                final = all(o.state in (DispatchState.SHIPPED, DispatchState.REJECTED) for o in orders)
                return orders if final and _shipped_units(orders) == Counter(ordered) else None

            orders = await _eventually(all_done, timeout_s=90, what="every order shipped")
            await asyncio.sleep(0.5)  # let the last answers land in the bots' records
            stats = fleet.stats()

        totals = stats.totals()
        print("fleet totals:", totals)  # shown when the test fails
        assert not any(name.startswith(("error_", "bugs", "abandoned")) for name in totals), totals
        rejected = [o for o in orders if o.state == DispatchState.REJECTED]
        assert rejected, "with reject_share 0.3 over 20 orders some must be rejected"
        assert totals["rejected_out_of_stock"] + totals.get("rejected_invalid_sku", 0) == len(rejected)
        assert totals["accepted"] == len(orders) - len(rejected)
        # Each dispatch order worked once: a feed change arriving after the bot's own calls finished an
        # order (the poll can lag behind them, e.g. while it waits out a 429) does not resume it.
        assert totals["finished_shipped"] == totals["accepted"] and "orders_resumed" not in totals
        assert totals["split_shipments"] >= 1
        for order in rejected:
            assert order.parcels == []
            # The fallback supplier shipped exactly those lines of the WeChat order.
            for line in order.lines:
                assert _shipped_units(orders)[(order.order_id, line.line_no)] == line.quantity
        by_supplier = await _orders_by_supplier(harness, order_ids)
        assert {o.dispatch_id for o in rejected} <= {o.dispatch_id for o in by_supplier["alpha"]}
        fallback_lines = {(o.order_id, line.line_no) for o in rejected for line in o.lines}
        shipped_by_beta = {
            (o.order_id, line.line_no)
            for o in by_supplier["beta"]
            if o.state == DispatchState.SHIPPED
            for line in o.lines
        }
        assert fallback_lines <= shipped_by_beta

        # Each line's shipped quantity equals what was ordered, per dispatch order and over the order.
        for order in orders:
            if order.state == DispatchState.SHIPPED:
                assert all(line.shipped_quantity == line.quantity for line in order.lines)
        assert _shipped_units(orders) == Counter(ordered)

        # The bots' records are exactly the parcels dispatch holds: same waybills, carriers, lines.
        recorded = sorted(
            (r.dispatch_id, p.carrier_code, p.waybill_no, tuple((x.line_no, x.quantity) for x in p.lines))
            for r in stats.shipments()
            for p in r.parcels
        )
        held = sorted(
            (o.dispatch_id, p.carrier_code, p.waybill_no, tuple((x.line_no, x.quantity) for x in p.lines))
            for o in orders
            for p in o.parcels
        )
        assert recorded == held
        assert all(r.waybill_source == "own" for r in stats.shipments())
        assert {r.supplier_id for r in stats.shipments()} == {"alpha", "beta"}


async def test_bot_confirms_a_cancellation_and_an_address_change_after_accept(stack: LocalStack) -> None:
    shop = "shop-sim-suppliers-cancel"
    async with dispatch_service(stack, suppliers=["alpha"], routes=_routes(shop), shop_id=shop) as harness:
        # Quick to accept, slow to ship: the changes reach the warehouse before the goods leave.
        behaviour = Behaviour(
            accept_delay=FAST, ship_delay=Delay(min_s=60, max_s=60), answer_delay=FAST, reject_share=0.0
        )
        async with SupplierFleet(_fleet_settings(harness, behaviour)) as fleet:
            cancelled, moved = paid_order(shop, [("p1", "s1", 1)]), paid_order(shop, [("p2", "s2", 2)])
            for event in (cancelled, moved):
                await harness.publish(event)

            async def accepted() -> list[DispatchOrderPublic] | None:
                orders = await _orders_of(harness, {cancelled.order_id, moved.order_id})
                ok = len(orders) == 2 and all(o.state == DispatchState.ACCEPTED for o in orders)
                return orders if ok else None

            await _eventually(accepted, timeout_s=30, what="both orders accepted")
            version = int(time.time()) + 5
            await harness.publish(
                OrderCancelled(order_id=cancelled.order_id, shop_id=shop, version=version, wechat_status=250)
            )
            new_receiver = Receiver(
                name="李四",
                phone="13700000000",
                province="浙江省",
                city="杭州市",
                county="西湖区",
                detail="文三路 2 号",
            )
            await harness.publish(
                OrderAddressChanged(
                    order_id=moved.order_id, shop_id=shop, version=version, receiver=new_receiver
                )
            )

            async def answered() -> dict[str, DispatchOrderPublic] | None:
                orders = {
                    o.order_id: o for o in await _orders_of(harness, {cancelled.order_id, moved.order_id})
                }
                gone, kept = orders[cancelled.order_id], orders[moved.order_id]
                done = gone.state == DispatchState.CANCELLED and kept.receiver.detail == new_receiver.detail
                return orders if done else None

            orders = await _eventually(answered, timeout_s=30, what="both change requests answered")
            stats = fleet.stats()

        for order in orders.values():
            [request] = order.change_requests
            assert request.status == "confirmed" and order.parcels == []
        assert orders[cancelled.order_id].change_requests[0].kind == "cancel"
        assert orders[moved.order_id].state == DispatchState.ACCEPTED
        assert stats.totals()["change_confirm"] == 2
        assert stats.shipments() == []
