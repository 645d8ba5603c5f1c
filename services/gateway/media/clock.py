"""The gateway's single 20 ms media clock.

One clock drives every call (bridges, prompt players, recorders) instead of a
task per call: a thousand calls cost one timer per tick rather than a thousand
sleeping tasks, and all legs advance in lock-step.  Tick *k* is scheduled at
``start + k * 20 ms`` on the loop's monotonic clock, so timer lateness never
accumulates into drift; if the loop stalls for more than 5 frames the clock
skips ahead instead of firing a burst of catch-up ticks.

How late each tick fires is counted in `lateness` (per `LATENESS_BUCKETS_S`): every frame the
gateway sends leaves on a tick, so this is the jitter the gateway adds to its outgoing audio
(`hotline_media_tick_lateness_seconds`; docs/performance.md).
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_left
from collections.abc import Callable

from .audio import FRAME_SECONDS

__all__ = ["LATENESS_BUCKETS_S", "FrameClock", "SubscriptionHandle"]

log = logging.getLogger(__name__)

MAX_LATE_FRAMES = 5
#: upper bounds of the tick-lateness buckets (seconds); one more bucket holds the rest. Steps of
#: 1 ms up to 5 ms, the added jitter HotlineGatewayMediaLate alerts on, so that a p99 just under
#: it is told from one just over it
LATENESS_BUCKETS_S = (0.001, 0.002, 0.003, 0.004, 0.005, 0.01, 0.02, 0.05, 0.1)

SubscriptionHandle = int


class FrameClock:
    """Fixed-rate ticker calling every subscriber once per frame."""

    def __init__(
        self,
        interval: float = FRAME_SECONDS,
        max_late_frames: int = MAX_LATE_FRAMES,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.interval = interval
        self.max_late_frames = max_late_frames
        self._loop = loop
        self._subs: dict[SubscriptionHandle, Callable[[], None]] = {}
        self._snapshot: tuple[tuple[SubscriptionHandle, Callable[[], None]], ...] = ()
        self._next_handle = 1
        self._timer: asyncio.TimerHandle | None = None
        self._start = 0.0
        self._k = 0
        self.ticks = 0  # ticks delivered
        self.late_ticks = 0  # times the clock had to skip ahead
        self.skipped_frames = 0  # frames dropped by skipping ahead
        self.callback_errors = 0
        #: ticks per lateness bucket (LATENESS_BUCKETS_S, then the rest), and their sum (s)
        self.lateness = [0] * (len(LATENESS_BUCKETS_S) + 1)
        self.lateness_sum = 0.0

    # -- subscriptions ---------------------------------------------------------

    def subscribe(self, callback: Callable[[], None]) -> SubscriptionHandle:
        """Call ``callback()`` on every tick until unsubscribed."""
        handle = self._next_handle
        self._next_handle += 1
        self._subs[handle] = callback
        self._snapshot = tuple(self._subs.items())
        return handle

    def unsubscribe(self, handle: SubscriptionHandle) -> None:
        """Stop calling a subscriber (unknown handles are ignored)."""
        if self._subs.pop(handle, None) is not None:
            self._snapshot = tuple(self._subs.items())

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    # -- running ---------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._timer is not None

    def start(self) -> None:
        """Start ticking on the running (or given) event loop; idempotent."""
        if self._timer is not None:
            return
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        self._start = loop.time()
        self._k = 1
        self._timer = loop.call_at(self._start + self.interval, self._tick)

    def stop(self) -> None:
        """Stop ticking; subscribers stay registered for a later start()."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        late = now - (self._start + self._k * self.interval)
        self.lateness[bisect_left(LATENESS_BUCKETS_S, late)] += 1
        self.lateness_sum += late
        if late > self.max_late_frames * self.interval:
            # Loop stalled: realign to the grid instead of bursting catch-up ticks.
            k_now = int((now - self._start) / self.interval)
            self.skipped_frames += k_now - self._k
            self.late_ticks += 1
            self._k = k_now
        self._k += 1
        self._timer = loop.call_at(self._start + self._k * self.interval, self._tick)
        self.ticks += 1
        subs = self._subs
        for handle, cb in self._snapshot:
            if handle not in subs:  # unsubscribed by an earlier callback this tick
                continue
            try:
                cb()
            except Exception:  # one broken call must not stop audio for all others
                self.callback_errors += 1
                log.exception("frame clock subscriber %r failed", cb)
