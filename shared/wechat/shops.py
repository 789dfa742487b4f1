"""Shops (one per WeChat Shop account a service provider runs): credentials and push settings.

Secrets (app secret, token, EncodingAESKeys) are stored for the webhook and the API client but never
logged or listed: `PublicShop` is what leaves this module for display.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from shared.db import Document, IndexSpec
from shared.events.base import utc_now
from shared.wechat.crypto import WeChatCryptoError, aes_key_from_encoding_key

log = logging.getLogger(__name__)

SHOPS = "shops"
INDEXES = [IndexSpec(SHOPS, [("appid", 1)], unique=True)]


class Shop(BaseModel):
    model_config = ConfigDict(frozen=True)

    shop_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    appid: str = Field(min_length=1)
    app_secret: SecretStr
    token: SecretStr
    encoding_aes_key: SecretStr
    previous_encoding_aes_key: SecretStr | None = None
    api_base: str | None = None
    # Mirror dispatch orders into WeChat's drop-ship (代发) orders (`lvyue shop dropship`); off unless
    # turned on, and off for documents written before the switch existed.
    dropship_mirror: bool = False
    created_at: datetime = Field(default_factory=utc_now)
    updated_at: datetime = Field(default_factory=utc_now)

    @field_validator("encoding_aes_key", "previous_encoding_aes_key")
    @classmethod
    def _valid_aes_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                aes_key_from_encoding_key(value.get_secret_value())
            except WeChatCryptoError as exc:
                raise ValueError(exc.detail) from exc
        return value

    def aes_keys(self) -> list[str]:
        """Current key first, then the previous one while a rotation is under way."""
        keys = [self.encoding_aes_key.get_secret_value()]
        if self.previous_encoding_aes_key is not None:
            keys.append(self.previous_encoding_aes_key.get_secret_value())
        return keys

    def to_document(self) -> Document:
        document: dict[str, Any] = self.model_dump(exclude={"shop_id"})
        for name in ("app_secret", "token", "encoding_aes_key", "previous_encoding_aes_key"):
            secret = getattr(self, name)
            document[name] = None if secret is None else secret.get_secret_value()
        document["_id"] = self.shop_id
        return document

    @classmethod
    def from_document(cls, document: Document) -> Shop:
        return cls(shop_id=document["_id"], **{k: v for k, v in document.items() if k != "_id"})

    def public(self) -> PublicShop:
        return PublicShop(
            shop_id=self.shop_id,
            appid=self.appid,
            api_base=self.api_base,
            dropship_mirror=self.dropship_mirror,
            rotating_key=self.previous_encoding_aes_key is not None,
            app_secret=_mask(self.app_secret),
            token=_mask(self.token),
            encoding_aes_key=_mask(self.encoding_aes_key),
            updated_at=self.updated_at,
        )


class PublicShop(BaseModel):
    shop_id: str
    appid: str
    api_base: str | None
    dropship_mirror: bool
    rotating_key: bool
    app_secret: str
    token: str
    encoding_aes_key: str
    updated_at: datetime


def _mask(secret: SecretStr) -> str:
    value = secret.get_secret_value()
    return f"{value[:2]}…({len(value)} chars)" if len(value) > 6 else "…"


class ShopExistsError(Exception):
    pass


class ShopNotFoundError(Exception):
    pass


class ShopRepository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._shops = db[SHOPS]

    async def add(self, shop: Shop) -> None:
        try:
            await self._shops.insert_one(shop.to_document())
        except DuplicateKeyError as exc:
            raise ShopExistsError(f"shop {shop.shop_id} or appid {shop.appid} is already registered") from exc

    async def get(self, shop_id: str) -> Shop | None:
        document = await self._shops.find_one({"_id": shop_id})
        return None if document is None else Shop.from_document(document)

    async def list(self) -> list[Shop]:
        return [Shop.from_document(d) async for d in self._shops.find({}).sort("_id", 1)]

    async def rotate_key(self, shop_id: str, new_encoding_aes_key: str) -> Shop:
        """The new key becomes current; the old one is kept as previous so in-flight pushes still open."""
        shop = await self.get(shop_id)
        if shop is None:
            raise ShopNotFoundError(shop_id)
        rotated = Shop.model_validate(
            {
                **shop.model_dump(),
                "encoding_aes_key": new_encoding_aes_key,
                "previous_encoding_aes_key": shop.encoding_aes_key,
                "updated_at": utc_now(),
            }
        )
        await self._shops.replace_one({"_id": shop_id}, rotated.to_document())
        return rotated

    async def set_dropship_mirror(self, shop_id: str, *, on: bool) -> Shop:
        """Turn the WeChat drop-ship mirror of the shop's dispatch orders on or off (services read the
        shop through their caches: the change reaches them within the cache's TTL)."""
        shop = await self.get(shop_id)
        if shop is None:
            raise ShopNotFoundError(shop_id)
        changed = shop.model_copy(update={"dropship_mirror": on, "updated_at": utc_now()})
        await self._shops.replace_one({"_id": shop_id}, changed.to_document())
        return changed


class ShopCache:
    """Per-process cache in front of the repository: the webhook must not hit the database per push.

    A known shop older than the TTL (but not twice as old) is answered from the cache while one
    background read refreshes it, so no push waits on the database; concurrent misses share one read.
    """

    def __init__(self, repository: ShopRepository, ttl_s: float) -> None:
        self._repository = repository
        self._ttl_s = ttl_s
        self._entries: dict[str, tuple[float, Shop | None]] = {}
        self._loading: dict[str, asyncio.Future[Shop | None]] = {}

    async def get(self, shop_id: str) -> Shop | None:
        cached = self._entries.get(shop_id)
        if cached is not None:
            fetched_at, shop = cached
            age = time.monotonic() - fetched_at
            # An unknown shop is re-checked soon: it may just have been added.
            ttl = self._ttl_s if shop is not None else min(self._ttl_s, 2.0)
            if age < ttl:
                return shop
            if shop is not None and age < 2 * ttl:
                self._load(shop_id).add_done_callback(_log_refresh_failure)
                return shop
        return await asyncio.shield(self._load(shop_id))

    def _load(self, shop_id: str) -> asyncio.Future[Shop | None]:
        """The read of `shop_id` under way, or a new one."""
        loading = self._loading.get(shop_id)
        if loading is None:
            loading = asyncio.ensure_future(self._fetch(shop_id))
            self._loading[shop_id] = loading
            loading.add_done_callback(lambda _: self._loading.pop(shop_id, None))
        return loading

    async def _fetch(self, shop_id: str) -> Shop | None:
        shop = await self._repository.get(shop_id)
        self._entries[shop_id] = (time.monotonic(), shop)
        return shop


def _log_refresh_failure(refresh: asyncio.Future[Shop | None]) -> None:
    if not refresh.cancelled() and refresh.exception() is not None:
        log.warning("shop refresh failed; the cached shop is used meanwhile", exc_info=refresh.exception())
