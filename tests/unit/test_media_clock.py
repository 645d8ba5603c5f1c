"""The shared 20 ms FrameClock: the absolute grid, drift correction, stall handling, lateness
buckets, subscriptions. The clock only asks its loop for time() and call_at(), so these tests
give it a loop whose time the test advances (`ManualLoop`), firing each timer as late as the
test says: no assertion depends on how busy the machine is."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Any

import pytest

from gateway.media.clock import LATENESS_BUCKETS_S, FrameClock

FRAME = 0.02


class ManualTimer:
    def __init__(self, when: float, callback: Callable[..., object], args: tuple[Any, ...]):
        self.when, self.callback, self.args = when, callback, args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualLoop:
    """The part of an event loop FrameClock uses, on a clock only the test moves."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self._timers: list[tuple[float, int, ManualTimer]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> ManualTimer:
        timer = ManualTimer(when, callback, args)
        heapq.heappush(self._timers, (when, next(self._seq), timer))
        return timer

    def stall(self, seconds: float) -> None:
        """The loop is busy elsewhere: time passes and no timer runs."""
        self.now += seconds

    def run_until(self, until: float, late: float = 0.0) -> None:
        """Run every timer due by `until` in order, each `late` seconds after it was due (as
        a loaded loop would, never before the present), then let time reach `until`."""
        while self._timers and self._timers[0][0] <= until:
            when, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self.now = max(self.now, when + late)
            timer.callback(*timer.args)
        self.now = max(self.now, until)

    @property
    def pending(self) -> int:
        return sum(not t.cancelled for _, _, t in self._timers)


def started(loop: ManualLoop, **kw: Any) -> tuple[FrameClock, list[float]]:
    """A running clock on `loop` with one subscriber noting the loop time of every tick."""
    clock = FrameClock(loop=loop, **kw)  # type: ignore[arg-type]
    stamps: list[float] = []
    clock.subscribe(lambda: stamps.append(loop.time()))
    clock.start()
    return clock, stamps


def bucket(late: float) -> int:
    return next((i for i, b in enumerate(LATENESS_BUCKETS_S) if late <= b), -1)


def test_ticks_land_on_the_absolute_grid() -> None:
    loop = ManualLoop(now=1000.0)
    clock, stamps = started(loop)
    loop.run_until(1000.5 + FRAME / 2)
    assert stamps == pytest.approx([1000.0 + FRAME * k for k in range(1, 26)], abs=1e-9)
    assert (clock.ticks, clock.late_ticks, clock.skipped_frames) == (25, 0, 0)
    assert clock.lateness[0] == 25 and sum(clock.lateness) == 25  # all on time
    assert loop.pending == 1, "one timer for the next tick, never more"


def test_lateness_does_not_accumulate_when_every_tick_fires_late() -> None:
    loop = ManualLoop()
    clock, stamps = started(loop)
    loop.run_until(1.0 + FRAME / 2, late=0.0035)  # each tick 3.5 ms late
    # tick k still fires at k * 20 ms + 3 ms: the next tick is scheduled on the grid, not
    # 20 ms after a late one (which would put the 50th at 50 * 23 ms)
    assert stamps == pytest.approx([FRAME * k + 0.0035 for k in range(1, 51)], abs=1e-9)
    assert (clock.ticks, clock.late_ticks, clock.skipped_frames) == (50, 0, 0)
    assert clock.lateness[bucket(0.0035)] == 50 and sum(clock.lateness) == 50
    assert clock.lateness_sum == pytest.approx(50 * 0.0035)


def test_lateness_buckets_count_each_tick() -> None:
    loop = ManualLoop()
    clock, _ = started(loop)
    lates = (0.0, 0.0015, 0.0025, 0.0035, 0.0045, 0.008, 0.015, 0.03, 0.07, 0.099)
    for k, late in enumerate(lates, start=1):
        loop.run_until(FRAME * k, late=late)
    expected = [0] * (len(LATENESS_BUCKETS_S) + 1)
    for late in lates:
        expected[bucket(late)] += 1
    assert clock.lateness == expected == [1, 1, 1, 1, 1, 1, 1, 1, 2, 0]
    assert clock.lateness_sum == pytest.approx(sum(lates))
    assert clock.late_ticks == 0, "up to max_late_frames late: no skip"


