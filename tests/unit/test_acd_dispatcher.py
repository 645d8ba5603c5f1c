"""The ACD dispatcher with an in-memory gateway and publisher: matching, offers and their
outcomes, abandon, wrap-up; plus the queue KPIs and the gRPC servicer's error mapping."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc
import pytest
from prometheus_client import REGISTRY

from acd import kpis
from acd.agents import NOT_READY, ON_CALL, READY, RINGING, WRAP_UP, InvalidTransition
from acd.dispatcher import HOLD_PROMPT, Dispatcher, UnknownQueue
from acd.notifier import AcdNotifier
from acd.queues import WaitingCall
from acd.rebuild import LiveCall, Outcome, fold_agents, fold_queues, plan
from acd.servicer import AcdService
from common import error_info
from common.events import envelope
from common.lease import Fenced
from hotline.v1 import acd_pb2
from hotline.v1 import events_pb2 as ev
from hotline.v1 import gateway_pb2 as gw
from tests.unit.rpc_errors import rpc_error

SITE = "unit-site"
WRAP_UP_S = 0.05


class FakeGateway:
    """CallControl stand-in: Play works, or waits for `play_gate` (a future whose result, if an
    exception, is raised); ConnectToEndpoint answers per extension with a ConnectResult, an
    exception to raise, or a future to wait for (to hold the ring)."""

    def __init__(self) -> None:
        self.plays: list[gw.PlayRequest] = []
        self.play_gate: asyncio.Future[object] | None = None
        self.connects: list[gw.ConnectRequest] = []
        self.outcomes: dict[str, list[object]] = {}
        self.default: object = gw.CONNECT_RESULT_ANSWERED

    def script(self, extension: str, *outcomes: object) -> None:
        self.outcomes.setdefault(extension, []).extend(outcomes)

    async def Play(self, request: gw.PlayRequest) -> gw.PlayReply:  # noqa: N802
        self.plays.append(request)
        if self.play_gate is not None:
            outcome = await self.play_gate
            if isinstance(outcome, Exception):
                raise outcome
        return gw.PlayReply(call_id=request.call_id, completed=False)

    async def ConnectToEndpoint(self, request: gw.ConnectRequest) -> gw.ConnectReply:  # noqa: N802
        self.connects.append(request)
        queued = self.outcomes.get(request.endpoint)
        outcome = queued.pop(0) if queued else self.default
        if isinstance(outcome, asyncio.Future):
            outcome = await outcome
        if isinstance(outcome, Exception):
            raise outcome
        return gw.ConnectReply(call_id=request.call_id, result=outcome, detail="fake")


class FakePublisher:
    """The broker's side of the ACD's outbox: takes a batch a moment after it is handed over,
    as a broker does, so a test that asserts an event before the outbox sent it fails here
    every time instead of on a loaded CI machine once in a while."""

    ACK_S = 0.002

    def __init__(self) -> None:
        self.published: list[tuple[object, str]] = []

    async def publish_batch(self, items) -> None:  # noqa: ANN001
        await asyncio.sleep(self.ACK_S)
        self.published += [(payload, key) for payload, key, _, _ in items]

    def of(self, kind: type) -> list:
        return [p for p, _ in self.published if isinstance(p, kind)]

    def states(self, agent_id: str) -> list[ev.AgentStateChanged]:
        return [p for p in self.of(ev.AgentStateChanged) if p.agent_id == agent_id]


@dataclass
class Rig:
    d: Dispatcher
    gateway: FakeGateway
    pub: FakePublisher

    async def ready_agent(
        self,
        agent_id: str,
        extension: str,
        queues: set[str] | None = None,
        skills: set[str] | None = None,
    ) -> None:
        await self.d.login(
            agent_id, extension, frozenset(queues or {"sales"}), frozenset(skills or ())
        )
        await self.d.set_state(agent_id, READY, "")
        await asyncio.sleep(0.002)  # distinct idle_since on coarse clocks

    async def enqueue(
        self, call_id: str, queue: str = "sales", priority: int = 0, skills: set[str] | None = None
    ) -> int:
        return await self.d.enqueue(
            WaitingCall(
                call_id, queue, priority, "5551234", "10000", frozenset(skills or ()), {"menu": "1"}
            )
        )

    def agent(self, agent_id: str):  # noqa: ANN201
        return self.d.book.get(agent_id)


async def until(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.001)


async def until_announced(pub: FakePublisher, agent_id: str, state: int) -> None:
    """Until `agent_id`'s last published state is `state`: a state changes at once, its
    event leaves the notifier's outbox a moment later."""
    await until(lambda: [s.state for s in pub.states(agent_id)][-1:] == [state])


async def settle() -> None:
    """Let the dispatch loop and its offer tasks run everything that is runnable."""
    for _ in range(20):
        await asyncio.sleep(0)


def counter(name: str, queue: str = "sales") -> float:
    return REGISTRY.get_sample_value(name, {"queue": queue, "site": SITE}) or 0.0


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    gateway, pub = FakeGateway(), FakePublisher()
    d = Dispatcher(
        AcdNotifier(pub),
        gateway,
        ["sales", "support"],
        SITE,
        ring_timeout_s=3.0,
        wrap_up_s=WRAP_UP_S,
    )
    d.start()
    yield Rig(d, gateway, pub)
    await d.stop()
    await asyncio.gather(*(t for t in [d._loop_task, *d._tasks] if t), return_exceptions=True)


