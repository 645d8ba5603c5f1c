"""The ACD killed (-9) with an answered call, the call transferred to another agent's extension
while the ACD is down (the gateway does it alone), the ACD restarted: its rebuild from Kafka and
the gateway's live calls puts the target agent on the call and the transferring agent through
wrap-up to Ready; then the call is sent back to a queue (Requeue) with its priority, and ends.

A second test: an attended transfer (consult, then complete) moves the call between agents in
the ACD as it happens. Real peers: SIPp caller and two SIPp agent phones, the real broker and
the five services; transfers are the gateway's CallControl methods over the CRM's mTLS
identity, as the desk sends them.
"""

from __future__ import annotations

import pytest

from hotline.v1 import acd_pb2, acd_pb2_grpc, gateway_pb2_grpc
from hotline.v1 import events_pb2 as ev
from hotline.v1 import gateway_pb2 as gw
from tests.e2e.conftest import DTMF_PCAP, PORTS, Platform, register_phone, secure_channel, wait_for
from tests.e2e.test_acd_restart import kill_9, state

pytestmark = pytest.mark.e2e


def agents_of_acd(platform: Platform) -> dict[str, acd_pb2.Agent]:
    with secure_channel(
        platform.var_dir, "crm", f"127.0.0.1:{PORTS['ACD_GRPC_PORT']}", "acd"
    ) as channel:
        reply = acd_pb2_grpc.AcdStub(channel).ListAgents(acd_pb2.ListAgentsRequest(), timeout=5)
    return {a.agent_id: a for a in reply.agents}


def test_restart_mid_transfer_seats_the_target_agent(
    platform: Platform,
    sipp,  # noqa: ANN001
    agents,  # noqa: ANN001
) -> None:
    first_phone = sipp("phone_uas.xml", 16651, media_port=16652, timeout_s=120)
    register_phone(sipp, "8015", 16650, 16651)
    second_phone = sipp("phone_uas.xml", 16661, media_port=16662, timeout_s=120)
    register_phone(sipp, "8016", 16660, 16661)
    first, second = agents("agent15"), agents("agent16")
    first.agent_ready()
    status, body = second.call("POST", "/api/agent/login", {})  # logged in, Not Ready
    assert status == 200, body
    caller = sipp(
        "caller_until_bye.xml",
        16670,
        media_port=16672,
        keys={"service": "10000", "caller": "5550116", "dtmf_pcap": DTMF_PCAP.format(3)},
        extra=["-s", "10000"],
        timeout_s=120,
    )
    wait_for(lambda: state(first)[0] == "on_call", timeout_s=30, what="agent15 on the call")
    call_id = agents_of_acd(platform)["agent15"].call_id
    assert agents_of_acd(platform)["agent15"].queue == "support"

    kill_9(platform, "acd")
    gateway = secure_channel(
        platform.var_dir, "crm", f"127.0.0.1:{PORTS['GATEWAY_GRPC_PORT']}", "gateway"
    )
    with gateway:
        stub = gateway_pb2_grpc.CallControlStub(gateway)
        reply = stub.Transfer(
            gw.TransferRequest(
                call_id=call_id,
                target_kind=gw.TARGET_KIND_EXTENSION,
                target="8016",
                by_agent_id="agent15",
                ring_timeout_ms=10000,
            ),
            timeout=20,
        )
        assert reply.result == gw.CONNECT_RESULT_ANSWERED, reply
        assert first_phone.wait(30) == 0, first_phone.explain()  # agent15's leg got its BYE

        platform.stack.start_service("acd")
        platform.stack.wait_ready(("acd",), timeout_s=30)
        # the rebuild: agent16 (seated at 8016) has the call, in its queue; agent15 wraps up
        seated = agents_of_acd(platform)
        assert (seated["agent16"].state, seated["agent16"].call_id) == (
            ev.AGENT_STATE_ON_CALL,
            call_id,
        )
        assert seated["agent16"].queue == "support"
        assert state(second)[0] == "on_call"
        wait_for(lambda: state(first)[0] == "ready", timeout_s=20, what="agent15 Ready again")

        # agent16 sends the caller back to a queue: waiting again with its priority (VIP: 5)
        first.call("POST", "/api/agent/state", {"state": "not_ready", "reason": "meal"})
        reply = stub.Transfer(
            gw.TransferRequest(
                call_id=call_id,
                target_kind=gw.TARGET_KIND_QUEUE,
                target="sales",
                by_agent_id="agent16",
            ),
            timeout=20,
        )
        assert reply.result == gw.CONNECT_RESULT_ANSWERED, reply
        wait_for(lambda: state(second)[0] in ("wrap_up", "ready"), what="agent16 freed")
        with secure_channel(
            platform.var_dir, "crm", f"127.0.0.1:{PORTS['ACD_GRPC_PORT']}", "acd"
        ) as channel:
            status = acd_pb2_grpc.AcdStub(channel).GetQueue(
                acd_pb2.QueueRef(queue="sales"), timeout=5
            )
        assert [(c.call_id, c.priority) for c in status.calls] == [(call_id, 5)]
        stub.Hangup(gw.HangupRequest(call_id=call_id, reason="test over"), timeout=10)
    assert caller.wait(30) == 0, caller.explain()
    assert second_phone.wait(30) == 0, second_phone.explain()


