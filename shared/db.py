"""MongoDB access that works on both MongoDB (production) and FerretDB (local, tests).

FerretDB has no transactions and no TTL indexes, so writes are made idempotent instead: a document
carries a version and an update applies only if it is newer (`versioned_upsert`), and a unique key
makes a second insert of the same thing a no-op (`insert_once`).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from bson.raw_bson import RawBSONDocument
from prometheus_client import Counter, Histogram
from pymongo import AsyncMongoClient, IndexModel, monitoring
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import AutoReconnect, BulkWriteError, DuplicateKeyError, OperationFailure
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random

from shared.settings import MongoSettings

Document = dict[str, Any]

INSERT_BATCH_DOCUMENTS = Histogram(
    "lvyue_db_insert_batch_documents",
    "Documents per insert_many of an InsertBatcher (FerretDB's cost is mostly per call).",
    ["collection"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)


DB_COMMAND_SECONDS = Histogram(
    "lvyue_db_command_seconds",
    "Database commands by name, collection and result (empty: a find that matched nothing, which "
    "FerretDB answers by scanning the collection).",
    ["command", "collection", "result"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)


DOCUMENTS_WRITTEN = Counter(
    "lvyue_db_documents_written",
    "Documents the database inserted, updated or deleted for this service (its reply's n), by command "
    "and collection.",
    ["command", "collection"],
)
WRITE_COMMANDS = frozenset({"insert", "update", "delete", "findAndModify"})


class CommandTimer(monitoring.CommandListener):
    """Times every command into DB_COMMAND_SECONDS: where the database's time goes, per collection."""

    def __init__(self) -> None:
        self._started: dict[tuple[Any, int], tuple[str, str]] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        # {"find": "orders", ...}; a getMore names its cursor there and its collection apart.
        collection = event.command.get(
            "collection" if event.command_name == "getMore" else event.command_name
        )
        name = collection if isinstance(collection, str) else ""
        self._started[(event.connection_id, event.request_id)] = (event.command_name, name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        cursor = event.reply.get("cursor")
        empty = isinstance(cursor, Mapping) and not cursor.get("firstBatch", True)
        started = self._observe(event, "empty" if empty else "ok")
        if started is not None and started[0] in WRITE_COMMANDS:
            written = _documents_written(started[0], event.reply)
            if written:
                DOCUMENTS_WRITTEN.labels(*started).inc(written)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._observe(event, "failed")

    def _observe(
        self, event: monitoring.CommandSucceededEvent | monitoring.CommandFailedEvent, result: str
    ) -> tuple[str, str] | None:
        started = self._started.pop((event.connection_id, event.request_id), None)
        if started is not None:
            DB_COMMAND_SECONDS.labels(*started, result).observe(event.duration_micros / 1e6)
        return started


def _documents_written(command: str, reply: Mapping[str, Any]) -> int:
    """How many documents a write command's reply says it wrote (an update's upserts included)."""
    if command == "findAndModify":
        last = reply.get("lastErrorObject")
        return int(last.get("n", 0)) if isinstance(last, Mapping) else 0
    written = reply.get("n", 0)
    return int(written) if isinstance(written, int) else 0


def raw_bson(collection: AsyncCollection[Document]) -> AsyncCollection[RawBSONDocument]:
    """The collection read as undecoded BSON: a document is decoded on first access, its top level
    only (sub-documents stay raw until read), for scans that keep little of what they read."""
    return collection.with_options(
        codec_options=collection.codec_options.with_options(document_class=RawBSONDocument)
    )


def create_mongo_client(settings: MongoSettings, *, app_name: str) -> AsyncMongoClient[Document]:
    return AsyncMongoClient(
        settings.uri,
        appname=app_name,
        tz_aware=True,
        uuidRepresentation="standard",
        serverSelectionTimeoutMS=settings.server_selection_timeout_ms,
        event_listeners=[CommandTimer()],
    )


def database(client: AsyncMongoClient[Document], settings: MongoSettings) -> AsyncDatabase[Document]:
    return client[settings.database]


@dataclass(frozen=True)
class IndexSpec:
    collection: str
    keys: Sequence[tuple[str, int]]
    unique: bool = False
    name: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def model(self) -> IndexModel:
        name = self.name or "_".join(f"{k}_{d}" for k, d in self.keys)
        return IndexModel(list(self.keys), unique=self.unique, name=name, **self.options)


async def ensure_indexes(db: AsyncDatabase[Document], specs: Sequence[IndexSpec]) -> None:
    """Create the indexes a service needs at start-up; existing identical indexes are left alone.

    Retried: FerretDB 1.24 drops the connection when two processes create one collection's indexes
    at the same moment (both processes of a service start together); the second try finds them.
    """
    by_collection: dict[str, list[IndexModel]] = {}
    for spec in specs:
        by_collection.setdefault(spec.collection, []).append(spec.model())
    async for attempt in AsyncRetrying(
        stop=stop_after_attempt(5),
        wait=wait_random(0.05, 0.5),
        retry=retry_if_exception_type(AutoReconnect),
        reraise=True,
    ):
        with attempt:
            for name, models in by_collection.items():
                await db[name].create_indexes(models)


async def ping(client: AsyncMongoClient[Document]) -> None:
    await client.admin.command("ping")


class UpsertOutcome(StrEnum):
    INSERTED = "inserted"
    UPDATED = "updated"
    # The stored document already has this version or a newer one: a duplicate or an older event.
    NOT_NEWER = "not_newer"


_UPSERT_RACE_ATTEMPTS = 10


class NotRead:
    """Marks "the caller has not read the stored document"."""


NOT_READ = NotRead()

# FerretDB v1 runs findAndModify as a query followed by an update by `_id`, so two concurrent
# compare-and-set writes to one document can both pass the version check (MongoDB applies them
# atomically). Writers of one order are serialized instead: across processes by Kafka (one
# partition per order id, one consumer per partition), within a process by this lock per key.
_key_locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = weakref.WeakValueDictionary()


@asynccontextmanager
async def _key_lock(namespace: str, key: Any) -> AsyncIterator[None]:
    lock_key = (namespace, repr(key))
    lock = _key_locks.get(lock_key)
    if lock is None:
        lock = asyncio.Lock()
        _key_locks[lock_key] = lock
    async with lock:
        yield


class VersionedUpsertRaceError(RuntimeError):
    """Transient: the document kept changing under us; the caller's retry policy applies."""


async def versioned_upsert(
    collection: AsyncCollection[Document],
    key: Any,
    *,
    version: int,
    fields: Mapping[str, Any],
    on_insert: Mapping[str, Any] | None = None,
    version_field: str = "version",
    current: Mapping[str, Any] | NotRead | None = NOT_READ,
) -> UpsertOutcome:
    """Write `fields` to the document `_id == key` only if `version` is newer than the stored one.

    `current`: the stored document (or None: absent) if the caller has just read it, to save the
    first read; a stale one only costs a retry.

    Read the stored version by `_id`, then insert (the unique `_id` refuses a concurrent twin) or
    update on the condition that the version is still the one read (compare-and-set: atomic on
    MongoDB). Every query leads with `_id` alone or `_id` plus the exact version, the shapes FerretDB
    can answer without scanning the collection (see `make bench-store`).
    """
    async with _key_lock(collection.full_name, key):
        for _ in range(_UPSERT_RACE_ATTEMPTS):
            if isinstance(current, NotRead):
                current = await collection.find_one({"_id": key}, {version_field: 1})
            if current is None:
                try:
                    await collection.insert_one(
                        {**(on_insert or {}), **fields, "_id": key, version_field: version}
                    )
                except DuplicateKeyError:
                    current = NOT_READ  # inserted meanwhile: read it and compare
                    continue
                return UpsertOutcome.INSERTED
            stored_version = current.get(version_field)
            if stored_version is not None and stored_version >= version:
                return UpsertOutcome.NOT_NEWER
            result = await collection.update_one(
                {"_id": key, version_field: stored_version}, {"$set": {**fields, version_field: version}}
            )
            if result.matched_count == 1:
                return UpsertOutcome.UPDATED
            current = NOT_READ  # changed since it was read
        raise VersionedUpsertRaceError(
            f"{collection.name}/{key}: lost {_UPSERT_RACE_ATTEMPTS} races in a row"
        )


async def insert_once(collection: AsyncCollection[Document], document: Mapping[str, Any]) -> bool:
    """Insert unless a document with the same unique key exists; True if this call inserted it."""
    try:
        await collection.insert_one(dict(document))
    except DuplicateKeyError:
        return False
    return True


class InsertBatcher:
    """Coalesces the concurrent single inserts into one collection into `insert_many` calls.

    FerretDB over SQLite spends ~0.7 ms of CPU on a lone insert and ~0.12 ms per document in a batch
    of ten or more (one SQLite transaction). No delay is added: documents that arrive while a batch
    is being written form the next one. `insert` behaves like `insert_one` (DuplicateKeyError for a
    taken `_id`), so callers keep their compare-and-set logic.
    """

    def __init__(self, collection: AsyncCollection[Document], *, max_batch: int = 500) -> None:
        self._collection = collection
        self._max_batch = max_batch
        self._pending: list[tuple[Document, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._batch_sizes = INSERT_BATCH_DOCUMENTS.labels(collection.name)

    async def insert(self, document: Document) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((document, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all())
        await done

    async def _write_all(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            self._batch_sizes.observe(len(batch))
            try:
                await self._collection.insert_many([document for document, _ in batch], ordered=False)
            except BulkWriteError as exc:
                errors = {error["index"]: error for error in exc.details.get("writeErrors", [])}
                for index, (_, done) in enumerate(batch):
                    error = errors.get(index)
                    if error is None:
                        done.set_result(None)
                    elif error.get("code") == 11000:
                        done.set_exception(
                            DuplicateKeyError(error.get("errmsg", "duplicate key"), 11000, error)
                        )
                    else:
                        done.set_exception(
                            OperationFailure(error.get("errmsg", "insert failed"), error.get("code"))
                        )
                continue
            except Exception as exc:  # the whole batch failed (connection lost): each caller decides
                for _, done in batch:
                    done.set_exception(exc)
                continue
            for _, done in batch:
                done.set_result(None)
