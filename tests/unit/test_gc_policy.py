import gc
import weakref
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from shared.gc_policy import GcPolicy
from shared.settings import GcSettings


def _sample(name: str, labels: dict[str, str]) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


class Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()  # the other tests run with the interpreter's own collector state
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restore_gc")
def test_pauses_are_timed_per_generation_until_uninstalled() -> None:
    labels = {"service": "gc-timed", "generation": "2"}
    policy = GcPolicy("gc-timed", GcSettings(freeze_survivors=False))
    policy.install()
    try:
        gc.collect()
        gc.collect(0)
    finally:
        policy.uninstall()
    assert _sample("lvyue_gc_pause_seconds_count", labels) == 1
    assert _sample("lvyue_gc_pause_seconds_count", {**labels, "generation": "0"}) >= 1
    gc.collect()
    assert _sample("lvyue_gc_pause_seconds_count", labels) == 1  # no longer observed


@pytest.mark.usefixtures("restore_gc")
def test_the_young_threshold_is_set_and_given_back() -> None:
    before = gc.get_threshold()
    policy = GcPolicy("gc-threshold", GcSettings(young_threshold=12_345))
    policy.install()
    assert gc.get_threshold() == (12_345, before[1], before[2])
    policy.uninstall()
    assert gc.get_threshold() == before


@pytest.mark.usefixtures("restore_gc")
def test_survivors_of_a_full_collection_are_frozen_and_a_sweep_reclaims_frozen_cycles() -> None:
    policy = GcPolicy("gc-freeze", GcSettings())
    policy.install()
    try:
        in_flight = Cycle()  # alive at the full collection, garbage after it
        gc.collect()
        assert gc.get_freeze_count() > 0
        assert _sample("lvyue_gc_frozen_objects", {"service": "gc-freeze"}) == gc.get_freeze_count()
        gone = weakref.ref(in_flight)
        del in_flight
        gc.collect()
        assert gone() is not None  # frozen: the collector no longer looks at it
        found = policy.sweep()
        assert gone() is None and found >= 1
        assert _sample("lvyue_gc_swept_objects_total", {"service": "gc-freeze"}) == found
        assert gc.get_freeze_count() > 0  # the sweep's survivors are frozen again
    finally:
        policy.uninstall()


@pytest.mark.usefixtures("restore_gc")
def test_frozen_objects_without_cycles_are_still_freed_by_reference_counting() -> None:
    policy = GcPolicy("gc-refcount", GcSettings())
    policy.install()
    try:
        projection = Box({"lines": [{"sku": "s1"}]})  # a tree, like an order in a projection
        gc.collect()  # frozen from here on
        gone = weakref.ref(projection)
        del projection
        assert gone() is None
    finally:
        policy.uninstall()


class Box:
    def __init__(self, value: object) -> None:
        self.value = value


@pytest.mark.usefixtures("restore_gc")
def test_one_policy_governs_a_process_that_runs_several_services() -> None:
    first = GcPolicy("gc-first", GcSettings(young_threshold=11_111))
    second = GcPolicy("gc-second", GcSettings(young_threshold=22_222))
    assert first.install()
    try:
        assert not second.install()
        assert gc.get_threshold()[0] == 11_111
        second.uninstall()  # not installed: changes nothing
        assert gc.get_threshold()[0] == 11_111
    finally:
        first.uninstall()
    assert second.install()
    second.uninstall()
