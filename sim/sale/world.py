"""The sale's world: shops, their catalogue, suppliers with warehouses and routes (built purely from
the settings and the seed), and setting it up in the stand-ins and our system.

The sale simulator imports nothing of `services`: what only dispatch's catalogue can do (suppliers,
API keys, routes) goes through a `Registrar` the caller implements (tests and ops with
`services.dispatch.catalog.Catalog`)."""

from __future__ import annotations

import contextlib
import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx
from pydantic import SecretStr

from shared.events.dispatch import ShippingAddress
from shared.wechat.shops import Shop, ShopExistsError, ShopRepository
from sim.sale.settings import SaleSettings
from sim.suppliers.settings import FleetSettings, SupplierConfig

TITLES = (
    "真丝枕套",
    "羊绒围巾",
    "保温杯",
    "蓝牙耳机",
    "面霜",
    "运动袜",
    "帆布包",
    "手机壳",
    "茶叶礼盒",
    "坚果大礼包",
    "卫衣",
    "牛仔裤",
    "四件套",
    "电动牙刷",
    "口红",
    "防晒霜",
)
COLOURS = ("黑色", "白色", "红色", "蓝色", "灰色", "粉色", "绿色", "米色")
SIZES = ("S", "M", "L", "XL", "XXL")
WAREHOUSES = (
    ("浙江省", "金华市", "义乌市", "福田街道 88 号"),
    ("广东省", "广州市", "白云区", "太和镇物流园 3 栋"),
    ("广东省", "深圳市", "龙华区", "民治街道仓储中心"),
    ("江苏省", "苏州市", "吴江区", "盛泽镇纺织城 12 号"),
    ("福建省", "泉州市", "晋江市", "陈埭镇鞋业园 5 号"),
    ("山东省", "临沂市", "兰山区", "商城物流园 A 区"),
)
BUYERS = (
    ("张伟", "广东省", "广州市", "海珠区", "新港中路 397 号"),
    ("王芳", "北京市", "北京市", "朝阳区", "建国路 88 号"),
    ("李娜", "上海市", "上海市", "浦东新区", "世纪大道 100 号"),
    ("刘洋", "四川省", "成都市", "武侯区", "科华北路 65 号"),
    ("陈静", "湖北省", "武汉市", "洪山区", "珞喻路 1037 号"),
    ("杨磊", "浙江省", "杭州市", "西湖区", "文三路 478 号"),
    ("赵敏", "江苏省", "南京市", "鼓楼区", "中山路 321 号"),
    ("黄丽", "陕西省", "西安市", "雁塔区", "小寨东路 126 号"),
)


@dataclass(frozen=True)
class Sku:
    product_id: str
    sku_id: str
    sku_code: str
    title: str
    attrs: tuple[tuple[str, str], ...]
    price_fen: int


@dataclass(frozen=True)
class SaleShop:
    shop_id: str
    appid: str
    secret: str
    token: str
    encoding_aes_key: str
    skus: tuple[Sku, ...]


@dataclass(frozen=True)
class RouteSpec:
    """A route as dispatch's catalogue takes it (services.dispatch.domain.routing.Route's fields)."""

    shop_id: str
    supplier_id: str
    priority: int = 100
    product_id: str = ""
    sku_id: str = ""
    sku_code: str = ""
    stock_cap: int | None = None


@dataclass(frozen=True)
class SaleSupplier:
    supplier_id: str
    name: str
    return_address: ShippingAddress
    behaviour: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class World:
    shops: tuple[SaleShop, ...]
    suppliers: tuple[SaleSupplier, ...]
    routes: tuple[RouteSpec, ...]

    def shop_of_appid(self, appid: str) -> SaleShop:
        return next(s for s in self.shops if s.appid == appid)


class Registrar(Protocol):
    """What setting up suppliers needs from dispatch's catalogue (implemented by the caller)."""

    async def add_supplier(self, supplier_id: str, name: str, return_address: ShippingAddress) -> None: ...

    async def create_key(self, supplier_id: str) -> str:
        """A new API key for the supplier: the bearer token its software sends."""
        ...

    async def set_route(self, route: RouteSpec) -> None: ...

    async def operator_token(self, name: str) -> str:
        """A token for the sale's after-sale desk (an admin: it sets the shops' policies, then
        decides the cases the policy leaves to a person)."""
        ...


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def _text(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(_ALPHABET) for _ in range(length))


def _digits(rng: random.Random, length: int) -> str:
    return str(rng.randrange(10 ** (length - 1), 10**length))


