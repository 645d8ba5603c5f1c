"""CallControl over a real in-process gRPC server on the switch rig: replies, the mapping of
outcomes to ConnectResult/OriginateResult, and errors that say what was wrong; the call-control
methods (hold, transfer, consult, conference, monitor, mute, digits, click-to-dial with its dial
plan and PERMISSION_DENIED) and who may call them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from common import error_info, rpc
from gateway.core.calls import EndReason
from gateway.core.contracts import Attempt, Outcome
from gateway.dialplan import DialPlan, DialPlanError
from gateway.servicer import CallControlServicer
from hotline.v1 import gateway_pb2 as gw
from hotline.v1 import gateway_pb2_grpc
from tests import tls as test_tls
from tests.unit.gateway_rig import FakeLeg, Rig, call_control_stub, code_of, make_rig, settle


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    made = await make_rig(tmp_path)
    yield made
    await made.switch.stop()


@pytest.fixture
async def stub(rig: Rig) -> AsyncIterator[gateway_pb2_grpc.CallControlStub]:
    async with call_control_stub(rig.switch) as served:
        yield served


async def test_answer_and_list_calls(
    rig: Rig,
    stub: gateway_pb2_grpc.CallControlStub,
) -> None:
    _, call = rig.channel.new_call(ani="13800138000", dnis="10000")
    reply = await stub.Answer(gw.AnswerRequest(call_id=call.call_id))
    assert (reply.call_id, reply.state) == (call.call_id, "answered")
    listed = (await stub.ListCalls(gw.ListCallsRequest())).calls
    assert [(c.call_id, c.state, c.ani, c.dnis, c.channel) for c in listed] == [
        (call.call_id, "answered", "13800138000", "10000", "fake")
    ]
    assert listed[0].started_at_ms > 0


async def test_unknown_call_is_not_found_and_wrong_state_is_failed_precondition(
    rig: Rig, stub: gateway_pb2_grpc.CallControlStub
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await stub.Answer(gw.AnswerRequest(call_id="nope"))
    assert gone.value.code() is grpc.StatusCode.NOT_FOUND and "nope" in gone.value.details()
    assert error_info.reason_of(gone.value) == error_info.CALL_NOT_FOUND
    _, call = rig.channel.new_call()
    code, details = await code_of(stub.Play(gw.PlayRequest(call_id=call.call_id, prompt="welcome")))
    assert code is grpc.StatusCode.FAILED_PRECONDITION and "offered" in details
    await stub.Answer(gw.AnswerRequest(call_id=call.call_id))
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.Play(gw.PlayRequest(call_id=call.call_id, prompt="no-such-prompt"))
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND
    assert "no-such-prompt" in missing.value.details()
    # NOT_FOUND either way: the ErrorInfo says which (the IVR skips a missing prompt, and
    # ends the flow quietly for a caller who hung up)
    assert error_info.reason_of(missing.value) == error_info.PROMPT_NOT_FOUND


async def test_bad_arguments_are_invalid_argument_with_a_reason(
    rig: Rig, stub: gateway_pb2_grpc.CallControlStub
) -> None:
    _, call = rig.channel.new_call()
    cases = [
        (stub.Play(gw.PlayRequest(call_id=call.call_id)), "prompt is required"),
        (
            stub.CollectDigits(gw.CollectDigitsRequest(call_id=call.call_id, max_digits=-1)),
            "must not be negative",
        ),
        (stub.ConnectToEndpoint(gw.ConnectRequest(call_id=call.call_id)), "endpoint is required"),
        (stub.Originate(gw.OriginateRequest(trunk="fake", number="12a")), "digits 0-9"),
        (
            stub.Originate(
                gw.OriginateRequest(trunk="fake", number="123", answer_policy="psychic")
            ),
            "answer_policy",
        ),
    ]
    for pending, reason in cases:
        code, details = await code_of(pending)
        assert code is grpc.StatusCode.INVALID_ARGUMENT and reason in details


@pytest.mark.parametrize(
    "outcome, result",
    [
        (Outcome.NO_ANSWER, gw.CONNECT_RESULT_NO_ANSWER),
        (Outcome.BUSY, gw.CONNECT_RESULT_BUSY),
        (Outcome.REJECTED, gw.CONNECT_RESULT_REJECTED),
        (Outcome.UNREACHABLE, gw.CONNECT_RESULT_UNREACHABLE),
        (Outcome.CALLER_GONE, gw.CONNECT_RESULT_CALLER_GONE),
    ],
)
async def test_connect_outcomes_map_to_connect_results(
    rig: Rig,
    stub: gateway_pb2_grpc.CallControlStub,
    outcome: Outcome,
    result: int,
) -> None:
    _, call = await rig.answered_call()
    rig.channel.ring_outcome = lambda abandon: Attempt(outcome, None, f"because {outcome.value}")
    reply = await stub.ConnectToEndpoint(
        gw.ConnectRequest(call_id=call.call_id, endpoint="8001", ring_timeout_ms=1000)
    )
    assert (reply.result, reply.detail) == (result, f"because {outcome.value}")


async def test_connect_answered_reports_the_agent_leg(
    rig: Rig, stub: gateway_pb2_grpc.CallControlStub
) -> None:
    _, call = await rig.answered_call()
    agent = FakeLeg(rig.channel, inbound=False, answered=True)
    rig.channel.ring_outcome = lambda abandon: Attempt(Outcome.ANSWERED, agent, "")
    reply = await stub.ConnectToEndpoint(
        gw.ConnectRequest(call_id=call.call_id, endpoint="8001", agent_id="agent1", queue="sales")
    )
    assert (reply.result, reply.leg_id) == (gw.CONNECT_RESULT_ANSWERED, agent.leg_id)
    hung = await stub.Hangup(gw.HangupRequest(call_id=call.call_id, reason="test"))
    assert hung.state == "ended"
    assert rig.events.of("ended", call.call_id)["reason"] == EndReason.SYSTEM
    await asyncio.sleep(0)


async def test_the_agents_own_hangup_from_the_desk_ends_as_agent_hangup(
    rig: Rig, stub: gateway_pb2_grpc.CallControlStub
) -> None:
    _, call = await rig.answered_call()
    hung = await stub.Hangup(
        gw.HangupRequest(call_id=call.call_id, reason="hung up from the desk", by_agent=True)
    )
    assert hung.state == "ended"
    ended = rig.events.of("ended", call.call_id)
    assert (ended["reason"], ended["detail"]) == (EndReason.AGENT_HANGUP, "hung up from the desk")


async def test_connect_to_an_ended_call_is_caller_gone_not_an_error(
    rig: Rig, stub: gateway_pb2_grpc.CallControlStub
) -> None:
    reply = await stub.ConnectToEndpoint(gw.ConnectRequest(call_id="gone", endpoint="8001"))
    assert reply.result == gw.CONNECT_RESULT_CALLER_GONE


async def test_originate_replies_with_the_new_call(
    rig: Rig, stub: gateway_pb2_grpc.CallControlStub
) -> None:
    reply = await stub.Originate(gw.OriginateRequest(trunk="fake", number="95566"))
    assert reply.result == gw.ORIGINATE_RESULT_ANSWERED
    assert rig.switch.registry.get(reply.call_id).dnis == "95566"
    code, details = await code_of(stub.Originate(gw.OriginateRequest(trunk="nope", number="95566")))
    assert code is grpc.StatusCode.FAILED_PRECONDITION and "have: fake" in details
    await stub.Originate(gw.OriginateRequest(trunk="fake", number="95566", diverted_from="+8610"))
    assert rig.channel.diverted == ["", "+8610"]
    code, details = await code_of(
        stub.Originate(gw.OriginateRequest(trunk="fake", number="95566", diverted_from="sales"))
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "diverted_from must be digits" in details


# ---- call control (issue 10) ----------------------------------------------------------


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


async def flow_owner_of(stub: gateway_pb2_grpc.CallControlStub) -> str:
    """The flow owner of the one live call, as the gateway lists it."""
    (listed,) = (await stub.ListCalls(gw.ListCallsRequest())).calls
    return str(listed.flow_owner)


async def test_the_ivr_that_answered_owns_the_call_until_the_acd_commands_it(rig: Rig) -> None:
    # behind the real mTLS guard: the gateway knows who calls from the client certificate
    srv, port = test_tls.server(
        "gateway",
        gateway_pb2_grpc.add_CallControlServicer_to_server,
        CallControlServicer(rig.switch),
    )
    await srv.start()
    ivr_channel = test_tls.channel("ivr", "gateway", port)
    acd_channel = test_tls.channel("acd", "gateway", port)
    try:
        ivr = gateway_pb2_grpc.CallControlStub(ivr_channel)
        acd = gateway_pb2_grpc.CallControlStub(acd_channel)
        _, call = rig.channel.new_call(ani="13800138000", dnis="10000")

        await ivr.Answer(gw.AnswerRequest(call_id=call.call_id, flow_owner="ivr-7d9f-x2"))
        assert await flow_owner_of(acd) == "ivr-7d9f-x2"
        await ivr.Play(gw.PlayRequest(call_id=call.call_id, prompt="welcome", loop=True))
        assert await flow_owner_of(acd) == "ivr-7d9f-x2"  # the IVR's own commands keep it
        await acd.Play(gw.PlayRequest(call_id=call.call_id, prompt="hold", loop=True))
        assert await flow_owner_of(acd) == ""  # queued: the flow is over
        # a flow run again for the call (an IVR that restarted) owns it again
        await ivr.Answer(gw.AnswerRequest(call_id=call.call_id, flow_owner="ivr-7d9f-x2"))
        assert await flow_owner_of(acd) == "ivr-7d9f-x2"
    finally:
        await ivr_channel.close()
        await acd_channel.close()
        await srv.stop(None)


async def test_over_plain_text_a_command_outside_any_flow_ends_the_ivrs_flow(rig: Rig) -> None:
    """The development switch serves plain text: no caller is known, so the gateway cannot
    tell the ACD's hold music and agent ring from an IVR's command. A command that names no
    flow (the ACD's; every IVR flow names itself) ends the flow, as the ACD's does over mTLS:
    a restarted IVR must not take the call up again, and the old flow's commands are
    refused."""
    srv, port = rpc.server("127.0.0.1", 0, None, CallControlServicer.CALLERS)
    gateway_pb2_grpc.add_CallControlServicer_to_server(CallControlServicer(rig.switch), srv)
    await srv.start()
    channel = rpc.channel(f"127.0.0.1:{port}", None, "gateway")
    try:
        stub = gateway_pb2_grpc.CallControlStub(channel)
        _, call = rig.channel.new_call(ani="13800138000", dnis="10000")

        await stub.Answer(gw.AnswerRequest(call_id=call.call_id, flow_owner="ivr-a"))
        await stub.Play(
            gw.PlayRequest(call_id=call.call_id, prompt="welcome", loop=True, flow_owner="ivr-a")
        )
        assert await flow_owner_of(stub) == "ivr-a"  # the flow's own commands keep it
        await stub.Play(gw.PlayRequest(call_id=call.call_id, prompt="hold", loop=True))
        assert await flow_owner_of(stub) == ""  # queued: the flow is over
        refused = stub.Play(gw.PlayRequest(call_id=call.call_id, prompt="menu", flow_owner="ivr-a"))
        code, details = await code_of(refused)
        assert code is grpc.StatusCode.FAILED_PRECONDITION and "the ACD has it" in details
    finally:
        await channel.close()
        await srv.stop(None)


@contextlib.asynccontextmanager
async def served_on_a_clock(
    rig: Rig, now: list[float], *peers: str
) -> AsyncIterator[list[gateway_pb2_grpc.CallControlStub]]:
    """The servicer on a clock the test moves (`now[0]`), behind the real mTLS guard (owner
    timeout 20 s); a stub per peer service, in order."""
    servicer = CallControlServicer(rig.switch, flow_owner_timeout_s=20, clock=lambda: now[0])
    srv, port = test_tls.server(
        "gateway", gateway_pb2_grpc.add_CallControlServicer_to_server, servicer
    )
    await srv.start()
    channels = [test_tls.channel(peer, "gateway", port) for peer in peers]
    try:
        yield [gateway_pb2_grpc.CallControlStub(c) for c in channels]
    finally:
        for c in channels:
            await c.close()
        await srv.stop(None)


async def test_a_call_left_in_a_gone_ivrs_menu_is_handed_to_a_live_ivr(rig: Rig) -> None:
    """An IVR whose pod was replaced (a new name) never takes up its calls; once it has been
    silent for the owner timeout, the next live IVR's heartbeat adopts them, and only it."""
    now = [1000.0]
    async with served_on_a_clock(rig, now, "ivr", "crm") as (ivr, crm):
        _, call = rig.channel.new_call(ani="13800138000", dnis="10000")
        await ivr.Answer(gw.AnswerRequest(call_id=call.call_id, flow_owner="ivr-old"))
        now[0] += 15
        assert not (await ivr.AdoptOrphans(gw.AdoptOrphansRequest(instance="ivr-new"))).calls
        now[0] += 10  # ivr-old silent 25 s
        (adopted,) = (await ivr.AdoptOrphans(gw.AdoptOrphansRequest(instance="ivr-new"))).calls
        assert (adopted.call_id, adopted.flow_owner, adopted.dnis, adopted.ani) == (
            call.call_id,
            "ivr-new",
            "10000",
            "13800138000",
        )
        now[0] += 1
        assert not (await ivr.AdoptOrphans(gw.AdoptOrphansRequest(instance="ivr-3"))).calls
        code, details = await code_of(ivr.AdoptOrphans(gw.AdoptOrphansRequest()))
        assert code is grpc.StatusCode.INVALID_ARGUMENT and "instance" in details
        # only the IVR may adopt calls
        code, _ = await code_of(crm.AdoptOrphans(gw.AdoptOrphansRequest(instance="x")))
        assert code is grpc.StatusCode.PERMISSION_DENIED


async def test_an_ivr_that_wakes_up_after_its_call_was_adopted_is_refused(rig: Rig) -> None:
    """An IVR whose loop stalled past the owner timeout had its call adopted by another; when
    it wakes up, its flow's commands are refused (FLOW_TAKEN_OVER), the new flow's are obeyed,
    and so are commands that name no flow (the ACD's, the CRM's)."""
    now = [1000.0]
    async with served_on_a_clock(rig, now, "ivr", "acd") as (ivr, acd):
        _, call = rig.channel.new_call()
        cid = call.call_id
        await ivr.Answer(gw.AnswerRequest(call_id=cid, flow_owner="ivr-stalled"))
        await ivr.Play(
            gw.PlayRequest(call_id=cid, prompt="hold", loop=True, flow_owner="ivr-stalled")
        )
        now[0] += 25
        (adopted,) = (await ivr.AdoptOrphans(gw.AdoptOrphansRequest(instance="ivr-live"))).calls
        assert adopted.flow_owner == "ivr-live"

        for command in (
            ivr.Play(gw.PlayRequest(call_id=cid, prompt="welcome", flow_owner="ivr-stalled")),
            ivr.CollectDigits(
                gw.CollectDigitsRequest(call_id=cid, max_digits=1, flow_owner="ivr-stalled")
            ),
            ivr.Hangup(gw.HangupRequest(call_id=cid, reason="late", flow_owner="ivr-stalled")),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await command
            assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            assert error_info.reason_of(refused.value) == error_info.FLOW_TAKEN_OVER
            assert "IVR ivr-live adopted it" in (refused.value.details() or "")
        assert call.state.value == "answered" and not rig.channel.did("hang_up")

        await ivr.Play(gw.PlayRequest(call_id=cid, prompt="hold", loop=True, flow_owner="ivr-live"))
        await acd.Play(gw.PlayRequest(call_id=cid, prompt="hold", loop=True))  # names no flow
        assert call.flow_owner == ""  # the ACD's music: the flow is over for every IVR
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await ivr.Hangup(gw.HangupRequest(call_id=cid, reason="x", flow_owner="ivr-live"))
        assert "the ACD has it" in (refused.value.details() or "")
