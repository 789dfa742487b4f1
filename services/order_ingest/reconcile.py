"""Reconciliation: orders WeChat shows as updated recently that no webhook brought us.

Lists each shop's orders updated in the last window (WeChat allows windows of at most 7 days, paged
with next_key) and feeds the ids we have never stored into the ingest path, as if pushed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiokafka import AIOKafkaProducer
from prometheus_client import Counter
from pymongo.asynchronous.database import AsyncDatabase

from services.order_ingest.worker import ORDERS_COLLECTION, first_version_id
from shared.db import Document
from shared.events.shop_events import RECONCILE_EVENT, PushSource, WeChatPushReceived
from shared.kafka.producer import publish
from shared.kafka.topics import WECHAT_SHOP_EVENTS
from shared.wechat.api import MAX_LIST_WINDOW_S
from shared.wechat.client import WeChatShopClient
from shared.wechat.shops import Shop, ShopRepository

log = logging.getLogger(__name__)

CLOCK_SKEW_MARGIN_S = 60

RECONCILED = Counter(
    "lvyue_reconciled_orders_total", "Orders found by reconciliation that no webhook had brought.", ["shop"]
)


async def reconcile_shop(
    shop: Shop,
    *,
    client: WeChatShopClient,
    db: AsyncDatabase[Document],
    producer: AIOKafkaProducer,
    window_s: int,
    now: float | None = None,
    known: Callable[[str], bool] = lambda order_id: False,
) -> list[str]:
    """Queue every order updated in the last `window_s` that is not stored; returns their ids.
    `known` answers from memory (the worker's projection); the rest are looked up by `_id`."""
    # A minute past our clock: WeChat's clock may run ahead of ours, and a window ending "now" by
    # our reckoning would miss what it stamped a moment later.
    end = int(now if now is not None else time.time()) + CLOCK_SKEW_MARGIN_S
    start = end - min(window_s + CLOCK_SKEW_MARGIN_S, MAX_LIST_WINDOW_S)
    missing: list[str] = []
    next_key = ""
    while True:
        page = await client.list_updated_orders(shop, start, end, next_key)
        unknown = [order_id for order_id in page.order_id_list if not known(order_id)]
        # One `_id` lookup each: FerretDB answers `$in` by scanning the collection (seconds per
        # page once a sale's orders are stored).
        stored = await asyncio.gather(
            *(db[ORDERS_COLLECTION].find_one({"_id": first_version_id(o)}, {"_id": 1}) for o in unknown)
        )
        for order_id, document in zip(unknown, stored, strict=True):
            if document is not None:
                continue
            push = WeChatPushReceived(
                source=PushSource.RECONCILIATION,
                shop_id=shop.shop_id,
                event=RECONCILE_EVENT,
                create_time=end,
                dedupe_key=f"{RECONCILE_EVENT}:{order_id}",
                order_id=order_id,
                partition_key=order_id,
                payload={"order_info": {"order_id": order_id}},
            )
            await publish(producer, WECHAT_SHOP_EVENTS, push)
            missing.append(order_id)
        if not page.has_more or not page.next_key:
            break
        next_key = page.next_key
    if missing:
        RECONCILED.labels(shop.shop_id).inc(len(missing))
        log.info("reconciliation queued orders", extra={"shop": shop.shop_id, "count": len(missing)})
    return missing


async def reconcile_forever(
    *,
    shops: ShopRepository,
    client: WeChatShopClient,
    db: AsyncDatabase[Document],
    producer: AIOKafkaProducer,
    interval_s: float,
    window_s: int,
    known: Callable[[str], bool] = lambda order_id: False,
) -> None:
    while True:
        await asyncio.sleep(interval_s)
        for shop in await shops.list():
            try:
                await reconcile_shop(
                    shop, client=client, db=db, producer=producer, window_s=window_s, known=known
                )
            except Exception:  # one shop's failure must not stop the others, nor the loop
                log.exception("reconciliation failed", extra={"shop": shop.shop_id})
