"""Bridge pacing/jitter buffer/tap, the mixer, and a 4-socket transcoding loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from gateway.media.audio import silence
from gateway.media.bridge import Bridge, Mixer
from gateway.media.clock import FrameClock
from gateway.media.endpoint import PortAllocator, RtpEndpoint

HOST = "127.0.0.1"


def tone(freq: float, amp: float, n: int = 160, phase0: int = 0) -> np.ndarray:
    t = np.arange(phase0, phase0 + n)
    return (np.sin(2 * np.pi * freq * t / 8000) * amp).astype(np.int16)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def peak_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / 8000)[int(np.argmax(spec))])


class FakeLeg:
    """Records what the bridge sends; stands in for an RtpEndpoint."""

    def __init__(self) -> None:
        self.on_audio: Callable[[np.ndarray], None] | None = None
        self.sent: list[np.ndarray | None] = []  # None = skipped tick

    def send_audio(self, pcm: np.ndarray) -> bool:
        self.sent.append(pcm)
        return True

    def skip(self, frames: int = 1) -> None:
        self.sent.extend([None] * frames)


class ManualClock:
    def __init__(self) -> None:
        self.subs: dict[int, Callable[[], None]] = {}

    def subscribe(self, cb: Callable[[], None]) -> int:
        self.subs[len(self.subs) + 1] = cb
        return len(self.subs)

    def unsubscribe(self, h: int) -> None:
        self.subs.pop(h, None)

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            for cb in list(self.subs.values()):
                cb()


def frame(v: int) -> np.ndarray:
    return np.full(160, v, dtype=np.int16)


def make_bridge(tap: Any = None, depth: int = 3) -> tuple[Bridge, FakeLeg, FakeLeg, ManualClock]:
    a, b = FakeLeg(), FakeLeg()
    br = Bridge(a, b, tap, depth=depth)  # type: ignore[arg-type]
    clock = ManualClock()
    br.start(clock)  # type: ignore[arg-type]
    return br, a, b, clock


# --- pacing and jitter buffer (no network) ----------------------------------------


def test_one_frame_per_tick_per_direction() -> None:
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    br, a, b, clock = make_bridge(lambda x, y: pairs.append((x, y)))
    assert a.on_audio is not None and b.on_audio is not None
    a.on_audio(frame(1))
    a.on_audio(frame(2))  # burst of two from A
    b.on_audio(frame(-1))
    clock.tick()
    assert [int(f[0]) for f in b.sent] == [1]  # A's audio goes out on B
    assert [int(f[0]) for f in a.sent] == [-1]
    clock.tick()
    assert [None if f is None else int(f[0]) for f in b.sent] == [1, 2]
    assert a.sent[-1] is None  # nothing from B: no RTP, just time passing
    assert len(pairs) == br.ticks == 2
    assert int(pairs[1][0][0]) == 2 and pairs[1][1] is silence()
    assert br.from_b.underruns == 1


def test_overflow_drops_oldest_and_counts() -> None:
    br, a, b, clock = make_bridge(depth=3)
    assert a.on_audio is not None
    for v in range(1, 6):
        a.on_audio(frame(v))
    assert br.drops == 2
    clock.tick(4)
    assert [None if f is None else int(f[0]) for f in b.sent] == [3, 4, 5, None]


def test_tap_gets_silence_pairs_when_both_idle_and_failures_are_contained() -> None:
    seen: list[tuple[np.ndarray, np.ndarray]] = []

    def tap(x: np.ndarray, y: np.ndarray) -> None:
        seen.append((x, y))
        raise RuntimeError("disk full")

    br, a, b, clock = make_bridge(tap)
    clock.tick(3)
    assert len(seen) == 3 and br.tap_errors == 3
    assert all(x.shape == (160,) and y.shape == (160,) and not x.any() for x, y in seen)
    assert a.sent == [None] * 3 and b.sent == [None] * 3


def test_stop_restores_callbacks_and_unsubscribes() -> None:
    a, b = FakeLeg(), FakeLeg()
    original: Callable[[np.ndarray], None] = lambda pcm: None  # noqa: E731
    a.on_audio = original
    br = Bridge(a, b)  # type: ignore[arg-type]
    clock = ManualClock()
    br.start(clock)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        br.start(clock)  # type: ignore[arg-type]
    br.stop()
    br.stop()
    assert a.on_audio is original and b.on_audio is None
    assert clock.subs == {} and not br.running


# --- mixer -------------------------------------------------------------------------


def test_mix_saturates_instead_of_wrapping() -> None:
    out = Mixer.mix([frame(30000), frame(10000), frame(-5000)])
    assert out.dtype == np.int16 and int(out[0]) == 32767
    assert int(Mixer.mix([frame(-30000), frame(-30000)])[0]) == -32768
    assert int(Mixer.mix([frame(100), frame(-30)])[0]) == 70
    assert Mixer.mix([]) is silence()


def test_mix_minus() -> None:
    outs = Mixer.mix_minus([frame(1), frame(10), frame(100)])
    assert [int(o[0]) for o in outs] == [110, 101, 11]
    assert Mixer.mix_minus([]) == []


# --- loopback: 4 real sockets, PCMA caller <-> bridge <-> PCMU callee ----------------


async def test_loopback_transcoding_bridge() -> None:
    alloc = PortAllocator(32000, 32099)
    caller = await RtpEndpoint.open(HOST, alloc)  # phone on the PSTN side (PCMA)
    leg_a = await RtpEndpoint.open(HOST, alloc)
    leg_b = await RtpEndpoint.open(HOST, alloc)
    agent = await RtpEndpoint.open(HOST, alloc)  # agent softphone (PCMU)
    clock = FrameClock()
    try:
        caller.configure((HOST, leg_a.local_port), "PCMA", 8)
        leg_a.configure((HOST, caller.local_port), "PCMA", 8)
        leg_b.configure((HOST, agent.local_port), "PCMU", 0)
        agent.configure((HOST, leg_b.local_port), "PCMU", 0)

        heard_by_agent: list[np.ndarray] = []
        heard_by_caller: list[np.ndarray] = []
        agent.on_audio = heard_by_agent.append
        caller.on_audio = heard_by_caller.append

        taps: list[tuple[int, np.ndarray, np.ndarray]] = []
        bridge = Bridge(leg_a, leg_b, lambda x, y: taps.append((clock.ticks, x, y)))

        phase = {"n": 0}
        n_frames = 40

        def talk() -> None:  # both phones produce one 20 ms frame per tick
            k = phase["n"]
            if k < n_frames:
                caller.send_audio(tone(400, 8000, phase0=160 * k))
                agent.send_audio(tone(1000, 4000, phase0=160 * k))
            phase["n"] = k + 1

        bridge.start(clock)
        clock.subscribe(talk)
        clock.start()
        while phase["n"] < n_frames + 8:
            await asyncio.sleep(0.02)
        clock.stop()
        bridge.stop()

        # What crossed the wire: PCMA on the caller side, PCMU on the agent side.
        assert set(leg_a.payload_types_in) == {8} and set(caller.payload_types_in) == {8}
        assert set(agent.payload_types_in) == {0} and set(leg_b.payload_types_in) == {0}
        # Essentially every frame made it through (loopback, no loss).
        assert len(heard_by_agent) >= n_frames - 2
        assert len(heard_by_caller) >= n_frames - 2
        assert leg_a.stats.lost == 0 and agent.stats.lost == 0 and caller.stats.lost == 0

        # Energy and pitch preserved through A-law -> PCM -> µ-law.
        at_agent = np.concatenate(heard_by_agent)
        at_caller = np.concatenate(heard_by_caller)
        assert rms(at_agent) == pytest.approx(rms(tone(400, 8000, 6400)), rel=0.05)
        assert rms(at_caller) == pytest.approx(rms(tone(1000, 4000, 6400)), rel=0.05)
        assert peak_hz(at_agent) == pytest.approx(400, abs=15)
        assert peak_hz(at_caller) == pytest.approx(1000, abs=15)

        # The tap saw exactly one frame pair per bridge tick, on distinct ticks.
        assert len(taps) == bridge.ticks > n_frames
        assert len({t for t, _, _ in taps}) == len(taps)
        assert all(x.shape == (160,) and y.shape == (160,) for _, x, y in taps)
        left = np.concatenate([x for _, x, _ in taps])
        right = np.concatenate([y for _, _, y in taps])
        assert peak_hz(left) == pytest.approx(400, abs=15)  # left = A = caller
        assert peak_hz(right) == pytest.approx(1000, abs=15)  # right = B = agent
        # Timing: the tap holds all the speech and the idle tail as silence.
        voiced = np.any(np.stack([x for _, x, _ in taps]), axis=1)
        assert int(np.count_nonzero(voiced)) >= n_frames - 2
        assert not taps[-1][1].any() and not taps[-1][2].any()
        assert bridge.drops <= 2  # only a badly stalled loop could overflow 3 frames
    finally:
        clock.stop()
        for e in (caller, leg_a, leg_b, agent):
            e.close()
    assert alloc.in_use == 0
