"""Suppliers, their API keys and their routes, stored in the database and managed with the CLI.

API keys look like `lvk_<key id>_<secret>`; only a SHA-256 of the secret is stored (the secret is
32 random bytes, so a fast hash is enough: there is nothing to brute-force), several per supplier,
each revocable.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pymongo.asynchronous.database import AsyncDatabase

from services.dispatch.domain.routing import Route
from shared import suppliers as shared_suppliers
from shared.db import Document, IndexSpec, insert_once
from shared.events.base import utc_now
from shared.events.dispatch import ShippingAddress

SUPPLIERS = shared_suppliers.SUPPLIERS
SUPPLIER_KEYS = "supplier_keys"
ROUTES = "supplier_routes"
# One document counting the writes of routes and suppliers: a reader polls it instead of the catalog.
CATALOG_REVISION = "catalog_revision"
_REVISION_ID = "catalog"
INDEXES = [IndexSpec(SUPPLIER_KEYS, [("supplier_id", 1)]), IndexSpec(ROUTES, [("shop_id", 1)])]
KEY_PREFIX = "lvk"
WECHAT_APPID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


class CatalogError(Exception):
    pass


class Supplier(BaseModel):
    model_config = ConfigDict(extra="forbid")

    supplier_id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    name: str = Field(min_length=1, max_length=200)
    active: bool = True
    return_address: ShippingAddress | None = None
    # The supplier's own WeChat appid (供货商 appid), for shops that mirror dispatch orders into WeChat's
    # drop-ship orders; None: not mirrored.
    wechat_supplier_appid: str | None = Field(default=None, pattern=WECHAT_APPID_PATTERN)
    created_at: datetime = Field(default_factory=utc_now)


class ApiKeyRecord(BaseModel):
    key_id: str
    supplier_id: str
    secret_sha256: str
    label: str = ""
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class IssuedKey:
    key_id: str
    supplier_id: str
    token: str  # shown once


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_token(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    parts = token.split("_")
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


class Catalog:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._suppliers = db[SUPPLIERS]
        self._keys = db[SUPPLIER_KEYS]
        self._routes = db[ROUTES]
        self._revision = db[CATALOG_REVISION]

    async def revision(self) -> int:
        """How many times routes or suppliers were written through a catalog (0: never)."""
        document = await self._revision.find_one({"_id": _REVISION_ID})
        return int(document["revision"]) if document else 0

    async def _changed(self) -> None:
        await self._revision.update_one({"_id": _REVISION_ID}, {"$inc": {"revision": 1}}, upsert=True)

    # --- suppliers ---
    async def add_supplier(self, supplier: Supplier) -> None:
        document = {"_id": supplier.supplier_id, **supplier.model_dump(mode="json", exclude={"supplier_id"})}
        if not await insert_once(self._suppliers, document):
            raise CatalogError(f"supplier {supplier.supplier_id} already exists")
        await self._changed()

    async def set_wechat_supplier_appid(self, supplier_id: str, appid: str | None) -> None:
        """Set (or with None clear) the supplier's WeChat supplier appid, checked like a new supplier's."""
        current = await self.get_supplier(supplier_id)
        if current is None:
            raise CatalogError(f"no supplier {supplier_id}")
        try:
            Supplier.model_validate({**current.model_dump(), "wechat_supplier_appid": appid})
        except ValidationError as exc:
            raise CatalogError(f"invalid WeChat supplier appid {appid!r}") from exc
        await self.set_supplier(supplier_id, wechat_supplier_appid=appid)

    async def set_supplier(self, supplier_id: str, **fields: Any) -> None:
        result = await self._suppliers.update_one({"_id": supplier_id}, {"$set": fields})
        if result.matched_count == 0:
            raise CatalogError(f"no supplier {supplier_id}")
        await self._changed()

    async def get_supplier(self, supplier_id: str) -> Supplier | None:
        document = await self._suppliers.find_one({"_id": supplier_id})
        return None if document is None else _supplier(document)

    async def suppliers(self) -> list[Supplier]:
        return sorted([_supplier(d) async for d in self._suppliers.find({})], key=lambda s: s.supplier_id)

    # --- keys ---
    async def create_key(self, supplier_id: str, *, label: str = "") -> IssuedKey:
        if await self.get_supplier(supplier_id) is None:
            raise CatalogError(f"no supplier {supplier_id}")
        key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32).replace("_", "-")
        record = ApiKeyRecord(
            key_id=key_id,
            supplier_id=supplier_id,
            secret_sha256=_hash(secret),
            label=label,
            created_at=utc_now(),
        )
        await self._keys.insert_one({"_id": key_id, **record.model_dump(mode="json")})
        return IssuedKey(key_id, supplier_id, f"{KEY_PREFIX}_{key_id}_{secret}")

    async def revoke_key(self, key_id: str) -> None:
        result = await self._keys.update_one({"_id": key_id}, {"$set": {"revoked_at": utc_now().isoformat()}})
        if result.matched_count == 0:
            raise CatalogError(f"no API key {key_id}")

    async def keys(self, supplier_id: str | None = None) -> list[ApiKeyRecord]:
        query = {} if supplier_id is None else {"supplier_id": supplier_id}
        return [ApiKeyRecord.model_validate(d) async for d in self._keys.find(query)]

    async def authenticate(self, token: str) -> str | None:
        """The supplier id a valid, unrevoked key belongs to, else None."""
        parsed = parse_token(token)
        if parsed is None:
            return None
        key_id, secret = parsed
        document = await self._keys.find_one({"_id": key_id})
        if document is None:
            return None
        record = ApiKeyRecord.model_validate(document)
        if record.revoked_at is not None or not hmac.compare_digest(record.secret_sha256, _hash(secret)):
            return None
        return record.supplier_id

    # --- routes ---
    async def set_route(self, route: Route) -> None:
        await self._put_route(route)
        await self._changed()

    async def _put_route(self, route: Route) -> None:
        document = _route_document(route)
        await self._routes.replace_one({"_id": document["_id"]}, document, upsert=True)

    async def remove_route(self, route_id: str) -> None:
        result = await self._routes.delete_one({"_id": route_id})
        if result.deleted_count == 0:
            raise CatalogError(f"no route {route_id}")
        await self._changed()

    async def routes(self, shop_id: str | None = None) -> list[Route]:
        query = {} if shop_id is None else {"shop_id": shop_id}
        routes = [_route(d) async for d in self._routes.find(query)]
        return sorted(routes, key=lambda r: (r.shop_id, r.specificity, r.priority, r.route_id))

    async def import_routes(self, text: str) -> int:
        """CSV with a header: shop_id,supplier_id,priority,product_id,sku_id,sku_code,stock_cap.
        Every row is checked before any is written; errors name the line."""
        routes = parse_routes_csv(text)
        for route in routes:
            await self._put_route(route)
        await self._changed()  # once for the file: readers reload once
        return len(routes)


ROUTE_CSV_COLUMNS = ("shop_id", "supplier_id", "priority", "product_id", "sku_id", "sku_code", "stock_cap")


def parse_routes_csv(text: str) -> list[Route]:
    reader = csv.DictReader(io.StringIO(text))
    missing = {"shop_id", "supplier_id"} - set(reader.fieldnames or [])
    if missing:
        raise CatalogError(f"the CSV header lacks {sorted(missing)}; columns: {','.join(ROUTE_CSV_COLUMNS)}")
    unknown = set(reader.fieldnames or []) - set(ROUTE_CSV_COLUMNS)
    if unknown:
        raise CatalogError(f"unknown CSV columns {sorted(unknown)}; columns: {','.join(ROUTE_CSV_COLUMNS)}")
    routes, errors = [], []
    for row in reader:
        try:
            routes.append(
                Route(
                    shop_id=_required(row, "shop_id"),
                    supplier_id=_required(row, "supplier_id"),
                    priority=int(row.get("priority") or 100),
                    product_id=(row.get("product_id") or "").strip(),
                    sku_id=(row.get("sku_id") or "").strip(),
                    sku_code=(row.get("sku_code") or "").strip(),
                    stock_cap=int(row["stock_cap"]) if (row.get("stock_cap") or "").strip() else None,
                )
            )
        except (ValueError, ValidationError) as exc:
            errors.append(f"line {reader.line_num}: {exc}")
    if errors:
        raise CatalogError("; ".join(errors[:20]))
    return routes


def _required(row: dict[str, str | None], column: str) -> str:
    value = (row.get(column) or "").strip()
    if not value:
        raise ValueError(f"{column} is empty")
    return value


def _supplier(document: Document) -> Supplier:
    return Supplier.model_validate(
        {**{k: v for k, v in document.items() if k != "_id"}, "supplier_id": document["_id"]}
    )


def _route_document(route: Route) -> Document:
    return {
        "_id": route.route_id,
        "shop_id": route.shop_id,
        "supplier_id": route.supplier_id,
        "priority": route.priority,
        "product_id": route.product_id,
        "sku_id": route.sku_id,
        "sku_code": route.sku_code,
        "stock_cap": route.stock_cap,
        "updated_at": utc_now(),
    }


def _route(document: Document) -> Route:
    return Route(
        shop_id=document["shop_id"],
        supplier_id=document["supplier_id"],
        priority=int(document.get("priority", 100)),
        product_id=document.get("product_id", ""),
        sku_id=document.get("sku_id", ""),
        sku_code=document.get("sku_code", ""),
        stock_cap=document.get("stock_cap"),
    )
