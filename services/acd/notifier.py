"""Every event the ACD publishes, built here and nowhere else.

Queue events (`CallQueued`, `AgentOffered`, `CallDequeued`, `CallAbandoned`, on `queues`) are
keyed by call id, so they stay in order with the call's other events; `AgentStateChanged` alone
goes on the compacted `agents` topic, keyed by agent id, so the last record per agent is always
its full state and survives compaction. The dispatcher decides *when*; this module decides
*what goes on the wire*.
"""

from __future__ import annotations

from acd.agents import Agent, State
from acd.queues import WaitingCall
from common.events import Publisher
from hotline.v1 import events_pb2 as ev


class AcdNotifier:
    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher

    async def call_queued(self, call: WaitingCall, position: int) -> None:
        """A call entered its queue at `position` (1 = next to be served)."""
        await self.publisher.publish(
            ev.CallQueued(
                call_id=call.call_id,
                queue=call.queue,
                priority=call.priority,
                position=position,
                ani=call.ani,
                dnis=call.dnis,
                skills=sorted(call.skills),
                data=call.data,
            ),
            call.call_id,
        )

    async def call_abandoned(self, call_id: str, queue: str, waited_s: float) -> None:
        """The caller hung up while waiting in `queue`."""
        await self.publisher.publish(
            ev.CallAbandoned(call_id=call_id, queue=queue, waited_ms=int(waited_s * 1000)), call_id
        )

    async def agent_offered(
        self, queue: str, call: WaitingCall, agent: Agent, waited_s: float
    ) -> None:
        """`agent`'s endpoint is being rung for `call` (its `call.attempts`-th offer)."""
        await self.publisher.publish(
            ev.AgentOffered(
                call_id=call.call_id,
                agent_id=agent.agent_id,
                extension=agent.extension,
                queue=queue,
                ani=call.ani,
                dnis=call.dnis,
                attempt=call.attempts,
                waited_ms=int(waited_s * 1000),
            ),
            call.call_id,
        )

    async def agent_state_changed(self, agent: Agent, previous: State) -> None:
        """`agent` moved from `previous` to its current state."""
        await self.publisher.publish(
            ev.AgentStateChanged(
                agent_id=agent.agent_id,
                state=agent.state,
                previous=previous,
                reason=agent.reason,
                extension=agent.extension,
                call_id=agent.call_id,
                queues=sorted(agent.queues),
            ),
            agent.agent_id,
        )
