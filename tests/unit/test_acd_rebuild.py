"""Rebuilding the ACD after a restart, as pure logic: `agents` and `queues` records and the
gateway's live calls in, agents, waiting calls and the restart's findings out."""

from __future__ import annotations

from google.protobuf.message import Message

from acd.agents import LOGGED_OUT, NOT_READY, ON_CALL, READY, RINGING, WRAP_UP
from acd.rebuild import LiveCall, fold_agents, fold_queues, plan
from common.events import Envelope, envelope
from hotline.v1 import events_pb2 as ev

NOW_MS = 1_800_000_000_000
NOW = 5000.0  # this process's monotonic clock at the rebuild
WRAP_UP_S = 10.0
QUEUES = ("sales", "support")


def env(payload: Message, key: str, at_ms: int = NOW_MS - 1000) -> Envelope:
    e = envelope(payload, key, "site", "acd")
    e.occurred_at.FromMilliseconds(at_ms)
    return e


def snapshot(agent_id: str, state: int, **kw: object) -> Envelope:
    fields: dict[str, object] = {
        "extension": "80" + agent_id[-2:],
        "queues": ["sales"],
        "since_ms": NOW_MS - 60_000,
        "idle_since_ms": NOW_MS - 120_000,
    }
    fields.update(kw)
    return env(ev.AgentStateChanged(agent_id=agent_id, state=state, **fields), agent_id)  # type: ignore[arg-type]


def queued(call_id: str, queue: str = "sales", priority: int = 0, at_ms: int = 0) -> Envelope:
    at_ms = at_ms or NOW_MS - 30_000
    return env(
        ev.CallQueued(
            call_id=call_id,
            queue=queue,
            priority=priority,
            ani="555" + call_id,
            dnis="10000",
            skills=["en"],
            data={"menu": "1"},
            enqueued_at_ms=at_ms,
        ),
        call_id,
        at_ms,
    )


def live(call_id: str, state: str = "answered", bridged_to: str = "") -> LiveCall:
    return LiveCall(call_id, state, bridged_to, NOW_MS - 40_000)


def rebuild(agents: list[Envelope], queues: list[Envelope], calls: list[LiveCall]):  # noqa: ANN201
    return plan(
        fold_agents(agents),
        fold_queues(queues),
        {c.call_id: c for c in calls},
        QUEUES,
        now_ms=NOW_MS,
        now_mono=NOW,
        wrap_up_s=WRAP_UP_S,
    )


# ---- folding the topics ------------------------------------------------------------------
def test_the_last_snapshot_per_agent_wins_and_other_records_are_ignored() -> None:
    agents = fold_agents(
        [
            snapshot("agent01", READY),
            snapshot("agent02", NOT_READY, reason="meal"),
            snapshot("agent01", NOT_READY, reason="training"),
            env(ev.CallQueued(call_id="c1", queue="sales"), "c1"),
        ]
    )
    assert {a: (s.state, s.reason) for a, s in agents.items()} == {
        "agent01": (NOT_READY, "training"),
        "agent02": (NOT_READY, "meal"),
    }


def test_a_call_waits_until_answered_or_abandoned_and_outcomes_are_kept() -> None:
    folded = fold_queues(
        [
            queued("c1"),
            queued("c2"),
            queued("c3"),
            env(ev.AgentOffered(call_id="c1", agent_id="agent01", attempt=1), "c1"),
            env(ev.AgentOffered(call_id="c1", agent_id="agent02", attempt=2), "c1"),
            env(
                ev.CallDequeued(
                    call_id="c2",
                    queue="sales",
                    reason=ev.DEQUEUE_REASON_ANSWERED,
                    agent_id="agent01",
                    waited_ms=4000,
                ),
                "c2",
            ),
            env(ev.CallAbandoned(call_id="c3", queue="sales", waited_ms=9000), "c3"),
        ]
    )
    assert list(folded.waiting) == ["c1"]
    assert folded.waiting["c1"].attempts == 2
    assert [(o.answered, o.waited_ms) for o in folded.outcomes] == [(True, 4000), (False, 9000)]


