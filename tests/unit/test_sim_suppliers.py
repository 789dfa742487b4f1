"""Supplier bots without a network: the decisions for a feed change and the bot's own state, the
waybill numbers, the settings, the client's retries, and one bot against an in-memory supplier API
that applies dispatch's own domain transitions."""

from __future__ import annotations

import asyncio
import json
import random
import re
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.dispatch.domain import dispatch_order as dispatch
from services.dispatch.domain.dispatch_order import DispatchError, DispatchOrder, ParcelShipment
from shared.api.supplier import (
    API_PREFIX,
    AcceptRequest,
    ChangeAnswer,
    DispatchOrderPublic,
    ErrorBody,
    FeedChange,
    FeedPage,
    RejectRequest,
    ShipRequest,
    SupplierErrorCode,
)
from shared.events.dispatch import (
    ChangeKind,
    ChangeStatus,
    DispatchLine,
    DispatchState,
    ParcelLine,
    RejectReason,
    ShippingAddress,
)
from sim.suppliers import Behaviour, Delay, FleetSettings, SupplierConfig, SupplierFleet
from sim.suppliers.client import ApiAnswer, RetryableAnswer, SupplierApiClient, retry_after_seconds
from sim.suppliers.decisions import (
    AnswerOffer,
    Done,
    OrderKnowledge,
    OrderPlan,
    Ship,
    WaitForAnswers,
    answer_change,
    in_warehouse,
    next_step,
    order_rng,
    own_waybills,
    plan_order,
    react,
    shipment_contents,
    waybill_number,
)
from sim.suppliers.fleet import read_cursors, write_cursors
from sim.suppliers.records import SavedCursors
from sim.suppliers.settings import RetryPolicy, load_settings, parse_supplier
from tests.unit.slow_server import slow_server

T0 = datetime(2025, 11, 13, 2, 0, tzinfo=UTC)
ADDRESS = ShippingAddress(
    name="张三", phone="13800000000", province="广东省", city="广州市", county="天河区", detail="1号"
)
NEW_ADDRESS = ADDRESS.model_copy(update={"detail": "2号"})
PLAN = OrderPlan(
    rejection=None,
    accept_delay_s=60,
    ship_delay_s=3600,
    rest_delay_s=7200,
    carrier="ZTO",
    split=False,
    partial=False,
)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def offered(*quantities: int, dispatch_id: str = "3705115058471208928-1") -> DispatchOrder:
    lines = [
        DispatchLine(line_no=n, product_id=f"p{n}", sku_id=f"s{n}", quantity=q)
        for n, q in enumerate(quantities)
    ]
    return dispatch.offer(
        dispatch_id=dispatch_id,
        order_id=dispatch_id.split("-")[0],
        shop_id="shop-1",
        supplier_id="sup-a",
        lines=lines,
        receiver=ADDRESS,
        ship_by=at(2880),
        paid_at=at(-5),
        now=at(0),
    ).order


def accepted(*quantities: int) -> DispatchOrder:
    return dispatch.accept(offered(*quantities), estimated_ship_at=None, now=at(1)).order


def shipped(order: DispatchOrder, *lines: tuple[int, int], waybill: str = "ZT1") -> DispatchOrder:
    parcel = ParcelShipment("ZTO", waybill, [ParcelLine(line_no=n, quantity=q) for n, q in lines])
    return dispatch.ship(order, parcels=[parcel], now=at(10)).order


def change(order: DispatchOrder, kind: str = "dispatch_offered") -> FeedChange:
    return FeedChange(cursor=1, change=kind, occurred_at=order.updated_at, dispatch_order=order.public())


def knowing(order: DispatchOrder, plan: OrderPlan = PLAN, **fields: Any) -> OrderKnowledge:
    return OrderKnowledge(order=order.public(), plan=plan, **fields)


def no_plan() -> OrderPlan:
    raise AssertionError("a known order is never planned again")


# --- reacting to feed changes ---------------------------------------------------------------------


def test_a_new_offer_is_planned_once_and_starts_work() -> None:
    order = offered(2)
    reaction = react(None, change(order), lambda: PLAN)
    assert reaction.start_work and reaction.answer == ()
    assert reaction.knowledge.plan == PLAN and reaction.knowledge.order.version == 1
    again = react(reaction.knowledge, change(order), no_plan)
    assert not again.start_work and again.knowledge == reaction.knowledge