def test_a_short_stall_catches_up_with_every_frame() -> None:
    loop = ManualLoop()
    clock, stamps = started(loop)
    loop.run_until(0.05)  # ticks 1, 2
    loop.stall(0.06)  # 3 frames due meanwhile: fewer than max_late_frames
    loop.run_until(0.11)
    # the frames due at 60, 80 and 100 ms go out at once, late, as a catch-up burst
    assert stamps[2:] == pytest.approx([0.11, 0.11, 0.11], abs=1e-9)
    assert (clock.ticks, clock.late_ticks, clock.skipped_frames) == (5, 0, 0)
    loop.run_until(0.15)
    assert stamps[5:] == pytest.approx([0.12, 0.14], abs=1e-9)  # back on the grid


def test_a_stall_longer_than_max_late_frames_skips_ahead() -> None:
    loop = ManualLoop()
    clock, stamps = started(loop, max_late_frames=5)
    loop.run_until(0.05)  # ticks 1, 2; tick 3 due at 60 ms
    loop.stall(0.2)  # now 250 ms: tick 3 is 190 ms (9.5 frames) late
    loop.run_until(0.25)
    # one tick, not a burst of ten: frames 3..11 are dropped and the grid resumes at 260 ms
    assert len(stamps) == 3 and stamps[2] == pytest.approx(0.25)
    assert (clock.late_ticks, clock.skipped_frames) == (1, 9)
    assert clock.lateness[-1] == 1, "190 ms late: beyond the last bucket"
    loop.run_until(0.31)
    assert stamps[3:] == pytest.approx([0.26, 0.28, 0.30], abs=1e-9)
    assert (clock.ticks, clock.late_ticks, clock.skipped_frames) == (6, 1, 9)


def test_many_subscribers_one_timer_and_unsubscribe() -> None:
    loop = ManualLoop()
    clock = FrameClock(loop=loop)  # type: ignore[arg-type]
    counts = [0] * 100
    handles = []
    for i in range(100):

        def cb(i: int = i) -> None:
            counts[i] += 1

        handles.append(clock.subscribe(cb))
    clock.start()
    clock.start()  # idempotent
    assert loop.pending == 1
    loop.run_until(0.1 + FRAME / 2)
    for h in handles[50:]:
        clock.unsubscribe(h)
    clock.unsubscribe(12345)  # unknown handle ignored
    loop.run_until(0.2 + FRAME / 2)
    clock.stop()
    assert clock.subscribers == 50
    assert counts == [10] * 50 + [5] * 50
    assert clock.ticks == 10


def test_unsubscribe_during_tick_takes_effect_immediately() -> None:
    loop = ManualLoop()
    clock = FrameClock(loop=loop)  # type: ignore[arg-type]
    calls: list[str] = []
    h2 = 0

    def first() -> None:
        calls.append("first")
        clock.unsubscribe(h2)

    clock.subscribe(first)
    h2 = clock.subscribe(lambda: calls.append("second"))
    clock.start()
    loop.run_until(0.07)
    clock.stop()
    assert calls == ["first"] * 3


def test_failing_subscriber_does_not_stop_others() -> None:
    loop = ManualLoop()
    clock = FrameClock(loop=loop)  # type: ignore[arg-type]
    ok: list[int] = []

    def bad() -> None:
        raise RuntimeError("boom")

    clock.subscribe(bad)
    clock.subscribe(lambda: ok.append(1))
    clock.start()
    loop.run_until(0.1 + FRAME / 2)
    clock.stop()
    assert len(ok) == 5 and clock.callback_errors == 5


def test_stop_and_restart() -> None:
    loop = ManualLoop()
    clock, stamps = started(loop)
    loop.run_until(0.05)
    clock.stop()
    assert not clock.running and loop.pending == 0
    assert len(stamps) == 2
    loop.run_until(0.1)
    assert len(stamps) == 2, "no tick while stopped"
    loop.stall(0.005)
    clock.start()  # a new grid from the restart: 105 ms + k * 20 ms
    loop.run_until(0.15)
    clock.stop()
    assert stamps[2:] == pytest.approx([0.125, 0.145], abs=1e-9)
    assert clock.late_ticks == 0 and clock.skipped_frames == 0


def test_start_requires_running_loop() -> None:
    with pytest.raises(RuntimeError):
        FrameClock().start()


async def test_ticks_on_the_running_asyncio_loop() -> None:
    """Without a loop given, the clock ticks on the running one (what it does in the gateway);
    only that ticks arrive and stop() stops them is asserted, not when."""
    clock = FrameClock()
    three = asyncio.Event()

    def tick() -> None:
        if clock.ticks >= 3:
            three.set()

    clock.subscribe(tick)
    clock.start()
    await asyncio.wait_for(three.wait(), timeout=30)
    clock.stop()
    ticks = clock.ticks
    await asyncio.sleep(0.1)
    assert not clock.running and clock.ticks == ticks
