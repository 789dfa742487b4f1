"""What keeps long-lived in-memory projections small: per-key locks that go away when unused, and
pydantic field sets shared between equal instances."""

import asyncio
import copy
from datetime import UTC, datetime

import pytest
from pydantic import BaseModel, ConfigDict

from shared.compact import ModelsAsJson, share_field_sets
from shared.locks import KeyedLocks


async def test_a_keys_lock_serializes_and_is_gone_once_nobody_holds_or_awaits_it() -> None:
    locks = KeyedLocks()
    order: list[str] = []
    first_in = asyncio.Event()

    async def first() -> None:
        async with locks.hold("order-1"):
            first_in.set()
            await asyncio.sleep(0.01)
            order.append("first")

    async def second() -> None:
        await first_in.wait()
        async with locks.hold("order-1"):
            order.append("second")

    async with asyncio.timeout(5):
        await asyncio.gather(first(), second())
    assert order == ["first", "second"]
    assert len(locks) == 0


async def test_a_failure_inside_still_releases_the_key() -> None:
    locks = KeyedLocks()
    with pytest.raises(RuntimeError):
        async with locks.hold("order-1"):
            raise RuntimeError("handler failed")
    assert len(locks) == 0
    async with asyncio.timeout(5), locks.hold("order-1"):
        assert len(locks) == 1


async def test_other_keys_do_not_wait() -> None:
    locks = KeyedLocks()
    async with asyncio.timeout(5), locks.hold("order-1"), locks.hold("order-2"):
        assert len(locks) == 2


class Line(BaseModel):
    model_config = ConfigDict(frozen=True)
    sku_id: str
    quantity: int = 1


class Order(BaseModel):
    model_config = ConfigDict(frozen=True)
    order_id: str
    lines: list[Line]
    paid_at: datetime | None = None


class Draft(BaseModel):  # not frozen: assignment adds to its field set
    order_id: str


def _order(order_id: str) -> Order:
    return Order(order_id=order_id, lines=[Line(sku_id="s1"), Line(sku_id="s2", quantity=2)])


def test_equal_field_sets_are_shared_across_instances_and_nested_models() -> None:
    a, b = _order("1"), _order("2")
    assert a.__pydantic_fields_set__ is not b.__pydantic_fields_set__
    share_field_sets(a)
    share_field_sets(b)
    assert a.__pydantic_fields_set__ is b.__pydantic_fields_set__ == {"order_id", "lines"}
    assert a.lines[0].__pydantic_fields_set__ is b.lines[0].__pydantic_fields_set__ == {"sku_id"}
    assert a.lines[1].__pydantic_fields_set__ == {"sku_id", "quantity"}


def test_copies_and_dumps_behave_as_before_sharing() -> None:
    order = _order("1")
    share_field_sets(order)
    shared = order.__pydantic_fields_set__
    paid = order.model_copy(update={"paid_at": datetime(2026, 11, 22, tzinfo=UTC)})
    assert paid.model_fields_set == {"order_id", "lines", "paid_at"}
    assert shared == {"order_id", "lines"}  # the copy did not touch the shared set
    assert copy.copy(order).model_fields_set == {"order_id", "lines"}
    assert order.model_dump(exclude_unset=True) == {
        "order_id": "1",
        "lines": [{"sku_id": "s1"}, {"sku_id": "s2", "quantity": 2}],
    }
    assert Order.model_validate_json(order.model_dump_json()) == order


def test_models_that_are_not_frozen_keep_their_own_set() -> None:
    draft = Draft(order_id="1")
    own = draft.__pydantic_fields_set__
    share_field_sets(draft)
    assert draft.__pydantic_fields_set__ is own


def test_models_kept_as_json_read_back_equal_in_the_order_stored() -> None:
    kept: ModelsAsJson[Order] = ModelsAsJson(Order)
    kept["2"] = _order("2")
    kept["1"] = _order("1").model_copy(update={"paid_at": datetime(2026, 11, 22, tzinfo=UTC)})
    kept["2"] = _order("2").model_copy(update={"lines": [Line(sku_id="s9")]})  # replaced: keeps its place
    assert list(kept) == ["2", "1"] and len(kept) == 2 and "1" in kept and "3" not in kept
    assert kept["2"].lines == [Line(sku_id="s9")]
    assert kept.get("1") == _order("1").model_copy(update={"paid_at": datetime(2026, 11, 22, tzinfo=UTC)})
    assert kept.get("3") is None
    with pytest.raises(KeyError):
        kept["3"]
    assert kept["1"] is not kept["1"]  # each read is a new instance: callers cannot change what is kept
