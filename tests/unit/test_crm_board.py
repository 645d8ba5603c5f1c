"""The supervisor board's data as pure translation: the ACD's snapshots as JSON ("no data"
stays null, never a fake 0 %), and the live messages made from queue and call events."""

from __future__ import annotations

from google.protobuf.message import Message

from common.events import Envelope, envelope
from crm.board import board_agent, board_message, board_queue
from hotline.v1 import acd_pb2
from hotline.v1 import events_pb2 as ev


def env(payload: Message, at_ms: int = 1_800_000_000_000) -> Envelope:
    e = envelope(payload, "k", "site", "acd")
    e.occurred_at.FromMilliseconds(at_ms)
    return e


def test_agent_row_has_the_queue_of_the_call() -> None:
    row = board_agent(
        acd_pb2.Agent(
            agent_id="agent1",
            extension="8001",
            state=ev.AGENT_STATE_ON_CALL,
            call_id="c1",
            queue="sales",
            state_since_ms=5,
        )
    )
    assert (row["state"], row["call_id"], row["queue"], row["state_since_ms"]) == (
        "on_call",
        "c1",
        "sales",
        5,
    )


def test_queue_row_ratios_are_null_without_data() -> None:
    empty = board_queue(acd_pb2.QueueStatus(queue="support", window_s=900))
    assert (empty["service_level"], empty["asa_ms"], empty["abandon_rate"]) == (None, None, None)
    # abandons only: a service level and abandon rate, but no ASA (nobody was answered)
    lost = board_queue(
        acd_pb2.QueueStatus(queue="support", abandoned=2, window_ended=2, abandon_rate=1.0)
    )
    assert (lost["service_level"], lost["asa_ms"], lost["abandon_rate"]) == (0.0, None, 1.0)
    busy = board_queue(
        acd_pb2.QueueStatus(
            queue="sales",
            calls=[acd_pb2.QueuedCall(call_id="w1", ani="139", priority=5, waited_ms=3000)],
            oldest_wait_ms=3000,
            agents_by_state={"ready": 2},
            answered=4,
            window_ended=5,
            service_level=0.6,
            asa_ms=12000,
            abandon_rate=0.2,
        )
    )
    assert busy["waiting"] == [{"call_id": "w1", "ani": "139", "priority": 5, "waited_ms": 3000}]
    assert (busy["service_level"], busy["asa_ms"], busy["abandon_rate"]) == (0.6, 12000, 0.2)
    assert busy["agents_by_state"] == {"ready": 2}


def test_queue_events_become_board_messages() -> None:
    queued = board_message(
        env(
            ev.CallQueued(
                call_id="c1", queue="sales", ani="139", priority=5, enqueued_at_ms=1_799_999_990_000
            )
        )
    )
    assert queued == {
        "type": "queue",
        "change": "queued",
        "at_ms": 1_800_000_000_000,
        "call_id": "c1",
        "queue": "sales",
        "ani": "139",
        "priority": 5,
        "enqueued_at_ms": 1_799_999_990_000,
    }
    answered = board_message(
        env(ev.CallDequeued(call_id="c1", queue="sales", agent_id="agent1", waited_ms=10_000))
    )
    assert answered is not None
    assert (answered["change"], answered["agent_id"], answered["waited_ms"]) == (
        "answered",
        "agent1",
        10_000,
    )
    gone = board_message(env(ev.CallAbandoned(call_id="c2", queue="sales", waited_ms=4000)))
    assert gone is not None and (gone["change"], gone["call_id"]) == ("abandoned", "c2")


def test_hold_and_monitor_events_mark_the_call() -> None:
    held = board_message(env(ev.CallHeld(call_id="c1", agent_id="agent1", by="phone")))
    assert held == {"type": "call", "change": "held", "call_id": "c1", "agent_id": "agent1"}
    resumed = board_message(env(ev.CallResumed(call_id="c1", agent_id="agent1", held_ms=9)))
    assert resumed is not None and resumed["change"] == "resumed"
    watched = board_message(
        env(
            ev.MonitorStarted(
                call_id="c1", leg_id="l9", supervisor_id="supervisor", mode="whisper", agent_id="a"
            )
        )
    )
    assert watched == {
        "type": "call",
        "change": "monitored",
        "call_id": "c1",
        "agent_id": "a",
        "supervisor_id": "supervisor",
        "mode": "whisper",
    }
    left = board_message(env(ev.MonitorStopped(call_id="c1", leg_id="l9", supervisor_id="sup")))
    assert left == {
        "type": "call",
        "change": "unmonitored",
        "call_id": "c1",
        "supervisor_id": "sup",
    }


def test_other_events_are_not_for_the_board() -> None:
    for payload in (
        ev.AgentOffered(call_id="c1", agent_id="a"),
        ev.AgentStateChanged(agent_id="a"),
        ev.CallEnded(call_id="c1"),
        ev.CallTransferred(call_id="c1"),
    ):
        assert board_message(env(payload)) is None
