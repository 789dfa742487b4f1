"""While a shop's WeChat circuit breaker is open, a push waits for it to close instead of burning
its retries and landing in the dead-letter topic; past its patience, it is given up as before."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest

from services.order_ingest.worker import IngestWorker
from shared.wechat.client import WeChatCircuitOpen
from shared.wechat.shops import Shop


class _FlakyWeChat:
    def __init__(self, opened_times: int) -> None:
        self.opened_times = opened_times
        self.calls = 0

    async def get_order(self, shop: Shop, order_id: str) -> Any:
        self.calls += 1
        if self.calls <= self.opened_times:
            raise WeChatCircuitOpen(shop.shop_id, retry_after_s=0.01)
        return {"order_id": order_id}


def _worker(client: _FlakyWeChat, patience_s: float) -> IngestWorker:
    return IngestWorker(
        # No database call is made here: collections are only named (for the insert batchers' metrics).
        db=defaultdict(lambda: SimpleNamespace(name="unused")),  # type: ignore[arg-type]
        producer=None,
        shops=None,  # type: ignore[arg-type]
        client=client,  # type: ignore[arg-type]
        processor=None,  # type: ignore[arg-type]
        breaker_patience_s=patience_s,
    )


SHOP: Any = Shop.model_construct(shop_id="shop-1")  # type: ignore[call-arg]  # only its id is read


async def test_a_push_waits_for_the_breaker_to_close() -> None:
    wechat = _FlakyWeChat(opened_times=3)
    fetched: Any = await _worker(wechat, patience_s=5)._fetch_order(SHOP, "42")
    assert fetched == {"order_id": "42"}
    assert wechat.calls == 4


async def test_past_its_patience_the_push_gives_up() -> None:
    wechat = _FlakyWeChat(opened_times=1000)
    with pytest.raises(WeChatCircuitOpen):
        await _worker(wechat, patience_s=0.2)._fetch_order(SHOP, "42")
    assert 1 < wechat.calls < 1000
