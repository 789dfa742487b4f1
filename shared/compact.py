"""Smaller in-memory projections of frozen pydantic models.

Every pydantic instance carries its own `__pydantic_fields_set__` (the names given at construction,
read only by `exclude_unset` dumps): a set of 5-20 names takes 728 bytes, often more than the
instance's values. A projection holds hundreds of thousands of instances whose sets are equal, so
each is replaced by one shared set per distinct content. Only frozen models: pydantic adds to the
set on attribute assignment, which a frozen model refuses; `model_copy` copies the set first.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

_SHARED: dict[frozenset[str], set[str]] = {}


def share_field_sets(model: BaseModel) -> None:
    """Point the model's (and its nested frozen models') field sets at shared equal sets."""
    if not model.model_config.get("frozen"):
        return
    names = frozenset(model.__pydantic_fields_set__)
    shared = _SHARED.get(names)
    if shared is None:
        shared = _SHARED[names] = set(names)
    if model.__pydantic_fields_set__ is not shared:
        object.__setattr__(model, "__pydantic_fields_set__", shared)
    for value in model.__dict__.values():
        if isinstance(value, BaseModel):
            share_field_sets(value)
        elif isinstance(value, list | tuple):
            for item in value:
                if isinstance(item, BaseModel):
                    share_field_sets(item)


class ModelsAsJson(Generic[M]):
    """Models kept as their JSON and validated when read: a pydantic instance with nested models takes
    about three times its JSON in memory (an order plan: 2.6 KB against 0.9 KB). For large maps whose
    values are read a few times each."""

    def __init__(self, model: type[M]) -> None:
        self._model = model
        self._json: dict[str, bytes] = {}

    def __setitem__(self, key: str, value: M) -> None:
        self._json[key] = value.model_dump_json().encode()

    def __getitem__(self, key: str) -> M:
        return self._model.model_validate_json(self._json[key])

    def get(self, key: str) -> M | None:
        kept = self._json.get(key)
        return None if kept is None else self._model.model_validate_json(kept)

    def __contains__(self, key: object) -> bool:
        return key in self._json

    def discard(self, key: str) -> None:
        self._json.pop(key, None)

    def __len__(self) -> int:
        return len(self._json)

    def __iter__(self) -> Iterator[str]:
        """The keys, in the order first stored."""
        return iter(self._json)