def test_an_order_first_seen_after_accept_is_resumed_and_a_finished_one_is_left_alone() -> None:
    assert react(None, change(accepted(1), "dispatch_accepted"), lambda: PLAN).start_work
    done = shipped(accepted(1), (0, 1))
    assert not react(None, change(done, "dispatch_shipped"), lambda: PLAN).start_work


def test_a_stale_snapshot_does_not_replace_a_newer_one() -> None:
    knowledge = knowing(accepted(1))
    reaction = react(knowledge, change(offered(1)), no_plan)
    assert reaction.knowledge.order.state == DispatchState.ACCEPTED and not reaction.start_work


def test_an_open_change_request_is_answered_once_however_often_it_is_seen() -> None:
    requested = dispatch.cancel_for_order(accepted(1), now=at(5)).order
    first = react(knowing(accepted(1)), change(requested, "dispatch_change_requested"), no_plan)
    [request] = first.answer
    assert request.kind == ChangeKind.CANCEL and first.knowledge.answering == {request.request_id}
    assert react(first.knowledge, change(requested, "dispatch_change_requested"), no_plan).answer == ()
    # A newer version (another event of the same order) still does not ask again.
    urged = requested.model_copy(update={"version": requested.version + 1})
    assert react(first.knowledge, change(urged, "dispatch_updated"), no_plan).answer == ()


def test_a_superseded_request_is_not_answered() -> None:
    order = dispatch.change_receiver(accepted(1), receiver=NEW_ADDRESS, now=at(5)).order
    cancelled = dispatch.cancel_for_order(order, now=at(6)).order  # supersedes the address request
    [address, cancel] = cancelled.change_requests
    assert address.status == ChangeStatus.SUPERSEDED
    reaction = react(knowing(accepted(1)), change(cancelled, "dispatch_change_requested"), no_plan)
    assert [r.request_id for r in reaction.answer] == [cancel.request_id]


# --- the next step of the work --------------------------------------------------------------------


def test_next_step_follows_the_order_through_its_life() -> None:
    rejecting = replace(PLAN, rejection=RejectReason.OUT_OF_STOCK)
    assert next_step(knowing(offered(1))) == AnswerOffer(60, None)
    assert next_step(knowing(offered(1), rejecting)) == AnswerOffer(60, RejectReason.OUT_OF_STOCK)
    assert next_step(knowing(accepted(2))) == Ship(3600, 0)
    partly = shipped(accepted(2), (0, 1))
    assert next_step(knowing(partly)) == Ship(7200, 1)  # the rest, after the rest delay
    assert next_step(knowing(shipped(partly, (0, 1), waybill="ZT2"))) == Done("shipped")
    assert next_step(knowing(accepted(1), answering=frozenset({"r1"}))) == WaitForAnswers()
    assert next_step(knowing(accepted(1), abandoned=True)) == Done("abandoned")
    cancelled = dispatch.cancel_for_order(offered(1), now=at(2)).order
    assert next_step(knowing(cancelled)) == Done("cancelled")


# --- answering change requests --------------------------------------------------------------------


def _requested(order: DispatchOrder, kind: ChangeKind) -> DispatchOrder:
    match kind:
        case ChangeKind.CANCEL:
            return dispatch.cancel_for_order(order, now=at(20)).order
        case ChangeKind.ADDRESS:
            return dispatch.change_receiver(order, receiver=NEW_ADDRESS, now=at(20)).order
        case ChangeKind.SKU:
            lines = [line.model_copy(update={"sku_id": "other"}) for line in order.lines]
            return dispatch.change_lines(order, lines=lines, now=at(20)).order


@pytest.mark.parametrize("kind", list(ChangeKind))
def test_requests_are_confirmed_before_shipping_and_refused_once_the_goods_left(kind: ChangeKind) -> None:
    order = _requested(accepted(2), kind)
    request_id = order.change_requests[-1].request_id
    confirm = answer_change(knowing(order), request_id)
    assert confirm is not None and confirm.decision == "confirm"
    # Every unit is with the carrier (the shipment report is on its way): too late.
    leaving = knowing(order, in_transit={0: 2})
    assert answer_change(leaving, request_id) == ChangeAnswer(
        decision="refuse", refusal="already_shipped", text="已发货，请拦截"
    )


