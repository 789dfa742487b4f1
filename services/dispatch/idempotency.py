"""The supplier API's Idempotency-Key answers (`docs/decisions/idempotency-on-version-documents.md`).

A POST that changes a dispatch order is answered with the order as that change committed it, and the
change's version document (store.py) carries the request's key and fingerprint: the version document
is the key's idempotency record, written by the change's own insert, and the answer is rebuilt from
it. Any other answer (a refusal, a command that changed nothing, a waybill request) is stored whole
in `supplier_idempotency`.

Answers are kept for `retention_s` (a day by default, as payment APIs keep theirs): a retry comes
within minutes; a key reused after that is a new request. Which keys are answered, when and where
is known here (dispatch is one process, their only writer; start-up reads them), so a new key costs
no read. `sweep` forgets what expired and deletes the stored answers among it; version documents
stay (they are the supplier feeds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from shared.db import Document, InsertBatcher
from shared.locks import KeyedLocks

IDEMPOTENCY = "supplier_idempotency"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredAnswer:
    fingerprint: str
    status: int
    body: bytes


class CommittedAnswers(Protocol):
    """Where the answers of committed changes are rebuilt from: their version documents."""

    async def committed_answer(self, version_id: str) -> StoredAnswer | None: ...


@dataclass(frozen=True, slots=True)
class Answered:
    """When a key was answered, and where its answer is: the version document its change wrote, or
    (None) a stored answer."""

    at: float  # epoch seconds
    version_id: str | None = None


class AnswerIndex:
    """Which keys are answered, when and where, oldest first (so expiry reads from the front)."""

    def __init__(self, retention_s: float) -> None:
        self._retention_s = retention_s
        self._answered: dict[str, Answered] = {}

    def __len__(self) -> int:
        return len(self._answered)

    def __contains__(self, key: str) -> bool:
        return key in self._answered

    def cutoff(self, now: float) -> float:
        """Answers given at or before this moment have expired."""
        return now - self._retention_s

    def live(self, key: str, now: float) -> Answered | None:
        """The key's answer, unless there is none or it expired."""
        answered = self._answered.get(key)
        if answered is None or answered.at <= self.cutoff(now):
            return None
        return answered

    def add(self, key: str, answered: Answered) -> None:
        """The key's newest answer (last: answers are added as they are given)."""
        self._answered.pop(key, None)
        self._answered[key] = answered

    def restore(self, answers: Iterable[tuple[str, Answered]]) -> None:
        """At start-up, in any order, beside what is known: each key's newest answer, oldest first."""
        merged = dict(self._answered)
        for key, answered in answers:
            known = merged.get(key)
            if known is None or answered.at > known.at:
                merged[key] = answered
        self._answered = dict(sorted(merged.items(), key=lambda item: item[1].at))

    def live_count(self, now: float) -> int:
        cutoff = self.cutoff(now)
        return sum(1 for answered in self._answered.values() if answered.at > cutoff)

    def expired(self, now: float) -> list[tuple[str, Answered]]:
        """The answers past retention, oldest first."""
        cutoff = self.cutoff(now)
        found: list[tuple[str, Answered]] = []
        for key, answered in self._answered.items():
            if answered.at > cutoff:
                break
            found.append((key, answered))
        return found

    def forget(self, keys: Iterable[str], cutoff: float) -> list[str]:
        """Forget these keys unless answered anew after `cutoff`; the keys forgotten."""
        forgotten = []
        for key in keys:
            answered = self._answered.get(key)
            if answered is not None and answered.at <= cutoff:
                del self._answered[key]
                forgotten.append(key)
        return forgotten


