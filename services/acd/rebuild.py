"""Rebuilding the ACD after a restart or a takeover — pure logic: records in, state out.

Three sources, read by `acd.recovery` and handed in here:
- the compacted `agents` topic: the last `AgentStateChanged` per agent is a full snapshot
  (state, reason, call, extension, queues, skills, since, idle since);
- the `queues` topic since the replay horizon: a call is waiting when its `CallQueued` is not
  followed by a `CallDequeued` (answered) or `CallAbandoned`; `AgentOffered` counts its offers;
  the outcomes feed the service-level window;
- the gateway's live calls (`ListCalls`), which win over both: a call the gateway no longer
  holds has ended, a call it shows bridged to an agent has that agent on it.

`plan` reconciles them into a `Plan`: the agents and waiting calls to restore, and the facts the
restart itself established (calls abandoned or answered while the ACD was down, agents whose
state had to change), which the dispatcher announces. Times on the wire are Unix ms; the plan
converts them to this process's monotonic clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from acd.agents import ON_CALL, READY, RINGING, WRAP_UP, Agent, State
from acd.queues import WaitingCall
from common.events import Envelope
from hotline.v1 import events_pb2 as ev

BRIDGED = "bridged"


@dataclass(frozen=True)
class LiveCall:
    """One call the gateway holds (a `CallInfo` of ListCalls)."""

    call_id: str
    state: str  # "offered" | "answered" | "bridged"
    bridged_to: str = ""  # agent id when bridged
    started_at_ms: int = 0
    endpoint: str = ""  # the extension bridged to (a transfer to an extension names no agent)


@dataclass
class QueuedCall:
    """A call the `queues` topic shows waiting: its CallQueued, and how often it was offered."""

    call_id: str
    queue: str
    priority: int
    ani: str
    dnis: str
    skills: frozenset[str]
    data: dict[str, str]
    enqueued_at_ms: int
    attempts: int = 0


@dataclass(frozen=True)
class Outcome:
    """A call that left a queue (answered or abandoned) at `at_ms` after waiting `waited_ms`."""

    queue: str
    at_ms: int
    waited_ms: int
    answered: bool


@dataclass
class Queues:
    """What the `queues` topic says: calls still waiting, calls answered (as they had waited:
    what a later requeue keeps), and recent outcomes."""

    waiting: dict[str, QueuedCall] = field(default_factory=dict)
    answered: dict[str, QueuedCall] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)


def fold_agents(envelopes: Iterable[Envelope]) -> dict[str, ev.AgentStateChanged]:
    """The last AgentStateChanged per agent (records in topic order per key)."""
    last: dict[str, ev.AgentStateChanged] = {}
    for env in envelopes:
        if env.WhichOneof("payload") == "agent_state_changed" and env.agent_state_changed.agent_id:
            last[env.agent_state_changed.agent_id] = env.agent_state_changed
    return last


def _ms(env: Envelope) -> int:
    return int(env.occurred_at.ToMilliseconds())


def fold_queues(envelopes: Iterable[Envelope]) -> Queues:
    """Which calls are still waiting, from the `queues` records in topic order per call."""
    folded = Queues()
    waiting = folded.waiting
    for env in envelopes:
        kind = env.WhichOneof("payload")
        if kind == "call_queued":
            p = env.call_queued
            if p.restated and p.call_id in waiting:
                continue  # a re-announcement of a call we already have waiting
            waiting[p.call_id] = QueuedCall(
                p.call_id,
                p.queue,
                p.priority,
                p.ani,
                p.dnis,
                frozenset(p.skills),
                dict(p.data),
                p.enqueued_at_ms or _ms(env),
            )
        elif kind == "agent_offered":
            call = waiting.get(env.agent_offered.call_id)
            if call is not None:
                call.attempts = max(call.attempts, env.agent_offered.attempt)
        elif kind == "call_dequeued":
            d = env.call_dequeued
            left = waiting.pop(d.call_id, None)
            answered = d.reason == ev.DEQUEUE_REASON_ANSWERED
            if answered and left is not None:
                folded.answered[d.call_id] = left
            folded.outcomes.append(Outcome(d.queue, _ms(env), int(d.waited_ms), answered))
        elif kind == "call_abandoned":
            a = env.call_abandoned
            waiting.pop(a.call_id, None)
            folded.outcomes.append(Outcome(a.queue, _ms(env), int(a.waited_ms), False))
    return folded


@dataclass
class Plan:
    """The ACD's state after a restart, and what the restart found out."""

    #: every known agent, restored (state, reason, call, times on this process's clock)
    agents: list[Agent] = field(default_factory=list)
    #: calls still waiting, in the order they joined their queues
    waiting: list[WaitingCall] = field(default_factory=list)
    #: call id -> agent kept ringing for it: the offer is made again to the same agent
    kept_offers: dict[str, str] = field(default_factory=dict)
    #: call id -> agent on it (bridged at the gateway)
    on_call: dict[str, str] = field(default_factory=dict)
    #: agents whose state the restart changed, with the state their snapshot had
    changed: list[tuple[Agent, State]] = field(default_factory=list)
    #: agent id -> seconds of wrap-up left
    wrap_ups: dict[str, float] = field(default_factory=dict)
    #: calls whose caller left while the ACD was down, with how long they waited (s)
    abandoned: list[tuple[QueuedCall, float]] = field(default_factory=list)
    #: calls answered while the ACD was down: (call, agent id, wait in s)
    answered: list[tuple[QueuedCall, str, float]] = field(default_factory=list)
    #: calls waiting in a queue this ACD no longer has (configuration changed)
    orphans: list[QueuedCall] = field(default_factory=list)
    #: calls on agents, as they had waited (queue, priority, skills, data): kept for a requeue
    records: dict[str, WaitingCall] = field(default_factory=dict)