def test_a_partial_shipment_leaves_the_rest_to_stop() -> None:
    order = _requested(shipped(accepted(3), (0, 1)), ChangeKind.CANCEL)
    request_id = order.change_requests[-1].request_id
    answer = answer_change(knowing(order), request_id)
    assert answer is not None and answer.decision == "confirm"
    assert in_warehouse(knowing(order, in_transit={0: 1})) == {0: 1}


def test_a_request_no_longer_open_gets_no_answer() -> None:
    order = _requested(accepted(1), ChangeKind.CANCEL)
    request_id = order.change_requests[-1].request_id
    refused = dispatch.ship(
        order, parcels=[ParcelShipment("ZTO", "ZT9", [ParcelLine(line_no=0, quantity=1)])], now=at(30)
    )
    assert answer_change(knowing(refused.order), request_id) is None  # the shipment answered it
    assert answer_change(knowing(order), "no-such-request") is None


# --- plans, parcels, waybills ---------------------------------------------------------------------


def test_plans_follow_the_configured_shares_and_repeat_per_dispatch_order() -> None:
    behaviour = Behaviour(reject_share=0.2, split_share=0.3, partial_share=0.1, carriers={"ZTO": 1, "SF": 1})
    plans = [plan_order(behaviour, order_rng(1, "sup-a", f"d-{i}", "plan")) for i in range(4000)]
    rejections = Counter(p.rejection for p in plans)
    assert 0.17 < (4000 - rejections[None]) / 4000 < 0.23
    assert rejections[RejectReason.OUT_OF_STOCK] > 3 * rejections[RejectReason.INVALID_SKU] > 0
    assert 0.27 < sum(p.split for p in plans) / 4000 < 0.33
    assert {p.carrier for p in plans} == {"ZTO", "SF"}
    assert all(30 <= p.accept_delay_s <= 900 for p in plans)
    assert plan_order(behaviour, order_rng(1, "sup-a", "d-7", "plan")) == plans[7]


@pytest.mark.parametrize("seed", range(200))
def test_shipment_contents_cover_the_shelf_in_non_empty_parcels(seed: int) -> None:
    rng = random.Random(seed)
    shelf = {n: rng.randint(1, 4) for n in range(rng.randint(1, 3))}
    total = sum(shelf.values())
    split, partial = rng.random() < 0.5, rng.random() < 0.5
    parcels = shipment_contents(shelf, partial=partial, split=split, max_parcels=3, rng=rng)
    sent: Counter[int] = Counter()
    for parcel in parcels:
        assert parcel and all(line.quantity >= 1 for line in parcel)
        assert len({line.line_no for line in parcel}) == len(parcel)
        sent.update({line.line_no: line.quantity for line in parcel})
    assert all(sent[n] <= shelf[n] for n in sent)
    if partial and total >= 2:
        assert 1 <= sum(sent.values()) < total
    else:
        assert dict(sent) == shelf
    units = sum(sent.values())
    assert len(parcels) == 1 if not split or units == 1 else 2 <= len(parcels) <= min(3, units)


def test_waybill_numbers_look_like_the_carriers_own() -> None:
    rng = random.Random(3)
    patterns = {
        "ZTO": r"ZT\d{12}",
        "YTO": r"YT\d{13}",
        "SF": r"SF\d{13}",
        "STO": r"77\d{11}",
        "YUNDA": r"46\d{11}",
        "JD": r"JDVA\d{11}",
        "DBL": r"DB\d{12}",  # a carrier without a known format: its code's letters and 12 digits
    }
    for carrier, pattern in patterns.items():
        assert re.fullmatch(pattern, waybill_number(carrier, rng)), carrier
    numbers = own_waybills("ZTO", 50, random.Random(1), used=[waybill_number("ZTO", random.Random(1))])
    assert len(set(numbers)) == 50 and waybill_number("ZTO", random.Random(1)) not in numbers


