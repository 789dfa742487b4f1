"""From "supplier ships" to "WeChat told" to "delivered", on the real stack with the WeChat and
carrier stand-ins: waybills from the aggregator (never minted twice), labels, delivery/send with
one delivery_list element per parcel, carrier tracking pushes to delivered."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pypdf import PdfReader
from typer.testing import CliRunner

from ops.cli import app
from ops.dlq import read_dead_letters
from ops.stack import LocalStack
from shared.carriers import kdniao
from shared.events.logistics import (
    LOGISTICS_EVENTS,
    DeliveryOutcome,
    ParcelTrackingChanged,
    ShipmentReported,
    TrackingState,
)
from shared.kafka.topics import DISPATCH, LOGISTICS
from shared.settings import LOCAL_SERVICE_TOKEN, KafkaSettings, LogisticsSettings
from tests.integration.helpers import read_topic
from tests.integration.pipeline import APPID, Line, fulfilment_line

pytestmark = pytest.mark.integration

DELIVERY_SEND = "/channels/ec/order/delivery/send"
LOGISTICS_KDNIAO_ID = LogisticsSettings().kdniao_business_id
LOGISTICS_KDNIAO_KEY = LogisticsSettings().kdniao_app_key.get_secret_value()


@pytest.fixture(scope="module")
async def line(stack: LocalStack) -> AsyncIterator[Line]:
    async with fulfilment_line(stack) as running:
        await running.add_supplier("alpha")
        yield running


async def _offered(line: Line, order_id: str) -> dict[str, Any]:
    async with line.supplier("alpha") as client:
        after = 0

        async def poll() -> dict[str, Any] | None:
            nonlocal after
            page = (await client.get("/feed", params={"after": after, "wait_s": 2})).json()
            after = page["next_cursor"]
            return next(
                (c["dispatch_order"] for c in page["changes"] if c["dispatch_order"]["order_id"] == order_id),
                None,
            )

        found: dict[str, Any] = await line.until(poll, timeout_s=90)
        return found


async def test_shipped_parcels_reach_wechat_once_and_are_tracked_to_delivered(line: Line) -> None:
    order = await line.sim(
        "POST",
        "/orders",
        appid=APPID,
        paid=True,
        products=[
            {"product_id": "1000001", "sku_id": "2000001", "sku_cnt": 2, "title": "羊毛围巾"},
            {"product_id": "1000002", "sku_id": "2000002", "sku_cnt": 1, "title": "手套"},
        ],
    )
    order_id = str(order["order_id"])
    dispatch_order = await _offered(line, order_id)
    dispatch_id = dispatch_order["dispatch_id"]
    base = f"/dispatch-orders/{dispatch_id}"
    parcels: list[dict[str, Any]] = [
        {"lines": [{"line_no": 0, "quantity": 2}], "weight_grams": 800},
        {"lines": [{"line_no": 1, "quantity": 1}]},
    ]
    async with line.supplier("alpha") as client:
        assert (await client.post(f"{base}/accept", json={})).status_code == 200
        request = {"carrier_code": "ZTO", "parcels": parcels}
        key = {"Idempotency-Key": f"waybills-{dispatch_id}"}
        issued = await client.post(f"{base}/waybills", json=request, headers=key)
        assert issued.status_code == 200, issued.text
        again = await client.post(f"{base}/waybills", json=request, headers=key)
        assert again.json() == issued.json()  # the retry gets the same numbers
    waybills = issued.json()["waybills"]
    assert [w["parcel_no"] for w in waybills] == [1, 2]
    numbers = [w["waybill_no"] for w in waybills]
    calls = (await line.carriers.get("/sim/calls")).json()
    orders = [c for c in calls if c["path"] == "/label/order" and c["request"].get("method") == "order"]
    assert len(orders) == 2, "the carrier was asked for a number more than once per parcel"
    assert sorted(str(c["reply"]["data"]["kuaidinum"]) for c in orders) == sorted(numbers)

    async with line.supplier("alpha") as client:
        pdf = await client.get(waybills[0]["label_url"].removeprefix("/supplier/v1"))
        assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
        text = PdfReader(io.BytesIO(pdf.content)).pages[0].extract_text()
        assert numbers[0] in text and order_id in text
        shipped = await client.post(
            f"{base}/shipments",
            json={
                "parcels": [
                    {"carrier_code": "ZTO", "waybill_no": numbers[0], "lines": parcels[0]["lines"]},
                    {"carrier_code": "ZTO", "waybill_no": numbers[1], "lines": parcels[1]["lines"]},
                ]
            },
        )
        assert shipped.status_code == 200 and shipped.json()["state"] == "shipped"

    async def told() -> list[dict[str, Any]]:
        return [
            c for c in await line.wechat_calls(DELIVERY_SEND) if str(c["request"]["order_id"]) == order_id
        ]

    calls = await line.until(told)
    assert len(calls) == 1 and calls[0]["errcode"] == 0
    delivery_list = calls[0]["request"]["delivery_list"]
    assert [(d["delivery_id"], d["waybill_id"]) for d in delivery_list] == [("ZTO", n) for n in numbers]
    assert [d["product_infos"] for d in delivery_list] == [
        [{"product_id": "1000001", "sku_id": "2000001", "product_cnt": 2}],
        [{"product_id": "1000002", "sku_id": "2000002", "product_cnt": 1}],
    ]
    wechat_order = await line.sim("GET", f"/orders/{order_id}")
    assert wechat_order["status"] == 30  # awaiting receipt: everything shipped

    def delivered(records: list[Any]) -> bool:
        events = [LOGISTICS_EVENTS.validate_json(r.value) for r in records if r.key == order_id.encode()]
        states = {e.parcel.waybill_no: e.state for e in events if isinstance(e, ParcelTrackingChanged)}
        return all(states.get(n) == TrackingState.DELIVERED for n in numbers)

    await read_topic(line.stack.kafka_bootstrap, LOGISTICS.name, until=delivered, timeout_s=120)
    assert len(await told()) == 1  # still told exactly once


async def _shipped_by_supplier(
    line: Line, *, before_shipping: dict[str, Any] | None = None
) -> tuple[str, str]:
    """A paid order, accepted and shipped in one parcel with the supplier's own waybill number;
    `before_shipping` is a WeChat stand-in fault set just before the shipment is reported."""
    order = await line.sim(
        "POST",
        "/orders",
        appid=APPID,
        paid=True,
        products=[{"product_id": "1000003", "sku_id": "2000003", "sku_cnt": 1, "title": "帽子"}],
    )
    order_id = str(order["order_id"])
    dispatch_order = await _offered(line, order_id)
    waybill_no = f"ZT{order_id[-12:]}"
    if before_shipping is not None:
        await line.sim("POST", "/faults", **before_shipping)
    async with line.supplier("alpha") as client:
        base = f"/dispatch-orders/{dispatch_order['dispatch_id']}"
        assert (await client.post(f"{base}/accept", json={})).status_code == 200
        shipment = {"carrier_code": "ZTO", "waybill_no": waybill_no, "lines": [{"line_no": 0, "quantity": 1}]}
        assert (await client.post(f"{base}/shipments", json={"parcels": [shipment]})).status_code == 200
    return order_id, waybill_no


async def _reports(line: Line, order_id: str, count: int) -> list[ShipmentReported]:
    found: list[ShipmentReported] = []

    def enough(records: list[Any]) -> bool:
        found[:] = [
            e
            for r in records
            if r.key == order_id.encode()
            and isinstance(e := LOGISTICS_EVENTS.validate_json(r.value), ShipmentReported)
        ]
        return len(found) >= count

    await read_topic(line.stack.kafka_bootstrap, LOGISTICS.name, until=enough, timeout_s=90)
    return found


async def _calls_for(line: Line, order_id: str) -> list[dict[str, Any]]:
    return [c for c in await line.wechat_calls(DELIVERY_SEND) if str(c["request"]["order_id"]) == order_id]


async def test_a_tracking_subscription_the_aggregator_fails_is_made_again(line: Line) -> None:
    await line.carriers.post("/sim/faults", json={"subscribe_server_errors": 1})
    order_id, waybill_no = await _shipped_by_supplier(line)

    async def subscriptions() -> list[str] | None:
        calls = (await line.carriers.get("/sim/calls")).json()
        codes = [
            str(c["reply"]["returnCode"])
            for c in calls
            if c["path"] == "/poll" and waybill_no in str(c["request"].get("param", ""))
        ]
        return codes if "200" in codes else None

    assert await line.until(subscriptions) == ["500", "200"]  # refused once, then made

    def tracked(records: list[Any]) -> bool:
        events = [LOGISTICS_EVENTS.validate_json(r.value) for r in records if r.key == order_id.encode()]
        return any(
            isinstance(e, ParcelTrackingChanged)
            and e.parcel.waybill_no == waybill_no
            and e.state == TrackingState.DELIVERED
            for e in events
        )

    await read_topic(line.stack.kafka_bootstrap, LOGISTICS.name, until=tracked, timeout_s=120)
    assert len(await _calls_for(line, order_id)) == 1  # the retry did not tell WeChat again


async def test_updated_too_often_is_retried_until_wechat_takes_it(line: Line) -> None:
    fault = {"fault": "errcode", "errcode": 100003, "count": 2, "path": DELIVERY_SEND}
    order_id, _ = await _shipped_by_supplier(line, before_shipping=fault)
    (report,) = await _reports(line, order_id, 1)
    assert report.outcome == DeliveryOutcome.TOLD
    calls = await line.until(lambda: _calls_for(line, order_id))
    assert [c["errcode"] for c in calls] == [100003, 100003, 0]


async def test_already_shipped_counts_as_told(line: Line) -> None:
    fault = {"fault": "errcode", "errcode": 109001, "count": 1, "path": DELIVERY_SEND}
    order_id, _ = await _shipped_by_supplier(line, before_shipping=fault)
    (report,) = await _reports(line, order_id, 1)
    assert report.outcome == DeliveryOutcome.ALREADY_SHIPPED
    assert [c["errcode"] for c in await _calls_for(line, order_id)] == [109001]


async def test_a_shipment_held_by_an_open_aftersale_is_told_once_wechat_takes_it(line: Line) -> None:
    fault = {"fault": "errcode", "errcode": 108009, "count": 2, "path": DELIVERY_SEND}
    order_id, _ = await _shipped_by_supplier(line, before_shipping=fault)
    reports = await _reports(line, order_id, 2)
    assert [r.outcome for r in reports] == [DeliveryOutcome.HELD_FOR_AFTERSALE, DeliveryOutcome.TOLD]
    # held twice (the first answer and the first retry), then told; nothing dead-lettered
    assert [c["errcode"] for c in await _calls_for(line, order_id)] == [108009, 108009, 0]


async def test_a_held_shipment_refused_for_good_is_dead_lettered_once_and_not_sent_again(line: Line) -> None:
    """The case behind a 108009 ends by cancelling the order (all goods refunded): WeChat now answers
    101100, for good. The held shipment becomes one dead letter; later scans leave it alone."""
    await line.sim("POST", "/faults", fault="errcode", errcode=108009, count=1, path=DELIVERY_SEND)
    fault = {"fault": "errcode", "errcode": 101100, "count": 1, "path": DELIVERY_SEND}
    order_id, _ = await _shipped_by_supplier(line, before_shipping=fault)
    reports = await _reports(line, order_id, 2)
    assert [(r.outcome, r.errcode) for r in reports] == [
        (DeliveryOutcome.HELD_FOR_AFTERSALE, 108009),
        (DeliveryOutcome.REFUSED, 101100),
    ]
    kafka = KafkaSettings(bootstrap_servers=line.stack.kafka_bootstrap)

    async def letters() -> list[str] | None:
        found = await read_dead_letters(kafka, [DISPATCH.dead_letter_name])
        names = [name for name, dl in found if dl.order_id == order_id and "held shipment" in dl.detail]
        return names or None

    (name,) = await line.until(letters, timeout_s=60)
    await asyncio.sleep(3)  # three deadline scans (1 s apart in the line): none sends it again
    assert [c["errcode"] for c in await _calls_for(line, order_id)] == [108009, 101100]
    assert await letters() == [name]
    env = {**line.stack.client_environment(), "MONGO_DATABASE": line.db.name}
    replayed = await asyncio.to_thread(CliRunner().invoke, app, ["dlq", "replay", name], env=env)
    assert replayed.exit_code == 0, replayed.output
    assert (await _reports(line, order_id, 3))[-1].outcome == DeliveryOutcome.TOLD


@pytest.mark.parametrize(("errcode", "outcome"), [(101100, DeliveryOutcome.REFUSED)])
async def test_refusals_are_dead_lettered_with_the_reason_and_replayable(
    line: Line, errcode: int, outcome: DeliveryOutcome
) -> None:
    fault = {"fault": "errcode", "errcode": errcode, "count": 1, "path": DELIVERY_SEND}
    order_id, _ = await _shipped_by_supplier(line, before_shipping=fault)
    (report,) = await _reports(line, order_id, 1)
    assert report.outcome == outcome and report.errcode == errcode
    kafka = KafkaSettings(bootstrap_servers=line.stack.kafka_bootstrap)

    async def letter() -> str | None:
        letters = await read_dead_letters(kafka, [DISPATCH.dead_letter_name])
        return next(
            (name for name, dl in letters if dl.order_id == order_id and str(errcode) in dl.detail), None
        )

    name = await line.until(letter, timeout_s=60)
    # The cause is gone (the after-sale closed, the order fixed): the operator replays the letter.
    env = {**line.stack.client_environment(), "MONGO_DATABASE": line.db.name}
    replayed = await asyncio.to_thread(CliRunner().invoke, app, ["dlq", "replay", name], env=env)
    assert replayed.exit_code == 0, replayed.output
    reports = await _reports(line, order_id, 2)
    assert reports[-1].outcome == DeliveryOutcome.TOLD
    assert [c["errcode"] for c in await _calls_for(line, order_id)] == [errcode, 0]


async def test_wechat_ewaybill_numbers_and_wechat_tracking_pushes(line: Line) -> None:
    """A shop with a WeChat e-waybill account: precreate -> create -> print/get once per parcel, the
    label marked as an e-waybill, and tracking from WeChat's ewaybill_push_path through order_ingest."""
    env = {**line.stack.client_environment(), "MONGO_DATABASE": line.db.name}
    account = [
        "ewaybill-account",
        "set",
        "--shop-id",
        line.shop_id,
        "--carrier-code",
        "YTO",
        "--acct-id",
        "acct-1",
    ]
    added = await asyncio.to_thread(CliRunner().invoke, app, account, env=env)
    assert added.exit_code == 0, added.output
    await asyncio.sleep(2)  # the service reloads accounts on its scan (1 s here)
    order = await line.sim("POST", "/orders", appid=APPID, paid=True, products=[
        {"product_id": "1000009", "sku_id": "2000009", "sku_cnt": 1, "title": "保温杯"}])  # fmt: skip
    order_id = str(order["order_id"])
    dispatch_order = await _offered(line, order_id)
    base = f"/dispatch-orders/{dispatch_order['dispatch_id']}"
    async with line.supplier("alpha", **{"Idempotency-Key": f"wb-{order_id}"}) as client:
        assert (
            await client.post(f"{base}/accept", json={}, headers={"Idempotency-Key": f"a-{order_id}"})
        ).status_code == 200
        body = {"carrier_code": "YTO", "parcels": [{"lines": [{"line_no": 0, "quantity": 1}]}]}
        issued = await client.post(f"{base}/waybills", json=body)
        again = await client.post(f"{base}/waybills", json=body)
    assert issued.status_code == 200, issued.text
    assert again.json() == issued.json()
    (waybill,) = issued.json()["waybills"]
    assert waybill["print_info"]  # for the packer's print component
    precreates = [c for c in await line.sim("GET", "/calls") if c["path"].endswith("/order/precreate")
                  and str(c["request"]["ec_order_list"][0]["ec_order_id"]) == order_id]  # fmt: skip
    assert len(precreates) == 1, "a retry must not precreate again"
    async with line.supplier("alpha") as client:
        label = await client.get(waybill["label_url"].removeprefix("/supplier/v1"))
        assert "微信电子面单" in PdfReader(io.BytesIO(label.content)).pages[0].extract_text()
        shipment = {
            "carrier_code": "YTO",
            "waybill_no": waybill["waybill_no"],
            "lines": [{"line_no": 0, "quantity": 1}],
        }
        assert (await client.post(f"{base}/shipments", json={"parcels": [shipment]})).status_code == 200
    creates = [
        c
        for c in await line.sim("GET", "/calls")
        if c["path"].endswith("/order/create")
        and str(c["request"]["ec_order_list"][0]["ec_order_id"]) == order_id
    ]
    assert len(creates) == 1 and creates[0]["errcode"] == 0
    ewaybill_order_id = str(creates[0]["request"]["ewaybill_order_id"])
    for status, desc in ((1, "快递员已揽收"), (2, "运输中"), (5, "已签收")):
        await line.sim("POST", f"/ewaybills/{ewaybill_order_id}/path", status=status, desc=desc)

    def delivered(records: list[Any]) -> bool:
        events = [LOGISTICS_EVENTS.validate_json(r.value) for r in records if r.key == order_id.encode()]
        return any(
            isinstance(e, ParcelTrackingChanged) and e.state == TrackingState.DELIVERED for e in events
        )

    await read_topic(line.stack.kafka_bootstrap, LOGISTICS.name, until=delivered, timeout_s=90)


