"""The shared 20 ms FrameClock: rate, drift correction, stall handling."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.media.clock import FrameClock


async def test_tick_rate_has_no_drift() -> None:
    clock = FrameClock()
    loop = asyncio.get_running_loop()
    stamps: list[float] = []
    clock.subscribe(lambda: stamps.append(loop.time()))
    clock.start()
    await asyncio.sleep(0.5)
    clock.stop()
    # 25 ticks expected in 0.5 s; timer granularity may cost one at the edge.
    assert 24 <= len(stamps) <= 26
    # Tick k is scheduled on the absolute grid, so lateness does not accumulate.
    start = stamps[0] - 0.02
    lateness = sorted(t - (start + 0.02 * (k + 1)) for k, t in enumerate(stamps))
    assert abs(lateness[len(lateness) // 2]) < 0.005
    assert clock.late_ticks == 0


async def test_many_subscribers_one_timer_and_unsubscribe() -> None:
    clock = FrameClock()
    counts = [0] * 100
    handles = []
    for i in range(100):

        def cb(i: int = i) -> None:
            counts[i] += 1

        handles.append(clock.subscribe(cb))
    clock.start()
    clock.start()  # idempotent
    await asyncio.sleep(0.1)
    for h in handles[50:]:
        clock.unsubscribe(h)
    clock.unsubscribe(12345)  # unknown handle ignored
    await asyncio.sleep(0.1)
    clock.stop()
    assert clock.subscribers == 50
    assert all(c == counts[0] for c in counts[:50])
    assert all(c < counts[0] for c in counts[50:])
    assert counts[0] == clock.ticks


async def test_unsubscribe_during_tick_takes_effect_immediately() -> None:
    clock = FrameClock()
    calls: list[str] = []
    h2 = 0

    def first() -> None:
        calls.append("first")
        clock.unsubscribe(h2)

    clock.subscribe(first)
    h2 = clock.subscribe(lambda: calls.append("second"))
    clock.start()
    await asyncio.sleep(0.07)
    clock.stop()
    assert "second" not in calls and calls


async def test_failing_subscriber_does_not_stop_others() -> None:
    clock = FrameClock()
    ok: list[int] = []

    def bad() -> None:
        raise RuntimeError("boom")

    clock.subscribe(bad)
    clock.subscribe(lambda: ok.append(1))
    clock.start()
    await asyncio.sleep(0.1)
    clock.stop()
    assert len(ok) >= 3 and clock.callback_errors == len(ok)


async def test_short_stall_catches_up_long_stall_skips_ahead() -> None:
    clock = FrameClock()
    clock.subscribe(lambda: None)
    clock.start()
    await asyncio.sleep(0.05)
    t0 = clock.ticks
    time.sleep(0.06)  # 3 frames: delivered late as a catch-up burst
    await asyncio.sleep(0.05)
    assert clock.late_ticks == 0
    assert clock.ticks - t0 >= 5
    time.sleep(0.2)  # 10 frames: more than 5 late -> realign, count it
    await asyncio.sleep(0.05)
    clock.stop()
    assert clock.late_ticks == 1
    assert clock.skipped_frames >= 4


async def test_stop_and_restart() -> None:
    clock = FrameClock()
    n: list[int] = []
    clock.subscribe(lambda: n.append(1))
    clock.start()
    await asyncio.sleep(0.05)
    clock.stop()
    assert not clock.running
    stopped_at = len(n)
    await asyncio.sleep(0.05)
    assert len(n) == stopped_at
    clock.start()
    await asyncio.sleep(0.05)
    clock.stop()
    assert len(n) > stopped_at


def test_start_requires_running_loop() -> None:
    with pytest.raises(RuntimeError):
        FrameClock().start()
