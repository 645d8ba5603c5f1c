"""Every event the ACD publishes, built here and nowhere else, and sent through one ordered
outbox.

Queue events (`CallQueued`, `AgentOffered`, `CallDequeued`, `CallAbandoned`, on `queues`) are
keyed by call id, so they stay in order with the call's other events; `AgentStateChanged` alone
goes on the compacted `agents` topic, keyed by agent id, and is a full snapshot of the agent, so
the last record per agent is always enough to rebuild it after compaction (acd.rebuild). The
dispatcher decides *when*; this module decides *what goes on the wire*.

Each event method queues its event and returns a future that is done when the broker has it
(acks=all): the dispatcher awaits it wherever it must not act before the event is safe, e.g.
before ringing an agent (the ACD's state is rebuilt from its topics). One task publishes the
outbox in order, whatever has queued up as one pipelined batch (`publish_batch`), so events of
concurrent calls, and a call's events queued back to back, share produce requests instead of
paying a broker round trip each. Since the outbox is in order, a future that is done means
every event queued before it is on the broker too. An event is retried with the same event id
until the broker has it (consumers drop a repeat), never dropped; a replica that lost its
lease (`fence` raises) publishes nothing more, and the callers waiting get the fence's error.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable

from google.protobuf.message import Message

from acd.agents import Agent, State
from acd.queues import WaitingCall
from common import tracing
from common.events import TOPIC_OF, BatchPublisher, publish_until_taken
from common.tasks import cancel_and_wait
from hotline.v1 import events_pb2 as ev

log = logging.getLogger(__name__)

#: events published together at most
MAX_BATCH = 100
#: first and longest pause before publishing again a batch that failed
RETRY_FIRST_S, RETRY_MAX_S = 0.5, 10.0
#: how long `stop` lets the outbox finish publishing what is queued
STOP_FLUSH_S = 5.0


Publisher = BatchPublisher


def wall_ms(mono: float) -> int:
    """A time on the monotonic clock as Unix milliseconds."""
    return int((time.time() - (time.monotonic() - mono)) * 1000)


def _no_fence() -> None:
    return None


def _retrieved(future: asyncio.Future[None]) -> None:
    """A caller that did not wait for its event is not told (the next waiter is)."""
    if not future.cancelled():
        future.exception()


#: an event in the outbox: payload, key, event id, trace context, done when on the broker
_Queued = tuple[Message, str, str, dict[str, str], asyncio.Future[None]]


class AcdNotifier:
    def __init__(self, publisher: Publisher, fence: Callable[[], None] = _no_fence) -> None:
        self.publisher = publisher
        #: raises when this replica may no longer publish (it lost its lease)
        self.fence = fence
        #: records the broker acknowledged, by topic (acd.topicwatch compares with the topics)
        self.published: Counter[str] = Counter()
        self._outbox: deque[_Queued] = deque()
        self._task: asyncio.Task[None] | None = None
        self._sending = 0  # events of the batch being published

    @property
    def pending(self) -> int:
        """Events queued and not yet on the broker (the batch being published included)."""
        return len(self._outbox) + self._sending

    def _publish(self, payload: Message, key: str) -> asyncio.Future[None]:
        """Queue an event (in the caller's trace); the future is done once the broker has it
        and every event queued before it."""
        self.fence()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieved)
        self._outbox.append((payload, key, str(uuid.uuid4()), tracing.inject(), future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name="acd-outbox")
        return future

    async def _drain(self) -> None:
        """Publish the outbox in order until it is empty (the next event starts it again)."""
        batch: list[_Queued] = []
        try:
            await asyncio.sleep(0)  # what is runnable now queues its events first: one batch
            while self._outbox:
                n = min(MAX_BATCH, len(self._outbox))
                batch = [self._outbox.popleft() for _ in range(n)]
                self._sending = n
                try:
                    await self._send(batch)
                except Exception as exc:  # fenced: none of them is published
                    for *_, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    batch = []
                    continue
                for payload, *_, future in batch:
                    self.published[TOPIC_OF[payload.DESCRIPTOR.name]] += 1
                    if not future.done():
                        future.set_result(None)
                batch = []
        finally:
            self._sending = 0
            self._task = None
            if batch or self._outbox:  # cancelled (stop): nobody waits for ever
                for *_, future in [*batch, *self._outbox]:
                    future.cancel()
                self._outbox.clear()

    async def _send(self, batch: list[_Queued]) -> None:
        items = [(payload, key, event_id, trace) for payload, key, event_id, trace, _ in batch]
        await publish_until_taken(
            self.publisher, items, RETRY_FIRST_S, RETRY_MAX_S, before_attempt=self.fence
        )

    async def stop(self) -> None:
        """Let the outbox publish what is queued (for up to STOP_FLUSH_S), then stop it."""
        task = self._task
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), STOP_FLUSH_S)
        except TimeoutError:
            log.warning("%d events not published at stop", self.pending)
        await cancel_and_wait(task)

    def call_queued(
        self, call: WaitingCall, position: int, restated: bool = False
    ) -> asyncio.Future[None]:
        """A call entered its queue at `position` (1 = next to be served); `restated`: it had
        already, and is announced again because the broker lost the record."""
        return self._publish(
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

    def call_dequeued(
        self, call: WaitingCall, agent_id: str, waited_s: float
    ) -> asyncio.Future[None]:
        """`agent_id` answered `call`: it left its queue."""
        return self._publish(
            ev.CallDequeued(
                call_id=call.call_id,
                queue=call.queue,
                reason=ev.DEQUEUE_REASON_ANSWERED,
                agent_id=agent_id,
                waited_ms=int(waited_s * 1000),
            ),
            call.call_id,
        )

    def call_abandoned(self, call_id: str, queue: str, waited_s: float) -> asyncio.Future[None]:
        """The caller hung up while waiting in `queue`."""
        return self._publish(
            ev.CallAbandoned(call_id=call_id, queue=queue, waited_ms=int(waited_s * 1000)), call_id
        )

    def agent_offered(
        self, queue: str, call: WaitingCall, agent: Agent, waited_s: float
    ) -> asyncio.Future[None]:
        """`agent`'s endpoint is being rung for `call` (its `call.attempts`-th offer)."""
        return self._publish(
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

    def agent_state_changed(
        self, agent: Agent, previous: State, restated: bool = False
    ) -> asyncio.Future[None]:
        """`agent` moved from `previous` to its current state (`restated`: it did not move, its
        snapshot is announced again because the broker lost it)."""
        return self._publish(
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
