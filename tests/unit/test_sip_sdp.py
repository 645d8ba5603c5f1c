"""Tests for gateway.sip.sdp: RFC 4566 parsing and RFC 3264 offer/answer."""

from __future__ import annotations

import pytest

from gateway.sip.sdp import (
    MediaDescription,
    Negotiated,
    SdpError,
    SdpRejected,
    SessionDescription,
    answer,
    negotiate_answer,
    offer,
    parse_sdp,
)

# Typical softphone offer: Opus first (unsupported), then G.711, DTMF at 101, plus video.
PHONE_OFFER = (
    "v=0\r\n"
    "o=- 3912345678 3912345678 IN IP4 192.0.2.10\r\n"
    "s=phone\r\n"
    "c=IN IP4 192.0.2.10\r\n"
    "b=AS:84\r\n"
    "t=0 0\r\n"
    "a=tool:softphone 1.0\r\n"
    "m=audio 40000 RTP/AVP 111 8 0 101\r\n"
    "a=rtpmap:111 opus/48000/2\r\n"
    "a=fmtp:111 useinbandfec=1\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\n"
    "a=ptime:30\r\n"
    "a=sendrecv\r\n"
    "m=video 40002 RTP/AVP 96\r\n"
    "a=rtpmap:96 H264/90000\r\n"
)

#: session-level lines every SDP in these tests shares
HEAD = "v=0\r\no=a 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\n"


def test_parse_typical_offer() -> None:
    sd = parse_sdp(PHONE_OFFER.encode())
    assert (sd.origin_username, sd.session_id, sd.origin_address) == (
        "-",
        "3912345678",
        "192.0.2.10",
    )
    assert sd.session_name == "phone"
    assert sd.connection == "192.0.2.10"
    assert sd.direction is None
    assert sd.attributes == [("tool", "softphone 1.0")]
    audio, video = sd.media
    assert (audio.media, audio.port, audio.proto, audio.formats) == (
        "audio",
        40000,
        "RTP/AVP",
        [111, 8, 0, 101],
    )
    assert audio.rtpmap[111] == ("opus", 48000)
    assert audio.rtpmap[101] == ("telephone-event", 8000)
    assert audio.fmtp == {111: "useinbandfec=1", 101: "0-15"}
    assert audio.codec_name(0) == ("PCMU", 8000)  # static, no rtpmap needed
    assert audio.ptime == 30 and audio.direction == "sendrecv" and audio.connection is None
    assert video.media == "video" and video.formats == [96]


def test_round_trip_preserves_semantics() -> None:
    sd = parse_sdp(PHONE_OFFER)
    again = parse_sdp(sd.to_bytes())
    assert again == sd
    text = sd.to_bytes().decode()
    assert text.startswith("v=0\r\no=- 3912345678")
    assert text.index("b=AS:84") < text.index("t=0 0")  # RFC 4566 5 ordering


def test_session_level_direction_and_media_connection() -> None:
    sdp = (
        "v=0\no=a 1 1 IN IP6 2001:db8::1\ns=-\nt=0 0\na=sendonly\n"
        "m=audio 5004 RTP/AVP 0\nc=IN IP6 2001:db8::2\n"
        "m=audio 5006 RTP/AVP 8\nc=IN IP4 198.51.100.1/127\na=inactive\n"
    )
    sd = parse_sdp(sdp)
    assert sd.direction == "sendonly" and sd.connection is None
    assert sd.media[0].direction == "sendonly" and sd.media[0].connection == "2001:db8::2"
    assert sd.media[1].direction == "inactive" and sd.media[1].connection == "198.51.100.1"
    assert b"c=IN IP6 2001:db8::2" in sd.to_bytes()


def test_non_rtp_media_kept() -> None:
    sd = parse_sdp(HEAD + "m=image 6000 udptl t38\r\n")
    assert sd.media[0].formats == [] and sd.media[0].other_formats == ["t38"]
    assert b"m=image 6000 udptl t38" in sd.to_bytes()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "v=0"),
        ("o=a 1 1 IN IP4 1.2.3.4\r\n", "v=0"),
        ("v=1\r\n", "v=0"),
        ("v=0\r\ns=-\r\nt=0 0\r\n", "missing o="),
        ("v=0\r\no=a 1 1 IN IP4 1.2.3.4\r\nt=0 0\r\n", "missing s="),
        ("v=0\r\no=a 1 1 IN IP4 1.2.3.4\r\ns=-\r\n", "missing t="),
        (
            "v=0\r\no=a 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
            "no c= line",
        ),
        ("v=0\r\no=bad\r\ns=-\r\nt=0 0\r\n", "bad o= line"),
        ("v=0\r\no=a 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4\r\nt=0 0\r\n", "bad c= line"),
        (
            HEAD + "m=audio\r\n",
            "bad m= line",
        ),
        (
            HEAD + "m=audio abc RTP/AVP 0\r\n",
            "bad port",
        ),
        (
            HEAD + "m=audio 4000 RTP/AVP\r\n",
            "no payload types",
        ),
        (
            HEAD + "m=audio 4000 RTP/AVP 0 200\r\n",
            "bad RTP payload",
        ),
        (
            HEAD + "m=audio 4000 RTP/AVP 0\r\na=rtpmap:x\r\n",
            "bad rtpmap",
        ),
        (
            HEAD + "garbage\r\n",
            "malformed SDP line",
        ),
    ],
)
def test_parse_errors(text: str, needle: str) -> None:
    with pytest.raises(SdpError, match=needle):
        parse_sdp(text)


