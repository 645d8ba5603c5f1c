"""The garbage collector's pauses as a metric, and the start-up objects frozen out of its way."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from common import gcpause


def pauses(generation: int) -> float:
    value = REGISTRY.get_sample_value(
        "hotline_gc_pause_seconds_count", {"generation": str(generation)}
    )
    return value or 0.0


@pytest.fixture
def watched() -> Iterator[None]:
    """The pause timer on, and no automatic collection (any thread's allocations could start
    one) to blur the count."""
    before = list(gc.callbacks)
    gcpause.watch_pauses()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.callbacks[:] = before


def test_every_collection_is_timed_once_in_its_generation(watched: None) -> None:
    gcpause.watch_pauses()  # a second call adds no second timer
    full, young = pauses(2), pauses(0)
    gc.collect()
    gc.collect(0)
    assert pauses(2) == full + 1
    assert pauses(0) == young + 1
    total = REGISTRY.get_sample_value("hotline_gc_pause_seconds_sum", {"generation": "2"})
    assert total is not None and total > 0


def test_what_exists_at_start_is_frozen_and_later_objects_are_not() -> None:
    started = [object() for _ in range(3)]  # containers alive at "start-up"
    try:
        frozen = gcpause.freeze_startup()
        assert frozen > 0  # (reference counting may free a frozen object at any time)
        assert not any(o is started for o in gc.get_objects())  # out of the collector's sight
        later: list[object] = []
        assert any(o is later for o in gc.get_objects())  # new ones are still collected
    finally:
        gc.unfreeze()
