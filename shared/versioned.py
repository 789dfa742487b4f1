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

from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any, Generic, TypeVar

from bson import decode
from pydantic import BaseModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from shared.compact import ModelsAsJson, share_field_sets
from shared.db import Document, InsertBatcher, raw_bson
from shared.events.base import utc_now
from shared.locks import KeyedLocks

M = TypeVar("M", bound=BaseModel)


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

    async def load(self) -> None:
        """Build the projection from the newest revision of each key. Every document is read (the
        collection is insert-only), but each is decoded only at its top level, its value left as
        BSON: the newest value of each key is kept as BSON bytes and validated once at the end, where
        holding, decoding and validating every revision made start-up grow with the history."""
        newest: dict[str, tuple[int, bytes]] = {}
        async for document in raw_bson(self._collection).find({}):
            key, revision = document["key"], document["revision"]
            kept = newest.get(key)
            if kept is None or revision > kept[0]:
                newest[key] = (revision, bytes(document["value"].raw))  # not a view of the document
        codec_options = self._collection.codec_options
        for key, (revision, value) in newest.items():
            if revision > self._revisions.get(key, 0):
                self._revisions[key] = revision
                self._keep(key, self._model.model_validate(decode(value, codec_options)))

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
