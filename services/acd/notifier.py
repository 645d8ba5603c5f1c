"""Every event the ACD publishes, built here and nowhere else.

Queue events (`CallQueued`, `AgentOffered`, `CallDequeued`, `CallAbandoned`, on `queues`) are
keyed by call id, so they stay in order with the call's other events; `AgentStateChanged` alone
goes on the compacted `agents` topic, keyed by agent id, and is a full snapshot of the agent, so
the last record per agent is always enough to rebuild it after compaction (acd.rebuild). The
dispatcher decides *when*; this module decides *what goes on the wire*.
"""

from __future__ import annotations

import time
from collections import Counter

from google.protobuf.message import Message

from acd.agents import Agent, State
from acd.queues import WaitingCall
from common.events import TOPIC_OF, Publisher
from hotline.v1 import events_pb2 as ev


def wall_ms(mono: float) -> int:
    """A time on the monotonic clock as Unix milliseconds."""
    return int((time.time() - (time.monotonic() - mono)) * 1000)


class AcdNotifier:
    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher
        #: records the broker acknowledged, by topic (acd.topicwatch compares with the topics)
        self.published: Counter[str] = Counter()

    async def _publish(self, payload: Message, key: str) -> None:
        await self.publisher.publish(payload, key)
        self.published[TOPIC_OF[payload.DESCRIPTOR.name]] += 1

    async def call_queued(self, call: WaitingCall, position: int, restated: bool = False) -> None:
        """A call entered its queue at `position` (1 = next to be served); `restated`: it had
        already, and is announced again because the broker lost the record."""
        await self._publish(
            ev.CallQueued(
                call_id=call.call_id,
                queue=call.queue,
                priority=call.priority,
                position=position,
                ani=call.ani,
                dnis=call.dnis,
                skills=sorted(call.skills),
                data=call.data,
                enqueued_at_ms=wall_ms(call.enqueued),
                restated=restated,
            ),
            call.call_id,
        )

    async def call_dequeued(self, call: WaitingCall, agent_id: str, waited_s: float) -> None:
        """`agent_id` answered `call`: it left its queue."""
        await self._publish(
            ev.CallDequeued(
                call_id=call.call_id,
                queue=call.queue,
                reason=ev.DEQUEUE_REASON_ANSWERED,
                agent_id=agent_id,
                waited_ms=int(waited_s * 1000),
            ),
            call.call_id,
        )

    async def call_abandoned(self, call_id: str, queue: str, waited_s: float) -> None:
        """The caller hung up while waiting in `queue`."""
        await self._publish(
            ev.CallAbandoned(call_id=call_id, queue=queue, waited_ms=int(waited_s * 1000)), call_id
        )

    async def agent_offered(
        self, queue: str, call: WaitingCall, agent: Agent, waited_s: float
    ) -> None:
        """`agent`'s endpoint is being rung for `call` (its `call.attempts`-th offer)."""
        await self._publish(
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

    async def agent_state_changed(
        self, agent: Agent, previous: State, restated: bool = False
    ) -> None:
        """`agent` moved from `previous` to its current state (`restated`: it did not move, its
        snapshot is announced again because the broker lost it)."""
        await self._publish(
            ev.AgentStateChanged(
                agent_id=agent.agent_id,
                state=agent.state,
                previous=previous,
                reason=agent.reason,
                extension=agent.extension,
                call_id=agent.call_id,
                queues=sorted(agent.queues),
                skills=sorted(agent.skills),
                since_ms=int(agent.since_wall * 1000),
                idle_since_ms=wall_ms(agent.idle_since),
                restated=restated,
                queue=agent.queue,
            ),
            agent.agent_id,
        )
