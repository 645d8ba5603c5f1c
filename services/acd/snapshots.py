"""The ACD's state as the `Acd` API shows it: one agent, one queue, or all of them for the
supervisor board (which then follows the `agents` and `queues` events live)."""

from __future__ import annotations

import time

from acd.agents import Agent, AgentBook
from acd.kpis import QueueWindow
from acd.queues import CallQueue
from hotline.v1 import acd_pb2


def agent_reply(agent: Agent) -> acd_pb2.Agent:
    return acd_pb2.Agent(
        agent_id=agent.agent_id,
        extension=agent.extension,
        state=agent.state,
        reason=agent.reason,
        queues=sorted(agent.queues),
        call_id=agent.call_id,
        state_since_ms=int(agent.since_wall * 1000),
        queue=agent.queue,
    )


def queue_status(
    queue: CallQueue,
    book: AgentBook,
    window: QueueWindow,
    answered: int,
    abandoned: int,
    now: float | None = None,
) -> acd_pb2.QueueStatus:
    """A queue now: its waiting calls in service order, its agents by state, its counts since
    this ACD started, and the rolling service level, ASA and abandon rate."""
    now = time.monotonic() if now is None else now
    figures = window.figures(queue.name, now)
    return acd_pb2.QueueStatus(
        queue=queue.name,
        oldest_wait_ms=int(queue.oldest_wait(now) * 1000),
        calls=[
            acd_pb2.QueuedCall(
                call_id=c.call_id,
                ani=c.ani,
                priority=c.priority,
                waited_ms=int(c.waited(now) * 1000),
            )
            for c in queue.calls
        ],
        agents_by_state={k: v for k, v in book.count_by_state(queue.name).items() if v},
        answered=answered,
        abandoned=abandoned,
        service_level=figures.service_level,
        asa_ms=int(figures.asa_s * 1000),
        abandon_rate=figures.abandon_rate,
        window_ended=figures.ended,
        window_s=int(window.window_s),
    )
