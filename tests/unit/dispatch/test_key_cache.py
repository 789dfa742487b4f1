"""The supplier API's key cache: one read for a burst of calls, read again once expired."""

from __future__ import annotations

import asyncio
from typing import cast

from services.dispatch.catalog import Catalog
from services.dispatch.supplier_api import KeyCache


class Keys:
    """A catalog's key check, counting its reads; each read takes a moment, as a database's does."""

    def __init__(self) -> None:
        self.owner: dict[str, str] = {"key-a": "S1"}
        self.reads = 0

    async def authenticate(self, token: str) -> str | None:
        self.reads += 1
        await asyncio.sleep(0.01)
        return self.owner.get(token)


def _cache(keys: Keys, ttl_s: float) -> KeyCache:
    return KeyCache(cast(Catalog, keys), ttl_s)


async def test_calls_arriving_together_share_one_read() -> None:
    keys = Keys()
    cache = _cache(keys, ttl_s=60)

    owners = await asyncio.gather(*(cache.supplier_of("key-a") for _ in range(50)))

    assert owners == ["S1"] * 50
    assert keys.reads == 1
    assert await cache.supplier_of("key-a") == "S1"
    assert keys.reads == 1


async def test_a_revoked_key_is_refused_once_its_entry_expired() -> None:
    keys = Keys()
    cache = _cache(keys, ttl_s=0.05)
    assert await cache.supplier_of("key-a") == "S1"

    del keys.owner["key-a"]
    await asyncio.sleep(0.06)

    assert await cache.supplier_of("key-a") is None
    assert keys.reads == 2


async def test_an_unknown_key_is_refused_and_a_failed_read_reaches_every_caller() -> None:
    keys = Keys()
    cache = _cache(keys, ttl_s=60)
    assert await cache.supplier_of("key-x") is None

    async def unreachable(token: str) -> str | None:
        await asyncio.sleep(0.01)
        raise ConnectionError("database unreachable")

    keys.authenticate = unreachable  # type: ignore[method-assign]
    results = await asyncio.gather(*(cache.supplier_of("key-b") for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
