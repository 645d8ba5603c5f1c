"""The SIP channel's per-leg parts without a network: offer/answer state (versions, codec
locking, hold muting the RTP session, late offer) and the three ways digits arrive (RFC 4733,
INFO, in-band through the analog lines' detector); number rules of a trunk."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.channels.sip.media import SipMedia
from gateway.channels.sip.negotiation import MediaNegotiation
from gateway.channels.sip.numbering import NumberRules, NumberRulesError
from gateway.dsp.tones import dial_digits, silence
from gateway.sip import sdp

PEER = "v=0\r\no=peer 1 {v} IN IP4 192.0.2.7\r\ns=-\r\nc=IN IP4 {c}\r\nt=0 0\r\n"


def offer(
    fmts: str = "8 0 101", direction: str = "sendrecv", c: str = "192.0.2.7", v: int = 1
) -> bytes:
    body = PEER.format(v=v, c=c) + f"m=audio 4000 RTP/AVP {fmts}\r\n"
    if "101" in fmts.split():
        body += "a=rtpmap:101 telephone-event/8000\r\n"
    return (body + f"a={direction}\r\n").encode()


def media() -> SipMedia:
    return SipMedia(None, "127.0.0.1", 30000)


def version_of(body: bytes) -> str:
    line = next(x for x in body.decode().split("\r\n") if x.startswith("o="))
    return line.split()[2]


async def test_answers_lock_the_codec_and_bump_the_version_only_on_change() -> None:
    n = MediaNegotiation(media(), "127.0.0.1")
    first = n.answer(offer("8 0 101"))
    assert n.negotiated is not None and n.negotiated.codec == "PCMA"
    same = n.answer(offer("0 8 101", v=2))  # PCMU first now: PCMA still wins (RFC 6337)
    assert same == first, "an unchanged answer keeps its o= version (RFC 3264 8)"
    held = n.answer(offer("0 8 101", direction="sendonly", v=3))
    assert version_of(held) == str(int(version_of(first)) + 1)
    assert b"a=recvonly" in held and b"RTP/AVP 8 101" in held
    assert n.media.held and n.media.session.muted
    n.answer(offer("0 8 101", c="0.0.0.0", v=4))
    assert n.media.held, "c=0.0.0.0: we must not send"
    n.answer(offer("0 8 101", v=5))
    assert not n.media.held


async def test_a_rejected_reoffer_leaves_the_session_as_it_was() -> None:
    n = MediaNegotiation(media(), "127.0.0.1")
    n.answer(offer("0 101"))
    with pytest.raises(sdp.SdpRejected):
        n.answer(PEER.format(v=2, c="192.0.2.7").encode() + b"m=audio 4000 RTP/AVP 18\r\n")
    assert n.negotiated is not None and n.negotiated.codec == "PCMU"
    assert n.media.codec == "PCMU"


async def test_late_offer_then_the_answer_from_the_ack() -> None:
    n = MediaNegotiation(media(), "127.0.0.1", ("PCMA", "PCMU"))
    ours = n.offer()
    assert b"RTP/AVP 8 0 101" in ours and n.offer_pending
    assert n.media.codec is None, "nothing configured before the answer"
    n.accept_answer(PEER.format(v=1, c="192.0.2.7").encode() + b"m=audio 4000 RTP/AVP 0\r\n")
    assert n.media.codec == "PCMU" and not n.offer_pending
    assert n.media.inband is not None, "no telephone-event in the answer: in-band detection"
    assert b"RTP/AVP 0 101\r" in n.offer(), "a re-offer lists only the codec in use"
    n.cancel_offer()
    with pytest.raises(sdp.SdpError, match="no offer of ours"):
        n.accept_answer(b"v=0\r\n")


async def test_digits_arrive_by_info_rfc4733_and_in_band() -> None:
    m = media()
    m.configure(("192.0.2.7", 4000), "PCMU", 0, 101)
    got: list[str] = []
    m.on_dtmf = got.append
    m.info_digit("5")
    assert m.on_dtmf is not None
    m.on_dtmf("6")  # what the endpoint calls for an RFC 4733 event
    heard: list[np.ndarray] = []
    m.on_audio = heard.append
    assert m.on_audio == heard.append, "no detector in the way while telephone-event is there"
    m.use_inband(True)
    assert m.on_audio != heard.append
    audio = np.concatenate([silence(60), dial_digits("9", 100, 100)])
    for i in range(0, audio.size - 159, 160):
        assert m.on_audio is not None
        m.on_audio(audio[i : i + 160])
    assert got == ["5", "6", "9"]
    assert len(heard) == audio.size // 160, "the core still gets every frame"


def test_number_rules() -> None:
    rules = NumberRules.parse("00=>+, 0=>+86, =>+8610")
    assert rules.apply("0044123") == "+44123"
    assert rules.apply("013800138000") == "+8613800138000"
    assert rules.apply("88886666") == "+861088886666"
    assert NumberRules.parse("").apply("123") == "123"
    assert str(NumberRules.parse("+86=>0")) == "+86=>0"
    with pytest.raises(NumberRulesError, match="is not prefix=>replacement"):
        NumberRules.parse("0=+86")
    with pytest.raises(NumberRulesError, match="'0a' is not digits"):
        NumberRules.parse("0a=>1")