def test_non_utf8_is_an_sdp_error() -> None:
    with pytest.raises(SdpError, match="UTF-8"):
        parse_sdp(b"v=0\r\ns=\xff\r\n")


def test_answer_picks_first_offered_supported_codec_and_keeps_dtmf() -> None:
    neg, ans = answer(parse_sdp(PHONE_OFFER), "10.1.1.1", 20000, session_id="42")
    assert neg == Negotiated("PCMA", 8, 101, "192.0.2.10", 40000, "sendrecv", 30)
    assert len(ans.media) == 2  # same number of m-lines as the offer (RFC 3264 6)
    audio, video = ans.media
    assert audio.port == 20000 and audio.formats == [8, 101]
    assert audio.rtpmap == {8: ("PCMA", 8000), 101: ("telephone-event", 8000)}
    assert audio.fmtp == {101: "0-15"}
    assert audio.ptime == 30
    assert video.port == 0  # rejected stream
    assert ans.session_id == "42" and ans.connection == "10.1.1.1"
    parsed = parse_sdp(ans.to_bytes())
    assert parsed.media[0].formats == [8, 101] and parsed.media[1].port == 0


def test_answer_respects_our_supported_list() -> None:
    neg, _ = answer(parse_sdp(PHONE_OFFER), "10.1.1.1", 20000, supported=("PCMU",))
    assert (neg.codec, neg.payload_type) == ("PCMU", 0)


@pytest.mark.parametrize(
    ("offered", "ours"),
    [
        ("sendrecv", "sendrecv"),
        ("sendonly", "recvonly"),
        ("recvonly", "sendonly"),
        ("inactive", "inactive"),
    ],
)
def test_answer_mirrors_direction(offered: str, ours: str) -> None:
    sdp = PHONE_OFFER.replace("a=sendrecv", f"a={offered}")
    neg, ans = answer(parse_sdp(sdp), "10.1.1.1", 20000)
    assert neg.direction == ours and ans.media[0].direction == ours
    assert f"a={ours}".encode() in ans.to_bytes()


def test_old_style_hold_address_means_we_never_send() -> None:
    held = PHONE_OFFER.replace("c=IN IP4 192.0.2.10", "c=IN IP4 0.0.0.0")
    neg, ans = answer(parse_sdp(held), "10.1.1.1", 20000)
    assert neg.remote_addr == "0.0.0.0" and neg.direction == "recvonly"
    assert ans.media[0].direction == "recvonly"
    neg, _ = answer(parse_sdp(held.replace("a=sendrecv", "a=sendonly")), "10.1.1.1", 20000)
    assert neg.direction == "recvonly"
    neg, _ = answer(parse_sdp(held.replace("a=sendrecv", "a=recvonly")), "10.1.1.1", 20000)
    assert neg.direction == "inactive"  # they only want to receive, but we may not send


def test_answer_without_dtmf_and_default_ptime() -> None:
    sdp = HEAD + "m=audio 4000 RTP/AVP 0\r\n"
    neg, ans = answer(parse_sdp(sdp), "5.6.7.8", 3000)
    assert neg.dtmf_payload_type is None and neg.ptime == 20
    assert ans.media[0].formats == [0]


def test_no_common_codec_raises_with_a_readable_reason_and_warning_code() -> None:
    sdp = HEAD + "m=audio 4000 RTP/AVP 9 18\r\na=rtpmap:9 G722/8000\r\na=rtpmap:18 G729/8000\r\n"
    with pytest.raises(SdpRejected) as codec:
        answer(parse_sdp(sdp), "5.6.7.8", 3000)
    assert codec.value.warning_code == 305
    assert str(codec.value) == "no common codec: offered G722, G729; we support PCMU, PCMA"
    with pytest.raises(SdpRejected) as srtp:
        answer(
            parse_sdp(PHONE_OFFER.replace("RTP/AVP 111 8 0 101", "RTP/SAVP 111 8 0 101")),
            "5.6.7.8",
            3000,
        )
    assert srtp.value.warning_code == 302 and "RTP/SAVP" in str(srtp.value)
    video_only = HEAD + "m=video 4000 RTP/AVP 96\r\n"
    with pytest.raises(SdpRejected) as video:
        answer(parse_sdp(video_only), "5.6.7.8", 3000)
    assert video.value.warning_code == 304 and str(video.value) == "no audio stream offered"
    assert isinstance(video.value, SdpError)


