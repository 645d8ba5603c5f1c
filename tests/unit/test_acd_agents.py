"""The agent state machine: legal and illegal transitions, login rules, who is ready."""

from __future__ import annotations

import itertools

import pytest

from acd.agents import (
    LOGGED_OUT,
    NOT_READY,
    ON_CALL,
    READY,
    REQUESTABLE,
    RINGING,
    TRANSITIONS,
    WRAP_UP,
    AgentBook,
    InvalidTransition,
    UnknownAgent,
    state_name,
)
from hotline.v1.events_pb2 import AgentState

ALL_STATES = [LOGGED_OUT, READY, NOT_READY, RINGING, ON_CALL, WRAP_UP]
LEGAL = [(old, new) for old in ALL_STATES for new in sorted(TRANSITIONS[old])]
ILLEGAL = [
    (old, new)
    for old, new in itertools.product(ALL_STATES, ALL_STATES)
    if new not in TRANSITIONS[old]
]


def book_with(
    agent_id: str = "a1",
    state: int = NOT_READY,
    queues: frozenset[str] = frozenset(),
    skills: frozenset[str] = frozenset(),
    book: AgentBook | None = None,
):
    """A book holding one agent forced into `state` (bypassing the machine for set-up)."""
    book = book or AgentBook()
    agent, _ = book.login(agent_id, f"ext-{agent_id}", queues, skills)
    agent.state = state
    return book, agent


# ---- the table --------------------------------------------------------------------------
def test_every_real_state_has_a_row_and_unspecified_has_none() -> None:
    assert set(TRANSITIONS) == set(ALL_STATES)
    assert AgentState.AGENT_STATE_UNSPECIFIED not in TRANSITIONS
    for targets in TRANSITIONS.values():
        assert AgentState.AGENT_STATE_UNSPECIFIED not in targets
        assert targets <= set(ALL_STATES)


def test_key_safety_rules_of_the_table() -> None:
    # an agent on a call can only go to wrap-up: never offered a second call, never logged out
    assert TRANSITIONS[ON_CALL] == frozenset({WRAP_UP})
    # only a ready agent can be rung
    assert [s for s in ALL_STATES if RINGING in TRANSITIONS[s]] == [READY]
    # a logged-out agent can never be rung or put on a call
    assert RINGING not in TRANSITIONS[LOGGED_OUT] and ON_CALL not in TRANSITIONS[LOGGED_OUT]
    assert REQUESTABLE == {READY, NOT_READY}


def test_state_name() -> None:
    assert state_name(READY) == "ready"
    assert state_name(NOT_READY) == "not_ready"
    assert state_name(WRAP_UP) == "wrap_up"
    assert state_name(LOGGED_OUT) == "logged_out"


@pytest.mark.parametrize(
    ("old", "new"), LEGAL, ids=[f"{state_name(o)}->{state_name(n)}" for o, n in LEGAL]
)
def test_legal_transitions_are_accepted(old: int, new: int) -> None:
    book, agent = book_with(state=old)
    previous = book.transition(agent, new, "why", "call-9")
    assert previous == old
    assert agent.state == new
    assert agent.reason == "why"


@pytest.mark.parametrize(
    ("old", "new"), ILLEGAL, ids=[f"{state_name(o)}->{state_name(n)}" for o, n in ILLEGAL]
)
def test_illegal_transitions_are_refused_naming_both_states(old: int, new: int) -> None:
    book, agent = book_with(state=old)
    agent.reason, agent.call_id = "before", "call-1"
    since = agent.since
    with pytest.raises(InvalidTransition) as info:
        book.transition(agent, new, "why")
    assert str(info.value) == (
        f"agent {agent.agent_id} cannot go from {state_name(old)} to {state_name(new)}"
    )
    # nothing changed
    assert (agent.state, agent.reason, agent.call_id, agent.since) == (
        old,
        "before",
        "call-1",
        since,
    )


def test_call_id_is_kept_only_while_the_call_concerns_the_agent() -> None:
    book, agent = book_with(state=READY)
    book.transition(agent, RINGING, "offered", "c1")
    assert agent.call_id == "c1"
    book.transition(agent, ON_CALL, "answered", "c1")
    assert agent.call_id == "c1"
    book.transition(agent, WRAP_UP, "call ended", "c1")
    assert agent.call_id == "c1"
    book.transition(agent, READY, "wrap-up timer", "c1")
    assert agent.call_id == ""


def test_since_moves_on_each_transition() -> None:
    book, agent = book_with(state=NOT_READY)
    before = agent.since
    book.transition(agent, READY)
    assert agent.since >= before
    assert agent.since_wall > 0


# ---- idle time (what longest-idle routing relies on) ------------------------------------
def test_becoming_ready_after_work_restarts_idle_time() -> None:
    book, agent = book_with(state=WRAP_UP)
    agent.idle_since = 1.0
    book.transition(agent, READY)
    assert agent.idle_since == agent.since > 1.0


