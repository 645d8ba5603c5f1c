"""CallControl over a real in-process gRPC server on the switch rig: replies, the mapping of
outcomes to ConnectResult/OriginateResult, and errors that say what was wrong."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from gateway.core.contracts import Attempt, Outcome
from gateway.servicer import CallControlServicer
from hotline.v1 import gateway_pb2 as gw
from hotline.v1 import gateway_pb2_grpc
from tests.unit.gateway_rig import FakeLeg, Rig, make_rig


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    made = await make_rig(tmp_path)
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
    code, details = await code_of(stub.Answer(gw.AnswerRequest(call_id="nope")))
    assert code is grpc.StatusCode.NOT_FOUND and "nope" in details
    _, call = rig.channel.new_call()
    code, details = await code_of(stub.Play(gw.PlayRequest(call_id=call.call_id, prompt="welcome")))
    assert code is grpc.StatusCode.FAILED_PRECONDITION and "offered" in details
    await stub.Answer(gw.AnswerRequest(call_id=call.call_id))
    code, details = await code_of(
        stub.Play(gw.PlayRequest(call_id=call.call_id, prompt="no-such-prompt"))
    )
    assert code is grpc.StatusCode.NOT_FOUND and "no-such-prompt" in details


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
    await asyncio.sleep(0)


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
