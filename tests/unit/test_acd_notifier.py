"""The ACD's notifier and intake: every event the ACD publishes lands in the envelope on the
right topic with the right key and fields; only CallEnded moves the dispatcher."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence

import pytest
from google.protobuf.message import Message

from acd import notifier as notifier_module
from acd.agents import NOT_READY, READY, RINGING, Agent
from acd.intake import AcdIntake
from acd.notifier import AcdNotifier
from acd.queues import WaitingCall
from common.events import TOPIC_OF, Envelope, envelope, payload_of
from hotline.v1 import events_pb2 as ev

SITE = "unit-site"


class EnvelopingPublisher:
    """Wraps each payload as EventPublisher does, and notes the topic it would go to."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Envelope]] = []

    async def publish_batch(
        self, items: Sequence[tuple[Message, str, str, Mapping[str, str]]]
    ) -> list[Envelope]:
        envs = [
            envelope(payload, key, SITE, "acd", event_id) for payload, key, event_id, _ in items
        ]
        self.sent += [(TOPIC_OF[env.type], env) for env in envs]
        return envs


def call() -> WaitingCall:
    c = WaitingCall(
        "c1", "sales", 2, "5551234", "10000", frozenset({"fr", "en"}), {"menu": "1", "flow": "main"}
    )
    c.attempts = 3
    return c


def agent(state: int = RINGING) -> Agent:
    return Agent(
        "a7",
        "8007",
        frozenset({"support", "sales"}),
        frozenset({"en"}),
        state=state,
        reason="offered sales",
        call_id="c1",
    )


def only(pub: EnvelopingPublisher) -> tuple[str, Envelope]:
    assert len(pub.sent) == 1
    return pub.sent[0]


async def test_call_queued_goes_on_queues_keyed_by_call() -> None:
    pub = EnvelopingPublisher()
    await AcdNotifier(pub).call_queued(call(), position=4)
    topic, env = only(pub)
    assert (topic, env.type, env.key, env.site, env.source) == (
        "queues",
        "CallQueued",
        "c1",
        SITE,
        "acd",
    )
    assert payload_of(env) == ev.CallQueued(
        call_id="c1",
        queue="sales",
        priority=2,
        position=4,
        ani="5551234",
        dnis="10000",
        skills=["en", "fr"],
        data={"menu": "1", "flow": "main"},
        enqueued_at_ms=env.call_queued.enqueued_at_ms,
    )
    assert abs(env.call_queued.enqueued_at_ms / 1000 - time.time()) < 5


async def test_call_abandoned_goes_on_queues_keyed_by_call() -> None:
    pub = EnvelopingPublisher()
    await AcdNotifier(pub).call_abandoned("c1", "support", waited_s=12.3456)
    topic, env = only(pub)
    assert (topic, env.type, env.key) == ("queues", "CallAbandoned", "c1")
    assert payload_of(env) == ev.CallAbandoned(call_id="c1", queue="support", waited_ms=12345)


async def test_agent_offered_goes_on_queues_keyed_by_call() -> None:
    # not on the compacted `agents` topic: there it would be the agent's last record and
    # compaction would drop the agent's state snapshot
    pub = EnvelopingPublisher()
    await AcdNotifier(pub).agent_offered("sales", call(), agent(), waited_s=7.25)
    topic, env = only(pub)
    assert (topic, env.type, env.key) == ("queues", "AgentOffered", "c1")
    assert payload_of(env) == ev.AgentOffered(
        call_id="c1",
        agent_id="a7",
        extension="8007",
        queue="sales",
        ani="5551234",
        dnis="10000",
        attempt=3,
        waited_ms=7250,
    )


