"""The agent state machine: which transitions are legal, and who is ready for a call.

Every transition goes through `AgentBook.transition`, which refuses illegal moves with a
message naming both states, so an agent's state can be trusted (an agent on a call can never
be offered a second call, a logged-out agent can never be rung). Calls the ACD did not offer
(a transfer to the agent's extension, the agent's own click-to-dial) put a logged-in agent on
a call from Ready, Not Ready or wrap-up: their phone is busy whatever the ACD thought.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TypeAlias

from hotline.v1.events_pb2 import AgentState

S = AgentState
#: An agent state: one of the AgentState enum values of events.proto.
State: TypeAlias = "AgentState.ValueType"
LOGGED_OUT, READY, NOT_READY = (
    S.AGENT_STATE_LOGGED_OUT,
    S.AGENT_STATE_READY,
    S.AGENT_STATE_NOT_READY,
)
RINGING, ON_CALL, WRAP_UP = S.AGENT_STATE_RINGING, S.AGENT_STATE_ON_CALL, S.AGENT_STATE_WRAP_UP

#: state -> states it may move to.
TRANSITIONS: dict[State, frozenset[State]] = {
    LOGGED_OUT: frozenset({NOT_READY, READY}),
    NOT_READY: frozenset({READY, LOGGED_OUT, NOT_READY, ON_CALL}),
    READY: frozenset({NOT_READY, RINGING, LOGGED_OUT, ON_CALL}),
    RINGING: frozenset({ON_CALL, NOT_READY, READY}),
    ON_CALL: frozenset({WRAP_UP}),
    WRAP_UP: frozenset({READY, NOT_READY, LOGGED_OUT, ON_CALL}),
}

#: states in which an agent has a call (and its queue): offered, talking, or wrapping it up.
WITH_CALL = frozenset({RINGING, ON_CALL, WRAP_UP})

#: states an agent may ask for through SetState; the others are driven by calls.
REQUESTABLE = frozenset({READY, NOT_READY})


def state_name(state: State) -> str:
    """'ready', 'not_ready', ... (the enum name without its prefix, lower-case)."""
    return AgentState.Name(state).removeprefix("AGENT_STATE_").lower()


class InvalidTransition(Exception):
    """An agent cannot move from its current state to the requested one."""


class UnknownAgent(KeyError):
    """No agent with this id has logged in."""


@dataclass
class Agent:
    agent_id: str
    extension: str
    queues: frozenset[str] = frozenset()
    skills: frozenset[str] = frozenset()
    state: State = LOGGED_OUT
    reason: str = ""
    call_id: str = ""
    queue: str = ""  # the queue of `call_id` ("" for a call that came through none)
    since: float = field(default_factory=time.monotonic)
    since_wall: float = field(default_factory=time.time)
    idle_since: float = field(default_factory=time.monotonic)
    #: time on hold in the current call so far (s), and since when it is on hold now (or None):
    #: hold does not change the state but is a phase of handle time
    hold_s: float = 0.0
    held_since: float | None = None

    def hold_total(self, now: float) -> float:
        """Hold so far in this call, an open hold counted up to `now`."""
        return self.hold_s + (now - self.held_since if self.held_since is not None else 0.0)

    def serves(self, queue: str) -> bool:
        """An agent with no queue list serves every queue."""
        return not self.queues or queue in self.queues


class AgentBook:
    """All agents known to this ACD, by id."""

    def __init__(self) -> None:
        self.agents: dict[str, Agent] = {}

    def get(self, agent_id: str) -> Agent:
        try:
            return self.agents[agent_id]
        except KeyError:
            raise UnknownAgent(f"agent {agent_id!r} is not logged in") from None

    def login(
        self, agent_id: str, extension: str, queues: frozenset[str], skills: frozenset[str]
    ) -> tuple[Agent, State]:
        """Log an agent in (Not Ready until they say Ready); returns (agent, previous state)."""
        agent = self.agents.get(agent_id)
        if agent is None:
            agent = self.agents[agent_id] = Agent(agent_id, extension, queues, skills)
        elif agent.state in (RINGING, ON_CALL):
            raise InvalidTransition(
                f"agent {agent_id} is {state_name(agent.state)}; cannot log in again during a call"
            )
        previous = agent.state
        agent.extension, agent.queues, agent.skills = extension, queues, skills
        if agent.state == LOGGED_OUT:
            self.transition(agent, NOT_READY, "login")
        return agent, previous

    def transition(
        self,
        agent: Agent,
        new: State,
        reason: str = "",
        call_id: str = "",
        queue: str | None = None,
    ) -> State:
        """Move an agent to `new`; returns the previous state. Raises InvalidTransition.
        `queue` is the call's queue (None: keep the one the agent has, for the same call)."""
        old = agent.state
        if new not in TRANSITIONS[old]:
            raise InvalidTransition(
                f"agent {agent.agent_id} cannot go from {state_name(old)} to {state_name(new)}"
            )
        now = time.monotonic()
        agent.state, agent.reason, agent.since, agent.since_wall = new, reason, now, time.time()
        if new in WITH_CALL:
            if queue is not None or call_id != agent.call_id:
                agent.queue = queue or ""
            agent.call_id = call_id
        else:
            agent.call_id = agent.queue = ""
        if new == ON_CALL and old != ON_CALL:
            agent.hold_s, agent.held_since = 0.0, None
        if new == READY and old != READY:
            if old in (WRAP_UP, NOT_READY, LOGGED_OUT) or not agent.idle_since:
                agent.idle_since = now
        return old

    def by_extension(self, extension: str) -> Agent | None:
        """The logged-in agent seated at `extension`, if any."""
        return next(
            (a for a in self.agents.values() if a.extension == extension and a.state != LOGGED_OUT),
            None,
        )

    def ready_for(self, queue: str) -> list[Agent]:
        """Agents who could take a call of `queue` right now."""
        return [a for a in self.agents.values() if a.state == READY and a.serves(queue)]

    def count_by_state(self, queue: str | None = None) -> dict[str, int]:
        """Agents by state name (every state present), of those serving `queue` if given."""
        counts = {state_name(s): 0 for s in TRANSITIONS}
        for agent in self.agents.values():
            if queue is None or agent.serves(queue):
                counts[state_name(agent.state)] += 1
        return counts
