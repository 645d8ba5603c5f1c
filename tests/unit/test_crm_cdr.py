"""CDR folding: any arrival order, any duplication, the same record — and the right one."""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime, timedelta

import pytest

from common.events import Envelope, envelope
from crm.cdr import CdrRecord, call_id_of, end_acw, end_reason_name, fold, leaves_wrap_up
from hotline.v1 import events_pb2 as ev
from hotline.v1.recorder_pb2 import HoldMark

T0 = datetime(2026, 3, 1, 9, 0, 0, tzinfo=UTC)
CALL = "call-42"


def at(env: Envelope, seconds: float) -> Envelope:
    """Give an envelope a fixed occurred_at, T0 + seconds."""
    env.occurred_at.FromDatetime(T0 + timedelta(seconds=seconds))
    return env


def env(payload, seconds: float, key: str = CALL) -> Envelope:  # noqa: ANN001
    return at(envelope(payload, key, "test", "test"), seconds)


def answered_call() -> list[Envelope]:
    """A call offered, queued, offered to agent2 (no answer), then agent5 who answers."""
    return [
        env(
            ev.CallOffered(
                call_id=CALL,
                ani="sip:+8613800138000@trunk",
                dnis="10000",
                trunk="fxo1",
                channel="analog",
            ),
            0.0,
        ),
        env(
            ev.CallQueued(
                call_id=CALL,
                queue="sales",
                ani="sip:+8613800138000@trunk",
                dnis="10000",
                position=1,
            ),
            4.0,
        ),
        env(
            ev.AgentOffered(
                call_id=CALL,
                agent_id="agent2",
                extension="8002",
                queue="sales",
                ani="sip:+8613800138000@trunk",
                attempt=1,
            ),
            6.0,
            key="agent2",
        ),
        env(
            ev.AgentOffered(
                call_id=CALL,
                agent_id="agent5",
                extension="8005",
                queue="sales",
                ani="sip:+8613800138000@trunk",
                attempt=2,
            ),
            21.0,
            key="agent5",
        ),
        env(
            ev.CallBridged(
                call_id=CALL,
                agent_id="agent5",
                queue="sales",
                leg_id="leg-9",
                endpoint="sip:8005@10.0.0.5",
            ),
            24.5,
        ),
        env(
            ev.CallEnded(
                call_id=CALL,
                reason=ev.END_REASON_CALLER_HANGUP,
                talk_ms=95_000,
                duration_ms=119_500,
            ),
            119.5,
        ),
        env(
            ev.RecordingReady(
                call_id=CALL,
                recording_id="rec-1",
                path="2026/03/01/rec-1.wav",
                agent_id="agent5",
                queue="sales",
            ),
            121.0,
        ),
    ]


def folded(events: list[Envelope]) -> CdrRecord:
    record = CdrRecord(CALL)
    for e in events:
        fold(record, e)
    return record


def columns(record: CdrRecord) -> dict[str, object]:
    """The visible CDR (what the API shows); `facts` is bookkeeping."""
    doc = dataclasses.asdict(record)
    doc.pop("facts")
    return doc


def test_in_order_answered_call_has_every_fact() -> None:
    r = folded(answered_call())
    assert (r.ani, r.dnis, r.trunk, r.channel) == (
        "sip:+8613800138000@trunk",
        "10000",
        "fxo1",
        "analog",
    )
    assert r.queue == "sales"
    assert (r.agent_id, r.extension) == ("agent5", "8005")
    assert r.offered_at == T0
    assert r.started_at == T0
    assert r.queued_at == T0 + timedelta(seconds=4)
    assert r.answered_at == T0 + timedelta(seconds=24.5)
    assert r.ended_at == T0 + timedelta(seconds=119.5)
    assert r.wait_ms == 20_500
    assert r.talk_ms == 95_000
    assert r.end_reason == "caller_hangup"
    assert r.abandoned is False
    assert (r.recording_id, r.recording_path) == ("rec-1", "2026/03/01/rec-1.wav")