def test_a_restated_call_keeps_its_first_entry() -> None:
    first = queued("c1", at_ms=NOW_MS - 50_000)
    restated = queued("c1", at_ms=NOW_MS - 50_000)
    restated.call_queued.restated = True
    restated.call_queued.enqueued_at_ms = NOW_MS - 50_000
    folded = fold_queues([first, env(ev.AgentOffered(call_id="c1", attempt=3), "c1"), restated])
    assert folded.waiting["c1"].attempts == 3
    assert folded.waiting["c1"].enqueued_at_ms == NOW_MS - 50_000


def test_entry_time_falls_back_to_when_the_record_was_made() -> None:
    old = env(ev.CallQueued(call_id="c1", queue="sales"), "c1", NOW_MS - 7000)
    assert fold_queues([old]).waiting["c1"].enqueued_at_ms == NOW_MS - 7000


# ---- agents ------------------------------------------------------------------------------
def test_idle_and_not_ready_agents_keep_state_reason_and_everything_routing_needs() -> None:
    p = rebuild(
        [
            snapshot("agent01", READY, skills=["en", "fr"], queues=["sales", "support"]),
            snapshot("agent02", NOT_READY, reason="meal"),
            snapshot("agent03", LOGGED_OUT, reason="logout"),
        ],
        [],
        [],
    )
    by_id = {a.agent_id: a for a in p.agents}
    one, two = by_id["agent01"], by_id["agent02"]
    assert (one.state, one.extension) == (READY, "8001")
    assert one.skills == {"en", "fr"} and one.queues == {"sales", "support"}
    assert one.idle_since == NOW - 120  # longest idle stays longest idle
    assert one.since == NOW - 60 and one.since_wall == (NOW_MS - 60_000) / 1000
    assert (two.state, two.reason) == (NOT_READY, "meal")
    assert by_id["agent03"].state == LOGGED_OUT
    assert p.changed == [] and p.wrap_ups == {}


def test_an_agent_on_a_call_the_gateway_still_bridges_stays_on_it() -> None:
    p = rebuild(
        [snapshot("agent01", ON_CALL, call_id="c1")], [], [live("c1", "bridged", "agent01")]
    )
    assert p.agents[0].state == ON_CALL and p.agents[0].call_id == "c1"
    assert p.on_call == {"c1": "agent01"} and p.changed == []


def test_an_agent_whose_call_ended_meanwhile_goes_to_wrap_up() -> None:
    p = rebuild([snapshot("agent01", ON_CALL, call_id="c1")], [], [])
    agent = p.agents[0]
    assert (agent.state, agent.reason, agent.call_id) == (WRAP_UP, "call ended", "c1")
    assert p.changed == [(agent, ON_CALL)] and p.wrap_ups == {"agent01": WRAP_UP_S}
    assert p.on_call == {}


def test_wrap_up_resumes_with_the_time_left() -> None:
    p = rebuild([snapshot("agent01", WRAP_UP, call_id="c1", since_ms=NOW_MS - 4000)], [], [])
    assert p.agents[0].state == WRAP_UP and p.wrap_ups == {"agent01": 6.0}
    late = rebuild([snapshot("agent01", WRAP_UP, call_id="c1", since_ms=NOW_MS - 60_000)], [], [])
    assert late.wrap_ups == {"agent01": 0.0}


def test_the_gateway_wins_over_a_stale_snapshot() -> None:
    # the ACD died between moving the agent and publishing it: the gateway shows the call
    p = rebuild([snapshot("agent01", READY)], [], [live("c9", "bridged", "agent01")])
    agent = p.agents[0]
    assert (agent.state, agent.call_id) == (ON_CALL, "c9")
    assert p.changed == [(agent, READY)] and p.on_call == {"c9": "agent01"}