async def test_kdniao_pushes_are_checked_deduplicated_and_answered_in_kind(line: Line) -> None:
    order_id, waybill_no = await _shipped_by_supplier(line)
    traces = [
        kdniao.Trace(accept_time="2026-11-20 09:00:00", accept_station="【金华市】快件已揽收"),
        kdniao.Trace(accept_time="2026-11-21 15:30:00", accept_station="【广州市】已签收，签收人：本人"),
    ]
    item = kdniao.PushItem(
        shipper_code="ZTO", logistic_code=waybill_no, state=kdniao.State.SIGNED, traces=traces
    )
    push = kdniao.PushRequestData(
        ebusiness_id=LOGISTICS_KDNIAO_ID, push_time=kdniao.beijing_time(), count=1, data=[item]
    )
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    async with httpx.AsyncClient(base_url=line.logistics_url) as client:
        forged = await client.post(
            "/callbacks/kdniao", content=kdniao.push_body(push, app_key="not-our-key"), headers=headers
        )
        assert forged.status_code == 401 and forged.json()["Success"] is False
        body = kdniao.push_body(push, app_key=LOGISTICS_KDNIAO_KEY)
        for _ in range(2):  # Kdniao pushes again if unsure: the second changes nothing
            answer = await client.post("/callbacks/kdniao", content=body, headers=headers)
            assert answer.status_code == 200 and answer.json()["Success"] is True
            assert answer.json()["EBusinessID"] == LOGISTICS_KDNIAO_ID

    def delivered(records: list[Any]) -> bool:
        return any(
            isinstance(e, ParcelTrackingChanged) and e.state == TrackingState.DELIVERED
            for e in (LOGISTICS_EVENTS.validate_json(r.value) for r in records if r.key == order_id.encode())
        )

    records = await read_topic(line.stack.kafka_bootstrap, LOGISTICS.name, until=delivered, timeout_s=60)
    changes = [
        e for e in (LOGISTICS_EVENTS.validate_json(r.value) for r in records if r.key == order_id.encode())
        if isinstance(e, ParcelTrackingChanged) and e.parcel.waybill_no == waybill_no
    ]  # fmt: skip
    assert [c.state for c in changes][-1] == TrackingState.DELIVERED
    assert len([c for c in changes if c.state == TrackingState.DELIVERED]) == 1