@pytest.mark.parametrize("seed", range(60))
def test_any_order_with_duplicates_gives_the_same_record(seed: int) -> None:
    events = answered_call()
    expected = folded(events)
    rng = random.Random(seed)
    shuffled = events + rng.sample(events, k=rng.randint(1, len(events)))  # redeliveries
    rng.shuffle(shuffled)
    assert columns(folded(shuffled)) == columns(expected)


def test_refolding_an_event_changes_nothing_and_says_so() -> None:
    events = answered_call()
    record = folded(events)
    before = dataclasses.asdict(record)
    for e in events:
        assert fold(record, e) is False
    assert dataclasses.asdict(record) == before


def test_late_offer_to_an_earlier_agent_does_not_replace_the_later_one() -> None:
    first, second = answered_call()[2], answered_call()[3]
    r = folded([second, first])
    assert (r.agent_id, r.extension) == ("agent5", "8005")


def test_bridged_agent_beats_a_later_offer_to_someone_else() -> None:
    bridged = env(ev.CallBridged(call_id=CALL, agent_id="agent5", queue="sales"), 10.0)
    later_offer = env(
        ev.AgentOffered(call_id=CALL, agent_id="agent7", extension="8007", queue="sales"), 30.0
    )
    earlier_offer = env(
        ev.AgentOffered(call_id=CALL, agent_id="agent5", extension="8005", queue="sales"), 5.0
    )
    for order in (
        [bridged, later_offer, earlier_offer],
        [later_offer, earlier_offer, bridged],
        [earlier_offer, bridged, later_offer],
    ):
        r = folded(order)
        assert (r.agent_id, r.extension) == ("agent5", "8005"), order


def test_queue_arriving_after_the_end_still_sets_wait() -> None:
    events = answered_call()
    queued = events.pop(1)
    r = folded(events)
    assert r.wait_ms is None
    fold(r, queued)
    assert r.wait_ms == 20_500
    assert r.queued_at == T0 + timedelta(seconds=4)


def test_talk_comes_from_the_gateway_until_the_bridge_is_seen() -> None:
    ended = answered_call()[5]
    r = folded([ended])
    assert r.talk_ms == 95_000
    fold(r, answered_call()[4])
    assert r.talk_ms == 95_000  # 119.5 s - 24.5 s from the envelopes' own times


def test_abandoned_call_waits_until_the_end_and_has_no_agent() -> None:
    events = [
        env(ev.CallOffered(call_id=CALL, ani="5551234", dnis="10000", trunk="sipp"), 0.0),
        env(ev.CallQueued(call_id=CALL, queue="support", ani="5551234"), 2.0),
        env(ev.CallAbandoned(call_id=CALL, queue="support", waited_ms=30_000), 32.0),
        env(ev.CallEnded(call_id=CALL, reason=ev.END_REASON_CALLER_HANGUP), 32.0),
    ]
    for seed in range(10):
        shuffled = events[:]
        random.Random(seed).shuffle(shuffled)
        r = folded(shuffled)
        assert r.abandoned is True
        assert r.queue == "support"
        assert r.agent_id == "" and r.answered_at is None
        assert r.wait_ms == 30_000
        assert r.talk_ms == 0
        assert r.end_reason == "caller_hangup"


def test_queued_caller_number_fills_in_until_the_offer_arrives() -> None:
    queued = env(ev.CallQueued(call_id=CALL, queue="sales", ani="5551234", dnis="10000"), 3.0)
    offered = env(ev.CallOffered(call_id=CALL, ani="sip:5551234@sipp", dnis="10000"), 0.0)
    r = folded([queued])
    assert r.ani == "5551234"
    fold(r, offered)
    assert r.ani == "sip:5551234@sipp"
    fold(r, queued)
    assert r.ani == "sip:5551234@sipp"


def test_equal_times_are_broken_by_event_id_not_by_arrival() -> None:
    a = env(ev.AgentOffered(call_id=CALL, agent_id="agent1", extension="8001"), 5.0)
    b = env(ev.AgentOffered(call_id=CALL, agent_id="agent9", extension="8009"), 5.0)
    assert folded([a, b]).agent_id == folded([b, a]).agent_id


