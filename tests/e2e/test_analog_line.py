"""Analog outside lines end to end: the simulated card's exchange rings a port with FSK caller
ID, the far party presses a digit in-band, an agent answers, and the far end hangs up with
busy tone — all through the same IVR, ACD, recording and CDR path as SIP calls."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from datetime import datetime

import aiohttp
import pytest

from tests.e2e.conftest import PORTS, Api, Platform, register_phone, wait_for

pytestmark = pytest.mark.e2e

CONTROL = f"http://127.0.0.1:{PORTS['SIM_CONTROL_PORT']}"


def control(method: str, path: str, body: dict | None = None) -> object:
    req = urllib.request.Request(
        CONTROL + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def port_state(k: int) -> str:
    return control("GET", "/ports")[k - 1]["state"]


class DeskFeed:
    """The agent desktop's websocket, read in a background thread."""

    def __init__(self, http: str, token: str) -> None:
        self.url = http.replace("http://", "ws://") + f"/ws?token={token}"
        self.messages: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._read()), daemon=True)
        self._thread.start()

    async def _read(self) -> None:
        async with aiohttp.ClientSession() as session, session.ws_connect(self.url) as ws:
            while not self._stop.is_set():
                try:
                    msg = await ws.receive(timeout=0.2)
                except asyncio.TimeoutError:
                    continue
                if msg.type != aiohttp.WSMsgType.TEXT:
                    return
                self.messages.append(json.loads(msg.data))

    def offers(self) -> list[dict]:
        return [m for m in self.messages if m.get("type") == "offer"]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def cdr(sup: Api, ani: str) -> dict | None:
    status, body = sup.call("GET", "/api/cdrs?limit=50")
    assert status == 200, body
    return next((r for r in body["cdrs"] if r["ani"] == ani), None)


def test_ring_caller_id_inband_digit_and_busy_hangup(platform: Platform, sipp, agents) -> None:  # noqa: ANN001
    phone = sipp("phone_uas.xml", 16311, media_port=16312)
    register_phone(sipp, "8008", 16310, 16311)
    agent = agents("agent8")
    agent.agent_ready()
    feed = DeskFeed(platform.http, agent.token)
    sup = Api(platform.http)
    sup.login("supervisor", "supervisor-demo")

    control("POST", "/ports/2/ring", {"caller": "13800138000"})
    wait_for(lambda: port_state(2) == "offhook", timeout_s=15, what="the IVR answering port 2")
    time.sleep(1.0)  # into the greeting (barge-in is allowed)
    control("POST", "/ports/2/dtmf", {"digits": "2"})
    wait_for(
        lambda: (r := cdr(sup, "13800138000")) and r.get("agent_id") and r,
        timeout_s=20,
        what="the analog call reaching an agent",
    )
    offer = wait_for(lambda: feed.offers(), what="the screen pop on the agent's desk")[0]
    feed.close()
    assert offer["ani"] == "13800138000" and offer["customer"]["name"] == "张伟"
    time.sleep(2.0)  # talk
    hung_up = time.time()
    control("POST", "/ports/2/hangup", {"signal": "busy"})
    row = wait_for(
        lambda: (r := cdr(sup, "13800138000")) and r.get("ended_at") and r,
        timeout_s=10,
        what="the call ending after busy tone",
    )
    assert phone.wait(20) == 0, phone.explain()
    ended = datetime.fromisoformat(row["ended_at"].replace("Z", "+00:00")).timestamp()
    assert ended - hung_up < 2.0, f"far-end hang-up took {ended - hung_up:.2f}s to detect"
    assert row["end_reason"] == "far_end"
    assert row["dnis"] == "10000" and row["channel"] == "analog"
    assert row["queue"] == "support", "in-band 2 must choose the second queue"
    assert row["agent_id"] == "agent8"
    wait_for(lambda: port_state(2) == "idle", what="port 2 back on-hook")


