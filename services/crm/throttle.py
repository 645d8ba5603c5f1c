"""Login limits: failed logins per username and client address and per username, attempts
per client address, and concurrent password hashes.

Counting per (username, address) stops password guessing against one account without letting
one noisy client lock a colleague out from another desk; counting per username too stops the
same guessing spread over many addresses (the account then waits a minute, whoever asks).
Attempts per address (`AddressLimiter`) are counted before any database or hashing work, and
`HashGate` caps the Argon2 hashes running at once, so a flood of logins for unknown users
can exhaust neither CPU nor memory. Memory only: a restart forgives, which costs an attacker
a restart of our service — acceptable for a LAN desktop.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
#: the key counting an account's failures from every address
_ANY = "*"


class LoginThrottle:
    """At most `limit` failures per `window_s` per (username, address), and `account_limit`
    per username from all addresses; then refuse until the oldest expires."""

    def __init__(
        self,
        limit: int = 5,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 50_000,
        account_limit: int = 10,
    ) -> None:
        self.limit = limit
        self.account_limit = account_limit
        self.window_s = window_s
        self._clock = clock
        self._max_keys = max_keys
        self._failures: dict[tuple[str, str], deque[float]] = {}

    def retry_after(self, username: str, address: str) -> int:
        """Seconds until this username may be tried from this address; 0 when now."""
        return max(
            self._wait((username.lower(), address), self.limit),
            self._wait((username.lower(), _ANY), self.account_limit),
        )

    def _wait(self, key: tuple[str, str], limit: int) -> int:
        if key not in self._failures:
            return 0
        stamps = self._fresh(key)
        if len(stamps) < limit:
            return 0
        return max(1, math.ceil(stamps[-limit] + self.window_s - self._clock()))

    def failed(self, username: str, address: str) -> None:
        for key in ((username.lower(), address), (username.lower(), _ANY)):
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


class AddressLimiter:
    """At most `per_minute` login attempts per client address, whatever the username, as a
    token bucket (bursts up to `per_minute`); checked before any database or password work,
    so a flood of logins for unknown users costs a dictionary lookup each."""

    def __init__(
        self,
        per_minute: int = 30,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 50_000,
    ) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.rate, self.burst = per_minute / 60.0, float(per_minute)
        self._clock, self._max_keys = clock, max_keys
        self._state: dict[str, tuple[float, float]] = {}

    def take(self, address: str) -> int:
        """Spend one attempt; 0 when allowed, else the seconds until the next is."""
        now = self._clock()
        tokens, last = self._state.get(address, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if address not in self._state and len(self._state) >= self._max_keys:
            full = [k for k, (t, at) in self._state.items() if t + (now - at) * self.rate >= 1]
            for key in full or list(self._state)[: self._max_keys // 2]:
                del self._state[key]
        if tokens >= 1.0:
            self._state[address] = (tokens - 1.0, now)
            return 0
        self._state[address] = (tokens, now)
        return max(1, math.ceil((1.0 - tokens) / self.rate))


class HashesBusy(Exception):
    """Too many logins are waiting for a password check; the client should retry."""


class HashGate:
    """At most `concurrent` password hashes at once (Argon2id costs CPU and memory on
    purpose), and at most `max_waiting` logins queued for one; beyond that, HashesBusy."""

    def __init__(self, concurrent: int = 2, max_waiting: int = 32) -> None:
        if concurrent < 1:
            raise ValueError("concurrent must be at least 1")
        self.concurrent, self.max_waiting = concurrent, max_waiting
        self._slots = asyncio.Semaphore(concurrent)
        self.waiting = 0
        self.running = 0
        self.peak = 0

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in a worker thread once a slot is free."""
        if self._slots.locked() and self.waiting >= self.max_waiting:
            raise HashesBusy(f"{self.waiting} logins are waiting for a password check")
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        try:
            self.running += 1
            self.peak = max(self.peak, self.running)
            return await asyncio.to_thread(fn, *args)
        finally:
            self.running -= 1
            self._slots.release()
