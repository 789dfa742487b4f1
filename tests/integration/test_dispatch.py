"""dispatch on the real stack: paid orders on the `orders` topic become dispatch orders in each
supplier's feed; the supplier API's access rules, idempotency, concurrency and change requests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import httpx
import pytest

from ops.stack import LocalStack
from services.dispatch.cli import current_plans
from services.dispatch.domain.routing import Route
from services.dispatch.idempotency import IDEMPOTENCY
from services.dispatch.store import ORDER_VERSIONS
from shared.events.dispatch import DISPATCH_EVENTS
from shared.events.orders import OrderCancelled
from shared.kafka.topics import DISPATCH, DISPATCH_PROGRESS
from shared.metrics import HTTP_IN_FLIGHT
from tests.integration.dispatch_support import DispatchHarness, dispatch_service, new_order_id, paid_order
from tests.integration.helpers import read_topic

pytestmark = pytest.mark.integration

SHOP = "shop-dispatch"


def _routes(shop: str) -> list[Route]:
    return [
        Route(shop_id=shop, supplier_id="alpha", product_id="p1", sku_id="s1"),
        Route(shop_id=shop, supplier_id="beta", product_id="p2", sku_id="s2"),
        Route(shop_id=shop, supplier_id="beta", product_id="p1", sku_id="s1", priority=200),  # fallback
    ]


def _offered(order_id: str) -> Any:
    return lambda change: (
        change["change"] == "dispatch_offered" and change["dispatch_order"]["order_id"] == order_id
    )


async def _offer(harness: DispatchHarness, supplier: str, skus: list[tuple[str, str, int]]) -> dict[str, Any]:
    event = paid_order(harness.shop_id, skus)
    await harness.publish(event)
    change, _ = await harness.wait_for(supplier, _offered(event.order_id))
    order: dict[str, Any] = change["dispatch_order"]
    return order


async def test_paid_order_is_split_per_supplier_and_each_sees_only_its_own(stack: LocalStack) -> None:
    async with dispatch_service(
        stack, suppliers=["alpha", "beta"], routes=_routes(SHOP), shop_id=SHOP
    ) as harness:
        event = paid_order(SHOP, [("p1", "s1", 2), ("p2", "s2", 1)])
        await harness.publish(event)
        alpha, _ = await harness.wait_for("alpha", _offered(event.order_id))
        beta, _ = await harness.wait_for("beta", _offered(event.order_id))
        a, b = alpha["dispatch_order"], beta["dispatch_order"]
        assert [(line["product_id"], line["quantity"]) for line in a["lines"]] == [("p1", 2)]
        assert [(line["product_id"], line["quantity"]) for line in b["lines"]] == [("p2", 1)]
        assert a["order_id"] == event.order_id and int(a["order_id"]) > 2**53
        assert a["receiver"]["phone"] == "13900001111-1234"  # the virtual number, never the real one
        assert "unit_paid_price_fen" not in json.dumps(a)
        assert a["ship_by"] is not None

        # alpha cannot see or touch beta's dispatch order: 404 on every route, like an unknown id.
        other = b["dispatch_id"]
        async with harness.client("alpha") as alpha_client:
            calls = [
                alpha_client.get(f"/dispatch-orders/{other}"),
                alpha_client.post(f"/dispatch-orders/{other}/accept", json={}),
                alpha_client.post(f"/dispatch-orders/{other}/reject", json={"reason": "other"}),
                alpha_client.post(
                    f"/dispatch-orders/{other}/shipments",
                    json={
                        "parcels": [
                            {
                                "carrier_code": "ZTO",
                                "waybill_no": "ZT1",
                                "lines": [{"line_no": 1, "quantity": 1}],
                            }
                        ]
                    },
                ),
                alpha_client.post(
                    f"/dispatch-orders/{other}/waybills",
                    json={"carrier_code": "ZTO", "parcels": [{"lines": [{"line_no": 1, "quantity": 1}]}]},
                ),
                alpha_client.post(
                    f"/dispatch-orders/{other}/change-requests/{other}-r1/answer",
                    json={"decision": "confirm"},
                ),
            ]
            for answer in await asyncio.gather(*calls):
                assert answer.status_code == 404, answer.text
                assert answer.json()["code"] == "not_found"
            listing = (await alpha_client.get("/dispatch-orders", params={"order_id": event.order_id})).json()
            assert [o["dispatch_id"] for o in listing["items"]] == [a["dispatch_id"]]
        async with harness.client(None) as anonymous:
            assert (await anonymous.get("/feed")).status_code == 401
        async with harness.client(None, Authorization="Bearer lvk_nope_nope") as forged:
            assert (await forged.get(f"/dispatch-orders/{other}")).status_code == 401


async def test_long_poll_wakes_when_work_arrives(stack: LocalStack) -> None:
    async with (
        dispatch_service(stack, suppliers=["alpha"], routes=_routes(SHOP), shop_id=SHOP) as harness,
        harness.client("alpha") as client,
    ):
        cursor = (await client.get("/feed")).json()["next_cursor"]
        poll = asyncio.create_task(client.get("/feed", params={"after": cursor, "wait_s": 20}))
        await asyncio.sleep(0.5)
        assert not poll.done()
        event = paid_order(SHOP, [("p1", "s1", 1)])
        published = time.perf_counter()
        await harness.publish(event)
        page = (await poll).json()
        waited = time.perf_counter() - published
        assert [c["dispatch_order"]["order_id"] for c in page["changes"]] == [event.order_id]
        assert waited < 5, f"the long poll answered {waited:.2f} s after the order was published"
        assert page["next_cursor"] == page["changes"][-1]["cursor"] > cursor


async def test_a_long_poll_ends_when_its_client_hangs_up(stack: LocalStack) -> None:
    # Its own shop: earlier tests' paid orders, read again by this service's new consumer group, must
    # not reach alpha's feed while the poll is parked (that answered it with 200 now and then).
    shop = f"shop-hang-up-{time.time_ns()}"
    async with dispatch_service(stack, suppliers=["alpha"], routes=_routes(shop), shop_id=shop) as harness:
        hung_up_before, answered_before = _feed_answers(499), _feed_answers(200)
        async with harness.client("alpha") as client:
            cursor = (await client.get("/feed")).json()["next_cursor"]
            in_flight = HTTP_IN_FLIGHT.labels("dispatch")
            before = in_flight._value.get()
            poll = asyncio.create_task(client.get("/feed", params={"after": cursor, "wait_s": 30}))
            # Dropped only once dispatch has the poll (on a busy machine 0.5 s was sometimes too
            # short for it to arrive at all, and a request never served records nothing).
            deadline = time.monotonic() + 10
            while in_flight._value.get() <= before and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)  # and parked
            poll.cancel()  # the connection is dropped mid-response
            with contextlib.suppress(asyncio.CancelledError):
                await poll
        deadline = time.monotonic() + 5
        while _feed_answers(499) == hung_up_before and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert _feed_answers(499) == hung_up_before + 1  # long before its 30 s were up
        assert _feed_answers(200) == answered_before + 1  # the first poll only


def _feed_answers(status: int) -> float:
    from services.dispatch.supplier_api import FEED_PATH
    from shared.metrics import HTTP_REQUESTS

    return float(HTTP_REQUESTS.labels("dispatch", "GET", FEED_PATH, str(status))._value.get())


async def test_the_feed_fast_path_answers_like_the_route(stack: LocalStack) -> None:
    """Polls are answered in front of FastAPI (feed_endpoint.py); what it does not take (bad queries,
    bad keys) reaches the route, so every answer keeps the API's format."""
    shop = f"shop-fast-{time.time_ns()}"  # its own shop: earlier tests' orders stay out of this feed
    async with dispatch_service(
        stack,
        suppliers=["alpha"],
        routes=_routes(shop),
        shop_id=shop,
        supplier_rate_per_s=0.01,
        supplier_burst=30,
    ) as harness:
        order = await _offer(harness, "alpha", [("p1", "s1", 1)])  # spends some of the budget
        async with harness.client("alpha") as client:
            before = _feed_answers(200)
            page = (await client.get("/feed", params={"after": 0, "limit": 1000, "wait_s": "0.5"})).json()
            assert _feed_answers(200) == before + 1
            assert page["schema_version"] == 1
            assert [c["dispatch_order"]["dispatch_id"] for c in page["changes"]] == [order["dispatch_id"]]
            assert page["next_cursor"] == page["changes"][-1]["cursor"]
            empty = (await client.get("/feed", params={"after": page["next_cursor"]})).json()
            assert empty == {"schema_version": 1, "changes": [], "next_cursor": page["next_cursor"]}
            for bad in ({"limit": 0}, {"limit": 1001}, {"after": -1}, {"wait_s": "nan"}, {"wait_s": 61}):
                answer = await client.get("/feed", params=bad)
                assert answer.status_code == 422, (bad, answer.text)
                body = answer.json()
                assert body["code"] == "validation_failed"
                assert [f["path"] for f in body["fields"]] == [f"query.{next(iter(bad))}"]
        async with harness.client(None, **{"X-Api-Key": harness.keys["alpha"]}) as by_header:
            assert (await by_header.get("/feed")).status_code == 200
        async with harness.client(None, Authorization="Bearer lvk_nope_nope") as forged:
            refused = await forged.get("/feed")
            assert refused.status_code == 401 and refused.json()["code"] == "unauthenticated"
        async with harness.client("alpha") as client:
            statuses: list[int] = []
            while len(statuses) < 40 and 429 not in statuses:
                statuses.append((await client.get("/feed")).status_code)
            assert statuses[-1] == 429 and set(statuses[:-1]) == {200}, statuses
            limited = await client.get("/feed")
            assert limited.json()["code"] == "rate_limited" and int(limited.headers["Retry-After"]) >= 1