def build_world(settings: SaleSettings) -> World:
    """The same settings and seed give the same world (ids, prices, routes)."""
    rng = random.Random(f"world|{settings.seed}")
    tag = hashlib.sha1(str(settings.seed).encode()).hexdigest()[:6]
    shops: list[SaleShop] = []
    for s in range(settings.shops.count):
        skus: list[Sku] = []
        for p in range(settings.catalogue.products):
            product_id = _digits(rng, 14)
            title = TITLES[(s * 7 + p) % len(TITLES)]
            base = rng.randint(settings.catalogue.min_price_fen, settings.catalogue.max_price_fen)
            for k in range(settings.catalogue.skus_per_product):
                attrs = (
                    ("颜色", COLOURS[k % len(COLOURS)]),
                    ("尺码", SIZES[(k // len(COLOURS)) % len(SIZES)]),
                )
                price = min(settings.catalogue.max_price_fen, base + 100 * k)
                sku = Sku(product_id, _digits(rng, 14), f"{tag}-S{s}P{p}K{k}", title, attrs, price)
                skus.append(sku)
        shops.append(
            SaleShop(
                shop_id=f"{settings.shops.id_prefix}-{tag}-{s}",
                appid="wx" + hashlib.sha1(f"{tag}|{s}".encode()).hexdigest()[:16],
                secret=_text(rng, 32),
                token=_text(rng, 16),
                encoding_aes_key=_text(rng, 43),
                skus=tuple(skus),
            )
        )
    suppliers: list[SaleSupplier] = []
    for i in range(settings.suppliers.count):
        province, city, county, detail = WAREHOUSES[i % len(WAREHOUSES)]
        behaviour: dict[str, object] = dict(settings.suppliers.overrides.get(i, {}))
        if settings.suppliers.backstop and i == 0:
            behaviour["reject_share"] = 0.0
        suppliers.append(
            SaleSupplier(
                supplier_id=f"{settings.suppliers.id_prefix}-{tag}-{i}",
                name=f"{city}{'供应链'}{i}号仓",
                return_address=ShippingAddress(
                    name=f"{city}退货组",
                    phone=f"0{rng.randint(100, 999)}-{rng.randint(10_000_000, 99_999_999)}",
                    province=province,
                    city=city,
                    county=county,
                    detail=detail,
                ),
                behaviour=behaviour,
            )
        )
    routes: list[RouteSpec] = []
    n = len(suppliers)
    for shop in shops:
        if settings.suppliers.backstop:
            routes.append(RouteSpec(shop_id=shop.shop_id, supplier_id=suppliers[0].supplier_id, priority=100))
        for j, sku in enumerate(shop.skus):
            primary = suppliers[j % n].supplier_id
            secondary = suppliers[(j + 1) % n].supplier_id
            for priority, supplier_id in ((10, primary), (20, secondary)):
                if priority == 20 and secondary == primary:
                    continue
                routes.append(
                    RouteSpec(
                        shop_id=shop.shop_id,
                        supplier_id=supplier_id,
                        priority=priority,
                        product_id=sku.product_id,
                        sku_id=sku.sku_id,
                    )
                )
    return World(tuple(shops), tuple(suppliers), tuple(routes))


def wechat_shop(shop: SaleShop) -> Shop:
    return Shop(
        shop_id=shop.shop_id,
        appid=shop.appid,
        app_secret=SecretStr(shop.secret),
        token=SecretStr(shop.token),
        encoding_aes_key=SecretStr(shop.encoding_aes_key),
    )


async def setup_world(
    world: World,
    *,
    wechat: httpx.AsyncClient,
    shops: ShopRepository,
    ingest_url: str,
    registrar: Registrar,
    aftersale: httpx.AsyncClient | None = None,
    auto_approve_under_fen: int = 0,
) -> dict[str, str]:
    """Shops in the WeChat stand-in (pushing to order_ingest) and in our database, their after-sale
    policy (when the aftersale admin API is given), suppliers with keys and routes. Returns each
    supplier's API key. A shop already in our database is kept as it is."""
    for shop in world.shops:
        with contextlib.suppress(ShopExistsError):
            await shops.add(wechat_shop(shop))
        answer = await wechat.post(
            "/sim/shops",
            json={
                "appid": shop.appid,
                "secret": shop.secret,
                "token": shop.token,
                "encoding_aes_key": shop.encoding_aes_key,
                "callback_url": f"{ingest_url.rstrip('/')}/wechat/callback/{shop.shop_id}",
            },
        )
        answer.raise_for_status()
        if aftersale is not None:
            policy = {
                "shop_id": shop.shop_id,
                "auto_refund_before_shipment": True,
                "auto_approve_under_fen": auto_approve_under_fen,
            }
            (await aftersale.put(f"/admin/v1/policies/{shop.shop_id}", json=policy)).raise_for_status()
    keys: dict[str, str] = {}
    for supplier in world.suppliers:
        await registrar.add_supplier(supplier.supplier_id, supplier.name, supplier.return_address)
        keys[supplier.supplier_id] = await registrar.create_key(supplier.supplier_id)
    for route in world.routes:
        await registrar.set_route(route)
    return keys


def fleet_settings(
    world: World,
    settings: SaleSettings,
    keys: dict[str, str],
    *,
    dispatch_url: str,
    cursor_file: Path | None = None,
) -> FleetSettings:
    """The supplier bots of the world, on the sale's clock (their feed cursors kept in `cursor_file`)."""
    return FleetSettings(
        api_url=dispatch_url,
        suppliers=[
            SupplierConfig(
                supplier_id=s.supplier_id, api_key=keys[s.supplier_id], behaviour=dict(s.behaviour)
            )
            for s in world.suppliers
        ],
        behaviour=settings.suppliers.behaviour,
        time_scale=settings.time_scale,
        seed=settings.seed,
        feed_wait_s=5,
        cursor_file=cursor_file,
    )