# ---- enqueue -----------------------------------------------------------------------------
async def test_enqueue_announces_the_call_and_starts_hold_music(rig: Rig) -> None:
    offered = counter("hotline_queue_offered_total")
    assert (
        await rig.d.enqueue(
            WaitingCall(
                "c1", "sales", 2, "5551234", "10000", frozenset({"fr", "en"}), {"menu": "1"}
            )
        )
        == 1
    )
    (queued,) = rig.pub.of(ev.CallQueued)
    assert (queued.call_id, queued.queue, queued.priority, queued.position) == ("c1", "sales", 2, 1)
    assert (queued.ani, queued.dnis, list(queued.skills), dict(queued.data)) == (
        "5551234",
        "10000",
        ["en", "fr"],
        {"menu": "1"},
    )
    assert rig.pub.published[0][1] == "c1"  # keyed by call id
    await until(lambda: len(rig.gateway.plays) == 1)
    play = rig.gateway.plays[0]
    assert (play.call_id, play.prompt, play.loop) == ("c1", HOLD_PROMPT, True)
    assert counter("hotline_queue_offered_total") == offered + 1
    assert not rig.gateway.connects  # nobody is ready


async def test_unknown_queue_is_refused(rig: Rig) -> None:
    with pytest.raises(
        UnknownQueue, match=r"queue 'billing' does not exist \(have: sales, support\)"
    ):
        await rig.enqueue("c1", queue="billing")
    with pytest.raises(UnknownQueue):
        await rig.d.login("a1", "8001", frozenset({"billing"}), frozenset())
    assert rig.pub.published == []
    assert "a1" not in rig.d.book.agents


async def test_duplicate_enqueue_is_refused(rig: Rig) -> None:
    await rig.enqueue("c1")
    with pytest.raises(InvalidTransition, match="call c1 is already queued"):
        await rig.enqueue("c1")
    with pytest.raises(InvalidTransition, match="already queued"):
        await rig.enqueue("c1", queue="support")  # not in another queue either
    assert len(rig.d.queues["sales"]) == 1 and len(rig.d.queues["support"]) == 0
    assert len(rig.pub.of(ev.CallQueued)) == 1


async def test_priority_ordering(rig: Rig) -> None:
    assert await rig.enqueue("c1") == 1
    assert await rig.enqueue("c2") == 2
    assert await rig.enqueue("vip", priority=5) == 1
    assert [q.position for q in rig.pub.of(ev.CallQueued)] == [1, 2, 1]
    assert [c.call_id for c in rig.d.queues["sales"].calls] == ["vip", "c1", "c2"]
    rig.gateway.default = asyncio.get_running_loop().create_future()  # ring forever
    await rig.ready_agent("a1", "8001")
    await until(lambda: len(rig.gateway.connects) == 1)
    assert rig.gateway.connects[0].call_id == "vip"
    await rig.ready_agent("a2", "8002")
    await until(lambda: len(rig.gateway.connects) == 2)
    assert rig.gateway.connects[1].call_id == "c1"
    rig.gateway.default.set_result(gw.CONNECT_RESULT_ANSWERED)


async def test_an_agent_is_rung_only_once_the_broker_has_the_offer(rig: Rig) -> None:
    """The ACD's state is rebuilt from its topics: the call, the agent's RINGING and the offer
    are on the broker before the gateway rings the agent, however they were batched."""
    await rig.ready_agent("a1", "8001")
    gate, acked = asyncio.Event(), FakePublisher()

    class Gated:  # the broker takes the call, then holds everything after it
        async def publish_batch(self, items) -> None:  # noqa: ANN001
            if acked.published:
                await gate.wait()
            await acked.publish_batch(items)

    rig.d.notifier.publisher = Gated()  # type: ignore[assignment]
    await rig.enqueue("c1")
    await until(lambda: rig.agent("a1").state == RINGING)
    await settle()
    assert rig.gateway.connects == []
    gate.set()
    await until(lambda: len(rig.gateway.connects) == 1)
    await until(lambda: rig.agent("a1").state == ON_CALL)
    await until_announced(acked, "a1", ON_CALL)
    assert [type(p).__name__ for p, _ in acked.published[:3]] == [
        "CallQueued",
        "AgentStateChanged",  # RINGING
        "AgentOffered",
    ]
    assert [s.state for s in acked.states("a1")] == [RINGING, ON_CALL]


# ---- offers and outcomes ---------------------------------------------------------------
async def test_longest_idle_agent_is_offered_first(rig: Rig) -> None:
    await rig.ready_agent("a2", "8002")
    await rig.ready_agent("a1", "8001")
    await rig.ready_agent("a3", "8003")
    await rig.enqueue("c1")
    await until(lambda: rig.agent("a2").state == ON_CALL)
    (req,) = rig.gateway.connects
    assert (req.call_id, req.endpoint, req.agent_id, req.queue, req.ring_timeout_ms) == (
        "c1",
        "8002",
        "a2",
        "sales",
        3000,
    )
    (offer,) = rig.pub.of(ev.AgentOffered)
    assert (offer.call_id, offer.agent_id, offer.extension, offer.queue, offer.attempt) == (
        "c1",
        "a2",
        "8002",
        "sales",
        1,
    )
    assert rig.agent("a1").state == READY and rig.agent("a3").state == READY