VENDOR_JSON = {"Content-Type": "application/vnd.lvyue+json"}  # JSON to FastAPI, not to the fast path


def _command_answers(command: str, status: int) -> float:
    from services.dispatch.command_endpoint import COMMANDS
    from shared.metrics import HTTP_REQUESTS

    route = COMMANDS[command].route
    return float(HTTP_REQUESTS.labels("dispatch", "POST", route, str(status))._value.get())


async def test_the_command_fast_path_answers_like_the_route(stack: LocalStack) -> None:
    """Accept and ship are answered in front of FastAPI (command_endpoint.py). A body sent as another
    JSON type (`+json`) is the route's to read: each path replays what the other stored under an
    Idempotency-Key, so both fingerprint a request alike, and both count under the route's template."""
    async with dispatch_service(stack, suppliers=["alpha"], routes=_routes(SHOP), shop_id=SHOP) as harness:
        order = await _offer(harness, "alpha", [("p1", "s1", 2)])
        base = f"/dispatch-orders/{order['dispatch_id']}"
        accept = json.dumps({"estimated_ship_at": "2030-01-01T08:00:00+08:00"}).encode()
        accepted_before = _command_answers("accept", 200)
        async with harness.client("alpha", **{"Idempotency-Key": "fast-accept"}) as client:
            fast = await client.post(
                f"{base}/accept", content=accept, headers={"Content-Type": "application/json"}
            )
            routed = await client.post(f"{base}/accept", content=accept, headers=VENDOR_JSON)  # the route's
            assert fast.status_code == routed.status_code == 200, (fast.text, routed.text)
            assert fast.json()["state"] == "accepted" and routed.json() == fast.json()
            assert (
                "Idempotent-Replayed" not in fast.headers and routed.headers["Idempotent-Replayed"] == "true"
            )
            other = await client.post(
                f"{base}/accept", json={"estimated_ship_at": "2031-01-01T08:00:00+08:00"}
            )  # the fast path's, with a different body
            assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
        assert _command_answers("accept", 200) == accepted_before + 2

        ship = {
            "parcels": [
                {"carrier_code": "ZTO", "waybill_no": "ZT-FAST-1", "lines": [{"line_no": 0, "quantity": 1}]}
            ]
        }
        async with harness.client("alpha", **{"Idempotency-Key": "fast-ship"}) as client:
            routed = await client.post(
                f"{base}/shipments",
                content=json.dumps(ship).encode(),
                headers=VENDOR_JSON,
            )
            fast = await client.post(f"{base}/shipments", json=ship)
            assert routed.status_code == fast.status_code == 200, (routed.text, fast.text)
            assert fast.json() == routed.json() and fast.headers["Idempotent-Replayed"] == "true"
            assert fast.json()["state"] == "partially_shipped"

        async with harness.client("alpha") as client:
            refusals = [
                (f"{base}/shipments", {"parcels": []}, 422, "validation_failed"),
                (f"{base}/shipments", {**ship, "extra": 1}, 422, "validation_failed"),
                (f"{base}/accept", {"estimated_ship_at": "2001-01-01T00:00:00Z"}, 422, "validation_failed"),
                (f"{base}/accept", {}, 409, "not_offered"),
                (f"{base}/shipments", ship, 409, "waybill_already_used"),
                ("/dispatch-orders/no-such-order/accept", {}, 404, "not_found"),
            ]
            for path, body, status, code in refusals:
                answer = await client.post(path, json=body)
                assert (answer.status_code, answer.json()["code"]) == (status, code), (
                    path,
                    body,
                    answer.text,
                )
            past = (
                await client.post(f"{base}/accept", json={"estimated_ship_at": "2001-01-01T00:00:00Z"})
            ).json()
            assert [f["path"] for f in past["fields"]] == ["body.estimated_ship_at"]
            broken = await client.post(
                f"{base}/accept", content=b"{", headers={"Content-Type": "application/json"}
            )
            assert broken.status_code == 422 and broken.json()["code"] == "validation_failed"
        async with harness.client(None, Authorization="Bearer lvk_nope_nope") as forged:
            refused = await forged.post(f"{base}/accept", json={})
            assert refused.status_code == 401 and refused.json()["code"] == "unauthenticated"
        async with harness.client("alpha", **{"Idempotency-Key": "k" * 256}) as too_long:
            answer = await too_long.post(f"{base}/accept", json={})
            assert (
                answer.status_code == 422 and answer.json()["fields"][0]["path"] == "header.idempotency-key"
            )


