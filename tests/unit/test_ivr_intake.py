"""The IVR's intake and servicer: an inbound CallOffered to a number with a flow runs that flow,
anything else runs nothing; a drain lets the flows in progress finish, stop cancels them;
ListFlows lists the flows."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest

from common.events import envelope
from hotline.v1 import events_pb2 as ev
from hotline.v1 import gateway_pb2 as gw
from hotline.v1 import ivr_pb2
from ivr import app as ivr_app
from ivr.flows import Flow, load_flows
from ivr.intake import IvrIntake
from ivr.servicer import IvrService
from tests.unit.rpc_errors import rpc_error

FLOWS = load_flows()


class HeldRunner:
    """Records each run and keeps it going until released (or cancelled)."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, str, str, str]] = []
        self.cancelled: list[str] = []
        self.release = asyncio.Event()

    async def run(self, flow: Flow, call_id: str, ani: str, dnis: str) -> str:
        self.runs.append((flow.name, call_id, ani, dnis))
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.append(call_id)
            raise
        return "sales"


def offered(call_id: str, dnis: str, direction: str = "") -> ev.CallOffered:
    return ev.CallOffered(
        call_id=call_id, ani="5551234", dnis=dnis, trunk="sip-trunk", direction=direction
    )


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_an_offered_call_runs_the_flow_of_its_number() -> None:
    runner = HeldRunner()
    intake = IvrIntake(FLOWS, runner)
    await intake.handle(envelope(offered("c1", "10000"), "c1", "s", "gateway"))
    await intake.handle(envelope(offered("c2", "10001", "inbound"), "c2", "s", "gateway"))
    await settle()
    assert runner.runs == [
        ("human-service", "c1", "5551234", "10000"),
        ("self-service", "c2", "5551234", "10001"),
    ]
    assert len(intake.running) == 2
    runner.release.set()
    await settle()
    assert intake.running == set()  # finished flows are forgotten


async def test_other_calls_and_events_run_nothing(caplog: pytest.LogCaptureFixture) -> None:
    runner = HeldRunner()
    intake = IvrIntake(FLOWS, runner)
    with caplog.at_level(logging.WARNING):
        for payload, key in (
            (offered("c1", "10000", "outbound"), "c1"),
            (offered("c2", "99999"), "c2"),
            (ev.CallEnded(call_id="c3"), "c3"),
            (ev.CallAnswered(call_id="c4"), "c4"),
        ):
            await intake.handle(envelope(payload, key, "s", "gateway"))
    await settle()
    assert runner.runs == [] and intake.running == set()
    assert "call c2 to 99999: no flow for this number" in caplog.text


async def test_stop_cancels_the_flows_in_progress() -> None:
    runner = HeldRunner()
    intake = IvrIntake(FLOWS, runner)
    await intake.handle(envelope(offered("c1", "10000"), "c1", "s", "gateway"))
    await settle()
    intake.stop()
    await settle()
    assert runner.cancelled == ["c1"] and intake.running == set()


async def test_a_drain_lets_the_flows_in_progress_finish() -> None:
    runner = HeldRunner()
    intake = IvrIntake(FLOWS, runner)
    await intake.handle(envelope(offered("c1", "10000"), "c1", "s", "gateway"))
    await settle()
    draining = asyncio.create_task(intake.drain(30))
    await asyncio.sleep(0.05)
    assert not draining.done()  # the caller is still in the menu
    runner.release.set()
    await asyncio.wait_for(draining, 5)
    assert runner.cancelled == [] and not intake.running


async def test_a_drain_gives_up_after_its_budget_and_stop_cancels_the_rest() -> None:
    runner = HeldRunner()
    intake = IvrIntake(FLOWS, runner)
    await intake.handle(envelope(offered("c1", "10000"), "c1", "s", "gateway"))
    await settle()
    await asyncio.wait_for(intake.drain(0.05), 5)
    assert runner.cancelled == [] and len(intake.running) == 1
    intake.stop()
    await settle()
    assert runner.cancelled == ["c1"]


def info(call_id: str, owner: str, state: str = "answered", **kw: str) -> gw.CallInfo:
    return gw.CallInfo(
        call_id=call_id,
        state=state,
        ani="5551234",
        dnis=kw.pop("dnis", "10000"),
        flow_owner=owner,
        **kw,
    )


async def test_an_ivr_that_restarts_takes_up_its_own_calls_only() -> None:
    # killed -9 while callers were in its menus: their flows died with the process, their
    # offers were committed; the gateway still knows which IVR answered them
    runner = HeldRunner()
    intake = IvrIntake(FLOWS, runner)
    calls = [
        info("mine", "ivr-a"),
        info("mine-too", "ivr-a", dnis="10001"),
        info("sibling", "ivr-b"),  # a live replica may be running it
        info("queued", ""),  # the ACD has commanded it since
        info("bridged", "ivr-a", state="bridged", bridged_to="agent1"),
        info("ringing", "ivr-a", state="offered"),
        info("no-flow", "ivr-a", dnis="99999"),
    ]
    assert intake.take_up(calls, "ivr-a") == 2
    await settle()
    assert sorted(runner.runs) == [
        ("human-service", "mine", "5551234", "10000"),
        ("self-service", "mine-too", "5551234", "10001"),
    ]
    # the offer of a call taken up, redelivered by the broker, starts no second flow
    await intake.handle(envelope(offered("mine", "10000"), "mine", "s", "gateway"))
    await settle()
    assert len(runner.runs) == 2 and len(intake.running) == 2
    runner.release.set()
    await settle()
    assert not intake.running
    # once its flow is over, the same call may be run again (the next offer or take-up)
    assert intake.take_up([info("mine", "ivr-a")], "ivr-a") == 1


async def test_list_flows() -> None:
    reply = await IvrService(FLOWS).ListFlows(ivr_pb2.ListFlowsRequest(), None)
    assert [(f.dnis, f.name, list(f.queues)) for f in reply.flows] == [
        ("10000", "human-service", ["sales", "support"]),
        ("10001", "self-service", ["sales", "support"]),
    ]


class HeartbeatGateway:
    """AdoptOrphans answers from a script: a list of calls, or an error to raise."""

    def __init__(self, *answers: list[gw.CallInfo] | Exception) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []

    async def AdoptOrphans(  # noqa: N802
        self, request: gw.AdoptOrphansRequest, timeout: float
    ) -> gw.ListCallsReply:
        self.asked.append(request.instance)
        answer = self.answers.pop(0) if self.answers else []
        if isinstance(answer, Exception):
            raise answer
        return gw.ListCallsReply(calls=answer)


async def test_the_heartbeat_runs_the_flows_of_calls_adopted_from_a_gone_ivr(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(ivr_app, "HEARTBEAT_S", 0.01)
    runner = HeldRunner()
    intake = IvrIntake(FLOWS, runner)
    down = rpc_error(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses")
    gateway = HeartbeatGateway(down, down, [info("orphan", "ivr-new")], [])
    beat = asyncio.ensure_future(ivr_app.adopt_orphans(gateway, intake, "ivr-new"))  # type: ignore[arg-type]
    try:
        while len(gateway.asked) < 5:
            await asyncio.sleep(0.01)
    finally:
        beat.cancel()
    assert set(gateway.asked) == {"ivr-new"}  # it names itself: alive
    assert runner.runs == [("human-service", "orphan", "5551234", "10000")]
    # a gateway away is said once, not at every beat, and its return too
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert [r.getMessage().split(":")[0] for r in warnings] == [
        "cannot tell the gateway this IVR is alive",
        "took up 1 calls whose flows stopped with an IVR that is gone (now ivr-new's)",
    ]
