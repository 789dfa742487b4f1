"""WeChat's push callback: verify, decrypt, make it durable in Kafka, and only then say `success`.

Bad input gets a 4xx with a reason code and is counted; nothing is stored. If Kafka does not confirm
the write in time the answer is 503, so WeChat pushes again (it retries up to 10 times over ~3.6 h).
"""

from __future__ import annotations

import asyncio
import logging
import time
from enum import StrEnum
from typing import Annotated
from urllib.parse import parse_qsl

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Receive, Scope, Send

from services.order_ingest.domain.push_routing import topic_for_push
from shared.events.shop_events import WeChatPushReceived
from shared.kafka.producer import publish
from shared.metrics import HTTP_DURATION, HTTP_IN_FLIGHT, HTTP_REQUESTS
from shared.settings import OrderIngestSettings
from shared.wechat.crypto import WeChatCryptoError, decrypt_with_rotation, signature_matches
from shared.wechat.push import (
    PushParseError,
    detect_format,
    encrypted_field,
    parse_document,
    parse_event,
)
from shared.wechat.shops import Shop, ShopCache

log = logging.getLogger(__name__)

WEBHOOKS = Counter(
    "lvyue_webhooks_total",
    "WeChat pushes received, by shop, event and outcome.",
    ["shop", "event", "outcome"],
)
ACK_SECONDS = Histogram(
    "lvyue_webhook_ack_seconds",
    "Time from request to answer for WeChat pushes (WeChat waits 5 s).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


class WebhookOutcome(StrEnum):
    STORED = "stored"
    VERIFIED = "verified"  # URL verification (GET)
    UNKNOWN_SHOP = "unknown_shop"
    BAD_REQUEST = "bad_request"  # missing query parameters
    BODY_TOO_LARGE = "body_too_large"
    STALE_TIMESTAMP = "stale_timestamp"
    BAD_SIGNATURE = "bad_signature"
    UNDECRYPTABLE = "undecryptable"
    APPID_MISMATCH = "appid_mismatch"
    MALFORMED = "malformed"
    KAFKA_UNAVAILABLE = "kafka_unavailable"
    CLIENT_GONE = "client_gone"


_STATUS = {
    WebhookOutcome.UNKNOWN_SHOP: 404,
    WebhookOutcome.BAD_REQUEST: 400,
    WebhookOutcome.BODY_TOO_LARGE: 413,
    WebhookOutcome.STALE_TIMESTAMP: 401,
    WebhookOutcome.BAD_SIGNATURE: 401,
    WebhookOutcome.UNDECRYPTABLE: 400,
    WebhookOutcome.APPID_MISMATCH: 400,
    WebhookOutcome.MALFORMED: 400,
    WebhookOutcome.KAFKA_UNAVAILABLE: 503,
    WebhookOutcome.CLIENT_GONE: 499,  # nobody reads it; counted like every other outcome
}


class WebhookRejected(Exception):
    def __init__(self, outcome: WebhookOutcome, detail: str, event: str = "-") -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail
        self.event = event


class WebhookDependencies:
    """What the webhook needs from the running service (set in the lifespan)."""

    def __init__(self, settings: OrderIngestSettings, shops: ShopCache, producer: AIOKafkaProducer) -> None:
        self.settings = settings
        self.shops = shops
        self.producer = producer


async def get_webhook_dependencies(request: Request) -> WebhookDependencies:  # async: no thread hop
    deps: WebhookDependencies = request.app.state.webhook
    return deps


Deps = Annotated[WebhookDependencies, Depends(get_webhook_dependencies)]


def _rejection(shop_id: str, rejected: WebhookRejected) -> JSONResponse:
    WEBHOOKS.labels(shop_id, rejected.event, rejected.outcome.value).inc()
    log.info(
        "push rejected", extra={"shop": shop_id, "outcome": rejected.outcome.value, "detail": rejected.detail}
    )
    return JSONResponse(
        {"error": rejected.outcome.value, "detail": rejected.detail}, status_code=_STATUS[rejected.outcome]
    )


async def _known_shop(deps: WebhookDependencies, shop_id: str) -> Shop:
    shop = await deps.shops.get(shop_id)
    if shop is None:
        raise WebhookRejected(WebhookOutcome.UNKNOWN_SHOP, f"no shop {shop_id!r} is registered")
    return shop


def _check_timestamp(timestamp: str, window_s: int) -> None:
    try:
        sent_at = int(timestamp)
    except ValueError as exc:
        raise WebhookRejected(WebhookOutcome.BAD_REQUEST, "timestamp is not an integer") from exc
    if abs(time.time() - sent_at) > window_s:
        raise WebhookRejected(WebhookOutcome.STALE_TIMESTAMP, f"timestamp outside the {window_s}s window")


router = APIRouter(tags=["wechat"])


@router.get("/wechat/callback/{shop_id}", response_class=PlainTextResponse)
async def verify_url(
    shop_id: str,
    deps: Deps,
    signature: Annotated[str, Query()] = "",
    timestamp: Annotated[str, Query()] = "",
    nonce: Annotated[str, Query()] = "",
    echostr: Annotated[str, Query()] = "",
) -> Response:
    """WeChat's URL verification: echo `echostr` when the signature matches the shop's token."""
    try:
        shop = await _known_shop(deps, shop_id)
        if not (signature and timestamp and nonce and echostr):
            raise WebhookRejected(
                WebhookOutcome.BAD_REQUEST, "signature, timestamp, nonce and echostr are required"
            )
        if not signature_matches(signature, shop.token.get_secret_value(), timestamp, nonce):
            raise WebhookRejected(WebhookOutcome.BAD_SIGNATURE, "signature does not match the shop's token")
    except WebhookRejected as rejected:
        return _rejection(shop_id, rejected)
    WEBHOOKS.labels(shop_id, "-", WebhookOutcome.VERIFIED.value).inc()
    return PlainTextResponse(echostr)


CALLBACK_PREFIX = "/wechat/callback/"
PUSH_ROUTE_TEMPLATE = CALLBACK_PREFIX + "{shop_id}"
_SUCCESS_HEADERS = ((b"content-length", b"7"), (b"content-type", b"text/plain; charset=utf-8"))


class PushEndpoint:
    """`POST /wechat/callback/{shop_id}`, a WeChat push (plaintext or safe mode, JSON or XML):
    `success` once it is durable in Kafka.

    The hottest path we serve, so it is pure ASGI in front of the service's other middleware and
    routes: no route matching, request objects, dependency solving or response validation per push.
    It records the same RED metrics as every other route. WeChat is its only caller; not in /docs.
    Everything else goes on to the app.
    """

    def __init__(self, app: ASGIApp, *, service: str) -> None:
        self.app = app
        self._service = service
        self._in_flight = HTTP_IN_FLIGHT.labels(service)
        self._duration = HTTP_DURATION.labels(service, "POST", PUSH_ROUTE_TEMPLATE)
        self._answered: dict[int, Counter] = {}  # metric children by label values: no lookup per push
        self._stored: dict[tuple[str, str], Counter] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        shop_id = path[len(CALLBACK_PREFIX) :]
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not path.startswith(CALLBACK_PREFIX)
            or not shop_id
            or "/" in shop_id
        ):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an unexpected error: the server error middleware outside answers 500
        self._in_flight.inc()
        try:
            status = await self._answer(shop_id, scope, receive, send)
        finally:
            self._in_flight.dec()
            answered = self._answered.get(status)
            if answered is None:
                answered = HTTP_REQUESTS.labels(self._service, "POST", PUSH_ROUTE_TEMPLATE, str(status))
                self._answered[status] = answered
            answered.inc()
            elapsed = time.perf_counter() - started
            self._duration.observe(elapsed)
            ACK_SECONDS.observe(elapsed)

    async def _answer(self, shop_id: str, scope: Scope, receive: Receive, send: Send) -> int:
        query = _query_params(scope.get("query_string", b""))
        content_type = content_length = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"content-length":
                content_length = value.decode("latin-1")
        try:
            deps: WebhookDependencies = scope["app"].state.webhook
            push = await _verified_push(
                shop_id,
                deps,
                receive,
                content_type,
                content_length,
                query.get("signature", ""),
                query.get("timestamp", ""),
                query.get("nonce", ""),
                query.get("encrypt_type", ""),
                query.get("msg_signature", ""),
            )
            await _store(deps, push)
        except WebhookRejected as rejected:
            response = _rejection(shop_id, rejected)
            await response(scope, receive, send)
            return response.status_code
        stored = self._stored.get((shop_id, push.event))
        if stored is None:
            stored = self._stored[shop_id, push.event] = WEBHOOKS.labels(
                shop_id, push.event, WebhookOutcome.STORED.value
            )
        stored.inc()
        await send({"type": "http.response.start", "status": 200, "headers": list(_SUCCESS_HEADERS)})
        await send({"type": "http.response.body", "body": b"success"})
        return 200