async def test_idempotent_retries_return_the_first_answer(stack: LocalStack) -> None:
    """A change's answer is kept by its version document (one document written for the request); a
    refusal's answer is stored whole."""
    async with dispatch_service(stack, suppliers=["alpha"], routes=_routes(SHOP), shop_id=SHOP) as harness:
        order = await _offer(harness, "alpha", [("p1", "s1", 1)])
        path = f"/dispatch-orders/{order['dispatch_id']}/accept"
        async with harness.client("alpha", **{"Idempotency-Key": "accept-1"}) as client:
            first = await client.post(path, json={"estimated_ship_at": "2030-01-01T08:00:00+08:00"})
            again = await client.post(path, json={"estimated_ship_at": "2030-01-01T08:00:00+08:00"})
            assert first.status_code == again.status_code == 200
            assert first.content == again.content
            assert again.headers.get("Idempotent-Replayed") == "true"
            reused = await client.post(path, json={})
            assert reused.status_code == 422 and reused.json()["code"] == "idempotency_key_reused"
        version = await harness.db[ORDER_VERSIONS].find_one({"_id": f"{order['dispatch_id']}#000002"})
        assert version is not None and version["request"]["key"] == "alpha:accept-1"
        assert await harness.db[IDEMPOTENCY].find_one({"_id": "alpha:accept-1"}) is None
        async with harness.client("alpha", **{"Idempotency-Key": "accept-2"}) as client:
            twice = await client.post(path, json={})
            assert twice.status_code == 409 and twice.json()["code"] == "not_offered"
            assert (await client.post(path, json={})).content == twice.content
        assert await harness.db[IDEMPOTENCY].find_one({"_id": "alpha:accept-2"}) is not None


