"""Reading what the report is computed from: the stand-ins' records over their control APIs, and
our events from the topics (every partition from the beginning to its end now, without a consumer
group, so reading disturbs no service)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer
from pydantic import ValidationError

from shared.events.aftersale import AFTERSALE_EVENTS
from shared.events.dead_letter import DeadLetter
from shared.events.dispatch import DISPATCH_EVENTS
from shared.events.logistics import LOGISTICS_EVENTS
from shared.events.orders import ORDER_EVENTS, OrderPaid
from shared.kafka.topics import (
    AFTERSALE,
    AFTERSALE_INSTRUCTIONS,
    ALL_TOPICS,
    DISPATCH,
    DISPATCH_PROGRESS,
    LOGISTICS,
    ORDERS,
)
from sim.sale.report import Facts, SaleReport, compute_report

log = logging.getLogger(__name__)


async def read_topic_to_end(bootstrap: str, topic: str, *, timeout_s: float = 60) -> list[bytes]:
    """Every record value of `topic`, from the beginning to the end offsets as they are now."""
    # Subscribed without a group: every partition is assigned to this consumer, from the beginning.
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        async with asyncio.timeout(timeout_s):
            while True:  # the assignment arrives with the first metadata
                if consumer.assignment():
                    break
                await asyncio.sleep(0.05)
            assigned = sorted(consumer.assignment())
            ends = await consumer.end_offsets(assigned)
            while True:
                for batch in (await consumer.getmany(timeout_ms=300)).values():
                    values.extend(r.value for r in batch if r.value is not None)
                positions = {tp: await consumer.position(tp) for tp in assigned}
                if all(positions[tp] >= ends[tp] for tp in assigned):
                    break
    finally:
        await consumer.stop()
    return values


def _parse(values: Iterable[bytes], adapter: Any, order_ids: Collection[str]) -> list[Any]:
    events: list[Any] = []
    for value in values:
        try:
            event = adapter.validate_json(value)
        except ValidationError:
            continue  # not ours to judge here: the consumers dead-letter what they cannot read
        if event.order_id in order_ids:
            events.append(event)
    return events


def _merged(*topics: list[Any]) -> list[Any]:
    """One stage's events from its topics, in the order they happened."""
    return sorted((event for events in topics for event in events), key=lambda event: event.occurred_at)


async def _json(client: httpx.AsyncClient, path: str, **params: Any) -> Any:
    answer = await client.get(path, params=params or None)
    answer.raise_for_status()
    return answer.json()


async def collect_facts(
    *,
    wechat: httpx.AsyncClient,
    carriers: httpx.AsyncClient | None,
    kafka_bootstrap: str,
    appids: Iterable[str],
    since: datetime | None = None,
) -> Facts:
    """The stand-ins' records of the sale's shops and our events about their orders. Dead letters
    without an order id count when they were written after `since`."""
    orders: list[dict[str, Any]] = []
    pushes: list[dict[str, Any]] = []
    appid_set = set(appids)
    for appid in appid_set:
        orders.extend(await _json(wechat, "/sim/orders", appid=appid))
    order_ids = {str(o["order_id"]) for o in orders}
    for push in await _json(wechat, "/sim/pushes"):
        if push["appid"] in appid_set:
            pushes.append(push)
    cases = [c for c in await _json(wechat, "/sim/aftersales") if str(c["order_id"]) in order_ids]
    calls = [c for c in await _json(wechat, "/sim/calls") if c.get("appid") in appid_set]
    waybills = await _json(carriers, "/sim/waybills") if carriers is not None else []

    stages = (ORDERS, DISPATCH, DISPATCH_PROGRESS, LOGISTICS, AFTERSALE, AFTERSALE_INSTRUCTIONS)
    topics = [t.name for t in stages]
    dead_letter_topics = [t.dead_letter_name for t in ALL_TOPICS if t.has_dead_letter]
    read = await asyncio.gather(
        *(read_topic_to_end(kafka_bootstrap, t) for t in [*topics, *dead_letter_topics])
    )
    by_topic = dict(zip([*topics, *dead_letter_topics], read, strict=True))
    dead_letters: list[DeadLetter] = []
    for topic in dead_letter_topics:
        for value in by_topic[topic]:
            try:
                letter = DeadLetter.model_validate_json(value)
            except ValidationError:
                continue
            if letter.order_id in order_ids or (
                letter.order_id is None and since is not None and letter.occurred_at >= since
            ):
                dead_letters.append(letter)
    return Facts(
        orders=orders,
        cases=cases,
        calls=calls,
        pushes=pushes,
        waybills=waybills,
        paid=[e for e in _parse(by_topic[ORDERS.name], ORDER_EVENTS, order_ids) if isinstance(e, OrderPaid)],
        dispatch=_merged(
            _parse(by_topic[DISPATCH.name], DISPATCH_EVENTS, order_ids),
            _parse(by_topic[DISPATCH_PROGRESS.name], DISPATCH_EVENTS, order_ids),
        ),
        logistics=_parse(by_topic[LOGISTICS.name], LOGISTICS_EVENTS, order_ids),
        aftersale=_merged(
            _parse(by_topic[AFTERSALE.name], AFTERSALE_EVENTS, order_ids),
            _parse(by_topic[AFTERSALE_INSTRUCTIONS.name], AFTERSALE_EVENTS, order_ids),
        ),
        dead_letters=dead_letters,
    )


async def collect_report(
    *,
    wechat: httpx.AsyncClient,
    carriers: httpx.AsyncClient | None,
    kafka_bootstrap: str,
    appids: Iterable[str],
    seed: int,
    shops: int,
    suppliers: int,
    since: datetime | None = None,
) -> SaleReport:
    facts = await collect_facts(
        wechat=wechat, carriers=carriers, kafka_bootstrap=kafka_bootstrap, appids=appids, since=since
    )
    return compute_report(facts, seed=seed, shops=shops, suppliers=suppliers)