def test_codec_locking_keeps_the_codec_in_use_and_answers_only_it() -> None:
    """RFC 6337 5.3: a re-offer listing PCMU first still gets PCMA when PCMA is in use."""
    reoffer = HEAD + "m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    neg, ans = answer(parse_sdp(reoffer), "5.6.7.8", 3000, prefer="PCMA", session_version=8)
    assert (neg.codec, neg.payload_type) == ("PCMA", 8)
    assert ans.media[0].formats == [8, 101]
    assert ans.session_version == "8"
    neg2, _ = answer(parse_sdp(HEAD + "m=audio 4000 RTP/AVP 0\r\n"), "5.6.7.8", 3000, prefer="PCMA")
    assert neg2.codec == "PCMU", "a re-offer without the codec in use falls back to the first"


@pytest.mark.parametrize(
    ("offered", "connection", "answered"),
    [
        ("sendonly", "1.2.3.4", "recvonly"),
        ("inactive", "1.2.3.4", "inactive"),
        ("recvonly", "1.2.3.4", "sendonly"),
        ("sendrecv", "0.0.0.0", "recvonly"),
        ("sendonly", "0.0.0.0", "recvonly"),
        ("inactive", "0.0.0.0", "inactive"),
    ],
)
def test_hold_offers_are_answered_per_rfc3264_6_1(
    offered: str, connection: str, answered: str
) -> None:
    sdp = (
        f"v=0\r\no=- 1 2 IN IP4 {connection}\r\ns=-\r\nc=IN IP4 {connection}\r\nt=0 0\r\n"
        f"m=audio 4000 RTP/AVP 8\r\na={offered}\r\n"
    )
    neg, ans = answer(parse_sdp(sdp), "5.6.7.8", 3000)
    assert neg.direction == answered
    assert f"a={answered}\r\n" in ans.to_bytes().decode()


def test_second_audio_stream_is_rejected() -> None:
    sdp = (
        HEAD + "m=audio 0 RTP/AVP 0\r\n"  # already-disabled stream is skipped
        "m=audio 4000 RTP/AVP 0\r\n"
        "m=audio 4002 RTP/AVP 8\r\n"
    )
    neg, ans = answer(parse_sdp(sdp), "5.6.7.8", 3000)
    assert neg.remote_port == 4000
    assert [m.port for m in ans.media] == [0, 3000, 0]


def test_offer_and_negotiate_answer_uac_side() -> None:
    ours = offer("10.0.0.5", 30000, codecs=("PCMA", "PCMU"), dtmf_pt=96, session_id="7")
    text = ours.to_bytes().decode()
    assert "m=audio 30000 RTP/AVP 8 0 96\r\n" in text
    assert "a=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-16\r\n" in text
    assert "c=IN IP4 10.0.0.5" in text and "o=hotline 7 7 IN IP4 10.0.0.5" in text
    # the carrier answers with PCMU (allowed: any subset of ours), sendonly
    carrier = (
        "v=0\r\no=carrier 9 9 IN IP4 203.0.113.9\r\ns=-\r\nt=0 0\r\n"
        "m=audio 18000 RTP/AVP 0 96\r\nc=IN IP4 203.0.113.10\r\n"
        "a=rtpmap:96 telephone-event/8000\r\na=sendonly\r\n"
    )
    neg = negotiate_answer(parse_sdp(ours.to_bytes()), parse_sdp(carrier))
    assert neg == Negotiated("PCMU", 0, 96, "203.0.113.10", 18000, "recvonly", 20)


def test_negotiate_answer_errors() -> None:
    ours = offer("10.0.0.5", 30000)
    base = "v=0\r\no=c 9 9 IN IP4 203.0.113.9\r\ns=-\r\nc=IN IP4 203.0.113.9\r\nt=0 0\r\n"
    with pytest.raises(SdpError, match="rejected"):
        negotiate_answer(ours, parse_sdp(base + "m=audio 0 RTP/AVP 0\r\n"))
    with pytest.raises(SdpError, match="no common codec"):
        negotiate_answer(ours, parse_sdp(base + "m=audio 1000 RTP/AVP 18\r\n"))
    with pytest.raises(SdpError, match="m-lines"):
        negotiate_answer(ours, parse_sdp(base))


def test_full_offer_answer_loop() -> None:
    ours = offer("10.0.0.5", 30000)
    neg_b, their_answer = answer(parse_sdp(ours.to_bytes()), "10.0.0.6", 31000)
    neg_a = negotiate_answer(ours, parse_sdp(their_answer.to_bytes()))
    assert (neg_a.codec, neg_a.payload_type, neg_a.dtmf_payload_type) == ("PCMU", 0, 101)
    assert (neg_a.remote_addr, neg_a.remote_port) == ("10.0.0.6", 31000)
    assert (neg_b.remote_addr, neg_b.remote_port) == ("10.0.0.5", 30000)


def test_dataclass_construction() -> None:
    m = MediaDescription("audio", 1000, "RTP/AVP", [0])
    sd = SessionDescription(connection="1.2.3.4", media=[m])
    assert parse_sdp(sd.to_bytes()).media[0].formats == [0]