async def test_two_concurrent_ship_calls_exactly_one_wins(stack: LocalStack) -> None:
    async with dispatch_service(stack, suppliers=["alpha"], routes=_routes(SHOP), shop_id=SHOP) as harness:
        order = await _offer(harness, "alpha", [("p1", "s1", 2)])
        dispatch_id = order["dispatch_id"]
        async with harness.client("alpha") as client:
            assert (await client.post(f"/dispatch-orders/{dispatch_id}/accept", json={})).status_code == 200

            def shipment(waybill: str) -> dict[str, Any]:
                return {
                    "parcels": [
                        {
                            "carrier_code": "ZTO",
                            "waybill_no": waybill,
                            "lines": [{"line_no": 0, "quantity": 2}],
                        }
                    ]
                }

            answers = await asyncio.gather(
                client.post(f"/dispatch-orders/{dispatch_id}/shipments", json=shipment("ZT100")),
                client.post(f"/dispatch-orders/{dispatch_id}/shipments", json=shipment("ZT200")),
            )
            assert sorted(a.status_code for a in answers) == [200, 409]
            loser = next(a for a in answers if a.status_code == 409)
            assert loser.json()["code"] == "already_shipped"
            final = (await client.get(f"/dispatch-orders/{dispatch_id}")).json()
            assert final["state"] == "shipped" and len(final["parcels"]) == 1


