"""Per-source rate limits for SIP: a token bucket for requests, a lockout for failed auth.

Registration floods and password guessing are the common attacks on an exposed SIP port;
both are answered cheaply (503/403) before any digest work is done.
"""

from __future__ import annotations

import time
from collections import deque

__all__ = ["FailureLockout", "TokenBucket"]


class TokenBucket:
    """`rate` requests per second per key with bursts up to `burst`; bounded key table."""

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._state: dict[str, tuple[float, float]] = {}

    def allow(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        tokens, last = self._state.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        if len(self._state) >= self.max_keys and key not in self._state:
            self._state.clear()  # under a spray of sources, start over rather than grow
        self._state[key] = (tokens, now)
        return allowed


class FailureLockout:
    """Locks a key out for `lock_s` after `limit` failures within `window_s`."""

    def __init__(self, limit: int = 10, window_s: float = 60.0, lock_s: float = 300.0) -> None:
        self.limit, self.window_s, self.lock_s = limit, window_s, lock_s
        self._failures: dict[str, deque[float]] = {}
        self._locked_until: dict[str, float] = {}

    def locked(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        until = self._locked_until.get(key)
        if until is None:
            return False
        if now >= until:
            del self._locked_until[key]
            return False
        return True

    def failed(self, key: str, now: float | None = None) -> bool:
        """Record a failure; True if this failure locked the key."""
        now = time.monotonic() if now is None else now
        recent = self._failures.setdefault(key, deque())
        recent.append(now)
        while recent and recent[0] < now - self.window_s:
            recent.popleft()
        if len(recent) >= self.limit:
            self._locked_until[key] = now + self.lock_s
            recent.clear()
            return True
        return False

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)