def test_a_consulted_agent_is_busy_then_takes_the_call(
    platform: Platform,
    sipp,  # noqa: ANN001
    agents,  # noqa: ANN001
) -> None:
    """Attended transfer from the desk (gateway Consult, EndConsult COMPLETE): while they
    consult, the Ready colleague is on the call in the ACD (a second caller waits instead of
    ringing them); on completion the colleague has the caller and the first agent wraps up."""
    first_phone = sipp("phone_uas.xml", 16681, media_port=16682, timeout_s=120)
    register_phone(sipp, "8015", 16680, 16681)
    second_phone = sipp("phone_uas.xml", 16691, media_port=16692, timeout_s=120)
    register_phone(sipp, "8016", 16690, 16691)
    first, second = agents("agent15"), agents("agent16")
    first.agent_ready()
    caller = sipp(
        "caller_until_bye.xml",
        16700,
        media_port=16702,
        keys={"service": "10000", "caller": "5550117", "dtmf_pcap": DTMF_PCAP.format(2)},
        extra=["-s", "10000"],
        timeout_s=120,
    )
    wait_for(lambda: state(first)[0] == "on_call", timeout_s=30, what="agent15 on the call")
    call_id = agents_of_acd(platform)["agent15"].call_id
    second.agent_ready()
    with secure_channel(
        platform.var_dir, "crm", f"127.0.0.1:{PORTS['GATEWAY_GRPC_PORT']}", "gateway"
    ) as gateway:
        stub = gateway_pb2_grpc.CallControlStub(gateway)
        reply = stub.Consult(
            gw.ConsultRequest(
                call_id=call_id,
                target_kind=gw.TARGET_KIND_EXTENSION,
                target="8016",
                by_agent_id="agent15",
                ring_timeout_ms=10000,
            ),
            timeout=20,
        )
        assert reply.result == gw.CONNECT_RESULT_ANSWERED, reply
        wait_for(
            lambda: state(second) == ("on_call", "consulted"),
            timeout_s=10,
            what="agent16 on the call while consulted",
        )
        assert agents_of_acd(platform)["agent16"].call_id == call_id
        stub.EndConsult(
            gw.EndConsultRequest(call_id=call_id, action=gw.CONSULT_ACTION_COMPLETE), timeout=10
        )
        wait_for(lambda: state(first)[0] == "wrap_up", timeout_s=10, what="agent15 wraps up")
        assert first_phone.wait(30) == 0, first_phone.explain()
        assert (agents_of_acd(platform)["agent16"].call_id, state(second)[0]) == (
            call_id,
            "on_call",
        )
        stub.Hangup(gw.HangupRequest(call_id=call_id, reason="test over"), timeout=10)
    wait_for(lambda: state(second)[0] in ("wrap_up", "ready"), what="agent16 freed at the end")
    assert caller.wait(30) == 0, caller.explain()
    assert second_phone.wait(30) == 0, second_phone.explain()
