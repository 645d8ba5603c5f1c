"""Failed-login throttling: 5 per minute per username and address, then Retry-After."""

from __future__ import annotations

from crm.throttle import LoginThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sixth_failure_within_a_minute_is_refused_until_the_first_expires() -> None:
    clock = Clock()
    throttle = LoginThrottle(limit=5, window_s=60, clock=clock)
    for _ in range(5):
        assert throttle.retry_after("agent1", "10.0.0.1") == 0
        throttle.failed("agent1", "10.0.0.1")
        clock.now += 5
    assert throttle.retry_after("agent1", "10.0.0.1") == 35
    assert throttle.retry_after("AGENT1", "10.0.0.1") == 35  # same account
    assert throttle.retry_after("agent1", "10.0.0.2") == 0  # a colleague's desk
    assert throttle.retry_after("agent2", "10.0.0.1") == 0  # another account
    clock.now += 35
    assert throttle.retry_after("agent1", "10.0.0.1") == 0


def test_success_forgives() -> None:
    throttle = LoginThrottle(limit=2, window_s=60, clock=Clock())
    throttle.failed("admin", "a")
    throttle.succeeded("admin", "a")
    throttle.failed("admin", "a")
    assert throttle.retry_after("admin", "a") == 0


def test_memory_is_bounded() -> None:
    clock = Clock()
    throttle = LoginThrottle(limit=5, window_s=60, clock=clock, max_keys=10)
    for n in range(10):
        throttle.failed(f"user{n}", "x")
    clock.now += 61
    throttle.failed("newcomer", "x")
    assert len(throttle._failures) == 2  # newcomer from x, and newcomer from anywhere


def test_one_account_is_limited_across_addresses() -> None:
    clock = Clock()
    throttle = LoginThrottle(limit=5, window_s=60, clock=clock, account_limit=10)
    for n in range(10):
        assert throttle.retry_after("agent5", f"10.0.0.{n}") == 0
        throttle.failed("agent5", f"10.0.0.{n}")
    assert throttle.retry_after("agent5", "10.0.0.99") == 60
    assert throttle.retry_after("agent6", "10.0.0.1") == 0
    clock.now += 60
    assert throttle.retry_after("agent5", "10.0.0.99") == 0