def plan(
    snapshots: Mapping[str, ev.AgentStateChanged],
    queues: Queues,
    live: Mapping[str, LiveCall],
    known_queues: Iterable[str],
    *,
    now_ms: int,
    now_mono: float,
    wrap_up_s: float,
) -> Plan:
    """Reconcile the snapshots and the waiting calls with the gateway's live calls."""

    def mono(ms: int) -> float:
        return now_mono - max(0, now_ms - ms) / 1000 if ms else now_mono

    result = Plan()
    bridged = {
        c.bridged_to: c.call_id for c in live.values() if c.state == BRIDGED and c.bridged_to
    }
    # a call transferred to an extension is bridged to no agent id: the agent seated there has it
    seated = {
        s.extension: agent_id
        for agent_id, s in snapshots.items()
        if s.extension and s.state not in (ev.AGENT_STATE_UNSPECIFIED, ev.AGENT_STATE_LOGGED_OUT)
    }
    for c in live.values():
        if c.state == BRIDGED and not c.bridged_to and c.endpoint in seated:
            bridged.setdefault(seated[c.endpoint], c.call_id)
    ringing: dict[str, str] = {}  # call id -> agent kept ringing
    for agent_id, snap in snapshots.items():
        if snap.state == ev.AGENT_STATE_UNSPECIFIED:
            continue
        agent = Agent(
            agent_id,
            snap.extension,
            frozenset(snap.queues),
            frozenset(snap.skills),
            state=snap.state,
            reason=snap.reason,
            call_id=snap.call_id,
            queue=snap.queue,
            since=mono(snap.since_ms),
            since_wall=(snap.since_ms or now_ms) / 1000,
            idle_since=mono(snap.idle_since_ms or snap.since_ms),
        )
        result.agents.append(agent)
        was = agent.state

        def move(state: State, reason: str, call_id: str = "", a: Agent = agent) -> None:
            if call_id != a.call_id or not call_id:
                a.queue = ""  # another call, or none: not the snapshot's queue
            a.state, a.reason, a.call_id = state, reason, call_id
            a.since, a.since_wall = now_mono, now_ms / 1000

        call = live.get(snap.call_id) if snap.call_id else None
        if agent_id in bridged:  # the gateway says this agent talks to a caller: it wins
            call_id = bridged[agent_id]
            if (was, snap.call_id) != (ON_CALL, call_id):
                move(ON_CALL, "answered", call_id)
            result.on_call[call_id] = agent_id
        elif was == ON_CALL:
            move(WRAP_UP, "call ended", snap.call_id)  # the call ended while we were down
            result.wrap_ups[agent_id] = wrap_up_s
        elif was == RINGING:
            if call is not None and call.state != BRIDGED:
                ringing[snap.call_id] = agent_id  # still waiting: offer it to them again
            else:
                move(READY, "caller gone")  # the caller left, or another agent has the call
        elif was == WRAP_UP:
            result.wrap_ups[agent_id] = max(0.0, wrap_up_s - (now_mono - agent.since))
        if (agent.state, agent.call_id) != (was, snap.call_id):
            result.changed.append((agent, was))
    known = set(known_queues)
    bridged_calls = {c.call_id: c.bridged_to for c in live.values() if c.state == BRIDGED}
    bridged_calls |= {call_id: agent_id for agent_id, call_id in bridged.items()}
    for call_id, had in queues.answered.items():
        if call_id in live and call_id not in queues.waiting:
            result.records[call_id] = _waiting(had, mono(had.enqueued_at_ms))
    for queued in sorted(queues.waiting.values(), key=lambda q: q.enqueued_at_ms):
        waited_s = max(0, now_ms - queued.enqueued_at_ms) / 1000
        if queued.call_id not in live:
            result.abandoned.append((queued, waited_s))
        elif queued.call_id in bridged_calls:
            result.answered.append((queued, bridged_calls[queued.call_id], waited_s))
            result.records[queued.call_id] = _waiting(queued, mono(queued.enqueued_at_ms))
        elif queued.queue not in known:
            result.orphans.append(queued)
        else:
            waiting = _waiting(queued, mono(queued.enqueued_at_ms))
            kept = ringing.pop(queued.call_id, None)
            if kept is not None:
                waiting.offering = True
                result.kept_offers[queued.call_id] = kept
            result.waiting.append(waiting)
    # an agent ringing for a call that is live but no longer waiting (answered elsewhere,
    # or its record is older than the replay horizon) is freed
    by_id = {a.agent_id: a for a in result.agents}
    for agent_id in ringing.values():
        agent = by_id[agent_id]
        agent.state, agent.reason, agent.call_id, agent.queue = READY, "offer withdrawn", "", ""
        agent.since, agent.since_wall = now_mono, now_ms / 1000
        result.changed.append((agent, RINGING))
    # an agent the gateway put on a call while we were away is on that call's queue
    for call_id, agent_id in result.on_call.items():
        record = result.records.get(call_id)
        if record is not None and not by_id[agent_id].queue:
            by_id[agent_id].queue = record.queue
    return result


def _waiting(queued: QueuedCall, enqueued: float) -> WaitingCall:
    return WaitingCall(
        queued.call_id,
        queued.queue,
        queued.priority,
        queued.ani,
        queued.dnis,
        queued.skills,
        dict(queued.data),
        enqueued=enqueued,
        attempts=queued.attempts,
    )