def test_all_four_lines_ringing_at_once_are_answered_and_queued(platform: Platform) -> None:
    from tests.e2e.conftest import metric

    before = metric(platform.metrics("acd"), "hotline_queue_abandoned_total", queue="sales")
    callers = {k: f"1390000000{k}" for k in range(1, 5)}
    for k, number in callers.items():
        control("POST", f"/ports/{k}/ring", {"caller": number})
    wait_for(
        lambda: all(port_state(k) == "offhook" for k in callers),
        timeout_s=20,
        what="all four ports answered",
    )
    assert metric(platform.metrics("gateway"), "hotline_analog_lines", state="in_use") == 4
    time.sleep(0.5)
    for k in callers:
        control("POST", f"/ports/{k}/dtmf", {"digits": "1"})
    wait_for(
        lambda: metric(platform.metrics("acd"), "hotline_queue_calls_waiting", queue="sales") == 4,
        timeout_s=20,
        what="four calls waiting in sales",
    )
    for k in callers:
        control("POST", f"/ports/{k}/hangup", {"signal": "loop_drop"})
    wait_for(
        lambda: (
            metric(platform.metrics("acd"), "hotline_queue_abandoned_total", queue="sales")
            == before + 4
        ),
        what="four abandoned calls",
    )
    wait_for(lambda: all(port_state(k) == "idle" for k in callers), what="all ports idle")


def _line_of(number: str) -> dict:
    return next(p for p in control("GET", "/ports") if p["dialled"] == number)


def test_outbound_call_seizes_waits_for_dial_tone_and_dials(platform: Platform) -> None:
    import io
    import wave

    import grpc
    import numpy as np

    from hotline.v1 import gateway_pb2 as gw
    from hotline.v1 import gateway_pb2_grpc

    channel = platform.grpc_channel("acd", "gateway")  # the ACD places outbound calls
    stub = gateway_pb2_grpc.CallControlStub(channel)
    try:
        reply = stub.Originate(gw.OriginateRequest(trunk="analog", number="12345"), timeout=30)
        assert reply.result == gw.ORIGINATE_RESULT_ANSWERED, reply.detail
        line = _line_of("12345")
        assert line["offhook"] and line["line"] == "connected"
        assert stub.Play(
            gw.PlayRequest(call_id=reply.call_id, prompt="goodbye"), timeout=30
        ).completed
        stub.Hangup(gw.HangupRequest(call_id=reply.call_id, reason="done"), timeout=5)
        wait_for(lambda: port_state(line["port"]) == "idle", what="the line released")
        with urllib.request.urlopen(f"{CONTROL}/ports/{line['port']}/captured", timeout=5) as r:
            with wave.open(io.BytesIO(r.read())) as w:
                sent = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        assert np.sqrt(np.mean(sent.astype(float) ** 2)) > 200, "the prompt reached the line"

        for k in range(1, 5):  # the far party answers with a polarity reversal
            control("POST", f"/ports/{k}/answer", {"polarity_after_ms": 600})
        reply = stub.Originate(
            gw.OriginateRequest(trunk="analog", number="777", answer_policy="polarity"), timeout=30
        )
        assert reply.result == gw.ORIGINATE_RESULT_ANSWERED, reply.detail
        stub.Hangup(gw.HangupRequest(call_id=reply.call_id), timeout=5)
        wait_for(lambda: port_state(_line_of("777")["port"]) == "idle", what="line released")

        for k in range(1, 5):  # ... or never answers
            control("POST", f"/ports/{k}/answer", {"polarity_after_ms": None})
        reply = stub.Originate(
            gw.OriginateRequest(
                trunk="analog", number="888", answer_policy="polarity", timeout_ms=5000
            ),
            timeout=30,
        )
        assert reply.result == gw.ORIGINATE_RESULT_NO_ANSWER and not reply.call_id
        wait_for(lambda: port_state(_line_of("888")["port"]) == "idle", what="line released")

        with pytest.raises(grpc.RpcError) as bad:
            stub.Originate(gw.OriginateRequest(trunk="analog", number="12a"), timeout=5)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        channel.close()
