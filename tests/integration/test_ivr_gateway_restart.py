"""The IVR answers a call offered by a gateway that has just come back, over real mutual-TLS
gRPC: the IVR's channel to the gateway is still waiting to try again (it failed while the
gateway was down) when the new gateway's first offers arrive. Before, the Answer failed at once
(UNAVAILABLE, "failed to connect") and the caller rang unanswered until the gateway gave up
(39 callers of a fault soak)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import grpc
import pytest

from common import rpc
from gateway.core.calls import CallState
from gateway.servicer import CallControlServicer
from hotline.v1 import gateway_pb2, gateway_pb2_grpc
from ivr.runner import FlowRunner
from tests import tls as test_tls
from tests.unit.gateway_rig import make_rig
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
