"""A mixed room: any number of legs (and sources such as hold music), each hearing the parties
the call's logic says it hears - a conference, a held caller with music, a supervisor who
listens or whispers, a muted agent, a consult beside a held caller.

Like the two-party :class:`~gateway.media.bridge.Bridge` it is paced by the shared frame clock:
each tick takes at most one frame per leg out of a small jitter buffer (or the next frame of a
source), mixes with :func:`~gateway.media.mixer.mix_for`, and sends each leg its mix. A leg that
hears nobody who spoke this tick lets the frame's time elapse instead (no RTP). The recording
tap sees one frame pair per tick: the recorded party's own audio and what that party hears.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .audio import silence
from .bridge import BridgeSide, Tap, _JitterBuffer
from .clock import FrameClock, SubscriptionHandle
from .mixer import Hearing, full_room, mix_for

__all__ = ["FrameSource", "Room"]

log = logging.getLogger(__name__)
FRAME = 160


class FrameSource(Protocol):
    """Audio made by the gateway itself (a looping prompt: hold music)."""

    def next_frame(self) -> np.ndarray | None: ...


@dataclass(eq=False)
class _Member:
    key: str
    side: BridgeSide | None
    source: FrameSource | None
    buffer: _JitterBuffer
    previous: Callable[[np.ndarray], None] | None = None


class Room:
    """Legs and sources by key; :meth:`hear` says who hears whom (unknown keys are ignored,
    a member nobody mentions hears nothing)."""

    def __init__(self, tap: Tap | None = None, tap_key: str = "", *, depth: int = 3) -> None:
        self.tap, self.tap_key, self.depth = tap, tap_key, depth
        self.members: dict[str, _Member] = {}
        self.hearing: dict[str, frozenset[str]] = {}
        self.ticks = 0
        self.tap_errors = 0
        self._clock: FrameClock | None = None
        self._handle: SubscriptionHandle | None = None
        self._matrix: Hearing = np.zeros((0, 0), dtype=np.bool_)
        self._full = False
        self._order: list[_Member] = []
        self._frames = np.zeros((0, FRAME), dtype=np.int16)

    @property
    def running(self) -> bool:
        return self._handle is not None

    def __len__(self) -> int:
        return len(self.members)

    def join(self, key: str, side: BridgeSide) -> None:
        """A leg joins: from now on its audio comes to the room."""
        if key in self.members:
            raise ValueError(f"{key} is already in the room")
        member = _Member(key, side, None, _JitterBuffer(self.depth))
        self.members[key] = member
        if self.running:
            self._attach(member)
        self._rebuild()

    def add_source(self, key: str, source: FrameSource) -> None:
        if key in self.members:
            raise ValueError(f"{key} is already in the room")
        self.members[key] = _Member(key, None, source, _JitterBuffer(1))
        self._rebuild()

    def leave(self, key: str) -> None:
        """A leg or source leaves; its audio callback is handed back. Unknown keys: no-op."""
        member = self.members.pop(key, None)
        if member is None:
            return
        if self.running:
            self._detach(member)
        self._rebuild()

    def hear(self, hearing: Mapping[str, Collection[str]]) -> None:
        """Who hears whom: ``hearing[listener]`` is the set of keys the listener hears."""
        self.hearing = {k: frozenset(v) - {k} for k, v in hearing.items()}
        self._rebuild()

    def _rebuild(self) -> None:
        order = list(self.members.values())
        index = {m.key: i for i, m in enumerate(order)}
        n = len(order)
        matrix = np.zeros((n, n), dtype=np.bool_)
        for listener, heard in self.hearing.items():
            i = index.get(listener)
            if i is None:
                continue
            for key in heard:
                j = index.get(key)
                if j is not None:
                    matrix[i, j] = True
        self._order, self._matrix = order, matrix
        self._full = n > 1 and bool(np.array_equal(matrix, full_room(n)))
        self._frames = np.zeros((n, FRAME), dtype=np.int16)

    def _attach(self, member: _Member) -> None:
        side = member.side
        if side is not None:
            member.previous = side.on_audio
            side.on_audio = member.buffer.push

    def _detach(self, member: _Member) -> None:
        side = member.side
        if side is not None and side.on_audio == member.buffer.push:
            side.on_audio = member.previous
        member.buffer.frames.clear()

    def start(self, clock: FrameClock) -> None:
        if self._handle is not None:
            raise RuntimeError("room already started")
        for member in self.members.values():
            self._attach(member)
        self._clock = clock
        self._handle = clock.subscribe(self.tick)

    def stop(self) -> None:
        """Stop mixing and hand every leg's audio callback back; idempotent."""
        if self._handle is None:
            return
        assert self._clock is not None
        self._clock.unsubscribe(self._handle)
        self._handle, self._clock = None, None
        for member in self.members.values():
            self._detach(member)

    def tick(self) -> None:
        """One 20 ms step: take a frame from each member, mix, send each leg its mix."""
        order, frames = self._order, self._frames
        spoke = np.zeros(len(order), dtype=np.bool_)
        for i, member in enumerate(order):
            frame = member.source.next_frame() if member.source is not None else member.buffer.pop()
            if frame is None:
                frames[i] = 0
            else:
                frames[i] = frame
                spoke[i] = True
        mixed = mix_for(frames, self._matrix, full=self._full)
        heard_any = np.asarray(np.logical_and(self._matrix, spoke).any(axis=1))
        for i, member in enumerate(order):
            side = member.side
            if side is None:
                continue
            if heard_any[i]:
                side.send_audio(mixed[i])
            else:
                side.skip()
        self.ticks += 1
        tap = self.tap
        if tap is not None:
            self._tap(tap, order, frames, mixed, spoke)

    def _tap(
        self,
        tap: Tap,
        order: list[_Member],
        frames: np.ndarray,
        mixed: np.ndarray,
        spoke: np.ndarray,
    ) -> None:
        quiet = silence()
        i = next((n for n, m in enumerate(order) if m.key == self.tap_key), None)
        try:
            if i is None:
                tap(quiet, quiet)
            else:
                left = frames[i].copy() if spoke[i] else quiet
                tap(left, mixed[i].copy())
        except Exception:  # a failing recorder must not cut the conversation
            self.tap_errors += 1
            log.exception("room tap %r failed", tap)
