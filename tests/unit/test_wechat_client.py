"""The WeChat client's resilience, against a scripted WeChat (httpx.MockTransport): retries on busy,
one token refresh on a refused token, and a breaker that opens only for WeChat being unwell."""

from __future__ import annotations

import json

import httpx
import pytest
from purgatory.domain.model import OpenedState
from pydantic import SecretStr

from shared.settings import WeChatSettings
from shared.wechat.client import (
    WeChatApiError,
    WeChatCircuitOpen,
    WeChatShopClient,
    WeChatUnavailableError,
    wechat_http_client,
)
from shared.wechat.shops import Shop

SHOP = Shop(
    shop_id="s1",
    appid="wx1",
    app_secret=SecretStr("x"),
    token=SecretStr("t"),
    encoding_aes_key=SecretStr("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"),
)
ORDER = {"order_id": "3705115058471208928", "status": 20, "update_time": 5}


class Tokens:
    def __init__(self) -> None:
        self.refused: list[str | None] = []

    async def token(self, shop: Shop, *, rejected: str | None = None) -> str:
        self.refused.append(rejected)
        return "fresh" if rejected else "cached"


def client(
    answers: list[dict[str, object]], seen: list[httpx.Request], **settings: object
) -> WeChatShopClient:
    def reply(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        return httpx.Response(200, content=json.dumps(answer).encode())

    config = WeChatSettings(
        api_base="http://wechat.test",
        api_backoff_initial_s=0.001,
        **settings,  # type: ignore[arg-type]
    )
    http = httpx.AsyncClient(transport=httpx.MockTransport(reply))
    return WeChatShopClient(http, Tokens(), config)


async def test_busy_is_retried_until_an_answer() -> None:
    seen: list[httpx.Request] = []
    wechat = client([{"errcode": -1}, {"errcode": 45011}, {"errcode": 0, "order": ORDER}], seen)
    order = await wechat.get_order(SHOP, "3705115058471208928")
    assert order.order_id == "3705115058471208928" and len(seen) == 3
    assert json.loads(seen[0].content) == {"order_id": "3705115058471208928"}
    assert seen[0].url.params["access_token"] == "cached"


async def test_a_refused_token_is_refreshed_once() -> None:
    seen: list[httpx.Request] = []
    wechat = client([{"errcode": 42001}, {"errcode": 0, "order": ORDER}], seen)
    await wechat.get_order(SHOP, "1")
    assert [r.url.params["access_token"] for r in seen] == ["cached", "fresh"]


async def test_the_breaker_opens_when_wechat_keeps_failing_and_not_for_missing_orders() -> None:
    seen: list[httpx.Request] = []
    missing = client([{"errcode": 100002, "errmsg": "order not found"}], seen, breaker_failure_threshold=2)
    for _ in range(4):
        with pytest.raises(WeChatApiError) as raised:
            await missing.get_order(SHOP, "1")
        assert raised.value.errcode == 100002  # permanent answers never open the breaker
    assert len(seen) == 4

    seen.clear()
    busy = client([{"errcode": -1}], seen, breaker_failure_threshold=2, api_max_attempts=2)
    for _ in range(2):
        with pytest.raises(WeChatApiError):
            await busy.get_order(SHOP, "1")
    calls_before = len(seen)
    with pytest.raises(WeChatCircuitOpen) as opened:
        await busy.get_order(SHOP, "1")  # fails fast: WeChat is not called while the breaker is open
    assert len(seen) == calls_before == 4
    assert isinstance(opened.value.__cause__, OpenedState)
    assert 0 < opened.value.retry_after_s <= WeChatSettings().breaker_reset_timeout_s


async def test_a_non_idempotent_call_is_not_sent_again_when_its_answer_may_be_lost() -> None:
    """dropship/assign: WeChat may have acted on a call answered -1 or lost in transit, so it is raised
    to the caller (who looks up what happened) instead of being sent again; the minute quota, which
    WeChat refuses before acting, is still waited out."""
    body = {"order_id": "1", "supplier_appid": "wxs", "dropship_product_list": []}
    seen: list[httpx.Request] = []
    busy = client([{"errcode": -1}, {"errcode": 0}], seen)
    with pytest.raises(WeChatApiError) as raised:
        await busy.call(SHOP, "/channels/ec/order/dropship/assign", body, idempotent=False)
    assert raised.value.errcode == -1 and len(seen) == 1

    seen.clear()
    quota = client([{"errcode": 45011}, {"errcode": 0, "ds_order_id": "9"}], seen)
    answer = await quota.call(SHOP, "/channels/ec/order/dropship/assign", body, idempotent=False)
    assert answer["ds_order_id"] == "9" and len(seen) == 2

    def lost(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        raise httpx.ReadTimeout("lost", request=request)

    seen.clear()
    wechat = WeChatShopClient(
        httpx.AsyncClient(transport=httpx.MockTransport(lost)),
        Tokens(),
        WeChatSettings(api_base="http://wechat.test", api_backoff_initial_s=0.001),
    )
    with pytest.raises(WeChatUnavailableError):
        await wechat.call(SHOP, "/channels/ec/order/dropship/assign", body, idempotent=False)
    assert len(seen) == 1
    with pytest.raises(WeChatUnavailableError):
        await wechat.call(SHOP, "/channels/ec/order/dropship/get", {"ds_order_id": "9"})
    assert len(seen) == 1 + WeChatSettings().api_max_attempts  # a read is retried


async def test_waiting_for_a_pooled_connection_is_not_a_wechat_failure() -> None:
    settings = WeChatSettings()
    async with wechat_http_client(settings) as http:
        assert http.timeout.pool is None  # a burst queues behind the pool without timing out
        assert http.timeout.read == http.timeout.connect == settings.request_timeout_s
