"""The supplier API's Idempotency-Key answers on the real FerretDB: kept for the retention, then
forgotten and deleted; a restart knows which keys are stored and when, and which are answered by a
change's version document."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from services.dispatch.idempotency import IDEMPOTENCY, IdempotencyStore, StoredAnswer
from shared.db import Document

pytestmark = pytest.mark.integration

DAY = 86_400.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Versions:
    """The version documents' answers (the dispatch store's part), counting reads."""

    def __init__(self) -> None:
        self.answers: dict[str, StoredAnswer] = {}
        self.reads = 0

    async def committed_answer(self, version_id: str) -> StoredAnswer | None:
        self.reads += 1
        return self.answers.get(version_id)


def _open(
    db: AsyncDatabase[Document], clock: Clock, versions: Versions | None = None, cache_size: int = 10
) -> IdempotencyStore:
    return IdempotencyStore(db, versions or Versions(), cache_size=cache_size, retention_s=DAY, clock=clock)


async def _store(db: AsyncDatabase[Document], clock: Clock, cache_size: int = 10) -> IdempotencyStore:
    store = _open(db, clock, cache_size=cache_size)
    await store.load()
    return store


def _at(clock: Clock) -> datetime:
    return datetime.fromtimestamp(clock.now, UTC)


def _answer(body: str) -> StoredAnswer:
    return StoredAnswer(fingerprint=f"fp-{body}", status=200, body=body.encode())


async def _stored_ids(db: AsyncDatabase[Document]) -> set[str]:
    return {str(d["_id"]) async for d in db[IDEMPOTENCY].find({}, {"_id": 1})}


async def test_an_answer_is_replayed_within_retention_and_forgotten_after(
    mongo_db: AsyncDatabase[Document],
) -> None:
    clock = Clock()
    store = await _store(mongo_db, clock, cache_size=1)
    await store.put("alpha:old", _answer("old"))
    clock.now += DAY / 2
    await store.put("alpha:new", _answer("new"))  # pushes "old" out of the one-entry cache

    assert await store.get("alpha:old") == _answer("old")  # read back from the database
    assert await store.get("alpha:new") == _answer("new")

    clock.now += DAY / 2 + 1
    assert await store.get("alpha:old") is None  # expired, even before a sweep
    assert await store.get("alpha:new") == _answer("new")
    assert await store.sweep() == 1
    assert await _stored_ids(mongo_db) == {"alpha:new"}
    assert await store.sweep() == 0


async def test_a_key_reused_after_retention_is_a_new_request_whose_answer_is_kept(
    mongo_db: AsyncDatabase[Document],
) -> None:
    clock = Clock()
    store = await _store(mongo_db, clock)
    await store.put("alpha:k", _answer("first"))
    clock.now += DAY + 1
    assert await store.get("alpha:k") is None
    await store.put("alpha:k", _answer("second"))  # not yet swept: replaces the stored answer
    assert await store.get("alpha:k") == _answer("second")
    assert await store.sweep() == 0

    restarted = _open(mongo_db, clock)
    assert await restarted.load() == 1
    assert await restarted.get("alpha:k") == _answer("second")


async def test_a_restart_ignores_and_sweeps_what_expired_while_it_was_down(
    mongo_db: AsyncDatabase[Document],
) -> None:
    clock = Clock()
    store = await _store(mongo_db, clock)
    for n in range(3):
        await store.put(f"alpha:{n}", _answer(str(n)))
        clock.now += DAY / 2

    restarted = _open(mongo_db, clock)
    assert await restarted.load() == 1  # stored at 0, ½ and 1 day; now is 1½ days
    assert [await restarted.get(f"alpha:{n}") for n in range(3)] == [None, None, _answer("2")]
    assert await restarted.sweep() == 2
    assert await _stored_ids(mongo_db) == {"alpha:2"}


async def test_a_key_answered_anew_while_the_sweep_deletes_is_kept(mongo_db: AsyncDatabase[Document]) -> None:
    clock = Clock()
    store = await _store(mongo_db, clock)
    await store.put("alpha:k", _answer("first"))
    clock.now += DAY + 1
    sweeping = asyncio.create_task(store.sweep())
    await asyncio.sleep(0)  # the sweep waits for its delete
    assert not sweeping.done()
    await store.put("alpha:k", _answer("second"))
    await sweeping  # it forgot the old answer, or found the key answered anew: either way the new one stays
    assert await store.get("alpha:k") == _answer("second")
    assert await _stored_ids(mongo_db) == {"alpha:k"}
    assert await store.sweep() == 0
    restarted = await _store(mongo_db, clock)
    assert await restarted.get("alpha:k") == _answer("second")


async def test_a_change_s_answer_is_its_version_document_s_and_nothing_is_stored_for_it(
    mongo_db: AsyncDatabase[Document],
) -> None:
    clock = Clock()
    versions = Versions()
    versions.answers["123-1#000002"] = _answer("accepted")
    store = _open(mongo_db, clock, versions, cache_size=1)
    await store.load()
    store.committed("alpha:accept", "123-1#000002", _at(clock))  # as the version document commits
    store.answered_by_change("alpha:accept", _answer("accepted"))
    assert await store.get("alpha:accept") == _answer("accepted")
    assert versions.reads == 0  # cached
    await store.put("alpha:refused", _answer("refused"))  # pushes the change's answer out of the cache
    assert await store.get("alpha:accept") == _answer("accepted")
    assert versions.reads == 1  # rebuilt from its version document
    assert await _stored_ids(mongo_db) == {"alpha:refused"}

    clock.now += DAY / 2
    restarted = _open(mongo_db, clock, versions)
    restarted.committed("alpha:accept", "123-1#000002", datetime.fromtimestamp(clock.now - DAY / 2, UTC))
    restarted.committed(
        "alpha:old", "99-1#000002", datetime.fromtimestamp(clock.now - DAY - 1, UTC)
    )  # expired
    assert await restarted.load() == 2
    assert await restarted.get("alpha:accept") == _answer("accepted")
    assert await restarted.get("alpha:old") is None

    clock.now += DAY / 2 + 1
    assert await restarted.sweep() == 2
    assert await restarted.get("alpha:accept") is None
    assert await _stored_ids(mongo_db) == set()


async def test_a_key_first_refused_then_answered_by_a_change_after_its_retention_answers_the_change(
    mongo_db: AsyncDatabase[Document],
) -> None:
    clock = Clock()
    versions = Versions()
    versions.answers["123-1#000002"] = _answer("accepted")
    store = _open(mongo_db, clock, versions)
    await store.load()
    await store.put("alpha:k", _answer("refused"))
    clock.now += DAY + 1
    assert await store.get("alpha:k") is None
    store.committed("alpha:k", "123-1#000002", _at(clock))
    assert await store.get("alpha:k") == _answer("accepted")

    restarted = _open(mongo_db, clock, versions)  # reads the expired refusal and the change
    restarted.committed("alpha:k", "123-1#000002", _at(clock))
    assert await restarted.load() == 1
    assert await restarted.get("alpha:k") == _answer("accepted")
    assert await restarted.sweep() == 0  # nothing it knows of expired...
    clock.now += DAY + 1
    assert await restarted.sweep() == 1  # ...until the change's answer did: the refusal goes with it
    assert await _stored_ids(mongo_db) == set()
    await restarted.put("alpha:k", _answer("refused again"))
    assert await restarted.get("alpha:k") == _answer("refused again")
