"""The whole fulfilment line on the test stack: the WeChat and carrier stand-ins, order_ingest,
dispatch and logistics, each a real app on its own port in this process, one database and fresh
consumer groups. A test acts as the supplier (or runs the supplier bots) and reads what the
stand-ins recorded."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import SecretStr
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from ops.stack import LocalStack, free_ports
from services.aftersale.main import create_app as create_aftersale
from services.dispatch.catalog import Catalog, Supplier
from services.dispatch.domain.routing import Route
from services.dispatch.main import create_app as create_dispatch
from services.logistics.main import create_app as create_logistics
from services.order_ingest.main import create_app as create_ingest
from shared.api.supplier import API_PREFIX
from shared.db import Document
from shared.events.dispatch import ShippingAddress
from shared.kafka.admin import ensure_topics
from shared.kafka.topics import ALL_TOPICS
from shared.operators import OperatorRole, OperatorTokens
from shared.settings import (
    AftersaleSettings,
    DispatchSettings,
    KafkaSettings,
    LogisticsSettings,
    MongoSettings,
    OrderIngestSettings,
    WeChatSettings,
)
from shared.wechat.shops import Shop, ShopRepository
from sim.carriers.app import create_app as create_carrier_stand_in
from sim.carriers.settings import CarrierSimSettings
from sim.wechat.app import create_app as create_wechat_stand_in
from sim.wechat.settings import WeChatSimSettings
from tests.integration.helpers import serving

APPID = "wx5823bf96d3bd56c7"
TOKEN = "QDG6eK"
AES_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
SECRET = "s3cret"
AGGREGATOR_KEY, AGGREGATOR_SECRET = "lvyue-test-key", "lvyue-test-secret"
WAREHOUSE = ShippingAddress(
    name="义乌仓",
    phone="0579-85550000",
    province="浙江省",
    city="金华市",
    county="义乌市",
    detail="福田街道 88 号",
)


@dataclass
class Line:
    stack: LocalStack
    db: AsyncDatabase[Document]
    shop_id: str
    wechat: httpx.AsyncClient  # the WeChat stand-in (control API under /sim)
    carriers: httpx.AsyncClient  # the carrier stand-in
    dispatch_url: str
    logistics_url: str  # public: carrier callbacks
    logistics_private_url: str  # the internal API (waybills, labels), /metrics
    aftersale_url: str
    catalog: Catalog
    keys: dict[str, str]
    ingest_url: str = ""  # order_ingest's webhook (a shop's callback URL is /wechat/callback/{shop_id})
    operator_tokens: dict[OperatorRole, str] = field(default_factory=dict)

    def operator(self, role: OperatorRole = OperatorRole.ADMIN) -> httpx.AsyncClient:
        """The operators' API of aftersale, with a token of this role."""
        return httpx.AsyncClient(
            base_url=self.aftersale_url,
            headers={"Authorization": f"Bearer {self.operator_tokens[role]}"},
            timeout=30,
        )

    async def sim(self, method: str, route: str, /, **body: Any) -> Any:
        reply = await self.wechat.request(method, f"/sim{route}", json=body or None)
        assert reply.status_code == 200, reply.text
        return reply.json()

    async def add_supplier(self, supplier_id: str, *, routes: list[Route] | None = None) -> None:
        await self.catalog.add_supplier(
            Supplier(supplier_id=supplier_id, name=f"{supplier_id} 供应链", return_address=WAREHOUSE)
        )
        self.keys[supplier_id] = (await self.catalog.create_key(supplier_id)).token
        for route in routes or [Route(shop_id=self.shop_id, supplier_id=supplier_id)]:
            await self.catalog.set_route(route)

    def supplier(self, supplier_id: str, **headers: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.dispatch_url + API_PREFIX,
            headers={"Authorization": f"Bearer {self.keys[supplier_id]}", **headers},
            timeout=30,
        )

    async def wechat_calls(self, path: str) -> list[dict[str, Any]]:
        calls: list[dict[str, Any]] = await self.sim("GET", "/calls")
        return [c for c in calls if c["path"] == path]

    async def until(self, check: Callable[[], Any], *, timeout_s: float = 60, every_s: float = 0.2) -> Any:
        """Poll an async or plain check until it returns something truthy."""
        async with asyncio.timeout(timeout_s):
            while True:
                result = check()
                if asyncio.iscoroutine(result):
                    result = await result
                if result:
                    return result
                await asyncio.sleep(every_s)


