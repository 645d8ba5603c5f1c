"""Carrier behaviours played by SIPp against the gateway: late offer, reliable provisionals
(PRACK), session timers, INFO and in-band DTMF, hold and codec locking in re-INVITE/UPDATE,
a readable 488, P-Asserted-Identity/Diversion, and on the trunk side a 401 challenge on
Originate, PRACK as UAC, REGISTER with digest and OPTIONS keepalive. Audio is checked by
signal: SIPp echoes our RTP (-rtp_echo) or plays a pcap, and the gateway's received frames
are analysed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from gateway.core.calls import Call
from gateway.dsp.tones import dial_digits, silence
from tests.e2e.sip.conftest import Spawn, sipp, sipp_failure
from tests.e2e.sip.gateway import HOST, PROMPT_TONE_HZ, GatewayUnderTest, start_gateway
from tests.e2e.sip.pcap import write_rtp_pcap
from tests.e2e.sip.signal import tone_share

pytestmark = pytest.mark.e2e


class Capture:
    """The audio the gateway receives on a leg, frame by frame."""

    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []

    def __call__(self, frame: np.ndarray) -> None:
        self.frames.append(frame.copy())

    def since(self, start: int) -> np.ndarray:
        if len(self.frames) <= start:
            return np.zeros(0)
        return np.concatenate(self.frames[start:]).astype(np.float64)


def capture(call: Call) -> Capture:
    cap = Capture()
    call.caller.media.on_audio = cap
    return cap


async def hears(cap: Capture, freq: float, seconds: float = 1.0, start: int = 0) -> float:
    """Waits until ``seconds`` of audio arrived after frame ``start`` (bounded) and returns
    the share of ``freq`` in it."""
    need = int(seconds * 50)
    for _ in range(int(seconds * 50) + 250):
        if len(cap.frames) - start >= need:
            break
        await asyncio.sleep(0.02)
    return tone_share(cap.since(start), 8000, freq)


async def test_late_offer_offers_in_200_and_takes_the_answer_from_ack(
    gateway: GatewayUnderTest, peers: Spawn, tmp_path: Path
) -> None:
    caller = await sipp(
        peers,
        tmp_path,
        "late_offer.xml",
        local_port=26201,
        target=f"{HOST}:{gateway.port}",
        media_port=38300,
        keys={"service": "10000", "talk_ms": "4000"},
        extra=["-rtp_echo"],
    )
    call = await gateway.next_call()
    cap = capture(call)
    gateway.switch.answer(call.call_id)
    await gateway.switch.play(call.call_id, "tone", barge_in=False, loop=True)
    share = await hears(cap, PROMPT_TONE_HZ, seconds=1.5)
    assert share > 0.6, f"our tone did not come back through the ACK's address ({share:.0%})"
    assert await caller.wait() == 0, sipp_failure(caller, tmp_path)
    reason, detail = await gateway.ended(call)
    assert reason.value == "caller_hangup", detail


def uac(peers: Spawn, tmp_path: Path, gw: GatewayUnderTest, scenario: str, port: int, **kw: object):  # noqa: ANN201
    keys = {"service": "10000", "caller": "5552001", "talk_ms": "1500"}
    keys.update(kw.pop("keys", {}))  # type: ignore[arg-type]
    return sipp(
        peers,
        tmp_path,
        scenario,
        local_port=port,
        target=f"{HOST}:{gw.port}",
        keys=keys,
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_late_offer_over_udp_and_tcp(
    gateway: GatewayUnderTest, peers: Spawn, tmp_path: Path, transport: str
) -> None:
    caller = await uac(
        peers,
        tmp_path,
        gateway,
        "late_offer.xml",
        26202,
        media_port=38310,
        transport=transport,
        extra=["-rtp_echo"],
        keys={"talk_ms": "3000"},
    )
    call = await gateway.next_call()
    cap = capture(call)
    gateway.switch.answer(call.call_id)
    await gateway.switch.play(call.call_id, "tone", barge_in=False, loop=True)
    assert await hears(cap, PROMPT_TONE_HZ) > 0.6
    assert await caller.wait() == 0, sipp_failure(caller, tmp_path)


async def test_reliable_180_waits_for_prack_before_200(
    gateway: GatewayUnderTest, peers: Spawn, tmp_path: Path
) -> None:
    caller = await uac(peers, tmp_path, gateway, "prack_caller.xml", 26203, media_port=38320)
    call = await gateway.next_call()
    gateway.switch.answer(call.call_id)  # at once: the 200 must still wait for the PRACK
    assert await caller.wait() == 0, sipp_failure(caller, tmp_path)
    reason, _ = await gateway.ended(call)
    assert reason.value == "caller_hangup"


async def test_session_timer_refreshed_by_the_caller_then_expiring_ends_the_call(
    tmp_path: Path, peers: Spawn
) -> None:
    gw = await start_gateway(tmp_path, min_se=2)
    try:
        caller = await uac(
            peers, tmp_path, gw, "timer_caller_refreshes.xml", 26204, media_port=38330
        )
        call = await gw.next_call()
        gw.switch.answer(call.call_id)
        reason, detail = await gw.ended(call, timeout_s=20)
        assert reason.value == "timeout" and "session timer expired" in detail
        assert await caller.wait() == 0, sipp_failure(caller, tmp_path)
    finally:
        await gw.stop()


async def test_session_timer_refreshed_by_the_gateway(tmp_path: Path, peers: Spawn) -> None:
    gw = await start_gateway(tmp_path, min_se=2)
    try:
        caller = await uac(
            peers, tmp_path, gw, "timer_gateway_refreshes.xml", 26205, media_port=38340
        )
        call = await gw.next_call()
        gw.switch.answer(call.call_id)
        assert await caller.wait() == 0, sipp_failure(caller, tmp_path)
        reason, _ = await gw.ended(call)
        assert reason.value == "caller_hangup", "refreshes kept the call up until the BYE"
    finally:
        await gw.stop()


async def test_session_refresh_by_reinvite_when_the_peer_has_no_update(
    tmp_path: Path, peers: Spawn
) -> None:
    gw = await start_gateway(tmp_path, min_se=2)
    try:
        caller = await uac(
            peers, tmp_path, gw, "timer_gateway_reinvites.xml", 26211, media_port=38390
        )
        call = await gw.next_call()
        gw.switch.answer(call.call_id)
        assert await caller.wait() == 0, sipp_failure(caller, tmp_path)
        reason, _ = await gw.ended(call)
        assert reason.value == "caller_hangup"
    finally:
        await gw.stop()


async def test_info_dtmf_and_caller_identity(
    gateway: GatewayUnderTest, peers: Spawn, tmp_path: Path
) -> None:
    caller = await uac(
        peers, tmp_path, gateway, "info_dtmf.xml", 26206, media_port=38350, keys={"talk_ms": "500"}
    )
    call = await gateway.next_call()
    assert call.ani == "+8613800138000", "ANI from the trusted P-Asserted-Identity"
    assert call.caller_name == "Zhang Wei"
    assert call.diverted_from == "10001", "Diversion read"
    gateway.switch.answer(call.call_id)
    digits, why = await gateway.switch.collect(call.call_id, 2, 8000, 8000, "")
    assert (digits, why) == ("5#", "max_digits")
    assert await caller.wait() == 0, sipp_failure(caller, tmp_path)


async def test_inband_dtmf_without_telephone_event(
    gateway: GatewayUnderTest, peers: Spawn, tmp_path: Path
) -> None:
    pcap = tmp_path / "dtmf4.pcap"
    write_rtp_pcap(pcap, np.concatenate([silence(400), dial_digits("4", 120, 200)]))
    caller = await uac(
        peers,
        tmp_path,
        gateway,
        "inband_dtmf.xml",
        26207,
        media_port=38360,
        keys={"pcap": str(pcap), "talk_ms": "2000"},
    )
    call = await gateway.next_call()
    gateway.switch.answer(call.call_id)
    digits, why = await gateway.switch.collect(call.call_id, 1, 8000, 8000, "")
    assert (digits, why) == ("4", "max_digits"), "the DSP found the in-band digit"
    assert await caller.wait() == 0, sipp_failure(caller, tmp_path)


async def test_hold_stops_our_rtp_and_resume_restarts_it_with_the_codec_locked(
    gateway: GatewayUnderTest, peers: Spawn, tmp_path: Path
) -> None:
    caller = await uac(
        peers,
        tmp_path,
        gateway,
        "reinvite_hold.xml",
        26208,
        media_port=38370,
        extra=["-rtp_echo"],
        keys={"talk_ms": "2000"},
    )
    call = await gateway.next_call()
    cap = capture(call)
    gateway.switch.answer(call.call_id)
    await gateway.switch.play(call.call_id, "tone", barge_in=False, loop=True)
    assert await hears(cap, PROMPT_TONE_HZ) > 0.6, "talking before hold"
    media = call.caller.media
    for _ in range(300):  # until the sendonly re-INVITE has been answered (bounded)
        if getattr(media, "held", False):
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)  # echoes of what we sent before the hold drain
    start = len(cap.frames)
    await asyncio.sleep(1.0)
    during = cap.since(start)
    assert during.size < 8000 * 0.1, f"{during.size / 8000:.2f}s of echo while on hold"
    for _ in range(600):  # held through inactive and 0.0.0.0, until the sendrecv re-INVITE
        if not getattr(media, "held", True) and len(cap.frames) > start + 10:
            break
        await asyncio.sleep(0.02)
    assert await hears(cap, PROMPT_TONE_HZ, start=len(cap.frames)) > 0.6, "talking after resume"
    assert await caller.wait(30) == 0, sipp_failure(caller, tmp_path)


async def test_no_common_codec_is_488_with_a_warning(
    gateway: GatewayUnderTest, peers: Spawn, tmp_path: Path
) -> None:
    caller = await uac(peers, tmp_path, gateway, "codec_488.xml", 26209, media_port=38380)
    assert await caller.wait() == 0, sipp_failure(caller, tmp_path)
    assert gateway.events.offers == []


async def test_a_malformed_ack_gets_no_answer(gateway: GatewayUnderTest) -> None:
    loop = asyncio.get_running_loop()
    got: list[bytes] = []

    class Listener(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            got.append(data)

    transport, _ = await loop.create_datagram_endpoint(Listener, local_addr=(HOST, 26210))
    try:
        head = b"ACK sip:10000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:26210;branch=z9hG4bK"
        to = b"To: <sip:10000@127.0.0.1>;tag=2\r\n"
        for ack in (  # a Content-Length beyond the body; a From that does not parse
            head
            + b"a\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\n"
            + to
            + b"Call-ID: m1\r\nCSeq: 1 ACK\r\nContent-Length: 50\r\n\r\n",
            head + b"b\r\nFrom: garbage\r\n" + to + b"Call-ID: m2\r\nCSeq: 1 ACK\r\n\r\n",
        ):
            transport.sendto(ack, (HOST, gateway.port))
        options = (
            b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:26210;branch=z9hG4bKc\r\n"
            b"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: m3\r\n"
            b"CSeq: 1 OPTIONS\r\n\r\n"
        )
        transport.sendto(options, (HOST, gateway.port))  # answered: proves the socket works
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        assert [g.split(b"\r\n", 1)[0] for g in got] == [b"SIP/2.0 200 OK"]
        assert b"CSeq: 1 OPTIONS" in got[0]
    finally:
        transport.close()
