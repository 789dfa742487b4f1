"""The supplier API's key cache: one read for a burst of calls, read again once expired, answering from
the expired entry (for a while) while that read runs."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from services.dispatch.catalog import Catalog
from services.dispatch.supplier_api import KeyCache


class Keys:
    """A catalog's key check, counting its reads; each read takes a moment, as a database's does."""

    def __init__(self) -> None:
        self.owner: dict[str, str] = {"key-a": "S1"}
        self.reads = 0
        self.down = False  # every read fails while set

    async def authenticate(self, token: str) -> str | None:
        self.reads += 1
        await asyncio.sleep(0.01)
        if self.down:
            raise ConnectionError("database unreachable")
        return self.owner.get(token)


def _cache(keys: Keys, ttl_s: float, stale_s: float = 0.0) -> KeyCache:
    return KeyCache(cast(Catalog, keys), ttl_s, stale_s)


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

    keys.down = True
    results = await asyncio.gather(*(cache.supplier_of("key-b") for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)


async def test_an_expired_entry_answers_while_one_read_refreshes_it() -> None:
    keys = Keys()
    cache = _cache(keys, ttl_s=0.05, stale_s=10)
    assert await cache.supplier_of("key-a") == "S1"
    del keys.owner["key-a"]  # revoked
    await asyncio.sleep(0.06)

    # Expired: answered at once from the entry, with one read started behind the calls.
    owners = await asyncio.gather(*(cache.supplier_of("key-a") for _ in range(20)))
    assert owners == ["S1"] * 20
    assert keys.reads == 2

    await asyncio.sleep(0.03)  # the read (10 ms) landed: the revocation holds
    assert await cache.supplier_of("key-a") is None
    assert keys.reads == 2


async def test_past_the_stale_window_a_call_waits_for_the_read() -> None:
    keys = Keys()
    cache = _cache(keys, ttl_s=0.02, stale_s=0.02)
    assert await cache.supplier_of("key-a") == "S1"
    del keys.owner["key-a"]
    await asyncio.sleep(0.05)

    assert await cache.supplier_of("key-a") is None
    assert keys.reads == 2


async def test_a_failed_background_read_keeps_the_entry_until_the_window_ends() -> None:
    keys = Keys()
    cache = _cache(keys, ttl_s=0.02, stale_s=0.1)
    assert await cache.supplier_of("key-a") == "S1"

    keys.down = True
    await asyncio.sleep(0.03)
    assert await cache.supplier_of("key-a") == "S1"  # the failing read runs behind it
    await asyncio.sleep(0.01)
    assert await cache.supplier_of("key-a") == "S1"  # and failed: still within the window
    await asyncio.sleep(0.1)
    with pytest.raises(ConnectionError):  # past the window the failed read reaches the caller
        await cache.supplier_of("key-a")
