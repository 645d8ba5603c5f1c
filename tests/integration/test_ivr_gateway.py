"""The IVR's flows against the gateway's real CallControl servicer over mutual-TLS gRPC.

A gateway that has just come back: the IVR's channel to it is still waiting to try again (it
failed while the gateway was down) when the new gateway's first offers arrive. Before, the
Answer failed at once (UNAVAILABLE, "failed to connect") and the caller rang unanswered until
the gateway gave up (39 callers of a fault soak).

An IVR that stalls past the owner timeout: another IVR adopts its call, and when the stalled
one wakes up its flow is refused and stops, so the caller hears one flow, not two."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import grpc
import pytest

from common import error_info, rpc
from gateway.core.calls import CallState
from gateway.servicer import CallControlServicer
from hotline.v1 import gateway_pb2, gateway_pb2_grpc
from ivr.runner import FlowRunner
from tests import tls as test_tls
from tests.unit.gateway_rig import make_rig, write_prompt
from tests.unit.test_ivr_runner import HUMAN, FakeAcd

pytestmark = pytest.mark.asyncio


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_call_offered_by_a_gateway_just_back_is_answered(tmp_path: Path) -> None:
    rig = await make_rig(tmp_path)
    rig.switch.answer_timeout_s = 30.0  # the gateway waits for its IVR as long as it likes here
    port = free_port()
    channel = rpc.channel(f"127.0.0.1:{port}", test_tls.tls("ivr"), "gateway")
    stub = gateway_pb2_grpc.CallControlStub(channel)
    try:
        # the gateway is down: the IVR's channel fails and waits before it tries again
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.ListCalls(gateway_pb2.ListCallsRequest(), timeout=2)
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        for _ in range(100):  # between two tries (a loaded machine may be in the middle of one)
            if channel.get_state() == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                break
            await asyncio.sleep(0.01)
        assert channel.get_state() == grpc.ChannelConnectivity.TRANSIENT_FAILURE

        # it is back, and offers a call before the channel has tried again
        srv, _ = rpc.server("127.0.0.1", port, test_tls.tls("gateway"), CallControlServicer.CALLERS)
        gateway_pb2_grpc.add_CallControlServicer_to_server(CallControlServicer(rig.switch), srv)
        await srv.start()
        try:
            leg, call = rig.channel.new_call(ani="5551234")
            runner = FlowRunner(stub, FakeAcd(), acd_wait_s=5, instance="ivr-a")  # type: ignore[arg-type]
            flow = asyncio.create_task(runner.run(HUMAN, call.call_id, "5551234", "10000"))
            for _ in range(200):  # the channel's next try is at most 2 s away
                if call.state != CallState.OFFERED or flow.done():
                    break
                await asyncio.sleep(0.05)
            assert call.state == CallState.ANSWERED, (call.state, flow.done() and flow.result())
            assert call.flow_owner == "ivr-a"
            assert rig.channel.did("answer") == [leg]
            rig.channel.far_end_hangs_up(leg)  # the caller hangs up in the greeting
            assert await asyncio.wait_for(flow, 10) == "caller-gone"
        finally:
            await srv.stop(None)
    finally:
        await channel.close()


async def test_an_ivr_that_stalled_past_the_owner_timeout_stops_its_flow(tmp_path: Path) -> None:
    write_prompt(tmp_path, "menu", frames=3, level=700)
    rig = await make_rig(tmp_path)  # prompts play on a clock only the test steps: flows wait
    rig.switch.answer_timeout_s = 30.0
    now = [1000.0]
    servicer = CallControlServicer(rig.switch, flow_owner_timeout_s=20, clock=lambda: now[0])
    srv, port = rpc.server("127.0.0.1", 0, test_tls.tls("gateway"), CallControlServicer.CALLERS)
    gateway_pb2_grpc.add_CallControlServicer_to_server(servicer, srv)
    await srv.start()
    channel = rpc.channel(f"127.0.0.1:{port}", test_tls.tls("ivr"), "gateway")
    stub = gateway_pb2_grpc.CallControlStub(channel)
    try:
        leg, call = rig.channel.new_call(ani="5551234")
        stalled = FlowRunner(stub, FakeAcd(), acd_wait_s=5, instance="ivr-a")  # type: ignore[arg-type]
        flow_a = asyncio.create_task(stalled.run(HUMAN, call.call_id, "5551234", "10000"))
        for _ in range(100):  # ivr-a answers and plays its greeting
            if call.player is not None:
                break
            await asyncio.sleep(0.02)
        assert call.state == CallState.ANSWERED and call.flow_owner == "ivr-a"

        now[0] += 25  # ivr-a silent past the owner timeout: ivr-b's heartbeat adopts the call
        adopt = await stub.AdoptOrphans(gateway_pb2.AdoptOrphansRequest(instance="ivr-b"))
        assert [c.call_id for c in adopt.calls] == [call.call_id]
        live = FlowRunner(stub, FakeAcd(), acd_wait_s=5, instance="ivr-b")  # type: ignore[arg-type]
        flow_b = asyncio.create_task(live.run(HUMAN, call.call_id, "5551234", "10000"))

        # ivr-b's greeting cuts ivr-a's short; ivr-a's next command (its menu) is refused
        assert await asyncio.wait_for(flow_a, 10) == "taken-over"
        assert call.flow_owner == "ivr-b" and call.state == CallState.ANSWERED
        assert not rig.channel.did("hang_up") and not flow_b.done()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Hangup(
                gateway_pb2.HangupRequest(call_id=call.call_id, reason="x", flow_owner="ivr-a")
            )
        assert error_info.reason_of(refused.value) == error_info.FLOW_TAKEN_OVER

        rig.channel.far_end_hangs_up(leg)
        assert await asyncio.wait_for(flow_b, 10) == "caller-gone"
    finally:
        await channel.close()
        await srv.stop(None)
