"""Queues (priority, then first come first served) and the longest-idle routing strategy."""

from __future__ import annotations

import pytest

from acd.agents import READY, Agent
from acd.queues import CallQueue, WaitingCall
from acd.routing.strategies import STRATEGIES, longest_idle


def call(
    call_id: str, priority: int = 0, skills: frozenset[str] = frozenset(), enqueued: float = 100.0
) -> WaitingCall:
    return WaitingCall(call_id, "sales", priority, "5551000", "10000", skills, enqueued=enqueued)


def agent(agent_id: str, idle_since: float, skills: frozenset[str] = frozenset()) -> Agent:
    return Agent(agent_id, f"ext-{agent_id}", skills=skills, state=READY, idle_since=idle_since)


def order(queue: CallQueue) -> list[str]:
    return [c.call_id for c in queue.calls]


# ---- queues -----------------------------------------------------------------------------
def test_same_priority_is_first_come_first_served() -> None:
    q = CallQueue("sales")
    assert [q.add(call(f"c{i}")) for i in range(1, 5)] == [1, 2, 3, 4]
    assert order(q) == ["c1", "c2", "c3", "c4"]
    assert len(q) == 4


def test_higher_priority_goes_ahead_of_lower() -> None:
    q = CallQueue("sales")
    q.add(call("c1"))
    q.add(call("c2"))
    assert q.add(call("vip", priority=5)) == 1
    assert order(q) == ["vip", "c1", "c2"]


def test_within_a_priority_a_newcomer_goes_behind_its_peers() -> None:
    q = CallQueue("sales")
    q.add(call("low1", 0))
    q.add(call("vip1", 5))
    q.add(call("mid1", 3))
    assert q.add(call("vip2", 5)) == 2  # behind vip1, ahead of everyone lower
    assert q.add(call("mid2", 3)) == 4  # behind mid1
    assert q.add(call("low2", 0)) == 6
    assert q.add(call("neg", -1)) == 7
    assert order(q) == ["vip1", "vip2", "mid1", "mid2", "low1", "low2", "neg"]


def test_remove_returns_the_call_and_closes_the_gap() -> None:
    q = CallQueue("sales")
    for cid in ("c1", "c2", "c3"):
        q.add(call(cid))
    removed = q.remove("c2")
    assert removed is not None and removed.call_id == "c2"
    assert order(q) == ["c1", "c3"]
    assert q.remove("c2") is None
    assert q.remove("nope") is None
    assert q.add(call("c4")) == 3


def test_next_unoffered_skips_calls_being_offered() -> None:
    q = CallQueue("sales")
    assert q.next_unoffered() is None
    c1, c2 = call("c1"), call("c2")
    q.add(c1)
    q.add(c2)
    assert q.next_unoffered() is c1
    c1.offering = True
    assert q.next_unoffered() is c2
    c2.offering = True
    assert q.next_unoffered() is None
    c1.offering = False
    assert q.next_unoffered() is c1


def test_waits() -> None:
    q = CallQueue("sales")
    assert q.oldest_wait(500.0) == 0.0
    q.add(call("late", priority=9, enqueued=130.0))
    q.add(call("early", enqueued=100.0))
    # the oldest wait is the longest-waiting call's, whatever its position
    assert q.oldest_wait(150.0) == pytest.approx(50.0)
    assert q.calls[0].waited(150.0) == pytest.approx(20.0)


def test_waited_defaults_to_now() -> None:
    c = WaitingCall("c1", "sales", 0, "", "")
    assert 0.0 <= c.waited() < 1.0
    assert c.attempts == 0 and c.offering is False and c.data == {}


# ---- longest idle -----------------------------------------------------------------------
def test_longest_idle_picks_the_agent_idle_the_longest() -> None:
    a, b, c = agent("a", 30.0), agent("b", 10.0), agent("c", 20.0)
    assert longest_idle(call("x"), [a, b, c]).agent_id == "b"
    assert longest_idle(call("x"), [a, c]).agent_id == "c"
    assert longest_idle(call("x"), [c, b, a]).agent_id == "b"  # not input order


def test_longest_idle_with_no_candidates() -> None:
    assert longest_idle(call("x"), []) is None


def test_skills_must_all_match() -> None:
    en = agent("en", 1.0, frozenset({"en"}))
    en_fr = agent("en_fr", 5.0, frozenset({"en", "fr"}))
    fr_vip = agent("fr_vip", 2.0, frozenset({"fr", "vip"}))
    everyone = [en, en_fr, fr_vip]
    assert longest_idle(call("x", skills=frozenset({"fr"})), everyone) is fr_vip
    assert longest_idle(call("x", skills=frozenset({"en", "fr"})), everyone) is en_fr
    assert longest_idle(call("x", skills=frozenset({"fr", "vip"})), everyone) is fr_vip
    assert longest_idle(call("x", skills=frozenset({"de"})), everyone) is None
    # a call without skills can go to anyone: the longest idle wins
    assert longest_idle(call("x"), everyone) is en


def test_strategy_registry() -> None:
    assert STRATEGIES["longest_idle"] is longest_idle