async def test_split_shipment_and_validation_errors(stack: LocalStack) -> None:
    async with dispatch_service(stack, suppliers=["alpha"], routes=_routes(SHOP), shop_id=SHOP) as harness:
        order = await _offer(harness, "alpha", [("p1", "s1", 3)])
        base = f"/dispatch-orders/{order['dispatch_id']}"
        async with harness.client("alpha") as client:
            early = await client.post(
                f"{base}/shipments",
                json={
                    "parcels": [
                        {"carrier_code": "ZTO", "waybill_no": "A1", "lines": [{"line_no": 0, "quantity": 1}]}
                    ]
                },
            )
            assert early.status_code == 409 and early.json()["code"] == "not_accepted"
            await client.post(f"{base}/accept", json={})
            invalid = await client.post(
                f"{base}/shipments",
                json={
                    "parcels": [
                        {"carrier_code": "", "waybill_no": "A 1", "lines": [{"line_no": 0, "quantity": 0}]}
                    ]
                },
            )
            assert invalid.status_code == 422
            paths = {f["path"] for f in invalid.json()["fields"]}
            assert {
                "body.parcels.0.carrier_code",
                "body.parcels.0.waybill_no",
                "body.parcels.0.lines.0.quantity",
            } <= paths
            too_many = await client.post(
                f"{base}/shipments",
                json={
                    "parcels": [
                        {"carrier_code": "ZTO", "waybill_no": "A1", "lines": [{"line_no": 0, "quantity": 4}]}
                    ]
                },
            )
            assert too_many.json()["code"] == "quantity_exceeds_remaining"
            split = await client.post(
                f"{base}/shipments",
                json={
                    "parcels": [
                        {"carrier_code": "ZTO", "waybill_no": "A1", "lines": [{"line_no": 0, "quantity": 1}]},
                        {"carrier_code": "YTO", "waybill_no": "B1", "lines": [{"line_no": 0, "quantity": 1}]},
                    ]
                },
            )
            assert split.status_code == 200 and split.json()["state"] == "partially_shipped"
            rest = await client.post(
                f"{base}/shipments",
                json={
                    "parcels": [
                        {"carrier_code": "ZTO", "waybill_no": "A2", "lines": [{"line_no": 0, "quantity": 1}]}
                    ]
                },
            )
            assert rest.json()["state"] == "shipped"
            assert [p["parcel_no"] for p in rest.json()["parcels"]] == [1, 2, 3]
        shipped = await read_topic(
            stack.kafka_bootstrap,
            (DISPATCH.name, DISPATCH_PROGRESS.name),
            timeout_s=30,
            until=lambda records: (
                sum(
                    1
                    for r in records
                    if r.key == order["order_id"].encode() and b"dispatch_shipped" in (r.value or b"")
                )
                >= 2
            ),
        )
        # The stack's own dispatch service consumes `orders` too (and holds what it cannot route):
        # only this service's dispatch order counts.
        parsed = [(r.topic, DISPATCH_EVENTS.validate_json(r.value or b"")) for r in shipped]
        ours = [(t, e) for t, e in parsed if getattr(e, "dispatch_id", None) == order["dispatch_id"]]
        ours.sort(key=lambda item: getattr(item[1], "version", 0))  # two topics: read interleaved
        events = [e for _, e in ours]
        # Goods and units move on `dispatch`; the acceptance only tells, on `dispatch.progress`.
        assert [t for t, _ in ours] == [DISPATCH.name, DISPATCH_PROGRESS.name, DISPATCH.name, DISPATCH.name]
        assert [e.event_type for e in events] == [
            "dispatch_offered",
            "dispatch_accepted",
            "dispatch_shipped",
            "dispatch_shipped",
        ]
        assert [getattr(e, "version", None) for e in events] == [1, 2, 3, 4]


