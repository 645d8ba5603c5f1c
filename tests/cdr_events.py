"""A realistic call's events as the CRM consumes them, for the CDR store's tests and bench.

One answered call: offered, queued, offered to and bridged with an agent, held and resumed,
a conference party joining and leaving, a blind transfer to a second agent, the hang-up, the
second agent's wrap-up and its end, and the recording: 14 events at fixed times, so the same
call can be built twice with the same event ids and folded two ways.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from common.events import Envelope, envelope
from hotline.v1 import events_pb2 as ev


def at(env: Envelope, when: datetime) -> Envelope:
    env.occurred_at.FromDatetime(when)
    return env


def call_lifecycle(
    call_id: str,
    agent_id: str,
    to_agent_id: str,
    start: datetime | None = None,
    ani: str = "13800138000",
) -> list[Envelope]:
    """The 14 events of one call (agent_id transfers it to to_agent_id), `start` the offer."""
    t0 = start or datetime.now(UTC) - timedelta(minutes=5)
    ext, to_ext = "8" + agent_id[-3:].rjust(3, "0"), "8" + to_agent_id[-3:].rjust(3, "0")

    def event(s: float, payload: Any, key: str = call_id) -> Envelope:
        return at(
            envelope(payload, key, "test", "test", f"{call_id}-{s}"), t0 + timedelta(seconds=s)
        )

    return [
        event(
            0, ev.CallOffered(call_id=call_id, ani=ani, dnis="10000", trunk="sip1", channel="sip")
        ),
        event(2, ev.CallQueued(call_id=call_id, queue="support", ani=ani)),
        event(
            5,
            ev.AgentOffered(
                call_id=call_id, agent_id=agent_id, extension=ext, queue="support", ani=ani
            ),
        ),
        event(7, ev.CallBridged(call_id=call_id, agent_id=agent_id, queue="support")),
        event(20, ev.CallHeld(call_id=call_id, agent_id=agent_id, by="desk")),
        event(26, ev.CallResumed(call_id=call_id, agent_id=agent_id, held_ms=6000)),
        event(30, ev.ConferenceJoined(call_id=call_id, leg_id="l2", party=to_ext, parties=3)),
        event(40, ev.ConferenceLeft(call_id=call_id, leg_id="l2", party=to_ext, parties=2)),
        event(
            45,
            ev.CallTransferred(
                call_id=call_id,
                from_agent_id=agent_id,
                to_agent_id=to_agent_id,
                kind="blind",
                target_kind="extension",
                target=to_ext,
            ),
        ),
        event(
            90,
            ev.CallEnded(
                call_id=call_id, reason=ev.END_REASON_CALLER_HANGUP, talk_ms=77_000, hold_ms=6000
            ),
        ),
        event(
            90.5,
            ev.AgentStateChanged(
                agent_id=to_agent_id,
                extension=to_ext,
                state=ev.AGENT_STATE_WRAP_UP,
                previous=ev.AGENT_STATE_ON_CALL,
                call_id=call_id,
            ),
            to_agent_id,
        ),
        event(
            91,
            ev.RecordingReady(
                call_id=call_id,
                recording_id=f"rec-{call_id}",
                path=f"rec/{call_id}.wav",
                agent_id=to_agent_id,
                queue="support",
                duration_ms=83_000,
            ),
        ),
        event(
            92,
            ev.RecordingReady(
                call_id=call_id,
                recording_id=f"rec-{call_id}-2",
                path=f"rec/{call_id}-2.wav",
                agent_id=to_agent_id,
                queue="support",
                duration_ms=38_000,
            ),
        ),
        event(
            120,
            ev.AgentStateChanged(
                agent_id=to_agent_id,
                extension=to_ext,
                state=ev.AGENT_STATE_READY,
                previous=ev.AGENT_STATE_WRAP_UP,
            ),
            to_agent_id,
        ),
    ]
