"""Rate limits for SIP: a token bucket for requests, a lockout with back-off for failed auth.

Registration floods and password guessing are the common attacks on an exposed SIP port;
both are answered cheaply (503/403) before any digest work is done. The keys are the
caller's choice (a source address, an extension, both): the registrar keys its lockouts so
that one guessing phone does not lock out the others behind the same address.
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
    """Locks a key out after `limit` failures within `window_s`, with a back-off: the first
    lock lasts `lock_s`, each further lock of the same key (while it keeps failing) twice the
    one before, up to `max_lock_s`; a key that stays quiet for `max_lock_s` after its lock ends
    (or succeeds) starts again from `lock_s`. The key tables are bounded (`max_keys`)."""

    def __init__(
        self,
        limit: int = 10,
        window_s: float = 60.0,
        lock_s: float = 300.0,
        max_lock_s: float | None = None,
        max_keys: int = 100_000,
    ) -> None:
        self.limit, self.window_s, self.lock_s = limit, window_s, lock_s
        self.max_lock_s = lock_s if max_lock_s is None else max(lock_s, max_lock_s)
        self.max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}
        self._locked_until: dict[str, float] = {}
        self._strikes: dict[str, tuple[int, float]] = {}  # key -> (locks so far, last lock end)

    def locked(self, key: str, now: float | None = None) -> bool:
        return self.retry_after(key, now) > 0

    def retry_after(self, key: str, now: float | None = None) -> float:
        """Seconds until `key` may try again; 0 when it is not locked."""
        now = time.monotonic() if now is None else now
        until = self._locked_until.get(key)
        if until is None:
            return 0.0
        if now >= until:
            del self._locked_until[key]
            return 0.0
        return until - now

    def failed(self, key: str, now: float | None = None) -> bool:
        """Record a failure; True if this failure locked the key."""
        now = time.monotonic() if now is None else now
        if key not in self._failures and len(self._failures) >= self.max_keys:
            self._forget_idle(now)
        recent = self._failures.setdefault(key, deque())
        recent.append(now)
        while recent and recent[0] < now - self.window_s:
            recent.popleft()
        if len(recent) >= self.limit:
            strikes, last_end = self._strikes.get(key, (0, now))
            if now - last_end > self.max_lock_s:
                strikes = 0  # quiet long enough: forgiven
            lock = min(self.max_lock_s, self.lock_s * 2**strikes)
            self._locked_until[key] = now + lock
            self._strikes[key] = (strikes + 1, now + lock)
            recent.clear()
            return True
        return False

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)
        self._strikes.pop(key, None)

    def _forget_idle(self, now: float) -> None:
        """Drop keys with no recent failure and no lock, then (under a spray of keys) the
        oldest half, so memory stays bounded; locks in force are kept."""
        horizon = now - self.window_s
        for key in [k for k, v in self._failures.items() if not v or v[-1] < horizon]:
            del self._failures[key]
        for key in [k for k, until in self._locked_until.items() if until <= now]:
            del self._locked_until[key]
        for key in [k for k, (_, end) in self._strikes.items() if now - end > self.max_lock_s]:
            del self._strikes[key]
        if len(self._failures) >= self.max_keys:
            for key in list(self._failures)[: len(self._failures) // 2]:
                del self._failures[key]