class IdempotencyStore:
    """First answers by (supplier, key): an index in memory, the answers rebuilt from version
    documents or read from `supplier_idempotency`, the newest `cache_size` of them cached."""

    def __init__(
        self,
        db: AsyncDatabase[Document],
        committed_answers: CommittedAnswers,
        *,
        cache_size: int,
        retention_s: float = 86_400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._collection = db[IDEMPOTENCY]
        self._committed_answers = committed_answers
        # Batched: answers stored whole come in bursts too (a bot's waybill requests), and FerretDB's
        # cost is per call.
        self._inserts = InsertBatcher(self._collection)
        self._cache: OrderedDict[str, StoredAnswer] = OrderedDict()
        self._cache_size = cache_size
        self._clock = clock
        self._index = AnswerIndex(retention_s)
        self._loading = True
        self._loaded: list[tuple[str, Answered]] = []  # version documents' requests, read at start-up
        self._locks = KeyedLocks()  # a key's request runs alone
        # FerretDB deletes what its scan matched by `_id`, so an answer replaced during a sweep's delete
        # was deleted with the old one (a flaky test caught it): the two take turns.
        self._deleting = asyncio.Lock()

    def lock(self, key: str) -> contextlib.AbstractAsyncContextManager[None]:
        return self._locks.hold(key)

    def committed(self, key: str, version_id: str, at: datetime) -> None:
        """A change committed under this key, its answer in that version document; at start-up, each
        version document's request, in any order (before `load`)."""
        stamp = at.timestamp()
        if stamp <= self._index.cutoff(self._clock()):
            return  # expired: nothing to answer, nothing stored to replace
        if self._loading:
            self._loaded.append((key, Answered(stamp, version_id)))
        else:
            self._index.add(key, Answered(stamp, version_id))
            self._cache.pop(key, None)  # an answer cached before the key expired is not this one

    async def load(self) -> int:
        """Read which answers are stored whole and when, beside the requests the version documents
        named; returns how many keys still answer."""
        documents = self._collection.find({}, {"_id": 1, "created_at": 1})
        stored = [(str(d["_id"]), Answered(d["created_at"].timestamp())) async for d in documents]
        self._index.restore([*stored, *self._loaded])
        self._loaded = []
        self._loading = False
        return self._index.live_count(self._clock())

    async def get(self, key: str) -> StoredAnswer | None:
        answered = self._index.live(key, self._clock())
        if answered is None:
            return None
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        answer: StoredAnswer | None
        if answered.version_id is not None:
            answer = await self._committed_answers.committed_answer(answered.version_id)
        else:
            document = await self._collection.find_one({"_id": key})
            answer = (
                None
                if document is None
                else StoredAnswer(document["fingerprint"], document["status"], document["body"])
            )
        if answer is not None:
            self._remember(key, answer)
        return answer

    def answered_by_change(self, key: str, answer: StoredAnswer) -> None:
        """The answer of a change just committed under this key (`committed` indexed it): cached."""
        if self._index.live(key, self._clock()) is not None:
            self._remember(key, answer)

    async def put(self, key: str, answer: StoredAnswer) -> None:
        """Store an answer whole (one that no version document holds)."""
        now = self._clock()
        document = {
            "_id": key,
            "fingerprint": answer.fingerprint,
            "status": answer.status,
            "body": answer.body,
            "created_at": datetime.fromtimestamp(now, UTC),
        }
        if key in self._index:  # expired, not yet swept: the new answer replaces any stored one
            async with self._deleting:
                await self._collection.replace_one({"_id": key}, document, upsert=True)
        else:
            # Another process may have answered the same key first: its answer stands in the database.
            with contextlib.suppress(DuplicateKeyError):
                await self._inserts.insert(document)
        self._index.add(key, Answered(now))
        self._remember(key, answer)

    async def sweep(self) -> int:
        """Forget the answers past retention, deleting those stored whole; returns how many."""
        now = self._clock()
        expired = self._index.expired(now)
        if not expired:
            return 0
        cutoff = self._index.cutoff(now)
        # One call (FerretDB scans for it), before forgetting, even when only version documents'
        # answers expired: a key answered by a change may hide an older answer stored under it, and a
        # key forgotten here while an old answer stayed stored would have a new answer refused by the
        # unique `_id`, and lost.
        async with self._deleting:
            await self._collection.delete_many({"created_at": {"$lte": datetime.fromtimestamp(cutoff, UTC)}})
        forgotten = self._index.forget([key for key, _ in expired], cutoff)  # not answered anew
        for key in forgotten:
            self._cache.pop(key, None)
        return len(forgotten)

    async def sweep_forever(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                swept = await self.sweep()
            except Exception:  # the next round retries; expired keys are already ignored
                log.exception("forgetting expired idempotency answers failed")
            else:
                if swept:
                    log.info("forgot %d idempotency answers past retention", swept)

    def _remember(self, key: str, answer: StoredAnswer) -> None:
        self._cache[key] = answer
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
