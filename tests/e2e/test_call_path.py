"""The walking skeleton's acceptance path, on real peers: SIPp phones and callers, the real
broker, the five service processes, the CRM's REST API and the services' /metrics."""

from __future__ import annotations

import socket
import wave

import numpy as np
import pytest

from tests.e2e.conftest import DTMF_PCAP, Api, Platform, metric, register_phone, wait_for
from tests.e2e.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.e2e

DTMF = DTMF_PCAP


def cdr_for(api: Api, ani: str, done: bool = True) -> dict | None:
    status, body = api.call("GET", "/api/cdrs?limit=50")
    assert status == 200, body
    for row in body["cdrs"]:
        if row["ani"] == ani and (not done or row.get("ended_at")):
            return row
    return None


def supervisor(platform: Platform) -> Api:
    sup = Api(platform.http)
    sup.login("supervisor", "supervisor-demo")
    return sup


def channel_rms(path: str) -> tuple[float, float, float]:
    """(duration s, left rms, right rms) of a stereo 16-bit WAV."""
    with wave.open(path, "rb") as w:
        assert w.getnchannels() == 2 and w.getsampwidth() == 2 and w.getframerate() == 8000
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
        duration = w.getnframes() / 8000
    rms = np.sqrt(np.mean(pcm.astype(np.float64) ** 2, axis=0))
    return duration, float(rms[0]), float(rms[1])


def test_wrong_password_is_never_registered(sipp) -> None:  # noqa: ANN001
    bad = sipp(
        "register_bad.xml", 16001, keys={"ext": "8009"}, extra=["-au", "8009", "-ap", "nope"]
    )
    assert bad.wait(30) == 0, bad.explain()
    assert "SIP/2.0 200" not in bad.messages()


def test_call_reaches_agent_through_ivr_and_queue(  # noqa: ANN001
    platform: Platform, sipp, agents, otlp: OtlpReceiver
) -> None:
    acd_before = platform.metrics("acd")
    answered_before = metric(acd_before, "hotline_queue_answered_total", queue="support")
    phone = sipp("phone_uas.xml", 16011, media_port=16012)
    register_phone(sipp, "8001", 16010, 16011)
    api = agents("agent1")
    api.agent_ready()
    wait_for(
        lambda: metric(platform.metrics("acd"), "hotline_agents", state="ready") >= 1,
        what="agent1 ready in ACD metrics",
    )

    caller = sipp(
        "caller.xml",
        16020,
        media_port=16022,
        keys={
            "service": "10000",
            "caller": "5551234",
            "dtmf_pcap": DTMF.format(2),
            "talk_ms": "9000",
        },
        extra=["-s", "10000"],
    )
    assert caller.wait(60) == 0, caller.explain()
    assert phone.wait(30) == 0, phone.explain()
    assert "INVITE sip:8001@" in phone.messages()

    sup = supervisor(platform)
    row = wait_for(
        lambda: (
            (r := cdr_for(sup, "5551234"))
            and r.get("recording_id")
            and r["queue"]
            and r["agent_id"]
            and r
        ),
        timeout_s=20,
        what="CDR with queue, agent and recording",
    )
    assert row["dnis"] == "10000"
    assert row["queue"] == "support", "digit 2 must choose the support queue"
    assert row["agent_id"] == "agent1"
    assert row["end_reason"] == "caller_hangup"
    assert row["wait_ms"] >= 0
    assert 4000 < row["talk_ms"] < 12000
    assert not row["abandoned"]

    duration, left, right = channel_rms(
        str(platform.var_dir / "recordings" / row["recording_path"])
    )
    assert abs(duration * 1000 - row["talk_ms"]) < 1500
    assert left > 300, "caller audio (g711a.pcap) must reach the agent leg / left channel"
    assert right > 300, "agent audio must be recorded on the right channel"

    after = platform.metrics("acd")
    assert metric(after, "hotline_queue_answered_total", queue="support") == answered_before + 1
    assert metric(after, "hotline_queue_calls_waiting", queue="support") == 0
    wait_for(
        lambda: api.call("GET", "/api/agent")[1].get("state") == "ready",
        timeout_s=15,
        what="agent1 back to ready after wrap-up",
    )

    # One call is one trace across the services (exported over OTLP like to a collector).
    spans = wait_for(
        lambda: (
            (t := otlp.trace_of_call(row["call_id"]))
            and {"hotline-gateway", "hotline-ivr", "hotline-acd", "hotline-crm"} <= set(t)
            and t
        ),
        timeout_s=20,
        what="the call's trace with spans from gateway, ivr, acd and crm",
    )
    names = {s.name for group in spans.values() for s in group}
    assert "/hotline.v1.CallControl/Answer" in names and "/hotline.v1.Acd/Enqueue" in names, names
    # The ACD's offer and the gateway's ConnectToEndpoint it asks for, and the recording's upload
    # (after the call) with the recorder's Ingest, are in the same trace.
    wanted = {
        "acd.offer",
        "/hotline.v1.CallControl/ConnectToEndpoint",
        "gateway.recording.upload",
        "/hotline.v1.Recorder/Ingest",
    }

    def missing() -> set[str]:
        trace = otlp.trace_of_call(row["call_id"])
        return wanted - {s.name for group in trace.values() for s in group}

    try:
        wait_for(lambda: not missing(), timeout_s=20, what="the spans of offer and upload")
    except AssertionError:
        raise AssertionError(f"not in the call's trace: {sorted(missing())}") from None


