"""The call-control methods of CallControl over a real in-process gRPC server on the switch
rig: replies, results, and the errors (NOT_FOUND, FAILED_PRECONDITION, INVALID_ARGUMENT,
PERMISSION_DENIED from the dial plan) with what was wrong; who may call them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from gateway.core.contracts import Attempt, Outcome
from gateway.dialplan import DialPlan, DialPlanError
from gateway.servicer import CallControlServicer
from hotline.v1 import gateway_pb2 as gw
from hotline.v1 import gateway_pb2_grpc
from tests.unit.gateway_rig import FakeLeg, Rig, make_rig, settle


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    made = await make_rig(tmp_path)
    made.switch.number_trunk = "fake"
    yield made
    await made.switch.stop()


@pytest.fixture
async def stub(rig: Rig) -> AsyncIterator[gateway_pb2_grpc.CallControlStub]:
    server = grpc.aio.server()
    gateway_pb2_grpc.add_CallControlServicer_to_server(CallControlServicer(rig.switch), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield gateway_pb2_grpc.CallControlStub(channel)
    await channel.close()
    await server.stop(None)


async def code_of(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value.code(), info.value.details() or ""


def test_the_crm_drives_call_control_and_only_the_crm() -> None:
    table = CallControlServicer.CALLERS
    for method in ("Hold", "Transfer", "Consult", "AddParty", "Monitor", "Mute", "DialOut"):
        assert table[f"/hotline.v1.CallControl/{method}"] == frozenset({"crm"}), method
    assert "crm" in table["/hotline.v1.CallControl/Hangup"]  # force release
    assert "crm" not in table["/hotline.v1.CallControl/ConnectToEndpoint"]


async def test_hold_resume_and_their_errors(
    rig: Rig, stub: gateway_pb2_grpc.CallControlStub
) -> None:
    assert (await code_of(stub.Hold(gw.HoldRequest(call_id="nope"))))[0] is (
        grpc.StatusCode.NOT_FOUND
    )
    _, answered = await rig.answered_call()
    code, detail = await code_of(stub.Hold(gw.HoldRequest(call_id=answered.call_id)))
    assert code is grpc.StatusCode.FAILED_PRECONDITION and "bridged" in detail
    _, _, call = await rig.bridged_call()
    assert (await stub.Hold(gw.HoldRequest(call_id=call.call_id))).state == "bridged"
    assert call.held
    await stub.Resume(gw.HoldRequest(call_id=call.call_id))
    assert not call.held and call.hold_count == 1


async def test_transfer_consult_and_bad_targets(
    rig: Rig, stub: gateway_pb2_grpc.CallControlStub
) -> None:
    _, _, call = await rig.bridged_call()
    for kind, target, why in (
        (gw.TARGET_KIND_UNSPECIFIED, "8002", "target_kind"),
        (gw.TARGET_KIND_EXTENSION, "", "target is required"),
        (gw.TARGET_KIND_NUMBER, "12ab", "digits"),
        (gw.TARGET_KIND_QUEUE, "a b", "not a queue name"),
    ):
        code, detail = await code_of(
            stub.Transfer(gw.TransferRequest(call_id=call.call_id, target_kind=kind, target=target))
        )
        assert code is grpc.StatusCode.INVALID_ARGUMENT and why in detail, detail
    code, detail = await code_of(
        stub.Consult(
            gw.ConsultRequest(call_id=call.call_id, target_kind=gw.TARGET_KIND_QUEUE, target="q")
        )
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    target = FakeLeg(rig.channel, inbound=False, answered=True)
    rig.channel.ring_outcome = lambda abandon: Attempt(Outcome.ANSWERED, target)
    reply = await stub.Consult(
        gw.ConsultRequest(call_id=call.call_id, target_kind=gw.TARGET_KIND_EXTENSION, target="8002")
    )
    assert reply.result == gw.CONNECT_RESULT_ANSWERED and reply.consult_leg_id == target.leg_id
    code, detail = await code_of(
        stub.Transfer(
            gw.TransferRequest(
                call_id=call.call_id, target_kind=gw.TARGET_KIND_EXTENSION, target="8003"
            )
        )
    )
    assert code is grpc.StatusCode.FAILED_PRECONDITION and "consult" in detail
    code, _ = await code_of(stub.EndConsult(gw.EndConsultRequest(call_id=call.call_id)))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    await stub.EndConsult(
        gw.EndConsultRequest(call_id=call.call_id, action=gw.CONSULT_ACTION_COMPLETE)
    )
    assert call.agent is target


async def test_queue_transfer_without_an_acd_says_so(
    rig: Rig, stub: gateway_pb2_grpc.CallControlStub
) -> None:
    _, _, call = await rig.bridged_call()
    reply = await stub.Transfer(
        gw.TransferRequest(call_id=call.call_id, target_kind=gw.TARGET_KIND_QUEUE, target="sales")
    )
    assert reply.result == gw.CONNECT_RESULT_UNREACHABLE and "no ACD" in reply.detail


async def test_conference_monitor_mute_digits(
    rig: Rig, stub: gateway_pb2_grpc.CallControlStub
) -> None:
    _, _, call = await rig.bridged_call()
    reply = await stub.AddParty(
        gw.AddPartyRequest(
            call_id=call.call_id, target_kind=gw.TARGET_KIND_EXTENSION, target="8002"
        )
    )
    assert reply.result == gw.CONNECT_RESULT_ANSWERED and reply.parties == 3
    await stub.RemoveParty(gw.RemovePartyRequest(call_id=call.call_id, leg_id=reply.leg_id))
    code, detail = await code_of(
        stub.RemoveParty(gw.RemovePartyRequest(call_id=call.call_id, leg_id=call.caller.leg_id))
    )
    assert code is grpc.StatusCode.FAILED_PRECONDITION and "caller" in detail
    code, detail = await code_of(
        stub.Monitor(gw.MonitorRequest(call_id=call.call_id, mode=gw.MONITOR_MODE_LISTEN))
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "supervisor_id" in detail
    code, detail = await code_of(
        stub.Monitor(
            gw.MonitorRequest(call_id=call.call_id, mode=gw.MONITOR_MODE_LISTEN, supervisor_id="s1")
        )
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "endpoint" in detail
    mon = await stub.Monitor(
        gw.MonitorRequest(
            call_id=call.call_id, mode=gw.MONITOR_MODE_BARGE, supervisor_id="s1", endpoint="8009"
        )
    )
    assert mon.result == gw.CONNECT_RESULT_ANSWERED and mon.mode == gw.MONITOR_MODE_BARGE
    await stub.StopMonitor(gw.StopMonitorRequest(call_id=call.call_id, leg_id=mon.leg_id))
    await stub.Mute(gw.MuteRequest(call_id=call.call_id, muted=True))
    assert call.muted == {call.agent.leg_id}  # type: ignore[union-attr]
    code, detail = await code_of(
        stub.SendDigits(gw.SendDigitsRequest(call_id=call.call_id, digits="12x"))
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "digits" in detail
    await stub.SendDigits(gw.SendDigitsRequest(call_id=call.call_id, digits="9#"))
    assert call.caller.media.digits_sent == "9#"  # type: ignore[attr-defined]


def test_dial_plan_classes_and_permissions() -> None:
    plan = DialPlan()
    assert plan.classify("8001") == "internal"
    assert plan.classify("62345678") == "local"
    assert plan.classify("13800138000") == "local"
    assert plan.classify("01062345678") == "long_distance"
    assert plan.classify("0044201234567") == "international"
    assert plan.classify("+44201234567") == "international"
    assert plan.classify("12") is None
    assert plan.allows("long_distance", "local") and not plan.allows("local", "international")
    with pytest.raises(DialPlanError, match="unknown dial class"):
        DialPlan({"galactic": "1"})
    with pytest.raises(DialPlanError, match="bad pattern"):
        DialPlan({"local": "("})


async def test_dial_out_rings_the_agent_then_the_customer_and_bridges(
    rig: Rig, stub: gateway_pb2_grpc.CallControlStub
) -> None:
    reply = await stub.DialOut(
        gw.DialOutRequest(agent_id="a1", endpoint="8001", number="62345678", dial_class="local")
    )
    assert reply.result == gw.CONNECT_RESULT_ANSWERED, reply.detail
    assert rig.channel.placed == ["62345678"] and [r[0] for r in rig.channel.rung] == ["8001"]
    call = rig.switch.registry.get(reply.call_id)
    assert call.outbound and call.state.value == "bridged" and call.agent_id == "a1"
    assert rig.events.of("offered", call.call_id) == {"outbound": True}
    assert rig.events.of("bridged", call.call_id)["agent_id"] == "a1"


async def test_dial_out_refusals(rig: Rig, stub: gateway_pb2_grpc.CallControlStub) -> None:
    code, detail = await code_of(
        stub.DialOut(gw.DialOutRequest(agent_id="a1", endpoint="8001", number="0044201234567"))
    )
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert detail == "number 0044201234567 is international; this role may dial up to internal"
    code, detail = await code_of(
        stub.DialOut(gw.DialOutRequest(agent_id="a1", endpoint="8001", number="12"))
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "no class" in detail
    code, detail = await code_of(
        stub.DialOut(
            gw.DialOutRequest(agent_id="a1", endpoint="8001", number="62345678", trunk="x")
        )
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "trunk 'x'" in detail
    rig.channel.ring_outcome = lambda abandon: Attempt(Outcome.NO_ANSWER, None, "no answer")
    reply = await stub.DialOut(
        gw.DialOutRequest(agent_id="a1", endpoint="8001", number="8002", dial_class="internal")
    )
    assert reply.result == gw.CONNECT_RESULT_NO_ANSWER and reply.call_id == ""
    assert "8001" in reply.detail


async def test_dial_out_customer_busy_ends_the_call_and_hangs_up_the_agent(
    rig: Rig, stub: gateway_pb2_grpc.CallControlStub
) -> None:
    outcomes = [
        Attempt(Outcome.ANSWERED, FakeLeg(rig.channel, inbound=False, answered=True)),
        Attempt(Outcome.BUSY, None, "486 Busy Here"),
    ]
    rig.channel.ring_outcome = lambda abandon: outcomes.pop(0)
    reply = await stub.DialOut(
        gw.DialOutRequest(agent_id="a1", endpoint="8001", number="8002", dial_class="internal")
    )
    await settle()
    assert reply.result == gw.CONNECT_RESULT_BUSY and reply.call_id
    assert rig.events.kinds(reply.call_id)[-1] == "ended"
    assert [r[0] for r in rig.channel.rung] == ["8001", "8002"]
    assert len(rig.channel.did("hang_up")) == 1