async def test_the_internal_api_answers_only_on_the_private_port_and_only_to_services(line: Line) -> None:
    """The carriers' port serves callbacks and health checks; the internal API, metrics and docs are
    on the private listener, where the internal API needs the service credential."""
    label = "/internal/v1/labels/ZTO/7500000000001.pdf"
    async with httpx.AsyncClient(base_url=line.logistics_url, timeout=10) as public:
        for path in (label, "/metrics", "/docs", "/openapi.json"):
            assert (await public.get(path)).status_code == 404, path
        assert (await public.post("/internal/v1/waybills", json={})).status_code == 404
        assert (await public.get("/readyz")).status_code == 200
    async with httpx.AsyncClient(base_url=line.logistics_private_url, timeout=10) as private:
        assert (await private.get("/metrics")).status_code == 200
        refused = await private.get(label, params={"dispatch_id": "d-1"})
        assert (
            refused.status_code == 401 and refused.json()["detail"]["code"] == "service_credential_required"
        )
        wrong = await private.get(
            label, params={"dispatch_id": "d-1"}, headers={"Authorization": "Bearer nope"}
        )
        assert wrong.status_code == 401
        right = await private.get(
            label, params={"dispatch_id": "d-1"}, headers={"Authorization": f"Bearer {LOCAL_SERVICE_TOKEN}"}
        )
        assert right.status_code == 404  # past the credential: no such label