@asynccontextmanager
async def fulfilment_line(
    stack: LocalStack,
    *,
    carrier_time_scale: float = 20_000,
    dispatch_overrides: dict[str, Any] | None = None,
    aftersale_overrides: dict[str, Any] | None = None,
) -> AsyncIterator[Line]:
    database = f"t_line_{uuid.uuid4().hex[:8]}"
    group = uuid.uuid4().hex[:8]
    shop_id = f"shop-{group}"
    # Fresh consumer groups start at the end: the session's earlier tests left thousands of orders.
    kafka = KafkaSettings(
        bootstrap_servers=stack.kafka_bootstrap, default_partitions=3, consumer_offset_reset="latest"
    )
    mongo_settings = MongoSettings(uri=stack.mongo_uri, database=database)
    names = ("wechat", "carriers", "ingest", "dispatch", "logistics", "logistics_private", "aftersale")
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    wechat = WeChatSettings(api_base=url["wechat"], api_backoff_initial_s=0.05)
    await ensure_topics(kafka, ALL_TOPICS)

    mongo: AsyncMongoClient[Document] = AsyncMongoClient(stack.mongo_uri, tz_aware=True)
    db = mongo[database]
    await ShopRepository(db).add(
        Shop(
            shop_id=shop_id,
            appid=APPID,
            app_secret=SecretStr(SECRET),
            token=SecretStr(TOKEN),
            encoding_aes_key=SecretStr(AES_KEY),
        )
    )
    common: dict[str, Any] = {"kafka": kafka, "mongo": mongo_settings, "wechat": wechat}
    ingest = OrderIngestSettings(
        http_port=ports["ingest"], kafka_group=f"test-ingest-{group}", reconcile_interval_s=0, **common
    )
    dispatch = DispatchSettings(
        http_port=ports["dispatch"],
        kafka_group=f"test-dispatch-{group}",
        logistics_url=url["logistics_private"],
        route_reload_interval_s=0.5,
        **common,
        **(dispatch_overrides or {}),
    )
    logistics = LogisticsSettings(
        http_port=ports["logistics"],
        internal_http_port=ports["logistics_private"],
        kafka_group=f"test-logistics-{group}",
        aggregator_url=url["carriers"],
        aggregator_key=SecretStr(AGGREGATOR_KEY),
        aggregator_secret=SecretStr(AGGREGATOR_SECRET),
        public_url=url["logistics"],
        deadline_scan_interval_s=1,
        **common,
    )
    aftersale = AftersaleSettings(
        http_port=ports["aftersale"],
        kafka_group=f"test-aftersale-{group}",
        tick_interval_s=0.5,
        **common,
        **(aftersale_overrides or {}),
    )
    carrier_settings = CarrierSimSettings(
        http_port=ports["carriers"],
        time_scale=carrier_time_scale,
        kuaidi100_accounts={AGGREGATOR_KEY: AGGREGATOR_SECRET},
        seed=7,
    )
    try:
        async with AsyncExitStack() as stack_of_apps:
            enter = stack_of_apps.enter_async_context
            await enter(
                serving(
                    create_wechat_stand_in(
                        settings=WeChatSimSettings(http_port=ports["wechat"], time_scale=100)
                    ),
                    ports["wechat"],
                    ready_path="/sim/health",
                )
            )
            await enter(
                serving(
                    create_carrier_stand_in(settings=carrier_settings),
                    ports["carriers"],
                    ready_path="/sim/health",
                )
            )
            ingest_url = await enter(serving(create_ingest(ingest), ports["ingest"]))
            logistics_url = await enter(serving(create_logistics(logistics), ports["logistics"]))
            dispatch_url = await enter(serving(create_dispatch(dispatch), ports["dispatch"]))
            aftersale_url = await enter(serving(create_aftersale(aftersale), ports["aftersale"]))
            wechat_client = await enter(httpx.AsyncClient(base_url=url["wechat"], timeout=10))
            carrier_client = await enter(httpx.AsyncClient(base_url=url["carriers"], timeout=10))
            line = Line(
                stack=stack,
                db=db,
                shop_id=shop_id,
                wechat=wechat_client,
                carriers=carrier_client,
                dispatch_url=dispatch_url,
                logistics_url=logistics_url,
                logistics_private_url=url["logistics_private"],
                aftersale_url=aftersale_url,
                catalog=Catalog(db),
                keys={},
                ingest_url=ingest_url,
            )
            operators = OperatorTokens(db)
            for role in OperatorRole:
                line.operator_tokens[role] = (await operators.create(f"test-{role}", role)).token
            await line.sim(
                "POST",
                "/shops",
                appid=APPID,
                secret=SECRET,
                token=TOKEN,
                encoding_aes_key=AES_KEY,
                callback_url=f"{ingest_url}/wechat/callback/{shop_id}",
            )
            yield line
    finally:
        await mongo.drop_database(database)
        await mongo.close()