async def test_agent_state_changed_goes_on_agents_keyed_by_agent() -> None:
    pub = EnvelopingPublisher()
    a = agent(RINGING)
    a.idle_since = time.monotonic() - 30
    await AcdNotifier(pub).agent_state_changed(a, previous=READY)
    topic, env = only(pub)
    assert (topic, env.type, env.key) == ("agents", "AgentStateChanged", "a7")
    assert payload_of(env) == ev.AgentStateChanged(
        agent_id="a7",
        state=RINGING,
        previous=READY,
        reason="offered sales",
        extension="8007",
        call_id="c1",
        queues=["sales", "support"],
        skills=["en"],
        since_ms=int(a.since_wall * 1000),
        idle_since_ms=env.agent_state_changed.idle_since_ms,
    )
    # idle since, on the wall clock: what longest-idle routing needs after a restart
    assert abs(env.agent_state_changed.idle_since_ms / 1000 - (time.time() - 30)) < 1


async def test_restated_snapshots_say_so() -> None:
    pub = EnvelopingPublisher()
    notifier = AcdNotifier(pub)
    await notifier.agent_state_changed(agent(READY), previous=READY, restated=True)
    await notifier.call_queued(call(), position=1, restated=True)
    assert [env.agent_state_changed.restated for _, env in pub.sent[:1]] == [True]
    assert pub.sent[1][1].call_queued.restated
    assert notifier.published == {"agents": 1, "queues": 1}


async def test_call_dequeued_goes_on_queues_keyed_by_call() -> None:
    pub = EnvelopingPublisher()
    await AcdNotifier(pub).call_dequeued(call(), "a7", waited_s=4.5)
    topic, env = only(pub)
    assert (topic, env.type, env.key) == ("queues", "CallDequeued", "c1")
    assert payload_of(env) == ev.CallDequeued(
        call_id="c1",
        queue="sales",
        reason=ev.DEQUEUE_REASON_ANSWERED,
        agent_id="a7",
        waited_ms=4500,
    )


class FakeDispatcher:
    """Records what the intake asks of the dispatcher, in order."""

    def __init__(self) -> None:
        self.asked: list[tuple] = []

    async def call_ended(self, call_id: str, reason: int, hold_ms: int = 0) -> None:
        self.asked.append(("ended", call_id, reason, hold_ms))

    async def call_transferred(self, *args: str) -> None:
        self.asked.append(("transferred", *args))

    async def call_bridged(self, call_id: str, agent_id: str, queue: str) -> None:
        self.asked.append(("bridged", call_id, agent_id, queue))

    async def consult_started(self, call_id: str, target_kind: str, target: str) -> None:
        self.asked.append(("consult", call_id, target_kind, target))

    async def consult_ended(self, call_id: str, outcome: str) -> None:
        self.asked.append(("consult ended", call_id, outcome))

    def call_held(self, call_id: str, agent_id: str) -> None:
        self.asked.append(("held", call_id, agent_id))

    def call_resumed(self, call_id: str, agent_id: str) -> None:
        self.asked.append(("resumed", call_id, agent_id))


async def test_intake_hands_call_events_to_the_dispatcher_and_ignores_the_rest() -> None:
    dispatcher = FakeDispatcher()
    intake = AcdIntake(dispatcher)  # type: ignore[arg-type]
    for payload in (
        ev.CallOffered(call_id="c1", ani="5551234", dnis="10000"),
        ev.CallAnswered(call_id="c1"),
        ev.CallBridged(call_id="c1", leg_id="l1", endpoint="8001"),  # no agent: nobody to move
        ev.AgentStateChanged(agent_id="a7", state=NOT_READY),
        ev.MonitorStarted(call_id="c1", supervisor_id="s1", mode="listen"),
    ):
        await intake.handle(envelope(payload, "c1", SITE, "gateway"))
    assert dispatcher.asked == []
    for payload in (
        ev.CallBridged(call_id="c1", agent_id="a7", queue="sales"),
        ev.CallHeld(call_id="c1", agent_id="a7", by="desk"),
        ev.ConsultStarted(call_id="c1", agent_id="a7", target_kind="extension", target="8002"),
        ev.ConsultEnded(call_id="c1", agent_id="a7", outcome="cancelled"),
        ev.CallResumed(call_id="c1", agent_id="a7", held_ms=2000),
        ev.CallTransferred(
            call_id="c1",
            from_agent_id="a7",
            kind="blind",
            target_kind="extension",
            target="8002",
            to_agent_id="a8",
        ),
        ev.CallEnded(call_id="c1", reason=ev.END_REASON_CALLER_HANGUP, hold_ms=2000),
    ):
        await intake.handle(envelope(payload, "c1", SITE, "gateway"))
    assert dispatcher.asked == [
        ("bridged", "c1", "a7", "sales"),
        ("held", "c1", "a7"),
        ("consult", "c1", "extension", "8002"),
        ("consult ended", "c1", "cancelled"),
        ("resumed", "c1", "a7"),
        ("transferred", "c1", "a7", "extension", "8002", "a8"),
        ("ended", "c1", ev.END_REASON_CALLER_HANGUP, 2000),
    ]