def _query_params(raw: bytes) -> dict[str, str]:
    """The query string as a dict (the last value of a repeated name wins, as in Starlette)."""
    text = raw.decode("latin-1")
    if "%" in text or "+" in text:
        return dict(parse_qsl(text, keep_blank_values=True))
    # WeChat's parameters (digits, hex signatures, "aes") need no unquoting: split only.
    return {name: value for name, _, value in (pair.partition("=") for pair in text.split("&") if pair)}


async def _read_body(receive: Receive, declared_length: str | None, limit: int) -> bytes:
    if declared_length and declared_length.isdigit() and int(declared_length) > limit:
        raise WebhookRejected(WebhookOutcome.BODY_TOO_LARGE, f"body over {limit} bytes")
    body: bytes = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":  # WeChat gave up waiting; it will push again
            raise WebhookRejected(WebhookOutcome.CLIENT_GONE, "the sender closed the connection")
        body += message.get("body", b"")
        if len(body) > limit:
            raise WebhookRejected(WebhookOutcome.BODY_TOO_LARGE, f"body over {limit} bytes")
        if not message.get("more_body", False):
            return body


async def _verified_push(
    shop_id: str,
    deps: WebhookDependencies,
    receive: Receive,
    content_type: str | None,
    content_length: str | None,
    signature: str,
    timestamp: str,
    nonce: str,
    encrypt_type: str,
    msg_signature: str,
) -> WeChatPushReceived:
    shop = await _known_shop(deps, shop_id)
    body = await _read_body(receive, content_length, deps.settings.webhook_max_body_bytes)
    if not (timestamp and nonce):
        raise WebhookRejected(WebhookOutcome.BAD_REQUEST, "timestamp and nonce are required")
    _check_timestamp(timestamp, deps.settings.webhook_replay_window_s)
    token = shop.token.get_secret_value()
    fmt = detect_format(body, content_type)
    try:
        envelope = parse_document(body, fmt)
        if encrypt_type == "aes":
            encrypted = encrypted_field(envelope)
            if not signature_matches(msg_signature, token, timestamp, nonce, encrypted):
                raise WebhookRejected(WebhookOutcome.BAD_SIGNATURE, "msg_signature does not match")
            try:
                plain, _ = decrypt_with_rotation(encrypted, shop.appid, shop.aes_keys())
            except WeChatCryptoError as exc:
                outcome = (
                    WebhookOutcome.APPID_MISMATCH
                    if exc.code.value == "appid_mismatch"
                    else WebhookOutcome.UNDECRYPTABLE
                )
                raise WebhookRejected(outcome, exc.detail) from exc
            document = parse_document(plain, detect_format(plain))
        else:
            if not signature_matches(signature, token, timestamp, nonce):
                raise WebhookRejected(WebhookOutcome.BAD_SIGNATURE, "signature does not match")
            document = envelope
        event = parse_event(document)
    except PushParseError as exc:
        raise WebhookRejected(WebhookOutcome.MALFORMED, exc.detail) from exc
    subject = event.subject_id or shop_id
    return WeChatPushReceived(
        shop_id=shop_id,
        event=event.event,
        create_time=event.create_time,
        dedupe_key=event.dedupe_key,
        order_id=event.order_id if event.order_id and event.order_id.isdigit() else None,
        partition_key=subject,
        payload=document,
    )


async def _store(deps: WebhookDependencies, push: WeChatPushReceived) -> None:
    """Durable in Kafka (acks from all in-sync replicas) within the timeout, or a 503."""
    try:
        # asyncio.timeout, not wait_for: no extra task per push on the hottest path.
        async with asyncio.timeout(deps.settings.webhook_kafka_ack_timeout_s):
            await publish(deps.producer, topic_for_push(push.event), push)
    except (TimeoutError, KafkaError) as exc:
        log.warning("push not stored: Kafka unavailable", extra={"shop": push.shop_id, "error": repr(exc)})
        raise WebhookRejected(
            WebhookOutcome.KAFKA_UNAVAILABLE, "event store unavailable, retry", push.event
        ) from exc