# ---- waiting calls -----------------------------------------------------------------------
def test_waiting_callers_keep_place_priority_and_entry_time() -> None:
    p = rebuild(
        [],
        [
            queued("c1", at_ms=NOW_MS - 30_000),
            queued("c2", priority=5, at_ms=NOW_MS - 10_000),
            queued("c3", "support", at_ms=NOW_MS - 20_000),
        ],
        [live("c1"), live("c2"), live("c3")],
    )
    assert [(c.call_id, c.queue, c.priority) for c in p.waiting] == [
        ("c1", "sales", 0),
        ("c3", "support", 0),
        ("c2", "sales", 5),
    ]
    c1 = p.waiting[0]
    assert c1.enqueued == NOW - 30 and c1.skills == {"en"} and c1.data == {"menu": "1"}
    assert not any(c.offering for c in p.waiting) and p.abandoned == []


def test_a_caller_who_left_while_the_acd_was_down_is_abandoned() -> None:
    p = rebuild([], [queued("c1", at_ms=NOW_MS - 30_000), queued("c2")], [live("c2")])
    ((gone, waited),) = p.abandoned
    assert gone.call_id == "c1" and gone.queue == "sales" and waited == 30.0
    assert [c.call_id for c in p.waiting] == ["c2"]


def test_a_ringing_offer_still_waiting_is_kept_for_the_same_agent() -> None:
    p = rebuild(
        [snapshot("agent01", RINGING, call_id="c1"), snapshot("agent02", READY)],
        [queued("c1")],
        [live("c1")],
    )
    ringing = next(a for a in p.agents if a.agent_id == "agent01")
    assert ringing.state == RINGING and ringing.call_id == "c1"
    assert p.kept_offers == {"c1": "agent01"}
    (call,) = p.waiting
    assert call.offering, "a kept offer must not be matched with a second agent"
    assert p.changed == []


def test_a_ringing_offer_answered_meanwhile_puts_the_agent_on_the_call() -> None:
    p = rebuild(
        [snapshot("agent01", RINGING, call_id="c1")],
        [queued("c1", at_ms=NOW_MS - 12_000)],
        [live("c1", "bridged", "agent01")],
    )
    agent = p.agents[0]
    assert (agent.state, agent.call_id) == (ON_CALL, "c1")
    assert p.changed == [(agent, RINGING)] and p.on_call == {"c1": "agent01"}
    ((call, agent_id, waited),) = p.answered
    assert (call.call_id, agent_id, waited) == ("c1", "agent01", 12.0)
    assert p.waiting == [] and p.kept_offers == {}


def test_a_ringing_offer_whose_caller_left_frees_the_agent_and_abandons_the_call() -> None:
    p = rebuild([snapshot("agent01", RINGING, call_id="c1")], [queued("c1")], [])
    agent = p.agents[0]
    assert (agent.state, agent.reason, agent.call_id) == (READY, "caller gone", "")
    assert p.changed == [(agent, RINGING)]
    assert [q.call_id for q, _ in p.abandoned] == ["c1"]
    assert agent.idle_since == NOW - 120, "a withdrawn offer keeps the agent's turn"


def test_a_ringing_offer_for_a_call_no_longer_waiting_is_withdrawn() -> None:
    p = rebuild([snapshot("agent01", RINGING, call_id="c1")], [], [live("c1")])
    agent = p.agents[0]
    assert (agent.state, agent.reason) == (READY, "offer withdrawn")
    assert p.changed == [(agent, RINGING)] and p.kept_offers == {}


def test_a_call_answered_by_another_agent_is_not_waiting() -> None:
    p = rebuild(
        [snapshot("agent01", RINGING, call_id="c1"), snapshot("agent02", READY)],
        [queued("c1")],
        [live("c1", "bridged", "agent02")],
    )
    by_id = {a.agent_id: a for a in p.agents}
    assert by_id["agent01"].state == READY and by_id["agent02"].state == ON_CALL
    assert [(q.call_id, a) for q, a, _ in p.answered] == [("c1", "agent02")]
    assert p.waiting == []


def test_a_call_of_a_queue_no_longer_configured_is_reported_not_lost_silently() -> None:
    p = rebuild([], [queued("c1", "vip")], [live("c1")])
    assert [q.call_id for q in p.orphans] == ["c1"] and p.waiting == []
