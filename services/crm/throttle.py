"""Failed-login throttling per username and client address.

Counting per (username, address) stops password guessing against one account without letting
one noisy client lock a colleague out from another desk. Memory only: a restart forgives,
which costs an attacker a restart of our service — acceptable for a LAN desktop.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable


class LoginThrottle:
    """At most `limit` failures per `window_s` per key; then refuse until the oldest expires."""

    def __init__(
        self,
        limit: int = 5,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 50_000,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._max_keys = max_keys
        self._failures: dict[tuple[str, str], deque[float]] = {}

    def retry_after(self, username: str, address: str) -> int:
        """Seconds until this key may try again; 0 when it may try now."""
        key = (username.lower(), address)
        if key not in self._failures:
            return 0
        stamps = self._fresh(key)
        if len(stamps) < self.limit:
            return 0
        return max(1, math.ceil(stamps[0] + self.window_s - self._clock()))

    def failed(self, username: str, address: str) -> None:
        key = (username.lower(), address)
        if key not in self._failures and len(self._failures) >= self._max_keys:
            self._evict_stale()
        self._fresh(key).append(self._clock())

    def succeeded(self, username: str, address: str) -> None:
        self._failures.pop((username.lower(), address), None)

    def _fresh(self, key: tuple[str, str]) -> deque[float]:
        stamps = self._failures.setdefault(key, deque())
        horizon = self._clock() - self.window_s
        while stamps and stamps[0] <= horizon:
            stamps.popleft()
        return stamps

    def _evict_stale(self) -> None:
        horizon = self._clock() - self.window_s
        for key in [k for k, v in self._failures.items() if not v or v[-1] <= horizon]:
            del self._failures[key]