def test_events_of_other_calls_and_types_are_ignored() -> None:
    r = CdrRecord(CALL)
    other = env(ev.CallOffered(call_id="another", ani="1"), 0.0)
    state = env(
        ev.AgentStateChanged(agent_id="agent1", state=ev.AGENT_STATE_READY, call_id=CALL),
        0.0,
        key="agent1",
    )
    assert fold(r, other) is False
    assert fold(r, state) is False
    assert call_id_of(state) is None
    assert r == CdrRecord(CALL)


@pytest.mark.parametrize(
    ("reason", "name"),
    [
        (ev.END_REASON_CALLER_HANGUP, "caller_hangup"),
        (ev.END_REASON_AGENT_HANGUP, "agent_hangup"),
        (ev.END_REASON_FAR_END, "far_end"),
        (ev.END_REASON_UNSPECIFIED, "unspecified"),
    ],
)
def test_end_reason_names(reason: int, name: str) -> None:
    assert end_reason_name(reason) == name


def test_record_round_trips_through_a_row() -> None:
    record = folded(answered_call())

    class Row:
        call_id = CALL

    row = Row()
    record.to_row(row)
    again = CdrRecord.from_row(row)
    assert again == record
    again.facts["agent"][0] = 99
    assert record.facts["agent"][0] != 99  # the row got a copy, not a shared dict


def test_first_end_wins_when_a_call_end_is_announced_twice() -> None:
    """A gateway restarted mid-teardown may announce the end again, later and differently."""
    first = env(ev.CallEnded(call_id=CALL, reason=ev.END_REASON_AGENT_HANGUP), 50.0)
    again = env(ev.CallEnded(call_id=CALL, reason=ev.END_REASON_SYSTEM), 80.0)
    for order in ([first, again], [again, first]):
        r = folded(order)
        assert r.ended_at == T0 + timedelta(seconds=50)
        assert r.end_reason == "agent_hangup"


def test_the_payload_decides_not_a_mislabelled_type() -> None:
    mislabelled = env(ev.CallEnded(call_id=CALL, reason=ev.END_REASON_FAR_END), 9.0)
    mislabelled.type = "CallOffered"
    r = folded([mislabelled])
    assert (r.end_reason, r.offered_at) == ("far_end", None)


# -- call control (issue 10): hold, transfer, conference, after-call work ----------------------


def controlled_call() -> list[Envelope]:
    """The answered call, with two holds (3 s and 2 s), a colleague conferenced in and out, a
    blind transfer from agent5 to agent7, every recording, and agent7's wrap-up."""
    return answered_call() + [
        env(ev.CallHeld(call_id=CALL, agent_id="agent5", by="desk"), 30.0),
        env(ev.CallResumed(call_id=CALL, agent_id="agent5", held_ms=3000), 33.0),
        env(ev.CallHeld(call_id=CALL, agent_id="agent5", by="phone"), 40.0),
        env(ev.CallResumed(call_id=CALL, agent_id="agent5", held_ms=2000), 42.0),
        env(ev.ConferenceJoined(call_id=CALL, leg_id="leg-c", party="8006", parties=3), 50.0),
        env(ev.ConferenceLeft(call_id=CALL, leg_id="leg-c", party="8006", parties=2), 60.0),
        env(
            ev.CallTransferred(
                call_id=CALL,
                from_agent_id="agent5",
                to_agent_id="agent7",
                kind="blind",
                target_kind="extension",
                target="8007",
            ),
            70.0,
        ),
        env(
            ev.RecordingReady(
                call_id=CALL,
                recording_id="rec-0",
                path="p0",
                agent_id="agent5",
                duration_ms=40_500,
                holds=[
                    HoldMark(start_ms=10_000, end_ms=13_000, leg_id="leg-a", held_by="agent"),
                    HoldMark(start_ms=20_000, end_ms=22_000, leg_id="leg-a", held_by="agent"),
                ],
            ),
            71.0,
        ),
        env(
            ev.AgentStateChanged(
                agent_id="agent7",
                state=ev.AGENT_STATE_WRAP_UP,
                previous=ev.AGENT_STATE_ON_CALL,
                call_id=CALL,
            ),
            119.6,
            key="agent7",
        ),
    ]