# --- settings ------------------------------------------------------------------------------------


def test_settings_shorthands_overrides_and_files(tmp_path: Path) -> None:
    assert Delay.model_validate(5) == Delay(min_s=5, max_s=5)
    assert Delay.model_validate([1, 2]) == Delay(min_s=1, max_s=2)
    with pytest.raises(ValueError, match="max_s"):
        Delay.model_validate([3, 1])
    assert parse_supplier(" acme = lvk_1=2 ") == SupplierConfig(supplier_id="acme", api_key="lvk_1=2")
    with pytest.raises(ValueError, match="SUPPLIER_ID=API_KEY"):
        parse_supplier("acme")
    config = tmp_path / "fleet.yaml"
    config.write_text(
        textwrap.dedent(
            """\
            api_url: http://dispatch:8002
            time_scale: 600
            behaviour: {reject_share: 0.1, ship_delay: [60, 120]}
            suppliers:
              - {supplier_id: a, api_key: k1}
              - {supplier_id: b, api_key: k2, behaviour: {reject_share: 0}}
            """
        )
    )
    settings = load_settings(config)
    a, b = settings.suppliers
    assert settings.behaviour_of(a).reject_share == 0.1 and settings.behaviour_of(b).reject_share == 0
    assert settings.behaviour_of(b).ship_delay == Delay(min_s=60, max_s=120)
    assert settings.scaled(600) == 1
    as_json = tmp_path / "fleet.json"
    as_json.write_text(json.dumps({"suppliers": [{"supplier_id": "a", "api_key": "k"}]}))
    assert load_settings(as_json).suppliers[0].supplier_id == "a"
    with pytest.raises(ValueError):
        SupplierFleet(FleetSettings(suppliers=[a, a]))


# --- the client's retries -------------------------------------------------------------------------


def test_retry_after_as_seconds_or_a_date() -> None:
    assert retry_after_seconds("3") == 3
    assert retry_after_seconds("Thu, 13 Nov 2025 02:00:10 GMT", now=T0) == 10
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


async def test_client_retries_5xx_429_and_network_errors_with_one_idempotency_key() -> None:
    answers: list[Callable[[], httpx.Response]] = [
        lambda: httpx.Response(503, json={"code": "logistics_unavailable", "message": "x"}),
        lambda: httpx.Response(
            429, json={"code": "rate_limited", "message": "x"}, headers={"Retry-After": "7"}
        ),
        lambda: (_ for _ in ()).throw(httpx.ConnectError("refused")),
        lambda: httpx.Response(200, json={"ok": True}, headers={"Idempotent-Replayed": "true"}),
    ]
    seen: list[httpx.Request] = []
    slept: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers[len(seen) - 1]()

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    client = SupplierApiClient(
        "http://dispatch.test",
        "lvk_key",
        policy=RetryPolicy(initial_backoff_s=0.1, max_backoff_s=1),
        timeout_s=1,
        transport=httpx.MockTransport(handler),
        sleep=sleep,
    )
    answer = await client.post("/dispatch-orders/d-1/accept", AcceptRequest(), idempotency_key="k-1")
    assert answer.ok and answer.replayed
    assert [r.headers["Idempotency-Key"] for r in seen] == ["k-1"] * 4
    assert all(r.headers["Authorization"] == "Bearer lvk_key" for r in seen)
    assert seen[0].url.path == API_PREFIX + "/dispatch-orders/d-1/accept"
    assert slept[1] == 7 and slept[0] <= 1.1 and slept[2] <= 1.1  # Retry-After wins over the backoff

    # A 409 is an answer, not a failure; a status in no_retry comes back at once.
    answers[:] = [lambda: httpx.Response(409, json={"code": "dispatch_cancelled", "message": "x"})] * 2
    seen.clear()
    conflict = await client.post("/dispatch-orders/d-1/accept", AcceptRequest(), idempotency_key="k-2")
    assert conflict.error_code() == SupplierErrorCode.DISPATCH_CANCELLED and len(seen) == 1
    answers[:] = [lambda: httpx.Response(503, json={"code": "logistics_unavailable", "message": "x"})] * 9
    seen.clear()
    down = await client.post("/x/waybills", AcceptRequest(), idempotency_key="k-3", no_retry={503})
    assert down.status == 503 and len(seen) == 1
    seen.clear()
    with pytest.raises(RetryableAnswer):
        await client.post("/x/accept", AcceptRequest(), idempotency_key="k-4")
    assert len(seen) == RetryPolicy().max_attempts
    await client.aclose()