async def test_cancellation_after_accept_becomes_a_request_the_supplier_answers(stack: LocalStack) -> None:
    async with dispatch_service(stack, suppliers=["alpha"], routes=_routes(SHOP), shop_id=SHOP) as harness:
        order = await _offer(harness, "alpha", [("p1", "s1", 1)])
        async with harness.client("alpha") as client:
            await client.post(f"/dispatch-orders/{order['dispatch_id']}/accept", json={})
            await harness.publish(
                OrderCancelled(
                    order_id=order["order_id"], shop_id=SHOP, version=int(time.time()) + 5, wechat_status=250
                )
            )
            change, _ = await harness.wait_for(
                "alpha",
                lambda c: (
                    c["change"] == "dispatch_change_requested"
                    and c["dispatch_order"]["dispatch_id"] == order["dispatch_id"]
                ),
            )
            request = change["dispatch_order"]["change_requests"][-1]
            assert request["kind"] == "cancel" and request["status"] == "open"
            answered = await client.post(
                f"/dispatch-orders/{order['dispatch_id']}/change-requests/{request['request_id']}/answer",
                json={"decision": "confirm"},
            )
            assert answered.status_code == 200 and answered.json()["state"] == "cancelled"
            late = await client.post(
                f"/dispatch-orders/{order['dispatch_id']}/shipments",
                json={
                    "parcels": [
                        {"carrier_code": "ZTO", "waybill_no": "Z9", "lines": [{"line_no": 0, "quantity": 1}]}
                    ]
                },
            )
            assert late.status_code == 409 and late.json()["code"] == "dispatch_cancelled"


