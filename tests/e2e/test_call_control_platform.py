"""Call control through the running platform: the CRM's identity (mTLS) drives CallControl
on the gateway as the desk does - the agent's SIPp phone is re-INVITEd sendonly and back,
and the `calls` topic carries CallHeld, CallResumed and a CallEnded with the hold time."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from common.events import payload_of
from common.replay import read_topic
from hotline.v1 import events_pb2 as ev
from hotline.v1 import gateway_pb2 as gw
from hotline.v1 import gateway_pb2_grpc
from tests.e2e.conftest import DTMF_PCAP, PORTS, Platform, metric, register_phone, wait_for

pytestmark = pytest.mark.e2e


def test_desk_hold_and_resume_over_grpc_as_the_crm(platform: Platform, sipp, agents) -> None:  # noqa: ANN001
    phone = sipp("phone_uas_hold.xml", 16311, media_port=16312)
    register_phone(sipp, "8001", 16310, 16311)
    api = agents("agent1")
    api.agent_ready()
    wait_for(
        lambda: metric(platform.metrics("acd"), "hotline_agents", state="ready") >= 1,
        what="agent1 ready in ACD metrics",
    )
    since_ms = int(time.time() * 1000)
    caller = sipp(
        "caller.xml",
        16320,
        media_port=16322,
        keys={
            "service": "10000",
            "caller": "5557001",
            "dtmf_pcap": DTMF_PCAP.format(2),
            "talk_ms": "9000",
        },
        extra=["-s", "10000"],
    )
    channel = platform.grpc_channel("crm", "gateway")  # the desk's call control
    stub = gateway_pb2_grpc.CallControlStub(channel)
    acd_channel = platform.grpc_channel("acd", "gateway")  # the ACD may list the calls
    lister = gateway_pb2_grpc.CallControlStub(acd_channel)
    try:
        call = wait_for(
            lambda: next(
                (
                    c
                    for c in lister.ListCalls(gw.ListCallsRequest(), timeout=5).calls
                    if c.ani == "5557001" and c.state == "bridged"
                ),
                None,
            ),
            timeout_s=30,
            what="the call bridged to agent1",
        )
        with pytest.raises(grpc.RpcError) as info:
            stub.Hold(gw.HoldRequest(call_id="no-such-call"), timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert stub.Hold(gw.HoldRequest(call_id=call.call_id), timeout=10).state == "bridged"
        time.sleep(2.0)
        stub.Resume(gw.HoldRequest(call_id=call.call_id), timeout=10)
    finally:
        channel.close()
        acd_channel.close()
    assert caller.wait(60) == 0, caller.explain()
    assert phone.wait(30) == 0, phone.explain()  # it saw sendonly, then sendrecv

    def events() -> list[object] | None:
        envs = asyncio.run(read_topic(f"127.0.0.1:{PORTS['KAFKA']}", "calls", since_ms, 10))
        mine = [p for p in map(payload_of, envs) if getattr(p, "call_id", "") == call.call_id]
        return mine if any(isinstance(p, ev.CallEnded) for p in mine) else None

    mine = wait_for(events, timeout_s=20, what="CallEnded of the call on `calls`")
    held = [p for p in mine if isinstance(p, ev.CallHeld)]
    resumed = [p for p in mine if isinstance(p, ev.CallResumed)]
    ended = next(p for p in mine if isinstance(p, ev.CallEnded))
    assert [h.by for h in held] == ["desk"] and held[0].agent_id == "agent1"
    assert len(resumed) == 1 and 1500 <= resumed[0].held_ms <= 4000
    assert ended.hold_count == 1 and ended.hold_ms == resumed[0].held_ms