def test_becoming_ready_from_not_ready_restarts_idle_time() -> None:
    book, agent = book_with(state=NOT_READY)
    agent.idle_since = 1.0
    book.transition(agent, READY)
    assert agent.idle_since > 1.0


def test_back_to_ready_after_an_unanswered_ring_keeps_the_place_in_line() -> None:
    """Caller gone while ringing: the agent did no work, so they stay the longest idle."""
    book, agent = book_with(state=READY)
    agent.idle_since = 1.0
    book.transition(agent, RINGING, "offered", "c1")
    book.transition(agent, READY, "caller gone")
    assert agent.idle_since == 1.0


# ---- login ------------------------------------------------------------------------------
def test_login_of_a_new_agent_lands_in_not_ready() -> None:
    book = AgentBook()
    agent, previous = book.login("a1", "8001", frozenset({"sales"}), frozenset({"en"}))
    assert previous == LOGGED_OUT
    assert agent.state == NOT_READY
    assert agent.reason == "login"
    assert (agent.extension, agent.queues, agent.skills) == ("8001", {"sales"}, {"en"})
    assert book.get("a1") is agent


def test_login_again_updates_the_agent_without_changing_state() -> None:
    book = AgentBook()
    agent, _ = book.login("a1", "8001", frozenset({"sales"}), frozenset())
    book.transition(agent, READY)
    again, previous = book.login("a1", "8009", frozenset({"support"}), frozenset({"fr"}))
    assert again is agent
    assert previous == READY and agent.state == READY
    assert (agent.extension, agent.queues, agent.skills) == ("8009", {"support"}, {"fr"})


def test_login_after_logout_goes_back_to_not_ready() -> None:
    book = AgentBook()
    agent, _ = book.login("a1", "8001", frozenset(), frozenset())
    book.transition(agent, LOGGED_OUT, "logout")
    again, previous = book.login("a1", "8001", frozenset(), frozenset())
    assert again is agent and previous == LOGGED_OUT and agent.state == NOT_READY


@pytest.mark.parametrize("state", [RINGING, ON_CALL])
def test_login_during_a_call_is_refused(state: int) -> None:
    book, agent = book_with(state=state, queues=frozenset({"sales"}))
    with pytest.raises(InvalidTransition, match=rf"is {state_name(state)}; cannot log in again"):
        book.login(agent.agent_id, "8999", frozenset({"support"}), frozenset())
    # the refused login did not touch the agent
    assert agent.state == state and agent.extension != "8999" and agent.queues == {"sales"}


def test_get_unknown_agent() -> None:
    book = AgentBook()
    with pytest.raises(UnknownAgent, match="'ghost' is not logged in"):
        book.get("ghost")
    assert issubclass(UnknownAgent, KeyError)


# ---- who can take a call ----------------------------------------------------------------
def test_ready_for_filters_by_state_and_queue() -> None:
    book = AgentBook()
    _, sales = book_with("s1", READY, queues=frozenset({"sales"}), book=book)
    _, both = book_with("b1", READY, queues=frozenset({"sales", "support"}), book=book)
    _, anyq = book_with("n1", READY, book=book)  # no queue list: serves every queue
    _, busy = book_with("s2", ON_CALL, queues=frozenset({"sales"}), book=book)
    _, away = book_with("s3", NOT_READY, queues=frozenset({"sales"}), book=book)
    _, ringing = book_with("s4", RINGING, queues=frozenset({"sales"}), book=book)
    assert {a.agent_id for a in book.ready_for("sales")} == {"s1", "b1", "n1"}
    assert {a.agent_id for a in book.ready_for("support")} == {"b1", "n1"}
    assert {a.agent_id for a in book.ready_for("billing")} == {"n1"}
    assert sales.serves("sales") and not sales.serves("support") and anyq.serves("anything")
    assert busy not in book.ready_for("sales") and away not in book.ready_for("sales")
    assert ringing not in book.ready_for("sales") and both in book.ready_for("support")


def test_count_by_state_lists_every_state() -> None:
    book = AgentBook()
    assert book.count_by_state() == {
        "logged_out": 0,
        "ready": 0,
        "not_ready": 0,
        "ringing": 0,
        "on_call": 0,
        "wrap_up": 0,
    }
    book_with("a1", READY, book=book)
    book_with("a2", READY, book=book)
    book_with("a3", ON_CALL, book=book)
    book_with("a4", NOT_READY, book=book)
    counts = book.count_by_state()
    assert counts == {
        "logged_out": 0,
        "ready": 2,
        "not_ready": 1,
        "ringing": 0,
        "on_call": 1,
        "wrap_up": 0,
    }
    assert sum(counts.values()) == len(book.agents)
