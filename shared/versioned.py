"""Insert-only versioned documents with an in-memory projection of the newest version of each key.

FerretDB 1.24 over SQLite answers inserts and `_id` lookups in about a millisecond but scans the
whole collection for any other query (`$in`, secondary indexes: `make bench-store`). Updates by `_id`
also scanned when this was designed; that was FerretDB's `_id` index bug, fixed in our build
(`deploy/ferretdb/build.sh`; an update by `_id` is now 0.8 ms), so an update-in-place design would
now be affordable too. Each change of an aggregate is a new document `<key>#<revision>`: a second
writer of the same revision collides on the unique `_id` (a compare-and-set on MongoDB and FerretDB
alike), and reads come from memory, built once at start-up. A service using it runs as one process
per database.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any, Generic, TypeVar

from bson import decode
from pydantic import BaseModel
from pymongo import DeleteOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError

from shared.compact import ModelsAsJson, share_field_sets
from shared.db import Document, InsertBatcher, raw_bson
from shared.events.base import utc_now
from shared.locks import KeyedLocks

M = TypeVar("M", bound=BaseModel)
log = logging.getLogger(__name__)
# Superseded revisions deleted per command, and the pause between commands: about 0.45 ms of FerretDB
# CPU a deletion (batches of 500 by `_id`), so at these defaults a tenth of a core while it lasts.
PRUNE_BATCH = 200
PRUNE_PAUSE_S = 1.0


def revision_id(key: str, revision: int) -> str:
    """The `_id` of a key's document of this revision."""
    return f"{key}#{revision:06d}"


class VersionConflict(Exception):
    """Another writer saved this revision first; re-read and decide again."""


class VersionedProjection(Generic[M]):
    """`compact`: keep each newest value as its JSON and validate it on `get` (a WeChat order is ~1.2
    KB of JSON against ~10.6 KB as pydantic objects), for large projections read once or twice per
    message; otherwise the objects themselves, with their field sets shared."""

    def __init__(
        self, db: AsyncDatabase[Document], collection: str, model: type[M], *, compact: bool = False
    ) -> None:
        self._collection = db[collection]
        self._inserts = InsertBatcher(self._collection)
        self._model = model
        self._current: ModelsAsJson[M] | dict[str, M] = ModelsAsJson(model) if compact else {}
        self._revisions: dict[str, int] = {}
        self._locks = KeyedLocks()
        self._loaded = False
        self._superseded: list[str] = []  # found by the first load, for prune_superseded()

    async def load(self) -> None:
        """Build the projection from the newest revision of each key. Every document is read (the
        collection is insert-only), but each is decoded only at its top level, its value left as
        BSON: the newest value of each key is kept as BSON bytes and validated once at the end, where
        holding, decoding and validating every revision made start-up grow with the history."""
        started = time.monotonic()
        read = 0
        newest: dict[str, tuple[int, bytes]] = {}
        later_revisions: list[
            tuple[str, int, str]
        ] = []  # key, revision, _id of every revision past the first
        async for document in raw_bson(self._collection).find({}):
            read += 1
            key, revision = document["key"], document["revision"]
            if revision > 1 and not self._loaded:
                later_revisions.append((key, revision, document["_id"]))
            kept = newest.get(key)
            if kept is None or revision > kept[0]:
                newest[key] = (revision, bytes(document["value"].raw))  # not a view of the document
        codec_options = self._collection.codec_options
        for key, (revision, value) in newest.items():
            if revision > self._revisions.get(key, 0):
                self._revisions[key] = revision
                self._keep(key, self._model.model_validate(decode(value, codec_options)))
        # Start-up reads the whole history: the log says how long it takes as the history grows
        # (a projection read again to catch others' writes says it at debug level).
        log.log(
            logging.DEBUG if self._loaded else logging.INFO,
            "loaded %s: %d version documents, %d keys in %.1f s",
            self._collection.name,
            read,
            len(newest),
            time.monotonic() - started,
        )
        if not self._loaded:
            self._superseded = [i for key, revision, i in later_revisions if revision < newest[key][0]]
        self._loaded = True

    @property
    def superseded(self) -> int:
        """Revisions the first load found superseded and prune_superseded() has not deleted yet."""
        return len(self._superseded)

    async def prune_superseded(self, *, batch: int = PRUNE_BATCH, pause_s: float = PRUNE_PAUSE_S) -> int:
        """Delete the revisions the first load found superseded, `batch` at a time with a pause
        between, so the next start-up reads one or two documents per key instead of its whole history
        (a parcel's tracking, an order's fulfilment: 6 to 10 revisions each in a sale). A key's first
        revision stays (reconciliation asks for it by `_id`, and it says when the key began), and so
        does its newest, the only one load() and save() read. Deleting by `_id` only: FerretDB
        scans the collection for `$in`. Returns how many were deleted; a failure leaves the rest to
        the next start-up."""
        deleted = 0
        while self._superseded:
            ids, self._superseded = self._superseded[:batch], self._superseded[batch:]
            try:
                result = await self._collection.bulk_write(
                    [DeleteOne({"_id": i}) for i in ids], ordered=False
                )
            except PyMongoError as exc:
                log.warning("pruning %s stopped, the next start-up goes on: %s", self._collection.name, exc)
                self._superseded = []
                break
            deleted += result.deleted_count
            if self._superseded:
                await asyncio.sleep(pause_s)
        return deleted

    def _keep(self, key: str, value: M) -> None:
        if isinstance(self._current, dict):
            share_field_sets(value)
        self._current[key] = value

    def get(self, key: str) -> M | None:
        return self._current.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self._current

    def __iter__(self) -> Iterator[M]:
        return iter([self._current[key] for key in list(self._current)])

    def __len__(self) -> int:
        return len(self._current)

    def lock(self, key: str) -> AbstractAsyncContextManager[None]:
        """Serializes the changes of one key in this process."""
        return self._locks.hold(key)

    async def save(self, key: str, value: M, *, cause: str, extra: dict[str, Any] | None = None) -> M:
        """Write the next revision of `key`. The same cause written before (a redelivery after a
        crash) is taken as done and the stored value returned; anything else raises VersionConflict."""
        revision = self._revisions.get(key, 0) + 1
        document_id = revision_id(key, revision)
        try:
            await self._inserts.insert(
                {
                    "_id": document_id,
                    "key": key,
                    "revision": revision,
                    "cause": cause,
                    "value": value.model_dump(mode="json"),
                    "written_at": utc_now(),
                    **(extra or {}),
                }
            )
        except DuplicateKeyError as exc:
            stored = await self._collection.find_one({"_id": document_id})
            if stored is None or stored.get("cause") != cause:
                raise VersionConflict(f"{self._collection.name}/{key} changed meanwhile") from exc
            value = self._model.model_validate(stored["value"])
        self._revisions[key] = revision
        self._keep(key, value)
        return value


async def prune_history(projections: Iterable[VersionedProjection[Any]]) -> int:
    """Prune each projection's superseded revisions in turn (see prune_superseded); for a service's
    background task after start-up. Returns how many were deleted."""
    started = time.monotonic()
    deleted = 0
    for projection in projections:
        deleted += await projection.prune_superseded()
    if deleted:
        log.info("pruned %d superseded revisions in %.0f s", deleted, time.monotonic() - started)
    return deleted


def prune_history_in_background(
    stack: AsyncExitStack, projections: Iterable[VersionedProjection[Any]]
) -> None:
    """prune_history() as a task the service's exit stack cancels on shutdown."""
    task = asyncio.create_task(prune_history(list(projections)), name="prune-history")

    async def stop() -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    stack.push_async_callback(stop)