async def test_skills_route_past_the_longest_idle(rig: Rig) -> None:
    await rig.ready_agent("a1", "8001", skills={"en"})
    await rig.ready_agent("a2", "8002", skills={"en", "fr"})
    await rig.enqueue("c1", skills={"fr"})
    await until(lambda: rig.agent("a2").state == ON_CALL)
    assert [r.endpoint for r in rig.gateway.connects] == ["8002"]
    assert rig.agent("a1").state == READY


async def test_answered_puts_agent_on_call_and_empties_queue(rig: Rig) -> None:
    answered = counter("hotline_queue_answered_total")
    await rig.ready_agent("a1", "8001")
    await rig.enqueue("c1")
    await until(lambda: rig.agent("a1").state == ON_CALL)
    await until_announced(rig.pub, "a1", ON_CALL)
    a1 = rig.agent("a1")
    assert a1.call_id == "c1" and a1.reason == "answered"
    assert rig.d.answered == {"sales": 1, "support": 0}
    assert len(rig.d.queues["sales"]) == 0
    assert counter("hotline_queue_answered_total") == answered + 1
    assert [(s.previous, s.state) for s in rig.pub.states("a1")][-2:] == [
        (READY, RINGING),
        (RINGING, ON_CALL),
    ]
    assert rig.d.window.value("sales") == 1.0


async def test_no_answer_sets_agent_not_ready_and_reoffers_to_the_next(rig: Rig) -> None:
    misses = counter("hotline_agent_no_answer_total")
    rig.gateway.script("8001", gw.CONNECT_RESULT_NO_ANSWER)
    await rig.ready_agent("a1", "8001")  # longest idle: rung first
    await rig.ready_agent("a2", "8002")
    await rig.enqueue("c1")
    await until(lambda: rig.agent("a2").state == ON_CALL)
    a1 = rig.agent("a1")
    assert a1.state == NOT_READY and a1.reason == "no-answer" and a1.call_id == ""
    assert [(r.call_id, r.endpoint) for r in rig.gateway.connects] == [
        ("c1", "8001"),
        ("c1", "8002"),
    ]
    assert [(o.agent_id, o.attempt) for o in rig.pub.of(ev.AgentOffered)] == [("a1", 1), ("a2", 2)]
    last_a1 = rig.pub.states("a1")[-1]
    assert (last_a1.previous, last_a1.state, last_a1.reason) == (RINGING, NOT_READY, "no-answer")
    assert counter("hotline_agent_no_answer_total") == misses + 1
    assert rig.d.answered["sales"] == 1 and len(rig.d.queues["sales"]) == 0


async def test_no_answer_with_nobody_else_keeps_the_call_waiting(rig: Rig) -> None:
    rig.gateway.script("8001", gw.CONNECT_RESULT_NO_ANSWER)
    await rig.ready_agent("a1", "8001")
    await rig.enqueue("c1")
    await until(lambda: rig.agent("a1").state == NOT_READY)
    await settle()
    (waiting,) = rig.d.queues["sales"].calls
    assert waiting.call_id == "c1" and not waiting.offering and waiting.attempts == 1
    await until(lambda: len(rig.gateway.plays) == 2)  # back on hold music
    assert len(rig.gateway.connects) == 1  # a1 is not rung again...
    await rig.d.set_state("a1", READY, "back")  # ...until ready again
    await until(lambda: rig.agent("a1").state == ON_CALL)
    assert [o.attempt for o in rig.pub.of(ev.AgentOffered)] == [1, 2]


def hold_music_logs(caplog: pytest.LogCaptureFixture) -> list[int]:
    return [r.levelno for r in caplog.records if r.getMessage().startswith("hold music for")]


@pytest.mark.parametrize(
    ("refusal", "level"),
    [
        # the bench at 40/s: the agent answered and the gateway bridged the call before the
        # hold music reached it, so the gateway refused the music; one call in ten logged a
        # warning
        (
            rpc_error(
                grpc.StatusCode.FAILED_PRECONDITION,
                "call c1 is bridged; prompts play only to answered calls that are not bridged",
            ),
            logging.DEBUG,
        ),
        # a prompt the gateway does not have is the operator's mistake, whatever the call did
        # meanwhile: every caller who waits hears silence
        (
            rpc_error(
                grpc.StatusCode.NOT_FOUND,
                "prompt 'hold' not found in /x",
                error_info.PROMPT_NOT_FOUND,
            ),
            logging.ERROR,
        ),
    ],
)
async def test_hold_music_refused_after_an_agent_answered(
    rig: Rig, caplog: pytest.LogCaptureFixture, refusal: grpc.aio.AioRpcError, level: int
) -> None:
    caplog.set_level(logging.DEBUG, logger="acd.dispatcher")
    gate: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    rig.gateway.play_gate = gate
    await rig.ready_agent("a1", "8001")
    await rig.enqueue("c1")
    await until(lambda: rig.agent("a1").state == ON_CALL)
    assert [p.call_id for p in rig.gateway.plays] == ["c1"]  # asked for while the offer rang
    gate.set_result(refusal)
    await until(lambda: bool(hold_music_logs(caplog)))
    assert hold_music_logs(caplog) == [level]


async def test_hold_music_refused_to_a_waiting_call_is_a_warning(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="acd.dispatcher")
    gate: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    gate.set_result(rpc_error(grpc.StatusCode.NOT_FOUND, "no prompt 'hold'"))
    rig.gateway.play_gate = gate
    await rig.enqueue("c1")  # nobody is ready: the caller waits, and hears nothing
    await until(lambda: bool(hold_music_logs(caplog)))
    assert hold_music_logs(caplog) == [logging.WARNING]
    assert "no prompt 'hold'" in caplog.text


