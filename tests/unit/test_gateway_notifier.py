"""The gateway's notifier: the events it builds from the switch's facts, in order, and an
event that fails to publish retried with the same event id until it lands."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence

from google.protobuf.message import Message

from gateway import notifier as notifier_module
from gateway.core import steps
from gateway.core.calls import Call, EndReason
from gateway.notifier import STEP_EVENTS, CallNotifier, step_event
from hotline.v1 import events_pb2 as ev


class FlakyPublisher:
    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.attempts: list[tuple[str, str | None]] = []
        self.published: list[tuple[Message, str, str | None]] = []
        self.batches: list[int] = []

    async def publish_batch(
        self, items: Sequence[tuple[Message, str, str, Mapping[str, str]]]
    ) -> None:
        self.attempts += [(payload.DESCRIPTOR.name, event_id) for payload, _, event_id, _ in items]
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker down")
        self.batches.append(len(items))
        self.published += [(payload, key, event_id) for payload, key, event_id, _ in items]


def a_call() -> Call:
    return Call(
        call_id="c1",
        ani="13800138000",
        dnis="10000",
        trunk="analog",
        channel="analog",
        caller=object(),
        caller_name="Zhang Wei",
        line="analog/2",  # type: ignore[arg-type]
        agent_id="agent1",
        queue="sales",
    )


async def drained(pub: FlakyPublisher, n: int, timeout_s: float = 2.0) -> None:
    async def wait() -> None:
        while len(pub.published) < n:
            await asyncio.sleep(0.005)

    await asyncio.wait_for(wait(), timeout_s)


async def test_facts_become_call_events_in_order() -> None:
    pub = FlakyPublisher()
    notifier = CallNotifier(pub)
    notifier.start()
    call = a_call()
    notifier.offered(call)
    notifier.answered(call)
    notifier.bridged(call, "leg9", "8001")
    notifier.ended(call, EndReason.FAR_END, "busy tone", duration_ms=5000, talk_ms=3000)
    await drained(pub, 4)
    await notifier.stop()
    payloads = [p for p, _, _ in pub.published]
    assert [p.DESCRIPTOR.name for p in payloads] == [
        "CallOffered",
        "CallAnswered",
        "CallBridged",
        "CallEnded",
    ]
    assert {key for _, key, _ in pub.published} == {"c1"}
    offered, _, bridged, ended = payloads
    assert isinstance(offered, ev.CallOffered)
    assert (
        offered.ani,
        offered.dnis,
        offered.trunk,
        offered.channel,
        offered.caller_name,
        offered.line,
        offered.direction,
    ) == ("13800138000", "10000", "analog", "analog", "Zhang Wei", "analog/2", "inbound")
    assert isinstance(bridged, ev.CallBridged)
    assert (bridged.leg_id, bridged.endpoint, bridged.agent_id, bridged.queue) == (
        "leg9",
        "8001",
        "agent1",
        "sales",
    )
    assert isinstance(ended, ev.CallEnded)
    assert (ended.reason, ended.detail, ended.duration_ms, ended.talk_ms) == (
        ev.END_REASON_FAR_END,
        "busy tone",
        5000,
        3000,
    )


async def test_every_end_reason_has_its_protobuf_value() -> None:
    assert set(notifier_module.END_REASONS) == set(EndReason)
    names = {ev.EndReason.Name(v) for v in notifier_module.END_REASONS.values()}
    assert names == {f"END_REASON_{r.name}" for r in EndReason}


async def test_a_failed_publish_is_retried_with_the_same_event_id(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(notifier_module, "RETRY_FIRST_S", 0.01)
    pub = FlakyPublisher(failures=2)
    notifier = CallNotifier(pub)
    notifier.start()
    call = a_call()
    notifier.offered(call)
    notifier.answered(call)
    await drained(pub, 2)
    await notifier.stop()
    offered_ids = [eid for name, eid in pub.attempts if name == "CallOffered"]
    assert len(offered_ids) == 3 and len(set(offered_ids)) == 1 and offered_ids[0]
    assert [p.DESCRIPTOR.name for p, _, _ in pub.published] == ["CallOffered", "CallAnswered"]
    assert pub.published[1][2] != offered_ids[0]


async def test_trunk_state_and_diversion_become_events() -> None:
    pub = FlakyPublisher()
    notifier = CallNotifier(pub)
    notifier.start()
    call = a_call()
    call.diverted_from = "10001"
    notifier.offered(call)
    notifier.trunk_state("sip-trunk", False, "OPTIONS 408 Request Timeout (no answer)")
    await drained(pub, 2)
    await notifier.stop()
    (offered, _, _), (trunk, key, _) = pub.published
    assert isinstance(offered, ev.CallOffered) and offered.diverted_from == "10001"
    assert isinstance(trunk, ev.TrunkStateChanged)
    assert (trunk.trunk, trunk.up, trunk.detail, key) == (
        "sip-trunk",
        False,
        "OPTIONS 408 Request Timeout (no answer)",
        "trunk:sip-trunk",
    )


def test_every_call_control_step_becomes_its_event_with_every_field() -> None:
    examples = [
        steps.Held("l1", "a1", "phone"),
        steps.Resumed("l1", "a1", 2500),
        steps.Transferred("l1", "a1", "blind", "queue", "sales", "l2", "a2"),
        steps.ConsultStarted("l3", "a1", "extension", "8002"),
        steps.ConsultEnded("l3", "a1", "cancelled"),
        steps.ConferenceJoined("l4", "8003", "a3", 3),
        steps.ConferenceLeft("l4", "8003", 2),
        steps.MonitorStarted("l5", "s1", "whisper", "a1"),
        steps.MonitorStopped("l5", "s1"),
    ]
    assert {type(s) for s in examples} == set(STEP_EVENTS)
    for step in examples:
        event = step_event("c1", step)
        assert event.call_id == "c1"
        for name, value in dataclasses.asdict(step).items():
            assert getattr(event, name) == value, (type(step).__name__, name)


async def test_what_queued_up_meanwhile_goes_out_as_one_ordered_batch() -> None:
    pub = FlakyPublisher()
    notifier = CallNotifier(pub)
    call = a_call()
    for _ in range(3):  # queued before the outbox runs: one burst
        notifier.offered(call)
        notifier.answered(call)
    notifier.start()
    await drained(pub, 6)
    notifier.answered(call)
    await drained(pub, 7)
    await notifier.stop()
    assert pub.batches == [6, 1]
    names = [p.DESCRIPTOR.name for p, _, _ in pub.published]
    assert names == ["CallOffered", "CallAnswered"] * 3 + ["CallAnswered"]
    assert len({eid for _, _, eid in pub.published}) == 7, "one event id per event"


async def test_call_end_is_noted_once_its_batch_is_on_the_broker(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(notifier_module, "RETRY_FIRST_S", 0.01)
    pub, noted = FlakyPublisher(failures=1), []
    notifier = CallNotifier(pub, on_call_ended=noted.append)
    call = a_call()
    notifier.offered(call)
    notifier.ended(call, EndReason.CALLER_HANGUP, "bye", duration_ms=10, talk_ms=0)
    notifier.start()
    await drained(pub, 2)
    await notifier.stop()
    assert noted == ["c1"] and len(pub.attempts) == 4
