"""The async driver against FerretDB over the wire: round trip, unique index, versioned upserts."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime

import pytest
from pydantic import BaseModel, ConfigDict
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from ops.stack import LocalStack
from shared.db import (
    Document,
    IndexSpec,
    UpsertOutcome,
    create_mongo_client,
    ensure_indexes,
    insert_once,
    versioned_upsert,
)
from shared.settings import MongoSettings
from shared.versioned import VersionConflict, VersionedProjection

pytestmark = pytest.mark.integration

BIG_ORDER_ID = "3705115058471208928"


async def test_document_round_trip_keeps_types_exactly(mongo_db: AsyncDatabase[Document]) -> None:
    paid_at = datetime(2026, 11, 11, 12, 0, 1, 123000, tzinfo=UTC)
    document = {
        "_id": BIG_ORDER_ID,
        "order_id_number": int(BIG_ORDER_ID),
        "paid_at": paid_at,
        "lines": [{"sku_id": "1001", "quantity": 2, "price_fen": 1990}],
        "receiver": {"name": "张三", "province": "广东省"},
    }
    await mongo_db.orders.insert_one(document)
    stored = await mongo_db.orders.find_one({"_id": BIG_ORDER_ID})
    assert stored == document
    assert stored is not None and stored["order_id_number"] == 3705115058471208928
    assert stored["paid_at"].tzinfo is not None


async def test_unique_index_rejects_a_duplicate(mongo_db: AsyncDatabase[Document]) -> None:
    await ensure_indexes(mongo_db, [IndexSpec("shops", [("appid", 1)], unique=True)])
    await ensure_indexes(mongo_db, [IndexSpec("shops", [("appid", 1)], unique=True)])  # idempotent
    assert await insert_once(mongo_db.shops, {"_id": "s1", "appid": "wx0001"})
    assert not await insert_once(mongo_db.shops, {"_id": "s2", "appid": "wx0001"})
    with pytest.raises(DuplicateKeyError):
        await mongo_db.shops.insert_one({"_id": "s3", "appid": "wx0001"})
    assert await mongo_db.shops.count_documents({}) == 1


async def test_versioned_upsert_never_lets_an_older_version_win(mongo_db: AsyncDatabase[Document]) -> None:
    orders = mongo_db.orders
    first = await versioned_upsert(
        orders, BIG_ORDER_ID, version=100, fields={"status": 20}, on_insert={"first_seen": 100}
    )
    assert first is UpsertOutcome.INSERTED
    assert (
        await versioned_upsert(orders, BIG_ORDER_ID, version=300, fields={"status": 30})
        is UpsertOutcome.UPDATED
    )
    assert (
        await versioned_upsert(orders, BIG_ORDER_ID, version=200, fields={"status": 10})
        is UpsertOutcome.NOT_NEWER
    )
    assert (
        await versioned_upsert(orders, BIG_ORDER_ID, version=300, fields={"status": 99})
        is UpsertOutcome.NOT_NEWER
    )
    stored = await orders.find_one({"_id": BIG_ORDER_ID})
    assert stored == {"_id": BIG_ORDER_ID, "status": 30, "version": 300, "first_seen": 100}


async def test_concurrent_versioned_upserts_leave_the_newest(mongo_db: AsyncDatabase[Document]) -> None:
    versions = list(range(1, 41))
    random.Random(7).shuffle(versions)
    outcomes = await asyncio.gather(
        *(versioned_upsert(mongo_db.orders, "42", version=v, fields={"seen": v}) for v in versions)
    )
    stored = await mongo_db.orders.find_one({"_id": "42"})
    assert stored is not None and stored["version"] == 40 and stored["seen"] == 40
    assert outcomes.count(UpsertOutcome.INSERTED) == 1
    assert await mongo_db.orders.count_documents({}) == 1


async def test_client_factory_talks_to_the_stack(stack: LocalStack) -> None:
    client = create_mongo_client(MongoSettings(uri=stack.mongo_uri), app_name="test")
    try:
        assert (await client.admin.command("ping"))["ok"] == 1.0
    finally:
        await client.close()


async def test_a_stale_document_from_the_caller_costs_a_retry_never_a_lost_update(
    mongo_db: AsyncDatabase[Document],
) -> None:
    orders = mongo_db.orders
    assert await versioned_upsert(orders, "7", version=3, fields={"status": 30}) is UpsertOutcome.INSERTED
    # The caller read version 1 (or nothing) earlier; the store has moved on to 3 since.
    assert await versioned_upsert(orders, "7", version=2, fields={"status": 20}, current={"version": 1}) is (
        UpsertOutcome.NOT_NEWER
    )
    assert await versioned_upsert(orders, "7", version=2, fields={"status": 20}, current=None) is (
        UpsertOutcome.NOT_NEWER
    )
    assert await versioned_upsert(orders, "7", version=4, fields={"status": 40}, current=None) is (
        UpsertOutcome.UPDATED
    )
    assert await orders.find_one({"_id": "7"}) == {"_id": "7", "status": 40, "version": 4}


class _Parcel(BaseModel):
    model_config = ConfigDict(frozen=True)
    waybill_no: str
    lines: list[int]


@pytest.mark.parametrize("compact", [False, True])
async def test_a_versioned_projection_reads_back_what_it_saved_and_loads_it_again(
    mongo_db: AsyncDatabase[Document], compact: bool
) -> None:
    name = f"parcels_{compact}"
    first = VersionedProjection(mongo_db, name, _Parcel, compact=compact)
    await first.save("p-1", _Parcel(waybill_no="ZT1", lines=[1]), cause="shipped")
    await first.save("p-1", _Parcel(waybill_no="ZT1", lines=[1, 2]), cause="split")
    await first.save("p-2", _Parcel(waybill_no="YT2", lines=[3]), cause="shipped")
    assert first.get("p-1") == _Parcel(waybill_no="ZT1", lines=[1, 2])
    assert "p-2" in first and "p-3" not in first and first.get("p-3") is None

    again = VersionedProjection(mongo_db, name, _Parcel, compact=compact)
    await again.load()
    assert sorted(p.waybill_no for p in again) == ["YT2", "ZT1"]
    assert again.get("p-1") == _Parcel(waybill_no="ZT1", lines=[1, 2])
    await again.save("p-2", _Parcel(waybill_no="YT2", lines=[]), cause="another writer")
    with pytest.raises(VersionConflict):  # the first one still holds p-2's first revision
        await first.save("p-2", _Parcel(waybill_no="YT2", lines=[4]), cause="late")
    assert first.get("p-2") == _Parcel(waybill_no="YT2", lines=[3])  # unchanged by the refusal


class _Shipment(BaseModel):
    waybill_no: str
    shipped_at: datetime
    lines: list[int]


async def test_a_projection_loads_the_newest_revision_of_each_key_whatever_the_order_read(
    mongo_db: AsyncDatabase[Document],
) -> None:
    shipped_at = datetime(2026, 12, 3, 8, 30, 0, 123000, tzinfo=UTC)

    def revision(key: str, number: int, waybill_no: str) -> Document:
        value = _Shipment(waybill_no=waybill_no, shipped_at=shipped_at, lines=list(range(number)))
        return {
            "_id": f"{key}#{number:06d}",
            "key": key,
            "revision": number,
            "cause": f"step {number}",
            "value": value.model_dump(mode="json"),  # as `save` writes it: the time as ISO text
        }

    # Written out of order (read back in the order written): the newest is not the last read.
    await mongo_db.shipments.insert_many(
        [
            revision("s-1", 2, "ZT2"),
            revision("s-1", 3, "ZT3"),
            revision("s-2", 1, "YT1"),
            revision("s-1", 1, "ZT1"),
        ]
    )
    projection = VersionedProjection(mongo_db, "shipments", _Shipment)
    await projection.load()
    newest = projection.get("s-1")
    assert newest == _Shipment(waybill_no="ZT3", shipped_at=shipped_at, lines=[0, 1, 2])
    assert newest is not None and newest.shipped_at.tzinfo is not None
    assert projection.get("s-2") == _Shipment(waybill_no="YT1", shipped_at=shipped_at, lines=[0])
    # The next revision written is the one after the newest; a second load keeps what is newer.
    await projection.save("s-1", _Shipment(waybill_no="ZT4", shipped_at=shipped_at, lines=[]), cause="step 4")
    assert await mongo_db.shipments.find_one({"_id": "s-1#000004"}) is not None
    await projection.load()
    assert projection.get("s-1") == _Shipment(waybill_no="ZT4", shipped_at=shipped_at, lines=[])
    with pytest.raises(VersionConflict):
        await VersionedProjection(mongo_db, "shipments", _Shipment).save(
            "s-1", _Shipment(waybill_no="late", shipped_at=shipped_at, lines=[]), cause="late"
        )


async def test_pruning_leaves_each_keys_first_and_newest_revision_and_the_next_load_the_same_state(
    mongo_db: AsyncDatabase[Document],
) -> None:
    name = "pruned_parcels"
    writer = VersionedProjection(mongo_db, name, _Parcel)
    for lines in ([1], [1, 2], [1, 2, 3], [1, 2, 3, 4]):
        await writer.save("p-1", _Parcel(waybill_no="ZT1", lines=lines), cause=f"scan {len(lines)}")
    await writer.save("p-2", _Parcel(waybill_no="YT2", lines=[9]), cause="shipped")
    for lines in ([5], [5, 6]):
        await writer.save("p-3", _Parcel(waybill_no="JD3", lines=lines), cause=f"scan {len(lines)}")

    restarted = VersionedProjection(mongo_db, name, _Parcel)
    await restarted.load()
    assert restarted.superseded == 2  # p-1's revisions 2 and 3; nothing of p-2 or p-3
    assert await restarted.prune_superseded(batch=1, pause_s=0) == 2
    assert restarted.superseded == 0
    assert sorted([d["_id"] async for d in mongo_db[name].find({}, {"_id": 1})]) == [
        "p-1#000001",
        "p-1#000004",
        "p-2#000001",
        "p-3#000001",
        "p-3#000002",
    ]
    # Revisions written after the load are not touched, and the next revision still follows the newest.
    await restarted.save("p-1", _Parcel(waybill_no="ZT1", lines=[]), cause="delivered")
    with pytest.raises(VersionConflict):
        await writer.save("p-1", _Parcel(waybill_no="ZT1", lines=[0]), cause="late writer")

    after = VersionedProjection(mongo_db, name, _Parcel)
    await after.load()
    assert {key: after.get(key) for key in ("p-1", "p-2", "p-3")} == {
        "p-1": _Parcel(waybill_no="ZT1", lines=[]),
        "p-2": _Parcel(waybill_no="YT2", lines=[9]),
        "p-3": _Parcel(waybill_no="JD3", lines=[5, 6]),
    }
    assert after.superseded == 1  # p-1#000004, superseded by the save after the last load
    await after.load()  # a reload (aftersale reads its policies again) finds nothing new to prune
    assert after.superseded == 1


async def test_a_lookup_by_id_uses_the_id_index(mongo_db: AsyncDatabase[Document]) -> None:
    """FerretDB 1.24's SQLite backend indexed `_id` under one expression and looked it up under another,
    so every `_id` lookup scanned the collection (600 ms of CPU for a recent document among 25,000).
    deploy/ferretdb/build.sh fixes the lookup; SQLite's own plan shows the index is used."""
    await mongo_db.versions.insert_many([{"_id": f"v{i}#000001", "n": i} for i in range(50)])
    plan = await mongo_db.command("explain", {"find": "versions", "filter": {"_id": "v49#000001"}})
    steps = " ".join(str(step) for step in plan["queryPlanner"]["Plan"])
    assert "USING INDEX" in steps and "SCAN" not in steps, plan
    assert (await mongo_db.versions.find_one({"_id": "v49#000001"}) or {}).get("n") == 49
