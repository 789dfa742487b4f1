"""Supplier facts more than one service reads: dispatch manages suppliers (`lvyue supplier`), aftersale
needs their return addresses. One collection, written by dispatch's catalog only."""

from __future__ import annotations

from pymongo.asynchronous.database import AsyncDatabase

from shared.db import Document
from shared.events.dispatch import ShippingAddress

SUPPLIERS = "suppliers"


async def return_addresses(db: AsyncDatabase[Document]) -> dict[str, ShippingAddress]:
    """supplier id -> return (warehouse) address, for the suppliers that have one."""
    found: dict[str, ShippingAddress] = {}
    async for document in db[SUPPLIERS].find({"return_address": {"$ne": None}}, {"return_address": 1}):
        if document.get("return_address"):
            found[str(document["_id"])] = ShippingAddress.model_validate(document["return_address"])
    return found