def test_caller_hanging_up_in_queue_is_abandoned(platform: Platform, sipp, agents) -> None:  # noqa: ANN001
    phone = sipp("phone_uas.xml", 16031, media_port=16032, timeout_s=25)
    register_phone(sipp, "8002", 16030, 16031)
    api = agents("agent2")
    status, body = api.call("POST", "/api/agent/login", {})
    assert status == 200, body  # logged in but Not Ready: no agent can take the call
    before = metric(platform.metrics("acd"), "hotline_queue_abandoned_total", queue="sales")

    caller = sipp(
        "caller.xml",
        16040,
        media_port=16042,
        keys={
            "service": "10000",
            "caller": "5550001",
            "dtmf_pcap": DTMF.format(1),
            "talk_ms": "3000",
        },
        extra=["-s", "10000"],
    )
    wait_for(
        lambda: metric(platform.metrics("acd"), "hotline_queue_calls_waiting", queue="sales") == 1,
        timeout_s=15,
        what="the caller waiting in sales",
    )
    assert caller.wait(60) == 0, caller.explain()
    wait_for(
        lambda: (
            metric(platform.metrics("acd"), "hotline_queue_abandoned_total", queue="sales")
            == before + 1
        ),
        what="abandoned counter",
    )
    sup = supervisor(platform)
    # CallEnded (topic calls) and CallAbandoned (topic queues) reach the CRM in either order.
    row = wait_for(
        lambda: (r := cdr_for(sup, "5550001")) and r["abandoned"] and r,
        what="CDR of the abandoned call marked abandoned",
    )
    assert row["queue"] == "sales" and not row["agent_id"]
    phone.stop()
    assert "INVITE" not in phone.messages(), "a Not Ready agent must never be rung"


def test_no_answer_sets_agent_not_ready_and_offers_next(platform: Platform, sipp, agents) -> None:  # noqa: ANN001
    lazy = sipp("phone_noanswer.xml", 16051, media_port=16052)
    register_phone(sipp, "8003", 16050, 16051)
    good = sipp("phone_uas.xml", 16061, media_port=16062)
    register_phone(sipp, "8004", 16060, 16061)
    agent3, agent4 = agents("agent3"), agents("agent4")
    agent3.agent_ready()  # idle longer than agent4: offered first
    agent4.agent_ready()

    caller = sipp(
        "caller.xml",
        16070,
        media_port=16072,
        keys={
            "service": "10000",
            "caller": "5550002",
            "dtmf_pcap": DTMF.format(2),
            "talk_ms": "12000",
        },
        extra=["-s", "10000"],
    )
    assert caller.wait(90) == 0, caller.explain()
    assert lazy.wait(10) == 0, lazy.explain()
    assert good.wait(20) == 0, good.explain()
    me3 = agent3.call("GET", "/api/agent")[1]
    assert me3["state"] == "not_ready" and me3["reason"] == "no-answer"
    row = wait_for(
        lambda: (r := cdr_for(supervisor(platform), "5550002")) and r["agent_id"] and r,
        what="CDR with its agent",
    )
    assert row["agent_id"] == "agent4"


def test_agent_hangup_ends_both_legs(platform: Platform, sipp, agents) -> None:  # noqa: ANN001
    phone = sipp("phone_uas_hangup.xml", 16081, media_port=16082)
    register_phone(sipp, "8005", 16080, 16081)
    agents("agent5").agent_ready()
    caller = sipp(
        "caller_until_bye.xml",
        16090,
        media_port=16092,
        keys={"service": "10000", "caller": "5550003", "dtmf_pcap": DTMF.format(1)},
        extra=["-s", "10000"],
    )
    assert phone.wait(60) == 0, phone.explain()
    assert caller.wait(30) == 0, caller.explain()
    row = wait_for(
        lambda: (r := cdr_for(supervisor(platform), "5550003")) and r["queue"] and r,
        what="CDR with its queue",
    )
    assert row["end_reason"] == "agent_hangup" and row["queue"] == "sales"


def test_unknown_number_gets_404(sipp) -> None:  # noqa: ANN001
    caller = sipp(
        "caller_refused.xml",
        16100,
        keys={"service": "99999", "caller": "5550004", "status": "404"},
        extra=["-s", "99999"],
    )
    assert caller.wait(30) == 0, caller.explain()


def _udp_exchange(port: int, data: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.bind(("127.0.0.1", 0))
        s.sendto(data, ("127.0.0.1", port))
        return s.recv(65535)


def test_malformed_sip_gets_400_and_gateway_survives(platform: Platform) -> None:
    bad = (
        b"INVITE sip:10000@127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:16110;branch=z9hG4bKbad1\r\n"
        b"From: <sip:x@127.0.0.1>;tag=1\r\nTo: <sip:10000@127.0.0.1>\r\n"
        b"Call-ID: bad-1\r\nCSeq: notanumber INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    reply = _udp_exchange(platform.sip_port, bad)
    assert reply.startswith(b"SIP/2.0 400"), reply
    assert b"CSeq" in reply.split(b"\r\n", 1)[0] or b"Bad Request" in reply
    options = (
        b"OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:16111;branch=z9hG4bKopt1;rport\r\n"
        b"From: <sip:x@127.0.0.1>;tag=2\r\nTo: <sip:127.0.0.1>\r\nCall-ID: opt-1\r\n"
        b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    assert _udp_exchange(platform.sip_port, options).startswith(b"SIP/2.0 200")


def test_rest_bad_bodies_get_4xx_with_message(platform: Platform) -> None:
    api = Api(platform.http)
    status, body = api.call("POST", "/api/login", {"username": "agent6"})
    assert status == 400 and "password" in body["error"]
    api.login("agent6", "agent6-demo")
    status, body = api.call("POST", "/api/agent/state", {"state": "dancing"})
    assert status == 400 and "state" in body["error"]