async def test_no_hold_music_for_a_call_gone_before_it_started(rig: Rig) -> None:
    await rig.enqueue("c1")
    await rig.d.call_ended("c1", 0)  # the caller hung up before the music's task ran
    await settle()
    assert not rig.gateway.plays


async def test_unreachable_endpoint_counts_as_a_miss(rig: Rig) -> None:
    rig.gateway.script("8001", gw.CONNECT_RESULT_UNREACHABLE)
    await rig.ready_agent("a1", "8001")
    await rig.enqueue("c1")
    await until(lambda: rig.agent("a1").state == NOT_READY)
    assert rig.agent("a1").reason == "unreachable"
    assert len(rig.d.queues["sales"]) == 1


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.FAILED_PRECONDITION])
async def test_an_offer_the_gateway_could_not_make_is_not_the_agents_fault(
    rig: Rig, code: grpc.StatusCode, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the gateway down, or still ringing an earlier offer of the call (an old ACD's): the
    # agent stays Ready and keeps their place, the call is offered again after a pause
    monkeypatch.setattr("acd.dispatcher.RETRY_FIRST_S", 0.05)
    misses = counter("hotline_agent_no_answer_total")
    rig.gateway.script("8001", rpc_error(code, "connection refused"))
    await rig.ready_agent("a1", "8001")
    idle_since = rig.agent("a1").idle_since
    await rig.enqueue("c1")
    await until(lambda: len(rig.gateway.connects) == 2)  # tried again, the same agent first
    await until(lambda: rig.agent("a1").state == ON_CALL)
    await until_announced(rig.pub, "a1", ON_CALL)
    assert [s.state for s in rig.pub.states("a1")][-4:] == [RINGING, READY, RINGING, ON_CALL]
    assert rig.pub.states("a1")[-3].reason == "offer not made"
    assert rig.agent("a1").idle_since == idle_since
    assert counter("hotline_agent_no_answer_total") == misses
    assert not rig.d.queues["sales"].calls


async def test_a_call_the_gateway_no_longer_has_is_abandoned_and_frees_the_agent(
    rig: Rig,
) -> None:
    rig.gateway.script("8001", rpc_error(grpc.StatusCode.NOT_FOUND, "no call c1"))
    await rig.ready_agent("a1", "8001")
    await rig.enqueue("c1")
    await until(lambda: rig.agent("a1").state == READY and bool(rig.pub.of(ev.CallAbandoned)))
    assert rig.agent("a1").reason == "caller gone"
    assert not rig.d.queues["sales"].calls


async def test_caller_gone_while_ringing_frees_the_agent(rig: Rig) -> None:
    ring = asyncio.get_running_loop().create_future()
    rig.gateway.script("8001", ring)
    await rig.ready_agent("a1", "8001")
    await rig.enqueue("c1")
    await until(lambda: rig.agent("a1").state == RINGING)
    await rig.d.call_ended("c1", ev.END_REASON_CALLER_HANGUP)
    (abandon,) = rig.pub.of(ev.CallAbandoned)
    assert abandon.call_id == "c1"
    ring.set_result(gw.CONNECT_RESULT_CALLER_GONE)
    await until(lambda: rig.agent("a1").state == READY)
    assert rig.agent("a1").reason == "caller gone"
    assert rig.d.answered["sales"] == 0 and rig.d.abandoned["sales"] == 1
    await settle()
    assert len(rig.gateway.connects) == 1


async def test_caller_ends_while_queued_is_abandoned_and_never_offered(rig: Rig) -> None:
    abandoned = counter("hotline_queue_abandoned_total")
    await rig.enqueue("c1")
    await rig.d.call_ended("c1", ev.END_REASON_CALLER_HANGUP)
    (abandon,) = rig.pub.of(ev.CallAbandoned)
    assert (abandon.call_id, abandon.queue) == ("c1", "sales")
    assert 0 <= abandon.waited_ms < 2000
    assert rig.pub.published[-1][1] == "c1"
    assert rig.d.abandoned == {"sales": 1, "support": 0}
    assert counter("hotline_queue_abandoned_total") == abandoned + 1
    assert len(rig.d.queues["sales"]) == 0
    assert rig.d.window.value("sales") == 0.0
    await rig.ready_agent("a1", "8001")
    await settle()
    assert rig.gateway.connects == [] and rig.agent("a1").state == READY
    # a late Enqueue for the ended call (IVR racing the hangup) is refused
    with pytest.raises(InvalidTransition, match="already ended"):
        await rig.enqueue("c1")


async def test_call_end_after_answer_goes_through_wrap_up_to_ready(rig: Rig) -> None:
    await rig.ready_agent("a1", "8001")
    await rig.enqueue("c1")
    await until(lambda: rig.agent("a1").state == ON_CALL)
    await rig.enqueue("c2")  # waits: the only agent is busy
    await settle()
    assert [r.call_id for r in rig.gateway.connects] == ["c1"]
    ended = time.monotonic()
    await rig.d.call_ended("c1", ev.END_REASON_AGENT_HANGUP)
    a1 = rig.agent("a1")
    assert a1.state == WRAP_UP and a1.call_id == "c1" and a1.reason == "call ended"
    assert rig.pub.of(ev.CallAbandoned) == []  # an answered call is not abandoned
    assert rig.d.abandoned["sales"] == 0
    await settle()
    assert len(rig.gateway.connects) == 1  # not offered during wrap-up
    await until(lambda: rig.gateway.connects[-1].call_id == "c2")
    assert time.monotonic() - ended >= WRAP_UP_S * 0.9
    states = [(s.previous, s.state, s.reason) for s in rig.pub.states("a1")]
    assert (ON_CALL, WRAP_UP, "call ended") in states
    assert (WRAP_UP, READY, "wrap-up timer") in states
    await until(lambda: a1.state == ON_CALL and a1.call_id == "c2")


async def test_end_of_an_unknown_call_changes_nothing(rig: Rig) -> None:
    await rig.ready_agent("a1", "8001")
    before = list(rig.pub.published)
    await rig.d.call_ended("nope", ev.END_REASON_CALLER_HANGUP)
    assert rig.pub.published == before
    assert rig.agent("a1").state == READY


async def test_logout_and_set_state_publish_transitions(rig: Rig) -> None:
    agent = await rig.d.login("a1", "8001", frozenset({"sales"}), frozenset())
    assert agent.state == NOT_READY
    await rig.d.set_state("a1", READY, "")
    await rig.d.logout("a1")
    assert [(s.previous, s.state, s.reason) for s in rig.pub.states("a1")] == [
        (ev.AGENT_STATE_LOGGED_OUT, NOT_READY, "login"),
        (NOT_READY, READY, ""),
        (READY, ev.AGENT_STATE_LOGGED_OUT, "logout"),
    ]
    assert all(key == "a1" for p, key in rig.pub.published if isinstance(p, ev.AgentStateChanged))


# ---- KPIs --------------------------------------------------------------------------------
def test_service_level_window() -> None:
    sl = kpis.QueueWindow(threshold_s=20, window_s=100)
    assert sl.value("sales", now=1000.0) is None
    sl.record("sales", True, 5, now=1000.0)
    sl.record("sales", False, 40, now=1050.0)
    sl.record("sales", True, 10, now=1060.0)
    sl.record("support", False, 3, now=1060.0)
    assert sl.value("sales", now=1070.0) == pytest.approx(2 / 3)
    assert sl.value("sales", now=1120.0) == pytest.approx(1 / 2)  # the first aged out
    assert sl.value("sales", now=1155.0) == pytest.approx(1.0)  # only the last remains
    assert sl.value("sales", now=1161.0) is None  # all aged out
    assert sl.value("support", now=1100.0) == 0.0
    assert sl.value("billing", now=1100.0) is None


def test_a_window_nobody_reads_keeps_only_its_window() -> None:
    """Outcomes age out as calls are recorded, not only when the figures are read: without
    a scrape (no Prometheus) the window would otherwise hold every call ever ended."""

    def held() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if type(o).__name__ == "_Outcome")

    before = held()
    w = kpis.QueueWindow(threshold_s=20, window_s=100)
    for n in range(2_000):  # 10 calls a second for 200 s: twice the window
        w.record("sales", True, 5, now=1000.0 + n / 10)
    assert held() - before <= 1_001  # the last 100 s, not all 2,000
    f = w.figures("sales", now=1000.0 + 1_999 / 10)
    assert f.answered == 1_001


def test_window_figures_service_level_asa_and_abandon_rate() -> None:
    w = kpis.QueueWindow(threshold_s=20, window_s=100)
    w.record("sales", True, 5, now=1000.0)  # within
    w.record("sales", True, 35, now=1010.0)  # answered late
    w.record("sales", False, 50, now=1020.0)  # abandoned: no part of ASA
    w.record("sales", True, 20, now=1030.0)  # exactly the threshold counts as within
    f = w.figures("sales", now=1040.0)
    assert (f.answered, f.within, f.abandoned, f.ended) == (3, 2, 1, 4)
    assert f.service_level == pytest.approx(2 / 4)
    assert f.asa_s == pytest.approx((5 + 35 + 20) / 3)
    assert f.abandon_rate == pytest.approx(1 / 4)
    # 105 s later the first two have aged out
    f = w.figures("sales", now=1115.0)
    assert (f.answered, f.abandoned) == (1, 1)
    assert (f.service_level, f.asa_s, f.abandon_rate) == (0.5, 20.0, 0.5)
    # nothing in the window: zeros, and ended == 0 says they are no data
    empty = w.figures("support", now=1115.0)
    assert empty.ended == 0 and (empty.service_level, empty.asa_s, empty.abandon_rate) == (0, 0, 0)


def test_service_level_defaults() -> None:
    sl = kpis.QueueWindow()
    assert (sl.threshold_s, sl.window_s) == (
        kpis.SERVICE_LEVEL_THRESHOLD_S,
        kpis.SERVICE_LEVEL_WINDOW_S,
    )
    sl.record("q", True, 1.0)  # now defaults to the monotonic clock
    assert sl.value("q") == 1.0


async def test_queue_kpi_collector() -> None:
    d = Dispatcher(
        AcdNotifier(FakePublisher()), FakeGateway(), ["sales", "support"], SITE, 3.0, WRAP_UP_S
    )
    now = time.monotonic()
    d.queues["sales"].add(WaitingCall("c1", "sales", 0, "5551234", "10000", enqueued=now - 30))
    d.queues["sales"].add(WaitingCall("c2", "sales", 0, "5555678", "10000", enqueued=now - 5))
    d.book.login("a1", "8001", frozenset(), frozenset())
    agent, _ = d.book.login("a2", "8002", frozenset(), frozenset())
    d.book.login("a3", "8003", frozenset({"support"}), frozenset())
    d.book.transition(agent, READY)
    d.window.record("sales", True, 4.0)
    d.window.record("sales", False, 30.0)
    families = {f.name: f for f in kpis.QueueKpiCollector(d, SITE).collect()}
    assert set(families) == {
        "hotline_queue_calls_waiting",
        "hotline_queue_oldest_wait_seconds",
        "hotline_queue_service_level",
        "hotline_queue_asa_seconds",
        "hotline_queue_abandon_rate",
        "hotline_queue_agents",
        "hotline_agents",
    }
    assert all(f.type == "gauge" for f in families.values())

    def samples(name: str) -> dict[tuple, float]:
        return {tuple(sorted(s.labels.items())): s.value for s in families[name].samples}

    q = lambda name: (("queue", name), ("site", SITE))  # noqa: E731
    assert samples("hotline_queue_calls_waiting") == {q("sales"): 2, q("support"): 0}
    oldest = samples("hotline_queue_oldest_wait_seconds")
    assert 30 <= oldest[q("sales")] < 35 and oldest[q("support")] == 0
    # no outcome in the window for support: no sample rather than a fake 0 or 100 %
    assert samples("hotline_queue_service_level") == {q("sales"): 0.5}
    assert samples("hotline_queue_asa_seconds") == {q("sales"): 4.0}  # the answered call only
    assert samples("hotline_queue_abandon_rate") == {q("sales"): 0.5}
    agents = samples("hotline_agents")
    assert agents[(("site", SITE), ("state", "ready"))] == 1
    assert agents[(("site", SITE), ("state", "not_ready"))] == 2
    assert len(agents) == 6 and sum(agents.values()) == 3
    # per queue: a1 and a2 serve every queue, a3 only support
    per_queue = samples("hotline_queue_agents")
    assert len(per_queue) == 2 * 6
    sales = {k[2][1]: v for k, v in per_queue.items() if k[0] == ("queue", "sales") and v}
    support = {k[2][1]: v for k, v in per_queue.items() if k[0] == ("queue", "support") and v}
    assert sales == {"ready": 1, "not_ready": 1} and support == {"ready": 1, "not_ready": 2}
    # labels never carry call or caller ids
    for family in families.values():
        for s in family.samples:
            assert set(s.labels) <= {"queue", "site", "state"}
            assert not {"c1", "c2", "5551234", "a1"} & set(s.labels.values())


# ---- gRPC servicer ----------------------------------------------------------------------
class Aborted(Exception):
    pass


class FakeContext:
    """Like grpc.aio's: abort() raises, so the handler stops there."""

    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.details = ""

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details
        raise Aborted(details)


async def call(method, request):  # noqa: ANN001, ANN201
    """Run a servicer method; returns (reply, context)."""
    ctx = FakeContext()
    try:
        reply = await method(request, ctx)
    except Aborted:
        reply = None
    return reply, ctx


@pytest.fixture
async def service(rig: Rig) -> AcdService:
    return AcdService(rig.d)


async def test_service_enqueue(service: AcdService, rig: Rig) -> None:
    reply, ctx = await call(
        service.Enqueue,
        acd_pb2.EnqueueRequest(
            call_id="c1",
            queue="sales",
            ani="5551234",
            dnis="10000",
            skills=["en"],
            data={"menu": "1"},
        ),
    )
    assert ctx.code is None
    assert (reply.call_id, reply.queue, reply.position) == ("c1", "sales", 1)
    assert rig.d.queues["sales"].calls[0].skills == {"en"}

    _, ctx = await call(service.Enqueue, acd_pb2.EnqueueRequest(call_id="c1", queue="sales"))
    # told apart from other refusals: the IVR, retrying, knows its call is queued
    assert ctx.code == grpc.StatusCode.ALREADY_EXISTS and "already queued" in ctx.details
    _, ctx = await call(service.Enqueue, acd_pb2.EnqueueRequest(call_id="c2", queue="billing"))
    assert ctx.code == grpc.StatusCode.NOT_FOUND and "'billing' does not exist" in ctx.details
    _, ctx = await call(service.Enqueue, acd_pb2.EnqueueRequest(queue="sales"))
    assert ctx.code == grpc.StatusCode.INVALID_ARGUMENT and "call_id and queue" in ctx.details


async def test_service_agents(service: AcdService, rig: Rig) -> None:
    reply, ctx = await call(
        service.Login,
        acd_pb2.LoginRequest(agent_id="a1", extension="8001", queues=["support", "sales"]),
    )
    assert ctx.code is None
    assert (reply.agent_id, reply.state, list(reply.queues)) == (
        "a1",
        NOT_READY,
        ["sales", "support"],
    )
    assert reply.state_since_ms > 0

    _, ctx = await call(
        service.Login, acd_pb2.LoginRequest(agent_id="a2", extension="8002", queues=["billing"])
    )
    assert ctx.code == grpc.StatusCode.NOT_FOUND
    _, ctx = await call(service.Login, acd_pb2.LoginRequest(agent_id="a2"))
    assert ctx.code == grpc.StatusCode.INVALID_ARGUMENT

    reply, ctx = await call(
        service.SetState, acd_pb2.SetStateRequest(agent_id="a1", state=ev.AGENT_STATE_READY)
    )
    assert ctx.code is None and reply.state == READY
    _, ctx = await call(
        service.SetState, acd_pb2.SetStateRequest(agent_id="a1", state=ev.AGENT_STATE_ON_CALL)
    )
    assert ctx.code == grpc.StatusCode.INVALID_ARGUMENT and "not on_call" in ctx.details
    _, ctx = await call(
        service.SetState, acd_pb2.SetStateRequest(agent_id="ghost", state=ev.AGENT_STATE_READY)
    )
    assert ctx.code == grpc.StatusCode.NOT_FOUND and "ghost" in ctx.details

    reply, ctx = await call(service.GetAgent, acd_pb2.AgentRef(agent_id="a1"))
    assert reply.state == READY and reply.extension == "8001"
    _, ctx = await call(service.GetAgent, acd_pb2.AgentRef(agent_id="ghost"))
    assert ctx.code == grpc.StatusCode.NOT_FOUND

    # on a call, an agent can neither log out nor go not-ready
    await rig.enqueue("c1")
    await until(lambda: rig.agent("a1").state == ON_CALL)
    _, ctx = await call(service.Logout, acd_pb2.AgentRef(agent_id="a1"))
    assert ctx.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "cannot go from on_call to logged_out" in ctx.details
    _, ctx = await call(
        service.SetState, acd_pb2.SetStateRequest(agent_id="a1", state=ev.AGENT_STATE_NOT_READY)
    )
    assert ctx.code == grpc.StatusCode.FAILED_PRECONDITION
    reply, ctx = await call(service.GetAgent, acd_pb2.AgentRef(agent_id="a1"))
    assert reply.state == ON_CALL and reply.call_id == "c1"
    _, ctx = await call(service.Logout, acd_pb2.AgentRef(agent_id="ghost"))
    assert ctx.code == grpc.StatusCode.NOT_FOUND


async def test_service_get_queue(service: AcdService, rig: Rig) -> None:
    await rig.enqueue("c1")
    await rig.enqueue("vip", priority=3)
    await rig.d.login("a1", "8001", frozenset({"sales"}), frozenset())
    await rig.d.login("a2", "8002", frozenset({"support"}), frozenset())
    reply, ctx = await call(service.GetQueue, acd_pb2.QueueRef(queue="sales"))
    assert ctx.code is None
    assert reply.queue == "sales"
    assert [(c.call_id, c.priority) for c in reply.calls] == [("vip", 3), ("c1", 0)]
    assert dict(reply.agents_by_state) == {"not_ready": 1}
    assert (reply.answered, reply.abandoned) == (0, 0)
    _, ctx = await call(service.GetQueue, acd_pb2.QueueRef(queue="billing"))
    assert ctx.code == grpc.StatusCode.NOT_FOUND


# ---- restart: restore, reconcile, restate ------------------------------------------------
def restart_plan(agents: list, queued: list, calls: list):  # noqa: ANN001, ANN201
    """A rebuild plan made now, on this process's clocks, from records and live calls."""
    now_ms = int(time.time() * 1000)
    return plan(
        fold_agents(agents),
        fold_queues(queued),
        {c.call_id: c for c in calls},
        ["sales", "support"],
        now_ms=now_ms,
        now_mono=time.monotonic(),
        wrap_up_s=WRAP_UP_S,
    )


def agent_record(agent_id: str, extension: str, state: int, **kw: object) -> ev.Envelope:
    now_ms = int(time.time() * 1000)
    payload = ev.AgentStateChanged(
        agent_id=agent_id,
        extension=extension,
        state=state,  # type: ignore[arg-type]
        queues=["sales"],
        since_ms=now_ms - 5000,
        idle_since_ms=now_ms - 5000,
        **kw,  # type: ignore[arg-type]
    )
    return envelope(payload, agent_id, SITE, "acd")


def queued_record(call_id: str, waited_s: float = 3.0) -> ev.Envelope:
    at_ms = int((time.time() - waited_s) * 1000)
    return envelope(
        ev.CallQueued(call_id=call_id, queue="sales", ani="555", enqueued_at_ms=at_ms),
        call_id,
        SITE,
        "acd",
    )


async def test_restore_announces_what_the_restart_found_and_serves_the_callers(rig: Rig) -> None:
    abandoned = counter("hotline_queue_abandoned_total")
    answered = counter("hotline_queue_answered_total")
    p = restart_plan(
        [
            agent_record("a1", "8001", NOT_READY, reason="meal"),
            agent_record("a2", "8002", ON_CALL, call_id="gone"),
            agent_record("a3", "8003", RINGING, call_id="kept"),
        ],
        [queued_record("waiting", 8.0), queued_record("left"), queued_record("kept")],
        [LiveCall("waiting", "answered"), LiveCall("kept", "answered")],
    )
    await rig.d.restore(p, [Outcome("sales", int(time.time() * 1000) - 1000, 2000, True)])
    # the caller who left while the ACD was away: counted and announced abandoned
    (gone,) = rig.pub.of(ev.CallAbandoned)
    assert gone.call_id == "left" and gone.queue == "sales"
    assert counter("hotline_queue_abandoned_total") == abandoned + 1
    # the agent whose call ended meanwhile: wrap-up announced, then Ready by the timer
    assert [(s.state, s.previous) for s in rig.pub.states("a2")][0] == (WRAP_UP, ON_CALL)
    await until(lambda: rig.agent("a2").state != WRAP_UP)
    # the kept offer is rung again to the same agent, without a second agent for the call
    # the waiting caller hears hold music again, then is offered to the agent freed by wrap-up
    await until(lambda: not rig.d.queues["sales"].calls)
    assert [(c.call_id, c.endpoint) for c in rig.gateway.connects] == [
        ("kept", "8003"),
        ("waiting", "8002"),
    ]
    assert [p.call_id for p in rig.gateway.plays] == ["waiting"]
    assert rig.agent("a1").state == NOT_READY and rig.agent("a1").reason == "meal"
    # the dequeue is announced through the outbox, a moment after the queue emptied
    await until(lambda: {d.call_id for d in rig.pub.of(ev.CallDequeued)} == {"kept", "waiting"})
    assert counter("hotline_queue_answered_total") == answered + 2
    # the service level window holds the outcome from before the restart, and the new ones
    assert rig.d.window.value("sales") == pytest.approx(3 / 4)


async def test_reconcile_ends_what_the_gateway_no_longer_holds(rig: Rig) -> None:
    await rig.enqueue("old")
    await rig.ready_agent("a1", "8001", queues={"support"})
    await rig.enqueue("talking", queue="support")
    await until(lambda: rig.agent("a1").state == ON_CALL)
    asked_at = time.monotonic()
    await rig.enqueue("new")  # arrived while the gateway was answering: not judged
    await rig.d.reconcile(live={"new"}, asked_at=asked_at)
    # once gone may be a CallEnded still on its way (the consumer lags): nothing ended yet
    assert rig.pub.of(ev.CallAbandoned) == []
    assert rig.agent("a1").state == ON_CALL
    await rig.d.reconcile(live={"new"}, asked_at=asked_at)
    assert [c.call_id for c in rig.pub.of(ev.CallAbandoned)] == ["old"]
    assert [c.call_id for c in rig.d.queues["sales"].calls] == ["new"]
    assert rig.agent("a1").state == WRAP_UP  # its call is gone: wrap-up, then Ready
    await until(lambda: rig.agent("a1").state == READY)


async def test_reconcile_leaves_a_late_call_end_to_its_event(rig: Rig) -> None:
    await rig.ready_agent("a1", "8001", queues={"support"})
    await rig.enqueue("talking", queue="support")
    await until(lambda: rig.agent("a1").state == ON_CALL)
    await rig.d.reconcile(live=set(), asked_at=time.monotonic())
    # the call's CallEnded arrives after the gateway forgot the call: it ends it, with its hold
    await rig.d.call_ended("talking", 0, hold_ms=4000)
    assert rig.agent("a1").state == WRAP_UP and rig.agent("a1").hold_s == 4.0
    await rig.d.reconcile(live=set(), asked_at=time.monotonic())
    assert rig.agent("a1").state == WRAP_UP  # not ended a second time
    assert len([e for e in rig.pub.of(ev.AgentStateChanged) if e.state == WRAP_UP]) == 1


async def test_restating_republishes_every_agent_and_waiting_call(rig: Rig) -> None:
    await rig.d.login("a1", "8001", frozenset({"sales"}), frozenset())
    await rig.d.set_state("a1", NOT_READY, "meal")
    await rig.enqueue("c1")
    await rig.enqueue("c2", priority=3)
    before = len(rig.pub.published)
    await rig.d.restate_agents()
    await rig.d.restate_queues()
    again = [p for p, _ in rig.pub.published[before:]]
    (snap,) = [p for p in again if isinstance(p, ev.AgentStateChanged)]
    assert (snap.state, snap.previous, snap.reason, snap.restated) == (
        NOT_READY,
        NOT_READY,
        "meal",
        True,
    )
    calls = [p for p in again if isinstance(p, ev.CallQueued)]
    assert [(c.call_id, c.position, c.restated) for c in calls] == [
        ("c2", 1, True),
        ("c1", 2, True),
    ]
    first = rig.pub.of(ev.CallQueued)[0]
    assert calls[1].enqueued_at_ms == first.enqueued_at_ms  # the original entry time


async def test_a_fenced_dispatcher_neither_offers_nor_announces(rig: Rig) -> None:
    class Fenced(Exception):
        pass

    def fence() -> None:
        raise Fenced("lease lost")

    await rig.ready_agent("a1", "8001")
    rig.d.fence = fence
    before = len(rig.pub.published)
    with pytest.raises(Fenced):
        await rig.enqueue("c1")
    with pytest.raises(Fenced):
        await rig.d.set_state("a1", NOT_READY, "meal")
    await settle()
    assert len(rig.pub.published) == before and rig.gateway.connects == []


async def test_service_of_a_fenced_replica_is_unavailable(service: AcdService, rig: Rig) -> None:
    def lost() -> None:
        raise Fenced("this replica does not hold the lease: it is not the active one")

    await rig.d.login("a1", "8001", frozenset({"sales"}), frozenset())
    rig.d.fence = lost
    for method, request in [
        (service.Enqueue, acd_pb2.EnqueueRequest(call_id="c1", queue="sales")),
        (service.SetState, acd_pb2.SetStateRequest(agent_id="a1", state=READY)),
        (service.Login, acd_pb2.LoginRequest(agent_id="a2", extension="8002")),
        (service.Logout, acd_pb2.AgentRef(agent_id="a1")),
    ]:
        _, ctx = await call(method, request)
        assert ctx.code == grpc.StatusCode.UNAVAILABLE, method
        assert "not the active one" in ctx.details
