"""The ACD in an agent's call: transfers, requeue, click-to-dial, hold, handle time by phase,
contacts by outcome, the board snapshots, and all of it across a rebuild (restart mid-transfer).

The dispatcher runs with the in-memory gateway and publisher of test_acd_dispatcher; the events
it consumes are the gateway's, fed through the real intake.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf.message import Message
from prometheus_client import REGISTRY

from acd.agents import LOGGED_OUT, NOT_READY, ON_CALL, READY, WRAP_UP
from acd.dispatcher import TRANSFERRED_IN, Dispatcher
from acd.intake import AcdIntake
from acd.notifier import AcdNotifier
from acd.rebuild import LiveCall, fold_agents, fold_queues, plan
from acd.servicer import AcdService
from common.events import Envelope, envelope
from hotline.v1 import acd_pb2
from hotline.v1 import events_pb2 as ev
from tests.unit.test_acd_dispatcher import (
    SITE,
    FakeGateway,
    FakePublisher,
    Rig,
    call,
    counter,
    settle,
    until,
    until_announced,
)

WRAP_S = 0.3  # long enough to look at the wrap-up, short enough for a unit test


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    gateway, pub = FakeGateway(), FakePublisher()
    d = Dispatcher(AcdNotifier(pub), gateway, ["sales", "support"], SITE, 3.0, WRAP_S)
    d.start()
    yield Rig(d, gateway, pub)
    await d.stop()
    await asyncio.gather(*(t for t in [d._loop_task, *d._tasks] if t), return_exceptions=True)


def gw_event(payload: Message, key: str) -> Envelope:
    return envelope(payload, key, SITE, "gateway")


def handle_time(queue: str, phase: str) -> tuple[float, float]:
    """(count, sum) of hotline_queue_handle_time_seconds for queue and phase."""
    labels = {"queue": queue, "site": SITE, "phase": phase}
    count = REGISTRY.get_sample_value("hotline_queue_handle_time_seconds_count", labels) or 0.0
    total = REGISTRY.get_sample_value("hotline_queue_handle_time_seconds_sum", labels) or 0.0
    return count, total


def contacts(queue: str, outcome: str) -> float:
    labels = {"queue": queue, "site": SITE, "outcome": outcome}
    return REGISTRY.get_sample_value("hotline_queue_contacts_total", labels) or 0.0


async def on_call(rig: Rig, call_id: str, agent_id: str, ext: str, queue: str = "sales") -> None:
    await rig.ready_agent(agent_id, ext, queues={queue}, skills={"zh"})
    await rig.enqueue(call_id, queue=queue, priority=2, skills={"zh"})
    await until(lambda: rig.agent(agent_id).state == ON_CALL)
    await until_announced(rig.pub, agent_id, ON_CALL)


# ---- transfers ---------------------------------------------------------------------------
async def test_blind_transfer_to_an_extension_frees_the_agent_and_seats_the_target(
    rig: Rig,
) -> None:
    intake = AcdIntake(rig.d)
    await on_call(rig, "c1", "a1", "8001")
    await rig.d.login("a2", "8002", frozenset({"support"}), frozenset())  # Not Ready
    talk_before = handle_time("sales", "talk")[0]
    await intake.handle(
        gw_event(
            ev.CallTransferred(
                call_id="c1",
                from_agent_id="a1",
                kind="blind",
                target_kind="extension",
                target="8002",
            ),
            "c1",
        )
    )
    a1, a2 = rig.agent("a1"), rig.agent("a2")
    assert (a1.state, a1.call_id, a1.reason) == (WRAP_UP, "c1", "transferred to extension 8002")
    # found by extension: on the call, which keeps the queue it came through
    assert (a2.state, a2.call_id, a2.queue, a2.reason) == (ON_CALL, "c1", "sales", TRANSFERRED_IN)
    assert handle_time("sales", "talk")[0] == talk_before + 1  # a1's part of the call
    snap = rig.pub.states("a2")[-1]
    assert (snap.state, snap.previous, snap.call_id, snap.queue) == (
        ON_CALL,
        NOT_READY,
        "c1",
        "sales",
    )
    # a1's wrap-up ends in Ready; the call's end is a2's, who then wraps up
    await until(lambda: rig.agent("a1").state == READY)
    await intake.handle(gw_event(ev.CallEnded(call_id="c1", reason=1), "c1"))
    assert (a2.state, a2.call_id) == (WRAP_UP, "c1")
    await until(lambda: rig.agent("a2").state == READY)


async def test_transfer_names_the_target_agent_and_is_idempotent(rig: Rig) -> None:
    await on_call(rig, "c1", "a1", "8001")
    await rig.ready_agent("a2", "8002", queues={"support"})
    transferred = gw_event(
        ev.CallTransferred(
            call_id="c1",
            from_agent_id="a1",
            kind="attended",
            target_kind="extension",
            target="8002",
            to_agent_id="a2",
        ),
        "c1",
    )
    intake = AcdIntake(rig.d)
    await intake.handle(transferred)
    await intake.handle(transferred)  # redelivered: nothing moves twice
    assert rig.agent("a1").state == WRAP_UP and rig.agent("a2").state == ON_CALL
    assert [s.state for s in rig.pub.states("a2")][-1:] == [ON_CALL]
    assert len([s for s in rig.pub.states("a1") if s.state == WRAP_UP]) == 1


async def test_transfer_to_an_outside_number_only_frees_the_agent(rig: Rig) -> None:
    await on_call(rig, "c1", "a1", "8001")
    await rig.ready_agent("a2", "8002")
    await rig.d.call_transferred("c1", "a1", "number", "13800138000", "")
    assert rig.agent("a1").state == WRAP_UP and rig.agent("a2").state == READY
    # the call ends later at the far end: nobody of ours is on it any more
    await rig.d.call_ended("c1", 3)
    assert rig.agent("a2").state == READY


async def test_a_consulted_agent_is_on_the_call_until_the_consult_ends(rig: Rig) -> None:
    intake = AcdIntake(rig.d)
    await on_call(rig, "c1", "a1", "8001")
    await rig.ready_agent("a2", "8002", queues={"sales"})
    started = ev.ConsultStarted(
        call_id="c1", consult_leg_id="l2", agent_id="a1", target_kind="extension", target="8002"
    )
    await intake.handle(gw_event(started, "c1"))
    a2 = rig.agent("a2")
    assert (a2.state, a2.call_id, a2.queue, a2.reason) == (ON_CALL, "c1", "sales", "consulted")
    # busy with the consult: a new caller is not offered to a2 (nor to a1, on the call)
    await rig.enqueue("c2")
    await settle()
    assert [c.call_id for c in rig.gateway.connects] == ["c1"]
    # cancelled: a2 wraps up their part, a1 keeps the caller
    await intake.handle(
        gw_event(ev.ConsultEnded(call_id="c1", consult_leg_id="l2", outcome="cancelled"), "c1")
    )
    assert (a2.state, a2.reason) == (WRAP_UP, "consult cancelled")
    assert rig.agent("a1").state == ON_CALL


async def test_a_completed_consult_hands_the_call_to_the_consulted_agent(rig: Rig) -> None:
    intake = AcdIntake(rig.d)
    await on_call(rig, "c1", "a1", "8001")
    await rig.d.login("a2", "8002", frozenset({"support"}), frozenset())
    for payload in (
        ev.ConsultStarted(call_id="c1", agent_id="a1", target_kind="extension", target="8002"),
        ev.ConsultEnded(call_id="c1", agent_id="a1", outcome="completed"),
        ev.CallTransferred(
            call_id="c1",
            from_agent_id="a1",
            kind="attended",
            target_kind="extension",
            target="8002",
        ),
    ):
        await intake.handle(gw_event(payload, "c1"))
    assert rig.agent("a1").state == WRAP_UP
    a2 = rig.agent("a2")
    assert (a2.state, a2.call_id) == (ON_CALL, "c1")
    hold0 = handle_time("sales", "hold")
    # the call's end is a2's now; the caller's hold during the consult was a1's, not a2's
    await intake.handle(gw_event(ev.CallEnded(call_id="c1", reason=1, hold_ms=5000), "c1"))
    assert a2.state == WRAP_UP
    assert handle_time("sales", "hold")[1] - hold0[1] < 1.0


async def test_the_call_ending_during_a_consult_frees_both_agents(rig: Rig) -> None:
    await on_call(rig, "c1", "a1", "8001")
    await rig.ready_agent("a2", "8002")
    await rig.d.consult_started("c1", "extension", "8002")
    await rig.d.call_ended("c1", 1)
    assert rig.agent("a1").state == WRAP_UP and rig.agent("a2").state == WRAP_UP


# ---- requeue (transfer to a queue) -------------------------------------------------------
async def test_requeue_puts_the_call_back_with_its_data_and_frees_the_agent(rig: Rig) -> None:
    await on_call(rig, "c1", "a1", "8001")
    offered = counter("hotline_queue_offered_total", "support")
    position = await rig.d.requeue("c1", "support", "a1")
    assert position == 1
    a1 = rig.agent("a1")
    assert (a1.state, a1.reason) == (WRAP_UP, "transferred to queue support")
    (waiting,) = rig.d.queues["support"].calls
    assert (waiting.priority, waiting.skills, waiting.data, waiting.ani) == (
        2,
        frozenset({"zh"}),
        {"menu": "1"},
        "5551234",
    )
    requeued = rig.pub.of(ev.CallQueued)[-1]
    assert (requeued.call_id, requeued.queue, requeued.priority, dict(requeued.data)) == (
        "c1",
        "support",
        2,
        {"menu": "1"},
    )
    assert counter("hotline_queue_offered_total", "support") == offered + 1
    assert rig.gateway.plays[-1].call_id == "c1"  # hold music again while it waits
    # a support agent with the skill gets it; a1 is not offered it during wrap-up
    await rig.ready_agent("a2", "8002", queues={"support"}, skills={"zh"})
    await until(lambda: rig.agent("a2").state == ON_CALL)
    assert rig.agent("a2").call_id == "c1" and rig.agent("a2").queue == "support"
    # and a2 may requeue it again: the data travels on
    await rig.d.requeue("c1", "sales")
    assert rig.d.queues["sales"].calls[0].data == {"menu": "1"}


async def test_requeue_refusals_say_what_was_wrong(rig: Rig, service: AcdService) -> None:
    await on_call(rig, "c1", "a1", "8001")

    async def refused(request: acd_pb2.RequeueRequest) -> tuple[grpc.StatusCode, str]:
        _, ctx = await call(service.Requeue, request)
        assert ctx.code is not None
        return ctx.code, ctx.details

    assert await refused(acd_pb2.RequeueRequest(call_id="c1", queue="billing")) == (
        grpc.StatusCode.NOT_FOUND,
        "queue 'billing' does not exist (have: sales, support)",
    )
    assert await refused(acd_pb2.RequeueRequest(call_id="nope", queue="support")) == (
        grpc.StatusCode.NOT_FOUND,
        "call nope is not on an agent of this ACD: nothing to requeue",
    )
    assert await refused(
        acd_pb2.RequeueRequest(call_id="c1", queue="support", from_agent_id="a9")
    ) == (grpc.StatusCode.FAILED_PRECONDITION, "call c1 is on agent a1, not a9")
    assert await refused(acd_pb2.RequeueRequest(call_id="c1")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "call_id and queue are required",
    )
    reply, ctx = await call(
        service.Requeue, acd_pb2.RequeueRequest(call_id="c1", queue="support", from_agent_id="a1")
    )
    assert ctx.code is None and (reply.queue, reply.position) == ("support", 1)
    assert await refused(acd_pb2.RequeueRequest(call_id="c1", queue="support")) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "call c1 is already queued",
    )
    await rig.d.call_ended("c1", 1)
    assert await refused(acd_pb2.RequeueRequest(call_id="c1", queue="sales")) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "call c1 has already ended",
    )


@pytest.fixture
def service(rig: Rig) -> AcdService:
    return AcdService(rig.d)


# ---- calls the ACD did not offer ---------------------------------------------------------
async def test_click_to_dial_bridge_puts_the_agent_on_the_call(rig: Rig) -> None:
    intake = AcdIntake(rig.d)
    await rig.d.login("a1", "8001", frozenset({"sales"}), frozenset())
    await rig.d.set_state("a1", NOT_READY, "outbound")
    await intake.handle(gw_event(ev.CallBridged(call_id="out1", leg_id="l", agent_id="a1"), "o"))
    a1 = rig.agent("a1")
    assert (a1.state, a1.call_id, a1.queue, a1.reason) == (ON_CALL, "out1", "", "outbound")
    # no queue: a waiting call is not offered to them meanwhile
    await rig.enqueue("c1")
    await settle()
    assert not rig.gateway.connects
    talk = handle_time("direct", "talk")[0]
    await intake.handle(gw_event(ev.CallEnded(call_id="out1", reason=2), "out1"))
    assert a1.state == WRAP_UP and handle_time("direct", "talk")[0] == talk + 1


async def test_a_bridge_of_our_own_offer_changes_nothing(rig: Rig) -> None:
    await on_call(rig, "c1", "a1", "8001")
    before = len(rig.pub.states("a1"))
    await rig.d.call_bridged("c1", "a1", "sales")  # the CallBridged of the offer we made
    assert len(rig.pub.states("a1")) == before and rig.agent("a1").state == ON_CALL


async def test_a_bridge_to_an_agent_who_is_logged_out_or_unknown_is_ignored(rig: Rig) -> None:
    await rig.d.login("a1", "8001", frozenset(), frozenset())
    await rig.d.logout("a1")
    await rig.d.call_bridged("x", "a1", "")
    await rig.d.call_bridged("x", "ghost", "")
    assert rig.agent("a1").state == LOGGED_OUT


# ---- hold and handle time ----------------------------------------------------------------
async def test_hold_is_not_a_state_but_a_phase_of_handle_time(rig: Rig) -> None:
    intake = AcdIntake(rig.d)
    await on_call(rig, "c1", "a1", "8001")
    talk0, hold0, wrap0 = (handle_time("sales", p) for p in ("talk", "hold", "wrap_up"))
    states = len(rig.pub.states("a1"))
    await intake.handle(gw_event(ev.CallHeld(call_id="c1", agent_id="a1", by="desk"), "c1"))
    await asyncio.sleep(0.2)
    await intake.handle(gw_event(ev.CallResumed(call_id="c1", agent_id="a1", held_ms=200), "c1"))
    assert len(rig.pub.states("a1")) == states and rig.agent("a1").state == ON_CALL
    await asyncio.sleep(0.1)
    await intake.handle(gw_event(ev.CallEnded(call_id="c1", reason=1), "c1"))
    talk, hold = handle_time("sales", "talk"), handle_time("sales", "hold")
    assert (talk[0], hold[0]) == (talk0[0] + 1, hold0[0] + 1)
    assert 0.18 <= hold[1] - hold0[1] < 0.35
    assert 0.08 <= talk[1] - talk0[1] < 0.25  # the time on hold is not talk
    await until(lambda: rig.agent("a1").state == READY)
    wrap = handle_time("sales", "wrap_up")
    assert wrap[0] == wrap0[0] + 1 and WRAP_S * 0.9 <= wrap[1] - wrap0[1] < WRAP_S + 0.3


async def test_the_calls_hold_time_counts_when_the_events_of_hold_were_missed(rig: Rig) -> None:
    await on_call(rig, "c1", "a1", "8001")
    hold0 = handle_time("sales", "hold")
    await rig.d.call_ended("c1", 1, hold_ms=4000)  # e.g. held from the phone during a restart
    assert handle_time("sales", "hold")[1] - hold0[1] == pytest.approx(4.0)


async def test_an_open_hold_at_the_end_of_the_call_counts_up_to_the_end(rig: Rig) -> None:
    await on_call(rig, "c1", "a1", "8001")
    hold0 = handle_time("sales", "hold")
    rig.d.call_held("c1", "a1")
    await asyncio.sleep(0.15)
    await rig.d.call_transferred("c1", "a1", "number", "13800138000", "")
    assert 0.13 <= handle_time("sales", "hold")[1] - hold0[1] < 0.3


async def test_contacts_by_outcome_and_short_abandons(rig: Rig) -> None:
    rig.d.short_abandon_s = 0.1
    before = {o: contacts("sales", o) for o in ("answered", "abandoned", "short_abandoned")}
    await rig.enqueue("quick")
    await rig.d.call_ended("quick", 1)
    await rig.enqueue("patient")
    await asyncio.sleep(0.15)
    await rig.d.call_ended("patient", 1)
    await on_call(rig, "c1", "a1", "8001")
    after = {o: contacts("sales", o) - before[o] for o in before}
    assert after == {"answered": 1, "abandoned": 1, "short_abandoned": 1}
    # the rolling window: 1 answered of 3 that left
    f = rig.d.window.figures("sales")
    assert (f.answered, f.abandoned) == (1, 2) and f.abandon_rate == pytest.approx(2 / 3)


# ---- the board's snapshots -----------------------------------------------------------------
async def test_list_agents_and_queues(rig: Rig, service: AcdService) -> None:
    await on_call(rig, "c1", "a1", "8001")
    await rig.d.login("a2", "8002", frozenset({"support"}), frozenset())
    await rig.d.set_state("a2", NOT_READY, "meal")
    await rig.enqueue("w1", queue="support")
    reply, ctx = await call(service.ListAgents, acd_pb2.ListAgentsRequest())
    assert ctx.code is None
    rows = {a.agent_id: a for a in reply.agents}
    assert (rows["a1"].state, rows["a1"].call_id, rows["a1"].queue) == (ON_CALL, "c1", "sales")
    assert (rows["a2"].state, rows["a2"].reason, rows["a2"].queue) == (NOT_READY, "meal", "")
    assert abs(rows["a1"].state_since_ms - time.time() * 1000) < 5000
    reply, ctx = await call(service.ListQueues, acd_pb2.ListQueuesRequest())
    queues = {q.queue: q for q in reply.queues}
    assert list(queues) == ["sales", "support"]
    sales, support = queues["sales"], queues["support"]
    assert (sales.answered, sales.window_ended, sales.service_level) == (1, 1, 1.0)
    assert sales.asa_ms < 1000 and sales.abandon_rate == 0.0 and sales.window_s == 900
    assert dict(sales.agents_by_state) == {"on_call": 1}
    assert [c.call_id for c in support.calls] == ["w1"]
    assert dict(support.agents_by_state) == {"not_ready": 1}
    assert support.window_ended == 0  # no data yet, not 0 %


# ---- across a rebuild ----------------------------------------------------------------------
def topics(pub: FakePublisher) -> tuple[list[Envelope], list[Envelope]]:
    """What the ACD put on `agents` and `queues`, as the broker would hand it back."""
    agents, queues = [], []
    for payload, key in pub.published:
        record = envelope(payload, key, SITE, "acd")
        (agents if isinstance(payload, ev.AgentStateChanged) else queues).append(record)
    return agents, queues


async def restarted(rig: Rig, live: list[LiveCall]) -> Dispatcher:
    """A second ACD rebuilt from the first one's records and the gateway's live calls."""
    agents, queues = topics(rig.pub)
    folded = fold_queues(queues)
    p = plan(
        fold_agents(agents),
        folded,
        {c.call_id: c for c in live},
        ["sales", "support"],
        now_ms=int(time.time() * 1000),
        now_mono=time.monotonic(),
        wrap_up_s=WRAP_S,
    )
    d = Dispatcher(
        AcdNotifier(FakePublisher()), FakeGateway(), ["sales", "support"], SITE, 3, WRAP_S
    )
    await d.restore(p, folded.outcomes)
    return d


async def test_restart_mid_transfer_the_gateway_has_the_call_on_the_target(rig: Rig) -> None:
    """The ACD dies after the gateway moved the call to a2 but before it heard of it: the
    rebuild seats a2 on the call (the gateway's live calls win) and wraps a1 up."""
    await on_call(rig, "c1", "a1", "8001")
    await rig.ready_agent("a2", "8002", queues={"support"})
    d = await restarted(rig, [LiveCall("c1", "bridged", "a2")])
    try:
        a1, a2 = d.book.get("a1"), d.book.get("a2")
        assert (a1.state, a1.call_id) == (WRAP_UP, "c1")
        assert (a2.state, a2.call_id, a2.queue) == (ON_CALL, "c1", "sales")
        # the call's data survived the restart: a2 can still send it to a queue with it
        await d.requeue("c1", "support", "a2")
        (waiting,) = d.queues["support"].calls
        assert (waiting.priority, waiting.data, waiting.skills) == (2, {"menu": "1"}, {"zh"})
        assert d.book.get("a2").state == WRAP_UP
    finally:
        await d.stop()


async def test_restart_mid_blind_transfer_to_an_extension_finds_the_agent_seated_there(
    rig: Rig,
) -> None:
    """A blind transfer to an extension names no agent at the gateway (ListCalls has the call
    bridged to the extension only): the agent logged in at that extension has the call."""
    await on_call(rig, "c1", "a1", "8001")
    await rig.d.login("a2", "8002", frozenset({"support"}), frozenset())
    await rig.d.login("a3", "8003", frozenset({"support"}), frozenset())
    await rig.d.logout("a3")  # logged out: never found by extension
    d = await restarted(rig, [LiveCall("c1", "bridged", "", 0, "8002")])
    try:
        assert (d.book.get("a1").state, d.book.get("a1").call_id) == (WRAP_UP, "c1")
        a2 = d.book.get("a2")
        assert (a2.state, a2.call_id, a2.queue) == (ON_CALL, "c1", "sales")
        await d.call_ended("c1", 1)
        assert d.book.get("a2").state == WRAP_UP
    finally:
        await d.stop()


async def test_restart_after_a_transfer_and_a_requeue_keeps_everyone_where_they_are(
    rig: Rig,
) -> None:
    await on_call(rig, "c1", "a1", "8001")
    await rig.ready_agent("a2", "8002", queues={"support"})
    await rig.d.call_transferred("c1", "a1", "extension", "8002", "a2")
    await rig.d.requeue("c1", "sales", "a2")  # a2 sends it on to sales (no sales agent free)
    await rig.d.set_state("a1", NOT_READY, "meal")  # a1 leaves wrap-up for a meal
    d = await restarted(rig, [LiveCall("c1", "answered")])
    try:
        assert d.book.get("a1").state == NOT_READY
        a2 = d.book.get("a2")
        assert (a2.state, a2.call_id, a2.queue) == (WRAP_UP, "c1", "sales")
        (waiting,) = d.queues["sales"].calls
        assert (waiting.call_id, waiting.priority, waiting.data) == ("c1", 2, {"menu": "1"})
    finally:
        await d.stop()
