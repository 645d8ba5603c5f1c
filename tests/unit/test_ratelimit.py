"""Per-source SIP limits with an explicit clock: token bucket refill, failure lockout."""

from __future__ import annotations

import pytest

from gateway.sip.ratelimit import FailureLockout, TokenBucket


# ---- token bucket -----------------------------------------------------------------------
def test_burst_then_refuse() -> None:
    bucket = TokenBucket(rate=2.0, burst=3)
    assert [bucket.allow("1.2.3.4", now=10.0) for _ in range(4)] == [True, True, True, False]


def test_refill_at_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3)
    for _ in range(3):
        assert bucket.allow("ip", now=10.0)
    assert not bucket.allow("ip", now=10.0)
    assert not bucket.allow("ip", now=10.4)  # 0.8 token
    assert bucket.allow("ip", now=10.5)  # 0.8 + 0.2 = 1.0 token
    assert not bucket.allow("ip", now=10.5)
    assert bucket.allow("ip", now=11.0)  # one more after half a second at 2/s


def test_refill_is_capped_at_the_burst() -> None:
    bucket = TokenBucket(rate=100.0, burst=2)
    assert bucket.allow("ip", now=0.0)
    # a long quiet period does not bank more than `burst` tokens
    assert [bucket.allow("ip", now=1000.0) for _ in range(3)] == [True, True, False]


def test_refused_requests_do_not_buy_tokens() -> None:
    bucket = TokenBucket(rate=1.0, burst=1)
    assert bucket.allow("ip", now=0.0)
    for t in (0.1, 0.2, 0.3, 0.4):
        assert not bucket.allow("ip", now=t)
    assert not bucket.allow("ip", now=0.9)
    assert bucket.allow("ip", now=1.0)


def test_keys_are_independent() -> None:
    bucket = TokenBucket(rate=1.0, burst=1)
    assert bucket.allow("a", now=5.0)
    assert not bucket.allow("a", now=5.0)
    assert bucket.allow("b", now=5.0)


def test_key_table_is_bounded() -> None:
    bucket = TokenBucket(rate=1.0, burst=1, max_keys=10)
    for i in range(25):
        bucket.allow(f"10.0.0.{i}", now=0.0)
        assert len(bucket._state) <= 10


def test_uses_the_monotonic_clock_by_default() -> None:
    bucket = TokenBucket(rate=0.001, burst=1)
    assert bucket.allow("ip")
    assert not bucket.allow("ip")


# ---- failure lockout --------------------------------------------------------------------
def test_lock_after_limit_failures_in_window() -> None:
    lockout = FailureLockout(limit=3, window_s=60, lock_s=300)
    assert lockout.failed("ip", now=100.0) is False
    assert lockout.failed("ip", now=110.0) is False
    assert not lockout.locked("ip", now=111.0)
    assert lockout.failed("ip", now=120.0) is True  # third failure locks
    assert lockout.locked("ip", now=121.0)
    assert not lockout.locked("other", now=121.0)


def test_failures_outside_the_window_do_not_count() -> None:
    lockout = FailureLockout(limit=3, window_s=60, lock_s=300)
    lockout.failed("ip", now=0.0)
    lockout.failed("ip", now=10.0)
    assert lockout.failed("ip", now=65.0) is False  # the one at 0 has aged out
    assert not lockout.locked("ip", now=65.0)
    assert lockout.failed("ip", now=69.0) is True  # 10, 65, 69 are within 60 s


def test_lock_expires() -> None:
    lockout = FailureLockout(limit=2, window_s=60, lock_s=300)
    lockout.failed("ip", now=0.0)
    lockout.failed("ip", now=1.0)
    assert lockout.locked("ip", now=300.9)
    assert not lockout.locked("ip", now=301.0)
    assert not lockout.locked("ip", now=302.0)
    # the count started over: one more failure does not lock again
    assert lockout.failed("ip", now=302.0) is False


def test_success_clears_the_failures() -> None:
    lockout = FailureLockout(limit=3, window_s=60, lock_s=300)
    lockout.failed("ip", now=0.0)
    lockout.failed("ip", now=1.0)
    lockout.succeeded("ip")
    assert lockout.failed("ip", now=2.0) is False
    assert lockout.failed("ip", now=3.0) is False
    assert lockout.failed("ip", now=4.0) is True
    lockout.succeeded("never-failed")  # harmless


@pytest.mark.parametrize("limit", [1, 5])
def test_limit(limit: int) -> None:
    lockout = FailureLockout(limit=limit, window_s=60, lock_s=10)
    results = [lockout.failed("ip", now=float(i)) for i in range(limit)]
    assert results == [False] * (limit - 1) + [True]


def test_repeated_locks_back_off_up_to_the_maximum() -> None:
    lockout = FailureLockout(limit=2, window_s=60, lock_s=10, max_lock_s=35)
    now, locks = 0.0, []
    for _ in range(4):
        lockout.failed("k", now=now)
        assert lockout.failed("k", now=now) is True
        locks.append(lockout.retry_after("k", now=now))
        now += locks[-1]  # fails again as soon as the lock ends
        assert not lockout.locked("k", now=now)
    assert locks == [10, 20, 35, 35]


def test_a_quiet_key_is_forgiven_and_starts_from_the_first_lock() -> None:
    lockout = FailureLockout(limit=1, window_s=60, lock_s=10, max_lock_s=40)
    lockout.failed("k", now=0.0)
    lockout.failed("k", now=10.0)
    assert lockout.retry_after("k", now=10.0) == 20
    lockout.failed("k", now=30.0 + 41)  # quiet for longer than the longest lock
    assert lockout.retry_after("k", now=71.0) == 10


def test_failure_table_is_bounded_and_keeps_locks() -> None:
    lockout = FailureLockout(limit=2, window_s=60, lock_s=100, max_keys=10)
    lockout.failed("locked", now=0.0)
    lockout.failed("locked", now=0.0)
    for i in range(1000):
        lockout.failed(f"spray-{i}", now=1.0)
    assert len(lockout._failures) <= 10
    assert lockout.locked("locked", now=2.0)
    for i in range(20):  # locks that ended are forgotten too
        lockout.failed(f"brief-{i}", now=3.0)
        lockout.failed(f"brief-{i}", now=3.0)
    for i in range(30):
        lockout.failed(f"later-{i}", now=500.0)
    assert not [k for k in lockout._locked_until if k.startswith("brief-")]
