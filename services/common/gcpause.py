"""The cyclic garbage collector's pauses: kept short, and shown as a metric.

A full (generation 2) collection walks every container object the process holds, and while
it runs the service's event loop stands still: late media ticks, a call-setup tail. A
service's start leaves 57,000-118,000 of them that live as long as the process (modules,
protobuf descriptors, gRPC and SQLAlchemy machinery); walked on every full collection, they
made most of the CRM's 144 ms pause under load (21 ms once frozen; docs/performance.md,
section 14, where the gateway's longer pauses were ended calls left as cyclic garbage).
`freeze_startup` moves them out of the collector's sight once the service has started;
`PAUSE` times every collection (`hotline_gc_pause_seconds`, by generation) so a pause is a
figure on the dashboard instead of a guess behind a latency spike.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client import Histogram

__all__ = ["PAUSE", "freeze_startup", "watch_pauses"]

PAUSE = Histogram(
    "hotline_gc_pause_seconds",
    "Time the process stood still in a cyclic garbage collection",
    ["generation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)
_BY_GENERATION = tuple(PAUSE.labels(generation=str(g)) for g in range(3))


class _PauseTimer:
    """A `gc.callbacks` entry observing each collection's duration into `PAUSE`."""

    __slots__ = ("started",)

    def __init__(self) -> None:
        self.started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            _BY_GENERATION[info["generation"]].observe(time.perf_counter() - self.started)


def watch_pauses() -> None:
    """Time every collection of this process into `PAUSE`; a second call adds nothing."""
    if not any(isinstance(cb, _PauseTimer) for cb in gc.callbacks):
        gc.callbacks.append(_PauseTimer())


def freeze_startup() -> int:
    """Collect once, then keep everything alive now out of all later collections
    (`gc.freeze`); returns how many objects were frozen. Call it when the service has
    started: what exists then is, nearly all of it, there for the life of the process, and
    what is not is still freed by reference counting (only cycles among frozen objects wait)."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