# ---- the outbox ----------------------------------------------------------------------------
class HeldPublisher:
    """Takes batches and acknowledges each only when the test releases it; can fail."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[str, str]]] = []  # (type, event id) per batch attempt
        self.release = asyncio.Event()
        self.failures = 0

    async def publish_batch(
        self, items: Sequence[tuple[Message, str, str, Mapping[str, str]]]
    ) -> None:
        self.batches.append([(p.DESCRIPTOR.name, event_id) for p, _, event_id, _ in items])
        if self.failures:
            self.failures -= 1
            raise RuntimeError("not this time")
        await self.release.wait()


async def until(predicate: Callable[[], bool]) -> None:
    for _ in range(200):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


async def test_events_queued_together_go_out_as_one_batch_in_order_and_are_done_when_acked() -> (
    None
):
    pub = HeldPublisher()
    notifier = AcdNotifier(pub)
    queued = notifier.call_queued(call(), 1)
    ringing = notifier.agent_state_changed(agent(RINGING), READY)
    offered = notifier.agent_offered("sales", call(), agent(), 1.0)
    await until(lambda: len(pub.batches) == 1)
    assert [t for t, _ in pub.batches[0]] == ["CallQueued", "AgentStateChanged", "AgentOffered"]
    assert not queued.done() and notifier.pending == 3  # not on the broker yet
    later = notifier.call_abandoned("c2", "sales", 3.0)  # waits for the next batch
    pub.release.set()
    await asyncio.gather(queued, ringing, offered, later)
    assert [[t for t, _ in b] for b in pub.batches] == [
        ["CallQueued", "AgentStateChanged", "AgentOffered"],
        ["CallAbandoned"],
    ]
    assert notifier.published == {"queues": 3, "agents": 1} and notifier.pending == 0


async def test_a_batch_that_fails_is_published_again_with_the_same_event_ids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(notifier_module, "RETRY_FIRST_S", 0.0)
    pub = HeldPublisher()
    pub.failures = 1
    pub.release.set()
    notifier = AcdNotifier(pub)
    await asyncio.gather(
        notifier.call_queued(call(), 1), notifier.agent_state_changed(agent(), READY)
    )
    first, again = pub.batches
    assert first == again and len({event_id for _, event_id in first}) == 2
    assert notifier.published == {"queues": 1, "agents": 1}


async def test_a_fenced_notifier_queues_nothing_and_publishes_nothing_queued() -> None:
    class Lost(Exception):
        pass

    held = True

    def fence() -> None:
        if not held:
            raise Lost("lease lost")

    pub = HeldPublisher()
    pub.release.set()
    notifier = AcdNotifier(pub, fence=fence)
    queued = notifier.call_queued(call(), 1)
    held = False  # lost while the event waits in the outbox
    with pytest.raises(Lost):
        await queued
    with pytest.raises(Lost):
        notifier.call_queued(call(), 1)
    assert pub.batches == [] and notifier.published == {}


async def test_stop_publishes_what_is_queued_first() -> None:
    pub = HeldPublisher()
    notifier = AcdNotifier(pub)
    queued = notifier.call_queued(call(), 1)
    stopping = asyncio.create_task(notifier.stop())
    await until(lambda: len(pub.batches) == 1)
    pub.release.set()
    await stopping
    assert queued.done() and notifier.published == {"queues": 1}
