"""Queues of waiting calls: priority first (VIP tiers), then first come first served."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class WaitingCall:
    call_id: str
    queue: str
    priority: int
    ani: str
    dnis: str
    skills: frozenset[str] = frozenset()
    data: dict[str, str] = field(default_factory=dict)
    enqueued: float = field(default_factory=time.monotonic)
    attempts: int = 0
    offering: bool = False  # an agent is being rung for it right now
    failures: int = 0  # offers in a row the gateway could not make
    retry_at: float = 0.0  # monotonic time before which it is not offered again
    trace: dict[str, str] = field(default_factory=dict)  # W3C context of the call's trace

    def waited(self, now: float | None = None) -> float:
        return (now if now is not None else time.monotonic()) - self.enqueued


class CallQueue:
    """One queue's waiting calls, kept in service order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[WaitingCall] = []

    def add(self, call: WaitingCall) -> int:
        """Insert by priority (higher first), FIFO within a priority; returns 1-based position."""
        index = len(self.calls)
        for i, other in enumerate(self.calls):
            if call.priority > other.priority:
                index = i
                break
        self.calls.insert(index, call)
        return index + 1

    def remove(self, call_id: str) -> WaitingCall | None:
        for i, call in enumerate(self.calls):
            if call.call_id == call_id:
                return self.calls.pop(i)
        return None

    def next_unoffered(self, now: float | None = None) -> WaitingCall | None:
        """The first call no agent is being rung for and not held back until later."""
        now = time.monotonic() if now is None else now
        return next((c for c in self.calls if not c.offering and c.retry_at <= now), None)

    def oldest_wait(self, now: float) -> float:
        return max((c.waited(now) for c in self.calls), default=0.0)

    def __len__(self) -> int:
        return len(self.calls)