async def test_the_first_attempts_time_counts_against_the_retry_budget() -> None:
    seen: list[httpx.Request] = []

    async def slow_and_busy(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        await asyncio.sleep(0.06)
        return httpx.Response(503, json={"code": "logistics_unavailable", "message": "x"})

    client = SupplierApiClient(
        "http://dispatch.test",
        "lvk_key",
        policy=RetryPolicy(max_elapsed_s=0.05),
        timeout_s=1,
        transport=httpx.MockTransport(slow_and_busy),
    )
    with pytest.raises(RetryableAnswer):
        await client.post("/x/accept", AcceptRequest(), idempotency_key="k-1")
    assert len(seen) == 1  # 0.06 s spent of 0.05: no second attempt
    await client.aclose()


def test_answers_are_read_from_their_bytes_as_from_their_json() -> None:
    order = shipped(accepted(3, 1), (0, 3), (1, 1))
    raw = json.dumps(order.public().model_dump(mode="json")).encode()
    answer = ApiAnswer(200, raw)
    assert answer.dispatch_order() == DispatchOrderPublic.model_validate(json.loads(raw))
    assert answer.body == json.loads(raw) and answer.code is None
    page = json.dumps({"changes": [change(order).model_dump(mode="json")], "next_cursor": 7}).encode()
    assert FeedPage.model_validate_json(page) == FeedPage.model_validate(json.loads(page))
    refusal = ApiAnswer(409, b'{"code": "dispatch_cancelled", "message": "x"}')
    assert refusal.error_code() == SupplierErrorCode.DISPATCH_CANCELLED
    assert ApiAnswer(502, b"<html>bad gateway</html>").body == "<html>bad gateway</html>"


async def test_a_client_has_at_most_its_connections_in_flight_at_the_api() -> None:
    far_end, server, port = await slow_server(0.02)
    client = SupplierApiClient(
        f"http://127.0.0.1:{port}", "lvk_key", policy=RetryPolicy(max_attempts=1), timeout_s=5, connections=3
    )
    async with server:
        answers = await asyncio.gather(
            *(client.post(f"/d-{n}/accept", AcceptRequest(), idempotency_key=f"k-{n}") for n in range(12))
        )
        await client.aclose()
    assert [a.status for a in answers] == [200] * 12
    assert far_end.most == 3  # the other calls waited on the client's side
    assert FleetSettings().connections == 8  # what each bot opens by default


async def test_a_paced_client_stays_under_the_supplier_apis_rate_limit() -> None:
    sent_at: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent_at.append(time.monotonic())
        return httpx.Response(200, json={"ok": True})

    client = SupplierApiClient(
        "http://dispatch.test",
        "lvk_key",
        policy=RetryPolicy(),
        timeout_s=1,
        transport=httpx.MockTransport(handler),
        requests_per_s=50,
    )
    started = time.monotonic()
    answers = await asyncio.gather(
        *(client.post(f"/d-{n}/accept", AcceptRequest(), idempotency_key=f"k-{n}") for n in range(100))
    )
    await client.aclose()
    assert all(a.ok for a in answers) and len(sent_at) == 100
    # A token bucket of 50 a second with bursts of 50 (the API's is 20/s with bursts of 40): between
    # any two requests, at most 50 plus 50 a second; so the hundredth leaves about a second in.
    assert sent_at[-1] - started >= 0.9
    for i, first in enumerate(sent_at):
        for j in range(i, len(sent_at)):
            assert j - i + 1 <= 50 + 50 * (sent_at[j] - first) + 1, (i, j)


# --- one bot against an in-memory supplier API ----------------------------------------------------


class FakeSupplierApi:
    """Just enough of dispatch's supplier API, applying its own domain transitions."""

    def __init__(self) -> None:
        self.orders: dict[str, DispatchOrder] = {}
        self.feed: list[FeedChange] = []
        self.changed = asyncio.Event()
        self.keys: dict[str, httpx.Response] = {}

    def publish(self, order: DispatchOrder, kind: str) -> None:
        self.orders[order.dispatch_id] = order
        self.feed.append(
            FeedChange(
                cursor=len(self.feed) + 1,
                change=kind,
                occurred_at=order.updated_at,
                dispatch_order=order.public(),
            )
        )
        self.changed.set()
        self.changed = asyncio.Event()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix(API_PREFIX)
        if path == "/feed":
            after = int(request.url.params["after"])
            if len(self.feed) <= after:
                changed = self.changed
                try:
                    async with asyncio.timeout(float(request.url.params["wait_s"])):
                        await changed.wait()
                except TimeoutError:
                    pass
            page = self.feed[after:]
            body = {"changes": [c.model_dump(mode="json") for c in page], "next_cursor": len(self.feed)}
            return httpx.Response(200, json=body)
        key = request.headers["Idempotency-Key"]
        if key in self.keys:
            return self.keys[key]
        _, _, dispatch_id, action, *rest = path.split("/")
        body = json.loads(request.content)
        order = self.orders[dispatch_id]
        try:
            match action:
                case "accept":
                    transition = dispatch.accept(
                        order,
                        estimated_ship_at=AcceptRequest.model_validate(body).estimated_ship_at,
                        now=at(1),
                    )
                case "reject":
                    rejection = RejectRequest.model_validate(body)
                    transition = dispatch.reject(
                        order, reason=rejection.reason, text=rejection.text, now=at(1)
                    )
                case "shipments":
                    parcels = [
                        ParcelShipment(p.carrier_code, p.waybill_no, list(p.lines))
                        for p in ShipRequest.model_validate(body).parcels
                    ]
                    transition = dispatch.ship(order, parcels=parcels, now=at(2))
                case "change-requests":
                    answer = ChangeAnswer.model_validate(body)
                    transition = dispatch.answer_change(
                        order,
                        request_id=rest[0],
                        decision=answer.decision,
                        refusal=answer.refusal,
                        text=answer.text,
                        now=at(3),
                    )
                case _:
                    return httpx.Response(
                        503, json={"code": "logistics_unavailable", "message": "no logistics"}
                    )
        except DispatchError as exc:
            response = httpx.Response(
                409, json=ErrorBody(code=exc.code, message=exc.message).model_dump(mode="json")
            )
        else:
            for event in transition.events:
                self.publish(transition.order, event.event_type)
            response = httpx.Response(200, json=transition.order.public().model_dump(mode="json"))
        self.keys[key] = response
        return response


async def _until(condition: Callable[[], bool], timeout_s: float = 5) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


def _one_quick_supplier(behaviour: dict[str, Any], **fleet: Any) -> FleetSettings:
    """A fleet of one supplier, `sup-a`, that waits a few milliseconds at most and rejects nothing."""
    fast = Delay(min_s=0, max_s=0.01)
    return FleetSettings(
        api_url="http://dispatch.test",
        suppliers=[SupplierConfig(supplier_id="sup-a", api_key="k")],
        behaviour=Behaviour(
            accept_delay=fast,
            ship_delay=fast,
            rest_delay=fast,
            answer_delay=fast,
            reject_share=0,
            **behaviour,
        ),
        seed=5,
        **fleet,
    )


async def test_a_bot_ships_what_it_accepts_and_confirms_a_cancellation_before_shipping() -> None:
    api = FakeSupplierApi()
    settings = _one_quick_supplier(
        # The fake answers 503 for waybills, like dispatch while logistics does not exist.
        {"split_share": 1, "request_waybills": True},
        feed_wait_s=1,
    )
    async with SupplierFleet(settings, transport=httpx.MockTransport(api)) as fleet:
        api.publish(offered(3, 1, dispatch_id="100-1"), "dispatch_offered")
        await _until(lambda: api.orders["100-1"].state == DispatchState.SHIPPED)
        # A slow warehouse: the cancellation arrives while the goods are still on the shelf.
        fleet.bots["sup-a"].behaviour = fleet.bots["sup-a"].behaviour.model_copy(
            update={"ship_delay": Delay(min_s=30, max_s=30)}
        )
        api.publish(offered(1, dispatch_id="200-1"), "dispatch_offered")
        await _until(lambda: api.orders["200-1"].state == DispatchState.ACCEPTED)
        requested = dispatch.cancel_for_order(api.orders["200-1"], now=at(4)).order
        api.publish(requested, "dispatch_change_requested")
        await _until(lambda: api.orders["200-1"].state == DispatchState.CANCELLED)
        await _until(lambda: fleet.stats().suppliers["sup-a"].active_orders == 0)
        stats = fleet.stats().suppliers["sup-a"]

    first = api.orders["100-1"]
    [record] = stats.shipments
    assert [(p.carrier_code, p.waybill_no, p.lines) for p in first.parcels] == [
        (p.carrier_code, p.waybill_no, p.lines) for p in record.parcels
    ]
    assert len(first.parcels) >= 2 and record.waybill_source == "own"  # split, own numbers after the 503
    assert stats.counters["waybill_fallbacks"] == 1 and stats.counters["change_confirm"] == 1
    assert api.orders["200-1"].parcels == [] and stats.counters["accepted"] == 2


async def test_a_restarted_fleet_reads_its_feed_after_the_saved_cursor_except_for_open_work(
    tmp_path: Path,
) -> None:
    api = FakeSupplierApi()
    settings = _one_quick_supplier(
        {"split_share": 0},
        feed_wait_s=0.2,
        cursor_file=tmp_path / "cursors.json",
        cursor_save_every_s=0.05,
    )
    async with SupplierFleet(settings, transport=httpx.MockTransport(api)) as fleet:
        api.publish(offered(3, 1, dispatch_id="100-1"), "dispatch_offered")
        await _until(lambda: api.orders["100-1"].state == DispatchState.SHIPPED)
        await _until(lambda: fleet.stats().suppliers["sup-a"].active_orders == 0)
        finished_at = len(api.feed)
        # Saved while running, not only at the stop.
        await _until(lambda: read_cursors(tmp_path / "cursors.json").cursors.get("sup-a") == finished_at)
        fleet.bots["sup-a"].behaviour = fleet.bots["sup-a"].behaviour.model_copy(
            update={"ship_delay": Delay(min_s=30, max_s=30)}
        )
        api.publish(offered(1, dispatch_id="200-1"), "dispatch_offered")
        await _until(lambda: api.orders["200-1"].state == DispatchState.ACCEPTED)
    # 200-1 is still to ship: a restarted bot must read its offer again to resume it.
    assert read_cursors(tmp_path / "cursors.json").cursors == {"sup-a": finished_at}

    api.publish(shipped(api.orders["200-1"], (0, 1)), "dispatch_shipped")  # shipped while the bot was away
    polled_after: list[int] = []

    async def recording(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/feed"):
            polled_after.append(int(request.url.params["after"]))
        return await api(request)

    async with SupplierFleet(settings, transport=httpx.MockTransport(recording)) as again:
        api.publish(offered(2, dispatch_id="300-1"), "dispatch_offered")
        await _until(lambda: api.orders["300-1"].state == DispatchState.SHIPPED)
        await _until(lambda: again.stats().suppliers["sup-a"].active_orders == 0)
        counters = again.stats().suppliers["sup-a"].counters
    assert polled_after[0] == finished_at  # 100-1's changes are not read again
    assert counters["offers_seen"] == 2 and counters["accepted"] == 1  # 200-1's offer seen, not redone
    assert read_cursors(tmp_path / "cursors.json").cursors == {"sup-a": len(api.feed)}


def test_a_cursor_file_that_cannot_be_read_starts_the_feeds_from_the_beginning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "cursors.json"
    assert read_cursors(path) == SavedCursors()
    path.write_text('{"cursors": {"sup-a": "soon"}}')
    assert read_cursors(path) == SavedCursors()
    assert "read from the start" in caplog.text
    write_cursors(path, SavedCursors(cursors={"sup-a": 7}))
    assert read_cursors(path).cursors == {"sup-a": 7} and not path.with_name("cursors.json.partial").exists()