async def test_shipped_before_the_cancellation_becomes_an_interception(stack: LocalStack) -> None:
    async with dispatch_service(stack, suppliers=["alpha"], routes=_routes(SHOP), shop_id=SHOP) as harness:
        order = await _offer(harness, "alpha", [("p1", "s1", 1)])
        async with harness.client("alpha") as client:
            await client.post(f"/dispatch-orders/{order['dispatch_id']}/accept", json={})
            await harness.publish(
                OrderCancelled(
                    order_id=order["order_id"], shop_id=SHOP, version=int(time.time()) + 5, wechat_status=250
                )
            )
            change, _ = await harness.wait_for("alpha", lambda c: c["change"] == "dispatch_change_requested")
            request_id = change["dispatch_order"]["change_requests"][-1]["request_id"]
            refused = await client.post(
                f"/dispatch-orders/{order['dispatch_id']}/change-requests/{request_id}/answer",
                json={"decision": "refuse", "refusal": "already_shipped"},
            )
            assert refused.status_code == 200
        records = await read_topic(
            stack.kafka_bootstrap,
            DISPATCH.name,
            timeout_s=30,
            until=lambda rs: any(
                r.key == order["order_id"].encode() and b"interception_required" in (r.value or b"")
                for r in rs
            ),
        )
        interception = next(
            DISPATCH_EVENTS.validate_json(r.value or b"")
            for r in records
            if r.key == order["order_id"].encode() and b"interception_required" in (r.value or b"")
        )
        assert interception.event_type == "interception_required"


async def test_rejection_falls_back_and_unrouted_orders_wait_on_hold_until_a_route_exists(
    stack: LocalStack,
) -> None:
    async with dispatch_service(
        stack, suppliers=["alpha", "beta"], routes=_routes(SHOP), shop_id=SHOP
    ) as harness:
        order = await _offer(harness, "alpha", [("p1", "s1", 1)])
        async with harness.client("alpha") as client:
            rejected = await client.post(
                f"/dispatch-orders/{order['dispatch_id']}/reject", json={"reason": "out_of_stock"}
            )
            assert rejected.json()["state"] == "rejected"
        fallback, _ = await harness.wait_for("beta", _offered(order["order_id"]))
        assert fallback["dispatch_order"]["lines"][0]["product_id"] == "p1"

        unrouted = paid_order(SHOP, [("p9", "s9", 1)])
        await harness.publish(unrouted)
        store = None
        for _ in range(100):
            plans = {p.order_id: p for p in await current_plans(harness.db)}
            store = plans.get(unrouted.order_id)
            if store is not None:
                break
            await asyncio.sleep(0.1)
        assert store is not None and store.status == "held" and store.hold_reason == "no_route"
        await harness.catalog.set_route(Route(shop_id=SHOP, supplier_id="beta", product_id="p9", sku_id="s9"))
        released, _ = await harness.wait_for("beta", _offered(unrouted.order_id), timeout_s=20)
        assert released["dispatch_order"]["lines"][0]["product_id"] == "p9"


async def test_rate_limit_answers_429_with_retry_after(stack: LocalStack) -> None:
    async with (
        dispatch_service(
            stack,
            suppliers=["alpha"],
            routes=_routes(SHOP),
            shop_id=SHOP,
            supplier_rate_per_s=1.0,
            supplier_burst=3,
        ) as harness,
        harness.client("alpha") as client,
    ):
        answers = [await client.get("/dispatch-orders") for _ in range(5)]
        assert [a.status_code for a in answers[:3]] == [200, 200, 200]
        limited = answers[-1]
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert limited.json()["code"] == "rate_limited"


