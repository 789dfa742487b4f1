"""The WeChat webhook on the real broker and database: what is acknowledged is in Kafka; what is
refused gets a clear 4xx and is not stored."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from pymongo import AsyncMongoClient

from ops.stack import LocalStack, free_port
from services.order_ingest.main import create_app
from shared.db import Document
from shared.events.shop_events import WeChatPushReceived
from shared.kafka.topics import WECHAT_SHOP_EVENTS
from shared.settings import KafkaSettings, MongoSettings, OrderIngestSettings, WeChatSettings
from shared.wechat.crypto import MessageCipher, sha1_signature
from shared.wechat.push import PushFormat, build_push
from shared.wechat.shops import Shop, ShopRepository
from tests.integration.helpers import read_topic, serving

pytestmark = pytest.mark.integration

TOKEN = "AAAAA"
APPID = "wx134c8103faa5a59e"
KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
OLD_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"


@dataclass
class Ingest:
    base: str
    shop_id: str
    stack: LocalStack


@pytest.fixture(scope="module")
async def ingest(stack: LocalStack) -> AsyncIterator[Ingest]:
    database = f"t_{uuid.uuid4().hex[:10]}"
    port = free_port()
    settings = OrderIngestSettings(
        http_port=port,
        kafka=KafkaSettings(bootstrap_servers=stack.kafka_bootstrap),
        mongo=MongoSettings(uri=stack.mongo_uri, database=database),
        wechat=WeChatSettings(api_base="http://127.0.0.1:9"),  # the worker is not under test here
        kafka_group=f"test-webhook-{uuid.uuid4().hex[:8]}",
        reconcile_interval_s=0,
        shop_cache_ttl_s=0,
        webhook_kafka_ack_timeout_s=3,
    )
    mongo: AsyncMongoClient[Document] = AsyncMongoClient(stack.mongo_uri, tz_aware=True)
    shop_id = "shop-webhook"
    await ShopRepository(mongo[database]).add(
        Shop(
            shop_id=shop_id,
            appid=APPID,
            app_secret=SecretStr("secret"),
            token=SecretStr(TOKEN),
            encoding_aes_key=SecretStr(KEY),
            previous_encoding_aes_key=SecretStr(OLD_KEY),
        )
    )
    try:
        async with serving(create_app(settings), port) as base:
            yield Ingest(base, shop_id, stack)
    finally:
        await mongo.drop_database(database)
        await mongo.close()


def pay_event(order_id: int) -> dict[str, Any]:
    return {
        "ToUserName": "gh_97417a04a28d",
        "FromUserName": "o9AgO5Kd5ggOC-bXrbNODIiE3bGY",
        "CreateTime": int(time.time()),
        "MsgType": "event",
        "Event": "channels_ec_order_pay",
        "order_info": {"order_id": order_id, "pay_time": int(time.time())},
    }


def new_order_id() -> int:
    return 3705115058471208928 + uuid.uuid4().int % 10**9  # above 2^53, like WeChat's


async def post(
    ingest: Ingest, path_shop: str | None, query: dict[str, str], body: bytes, ctype: str
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=ingest.base, timeout=10) as client:
        return await client.post(
            f"/wechat/callback/{path_shop or ingest.shop_id}",
            params=query,
            content=body,
            headers={"content-type": ctype},
        )


async def stored_pushes(ingest: Ingest, order_ids: set[str]) -> dict[str, list[WeChatPushReceived]]:
    found: dict[str, list[WeChatPushReceived]] = {}

    def collect(records: list[Any]) -> bool:
        found.clear()
        for record in records:
            push = WeChatPushReceived.model_validate_json(record.value)
            if push.order_id in order_ids:
                found.setdefault(push.order_id, []).append(push)
        return set(found) == order_ids

    with contextlib.suppress(TimeoutError):  # some were not stored; the caller checks which
        await read_topic(ingest.stack.kafka_bootstrap, WECHAT_SHOP_EVENTS.name, until=collect, timeout_s=5)
    return found


async def test_url_verification_echoes_only_with_the_right_signature(ingest: Ingest) -> None:
    ts, nonce = "1714036504", "1514711492"
    async with httpx.AsyncClient(base_url=ingest.base) as client:
        good = await client.get(
            f"/wechat/callback/{ingest.shop_id}",
            params={
                "signature": sha1_signature(TOKEN, ts, nonce),
                "timestamp": ts,
                "nonce": nonce,
                "echostr": "4375",
            },
        )
        bad = await client.get(
            f"/wechat/callback/{ingest.shop_id}",
            params={"signature": "0" * 40, "timestamp": ts, "nonce": nonce, "echostr": "4375"},
        )
    assert good.status_code == 200 and good.text == "4375"
    assert bad.status_code == 401 and bad.json()["error"] == "bad_signature"


@pytest.mark.parametrize(
    ("fmt", "encrypted"), [(PushFormat.JSON, True), (PushFormat.XML, True), (PushFormat.JSON, False)]
)
async def test_accepted_pushes_are_in_kafka_with_the_exact_order_id(
    ingest: Ingest, fmt: PushFormat, encrypted: bool
) -> None:
    order_id = new_order_id()
    cipher = MessageCipher(KEY, APPID) if encrypted else None
    push = build_push(pay_event(order_id), token=TOKEN, fmt=fmt, cipher=cipher)
    raw_body = push.body
    if fmt is PushFormat.JSON and not encrypted:
        assert f'"order_id":{order_id}'.encode() in raw_body  # a JSON number above 2^53
    reply = await post(ingest, None, push.query, raw_body, push.content_type)
    assert (reply.status_code, reply.text) == (200, "success")

    stored = await stored_pushes(ingest, {str(order_id)})
    [record] = stored[str(order_id)]
    assert record.event == "channels_ec_order_pay" and record.shop_id == ingest.shop_id
    assert record.partition_key == str(order_id)
    assert str(record.payload["order_info"]["order_id"]) == str(order_id)
    if fmt is PushFormat.JSON:
        assert record.payload["order_info"]["order_id"] == order_id  # still an exact integer


async def test_a_push_under_the_previous_key_is_accepted_while_rotating(ingest: Ingest) -> None:
    order_id = new_order_id()
    push = build_push(pay_event(order_id), token=TOKEN, cipher=MessageCipher(OLD_KEY, APPID))
    reply = await post(ingest, None, push.query, push.body, push.content_type)
    assert reply.status_code == 200
    assert str(order_id) in await stored_pushes(ingest, {str(order_id)})


async def test_bad_input_gets_a_clear_4xx_and_nothing_is_stored(ingest: Ingest) -> None:
    cases: dict[str, tuple[int, str]] = {}
    sent: set[str] = set()

    async def attempt(name: str, expected: tuple[int, str], **kwargs: Any) -> None:
        order_id = new_order_id()
        sent.add(str(order_id))
        event = pay_event(order_id)
        push = build_push(
            event,
            token=TOKEN,
            cipher=kwargs.get("cipher", MessageCipher(KEY, APPID)),
            timestamp=kwargs.get("timestamp"),
        )
        query = {**push.query, **kwargs.get("query", {})}
        body = kwargs.get("body", push.body)
        reply = await post(ingest, kwargs.get("shop"), query, body, push.content_type)
        cases[name] = (reply.status_code, reply.json().get("error", ""))
        assert cases[name] == expected, name

    await attempt("signature", (401, "bad_signature"), query={"msg_signature": "f" * 40})
    await attempt("shop", (404, "unknown_shop"), shop="no-such-shop")
    await attempt("stale", (401, "stale_timestamp"), timestamp=int(time.time()) - 3600)
    await attempt("appid", (400, "appid_mismatch"), cipher=MessageCipher(KEY, "wx_another_shop"))
    await attempt("large", (413, "body_too_large"), body=b"{" + b" " * 70_000 + b"}")
    await attempt("malformed", (400, "malformed"), cipher=None, body=b"{not json")

    tampered = MessageCipher(KEY, APPID).encrypt(b"x" * 40)[:-8] + "AAAAAAA="
    ts, nonce = str(int(time.time())), "42"
    body = json.dumps({"ToUserName": "gh_1", "Encrypt": tampered}).encode()
    query = {
        "timestamp": ts,
        "nonce": nonce,
        "encrypt_type": "aes",
        "msg_signature": sha1_signature(TOKEN, ts, nonce, tampered),
    }
    reply = await post(ingest, None, query, body, "application/json")
    assert reply.status_code == 400 and reply.json()["error"] in ("undecryptable", "appid_mismatch")

    assert await stored_pushes(ingest, sent) == {}
    async with httpx.AsyncClient(base_url=ingest.base) as client:
        metrics = (await client.get("/metrics")).text
    for outcome in ("bad_signature", "unknown_shop", "stale_timestamp", "appid_mismatch", "body_too_large"):
        assert f'outcome="{outcome}"' in metrics


async def test_kafka_down_answers_503_fast_and_the_retried_push_is_stored(ingest: Ingest) -> None:
    """WeChat retries what we do not acknowledge: nothing is lost while the broker is away."""
    order_id = new_order_id()
    push = build_push(pay_event(order_id), token=TOKEN, cipher=MessageCipher(KEY, APPID))
    ingest.stack.stop_component("kafka")
    try:
        started = time.monotonic()
        reply = await post(ingest, None, push.query, push.body, push.content_type)
        elapsed = time.monotonic() - started
        assert reply.status_code == 503 and reply.json()["error"] == "kafka_unavailable"
        assert elapsed < 5  # inside WeChat's deadline, so its retry schedule applies
    finally:
        ingest.stack.start_component("kafka")
        await asyncio.to_thread(ingest.stack.wait_healthy, 120)
    async with asyncio.timeout(60):
        while (
            reply := await post(ingest, None, push.query, push.body, push.content_type)
        ).status_code != 200:
            await asyncio.sleep(1)  # as WeChat would, until the producer has reconnected
    stored = await stored_pushes(ingest, {str(order_id)})
    assert len(stored[str(order_id)]) >= 1