def test_hold_transfer_conference_and_recordings_are_in_the_record() -> None:
    r = folded(controlled_call())
    assert (r.hold_count, r.hold_ms) == (2, 5000)
    assert r.talk_ms == 95_000 - 5000  # talk is connected time off hold
    assert r.agent_id == "agent7"  # who has the call after the transfer
    assert r.transfers == [
        {
            "at": "2026-03-01T09:01:10.000Z",
            "kind": "blind",
            "target_kind": "extension",
            "target": "8007",
            "from_agent_id": "agent5",
            "to_agent_id": "agent7",
        }
    ]
    assert r.conference == [
        {
            "leg_id": "leg-c",
            "party": "8006",
            "joined_at": "2026-03-01T09:00:50.000Z",
            "left_at": "2026-03-01T09:01:00.000Z",
        }
    ]
    assert [x["recording_id"] for x in r.recordings] == ["rec-0", "rec-1"]
    assert r.recordings[0]["holds"] == [  # the desk's player lists them
        {"start_ms": 10_000, "end_ms": 13_000, "held_by": "agent"},
        {"start_ms": 20_000, "end_ms": 22_000, "held_by": "agent"},
    ]
    assert (r.recordings[0]["duration_ms"], r.recordings[1]["holds"]) == (40_500, [])
    assert r.recording_id == "rec-1"  # the columns keep the latest
    assert r.caller_number == "13800138000"
    assert r.acw_started_at == T0 + timedelta(seconds=119.6) and r.acw_ms is None
    assert r.handle_ms == 90_000 + 5000  # until the wrap-up ends


@pytest.mark.parametrize("seed", range(30))
def test_call_control_folds_in_any_order_with_duplicates(seed: int) -> None:
    events = controlled_call()
    expected = folded(events)
    rng = random.Random(seed)
    shuffled = events + rng.sample(events, k=rng.randint(1, len(events)))
    rng.shuffle(shuffled)
    assert columns(folded(shuffled)) == columns(expected)


def test_the_gateways_hold_count_at_the_end_wins() -> None:
    events = controlled_call()
    ended = [e for e in events if e.WhichOneof("payload") == "call_ended"][0]
    ended.call_ended.hold_ms, ended.call_ended.hold_count = 9000, 3  # a hold open at hang-up
    r = folded(events)
    assert (r.hold_count, r.hold_ms, r.talk_ms) == (3, 9000, 95_000 - 9000)


def test_after_call_work_ends_once_and_counts_in_handle_time() -> None:
    r = folded(controlled_call())
    assert end_acw(r, T0 + timedelta(seconds=100)) is False  # before it started
    assert end_acw(r, T0 + timedelta(seconds=139.6)) is True
    assert end_acw(r, T0 + timedelta(seconds=150)) is False  # the first end wins
    assert r.acw_ms == 20_000
    assert r.handle_ms == 90_000 + 5000 + 20_000


def test_only_the_start_of_wrap_up_belongs_in_a_cdr() -> None:
    def state(new: int, previous: int, call_id: str = CALL) -> Envelope:
        p = ev.AgentStateChanged(agent_id="agent7", state=new, previous=previous, call_id=call_id)
        return env(p, 1.0, key="agent7")

    assert call_id_of(state(ev.AGENT_STATE_WRAP_UP, ev.AGENT_STATE_ON_CALL)) == CALL
    assert call_id_of(state(ev.AGENT_STATE_ON_CALL, ev.AGENT_STATE_RINGING)) is None
    leaving = state(ev.AGENT_STATE_READY, ev.AGENT_STATE_WRAP_UP, "")
    assert call_id_of(leaving) is None and leaves_wrap_up(leaving)
    assert not leaves_wrap_up(state(ev.AGENT_STATE_WRAP_UP, ev.AGENT_STATE_WRAP_UP))
