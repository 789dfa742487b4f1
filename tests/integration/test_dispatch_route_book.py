"""The route book on the real FerretDB: every catalog write moves the catalog's revision, and the book
reads routes and suppliers again only when it moved, or after `full_read_every_s` for a write made
around the catalog."""

from __future__ import annotations

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from services.dispatch.catalog import ROUTES, Catalog, Supplier
from services.dispatch.domain.routing import Route
from services.dispatch.handlers import RouteBook
from shared.db import Document
from tests.unit.dispatch.builders import SHOP

pytestmark = pytest.mark.integration


def _route(sku: str, supplier: str = "alpha") -> Route:
    return Route(shop_id=SHOP, supplier_id=supplier, product_id="p1", sku_id=sku)


async def test_every_write_of_routes_or_suppliers_moves_the_revision_and_an_import_moves_it_once(
    mongo_db: AsyncDatabase[Document],
) -> None:
    catalog = Catalog(mongo_db)
    assert await catalog.revision() == 0

    await catalog.add_supplier(Supplier(supplier_id="alpha", name="ALPHA"))
    assert await catalog.revision() == 1
    await catalog.set_route(_route("s1"))
    assert await catalog.revision() == 2
    imported = await catalog.import_routes(
        "shop_id,supplier_id,priority,product_id,sku_id\n"
        f"{SHOP},alpha,1,p1,s2\n{SHOP},alpha,1,p1,s3\n{SHOP},alpha,1,p1,s4\n"
    )
    assert (imported, await catalog.revision()) == (3, 3)
    await catalog.set_supplier("alpha", active=False)
    assert await catalog.revision() == 4
    route_id = next(r.route_id for r in await catalog.routes() if r.sku_id == "s1")
    await catalog.remove_route(route_id)
    assert await catalog.revision() == 5
    assert len(await catalog.routes()) == 3


async def test_the_book_reloads_on_a_catalog_write_and_sees_a_write_around_it_at_the_next_full_read(
    mongo_db: AsyncDatabase[Document],
) -> None:
    now = [0.0]
    catalog = Catalog(mongo_db)
    await catalog.add_supplier(Supplier(supplier_id="alpha", name="ALPHA"))
    await catalog.add_supplier(Supplier(supplier_id="beta", name="BETA"))
    await catalog.set_route(_route("s1"))
    book = RouteBook(catalog, full_read_every_s=60.0, clock=lambda: now[0])

    assert await book.reload()
    assert not await book.reload()  # nothing written

    await catalog.set_route(_route("s2", supplier="beta"))
    assert await book.reload()
    assert book.generation == 2

    # A route written straight into the collection: the revision stays, so the book does not look ...
    around = _route("s3")
    await mongo_db[ROUTES].insert_one(
        {
            "_id": around.route_id,
            "shop_id": around.shop_id,
            "supplier_id": around.supplier_id,
            "priority": around.priority,
            "product_id": around.product_id,
            "sku_id": around.sku_id,
            "sku_code": "",
            "stock_cap": None,
        }
    )
    now[0] = 59.0
    assert not await book.reload()
    # ... until its full read is due.
    now[0] = 60.0
    assert await book.reload()
    assert book.generation == 3
    assert not await book.reload()
