"""The supervisor board's data: the ACD's snapshots as JSON, and the live messages made from the
`queues` events, so the board can follow waiting calls between snapshots.

Pure translation (no I/O): `crm.supervision` serves the snapshot, `crm.desk` pushes the live
messages to the watchers' websockets.
"""

from __future__ import annotations

from typing import Any

from common.events import Envelope
from crm.agent_control import agent_json
from hotline.v1 import acd_pb2

#: the `queues` events the board follows, and what each means for a waiting call
QUEUE_EVENTS = {"CallQueued": "queued", "CallDequeued": "answered", "CallAbandoned": "abandoned"}
#: the `calls` events that mark an agent's call on the board (on hold, listened to)
CALL_EVENTS = {
    "CallHeld": "held",
    "CallResumed": "resumed",
    "MonitorStarted": "monitored",
    "MonitorStopped": "unmonitored",
}


def board_agent(agent: acd_pb2.Agent) -> dict[str, Any]:
    """An agent row: state, reason, time in state (since), current call and its queue."""
    return agent_json(agent) | {"queue": agent.queue}


def board_queue(status: acd_pb2.QueueStatus) -> dict[str, Any]:
    """A queue row: waiting calls, longest wait, the ACD's rolling KPIs (None: no data yet)."""
    has_data = status.window_ended > 0
    return {
        "queue": status.queue,
        "waiting": [
            {"call_id": c.call_id, "ani": c.ani, "priority": c.priority, "waited_ms": c.waited_ms}
            for c in status.calls
        ],
        "oldest_wait_ms": status.oldest_wait_ms,
        "agents_by_state": dict(status.agents_by_state),
        "answered": status.answered,
        "abandoned": status.abandoned,
        "service_level": status.service_level if has_data else None,
        "asa_ms": status.asa_ms if status.answered and has_data else None,
        "abandon_rate": status.abandon_rate if has_data else None,
        "window_ended": status.window_ended,
        "window_s": status.window_s,
    }


def board_message(env: Envelope) -> dict[str, Any] | None:
    """The board's live message for a `queues` event or a call's hold and monitor steps (None
    for the others)."""
    if env.type in CALL_EVENTS:
        return call_message(env)
    change = QUEUE_EVENTS.get(env.type)
    if change is None:
        return None
    at_ms = env.occurred_at.ToMilliseconds()
    message: dict[str, Any] = {"type": "queue", "change": change, "at_ms": at_ms}
    if env.type == "CallQueued":
        q = env.call_queued
        message |= {
            "call_id": q.call_id,
            "queue": q.queue,
            "ani": q.ani,
            "priority": q.priority,
            "enqueued_at_ms": q.enqueued_at_ms or at_ms,
        }
    elif env.type == "CallDequeued":
        d = env.call_dequeued
        message |= {
            "call_id": d.call_id,
            "queue": d.queue,
            "agent_id": d.agent_id,
            "waited_ms": d.waited_ms,
        }
    else:
        a = env.call_abandoned
        message |= {"call_id": a.call_id, "queue": a.queue, "waited_ms": a.waited_ms}
    return message


def call_message(env: Envelope) -> dict[str, Any]:
    """A call on hold or listened to: `{"type": "call", "change", "call_id", ...}`."""
    message: dict[str, Any] = {"type": "call", "change": CALL_EVENTS[env.type]}
    if env.type in ("CallHeld", "CallResumed"):
        p = env.call_held if env.type == "CallHeld" else env.call_resumed
        return message | {"call_id": p.call_id, "agent_id": p.agent_id}
    if env.type == "MonitorStarted":
        m = env.monitor_started
        return message | {
            "call_id": m.call_id,
            "agent_id": m.agent_id,
            "supervisor_id": m.supervisor_id,
            "mode": m.mode,
        }
    s = env.monitor_stopped
    return message | {"call_id": s.call_id, "supervisor_id": s.supervisor_id}