async def test_state_and_cursors_survive_a_restart(stack: LocalStack) -> None:
    database = f"t_restart_{new_order_id()[-6:]}"
    shop = f"shop-restart-{database[-6:]}"  # its own shop: other tests' orders route elsewhere
    async with dispatch_service(
        stack, suppliers=["alpha"], routes=_routes(shop), shop_id=shop, database=database
    ) as harness:
        order = await _offer(harness, "alpha", [("p1", "s1", 1)])
        accept_path = f"/dispatch-orders/{order['dispatch_id']}/accept"
        async with harness.client("alpha", **{"Idempotency-Key": "accept-before-restart"}) as client:
            accepted = await client.post(accept_path, json={})
            assert accepted.status_code == 200
            before = (await client.get("/feed")).json()
        key = harness.keys["alpha"]
    async with dispatch_service(stack, suppliers=[], shop_id=SHOP, database=database) as again:
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=again.base_url + "/supplier/v1", headers=headers) as client:
            after = (await client.get("/feed")).json()
            assert after["changes"] == before["changes"]
            current = (await client.get(f"/dispatch-orders/{order['dispatch_id']}")).json()
            assert current["state"] == "accepted" and current["version"] == 2
            # The retried accept gets its first answer, rebuilt from the accept's version document:
            # the key is known after the restart.
            replayed = await client.post(
                accept_path, json={}, headers={"Idempotency-Key": "accept-before-restart"}
            )
            assert replayed.status_code == 200 and replayed.content == accepted.content
            assert replayed.headers.get("Idempotent-Replayed") == "true"


async def test_a_stock_cap_holds_against_a_burst_of_orders_routed_together(stack: LocalStack) -> None:
    """Orders of one batch (and of overlapping batches) are routed before any of them is written:
    each must see the units the others took."""
    shop = f"shop-cap-{time.time_ns()}"
    capped = Route(shop_id=shop, supplier_id="alpha", product_id="pc", sku_id="sc", stock_cap=5)
    async with dispatch_service(stack, suppliers=["alpha"], routes=[capped], shop_id=shop) as harness:
        events = [paid_order(shop, [("pc", "sc", 1)]) for _ in range(12)]
        await asyncio.gather(*(harness.publish(event) for event in events))
        async with asyncio.timeout(60):
            while len(plans := [p for p in await current_plans(harness.db) if p.shop_id == shop]) < 12:
                await asyncio.sleep(0.2)
        assert sorted(p.status for p in plans) == ["dispatched"] * 5 + ["held"] * 7
        assert {p.hold_reason for p in plans if p.status == "held"} == {"stock_cap_reached"}


async def test_the_list_filters_by_state_order_and_update_time_and_pages(stack: LocalStack) -> None:
    """The list filters on the orders' gists and shows each order as it is now."""
    shop = f"shop-list-{time.time_ns()}"
    async with dispatch_service(stack, suppliers=["alpha"], routes=_routes(shop), shop_id=shop) as harness:
        offered = [await _offer(harness, "alpha", [("p1", "s1", 1)]) for _ in range(3)]
        first, second, third = (o["dispatch_id"] for o in offered)
        async with harness.client("alpha") as client:
            accepted = await client.post(f"/dispatch-orders/{second}/accept", json={})
            assert accepted.status_code == 200

            async def listed(**params: Any) -> dict[str, Any]:
                reply = await client.get("/dispatch-orders", params=params)
                assert reply.status_code == 200, reply.text
                page: dict[str, Any] = reply.json()
                return page

            everything = await listed()
            assert [o["dispatch_id"] for o in everything["items"]] == [first, second, third]
            assert everything["next_page_after"] is None
            assert [o["state"] for o in everything["items"]] == ["offered", "accepted", "offered"]

            only_accepted = await listed(state="accepted")
            assert [(o["dispatch_id"], o["state"]) for o in only_accepted["items"]] == [(second, "accepted")]
            assert [o["dispatch_id"] for o in (await listed(state="offered"))["items"]] == [first, third]

            by_order = await listed(order_id=offered[2]["order_id"])
            assert [o["dispatch_id"] for o in by_order["items"]] == [third]

            since = accepted.json()["updated_at"]
            assert [o["dispatch_id"] for o in (await listed(updated_since=since))["items"]] == [second]

            page_one = await listed(limit=2)
            assert [o["dispatch_id"] for o in page_one["items"]] == [first, second]
            assert page_one["next_page_after"] == second
            page_two = await listed(limit=2, page_after=second)
            assert [o["dispatch_id"] for o in page_two["items"]] == [third]
            assert page_two["next_page_after"] is None
