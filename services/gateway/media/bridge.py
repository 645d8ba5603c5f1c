"""Two-leg audio bridge (with optional recording tap) and a saturating mixer.

Audio crosses the bridge as decoded PCM, so each leg encodes with its own
negotiated codec and PCMA<->PCMU transcoding needs no special case.  The
bridge is paced by the shared :class:`~gateway.media.clock.FrameClock`, not by
packet arrival: each tick moves at most one frame per direction out of a small
jitter buffer, which absorbs arrival jitter and clock drift between the two
peers (overflow drops the oldest frame, keeping latency bounded) and gives the
recording tap exactly one frame pair per 20 ms.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from .audio import silence
from .clock import FrameClock, SubscriptionHandle

__all__ = ["Bridge", "BridgeSide", "Mixer", "Tap"]

log = logging.getLogger(__name__)

Tap = Callable[[np.ndarray, np.ndarray], None]


class BridgeSide(Protocol):
    """What the bridge needs of a leg's media: an RTP endpoint, an analog port's media..."""

    on_audio: Callable[[np.ndarray], None] | None

    def send_audio(self, pcm: np.ndarray) -> bool: ...

    def skip(self, frames: int = 1) -> None: ...


class _JitterBuffer:
    """Bounded FIFO of frames; overflow drops the oldest to cap latency."""

    __slots__ = ("frames", "depth", "drops", "underruns")

    def __init__(self, depth: int) -> None:
        self.frames: deque[np.ndarray] = deque()
        self.depth = depth
        self.drops = 0
        self.underruns = 0

    def push(self, frame: np.ndarray) -> None:
        frames = self.frames
        if len(frames) >= self.depth:
            frames.popleft()
            self.drops += 1
        frames.append(frame)

    def pop(self) -> np.ndarray | None:
        if self.frames:
            return self.frames.popleft()
        self.underruns += 1
        return None


class Bridge:
    """Connects leg ``a`` and leg ``b``; ``tap(a_frame, b_frame)`` sees both sides.

    While started the bridge owns both legs' ``on_audio`` callbacks (previous
    ones are restored by :meth:`stop`).  An empty buffer sends no RTP (the leg
    just lets the frame's time elapse, so the next packet starts a talkspurt)
    but the tap still gets silence, keeping stereo recordings time-aligned.
    """

    def __init__(
        self, a: BridgeSide, b: BridgeSide, tap: Tap | None = None, *, depth: int = 3
    ) -> None:
        if depth < 1:
            raise ValueError("jitter buffer depth must be at least 1")
        self.a = a
        self.b = b
        self.tap = tap
        self.from_a = _JitterBuffer(depth)  # heard on A, to be sent on B
        self.from_b = _JitterBuffer(depth)
        self.ticks = 0
        self.tap_errors = 0
        self._clock: FrameClock | None = None
        self._handle: SubscriptionHandle | None = None
        self._prev_a: Callable[[np.ndarray], None] | None = None
        self._prev_b: Callable[[np.ndarray], None] | None = None

    @property
    def running(self) -> bool:
        return self._handle is not None

    @property
    def drops(self) -> int:
        """Frames discarded because a jitter buffer overflowed (both directions)."""
        return self.from_a.drops + self.from_b.drops

    def start(self, clock: FrameClock) -> None:
        """Begin forwarding on every tick of ``clock``."""
        if self._handle is not None:
            raise RuntimeError("bridge already started")
        self._prev_a, self._prev_b = self.a.on_audio, self.b.on_audio
        self.a.on_audio = self.from_a.push
        self.b.on_audio = self.from_b.push
        self._clock = clock
        self._handle = clock.subscribe(self._tick)

    def stop(self) -> None:
        """Stop forwarding and hand the legs' audio callbacks back; idempotent."""
        if self._handle is None:
            return
        assert self._clock is not None
        self._clock.unsubscribe(self._handle)
        self._handle = None
        self._clock = None
        if self.a.on_audio == self.from_a.push:
            self.a.on_audio = self._prev_a
        if self.b.on_audio == self.from_b.push:
            self.b.on_audio = self._prev_b
        self.from_a.frames.clear()
        self.from_b.frames.clear()

    def _tick(self) -> None:
        fa = self.from_a.pop()
        fb = self.from_b.pop()
        if fa is not None:
            self.b.send_audio(fa)
        else:
            self.b.skip()
        if fb is not None:
            self.a.send_audio(fb)
        else:
            self.a.skip()
        self.ticks += 1
        tap = self.tap
        if tap is not None:
            quiet = silence()
            try:
                tap(quiet if fa is None else fa, quiet if fb is None else fb)
            except Exception:  # a failing recorder must not cut the conversation
                self.tap_errors += 1
                log.exception("bridge tap %r failed", tap)


class Mixer:
    """Saturating PCM mixing for conferences and whisper/barge-in."""

    @staticmethod
    def mix(frames: Sequence[np.ndarray]) -> np.ndarray:
        """Sum frames in int32 and clip to int16 (no wraparound distortion).

        A single frame is returned as is; no frames give the shared silence.
        """
        if not frames:
            return silence()
        if len(frames) == 1:
            return frames[0]
        acc = np.sum(np.stack(frames).astype(np.int32), axis=0)
        mixed: np.ndarray = np.clip(acc, -32768, 32767).astype(np.int16)
        return mixed

    @staticmethod
    def mix_minus(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """For each participant, the mix of everyone else (no echo of own voice)."""
        if not frames:
            return []
        stacked = np.stack(frames).astype(np.int32)
        total = stacked.sum(axis=0)
        return list(np.clip(total - stacked, -32768, 32767).astype(np.int16))
