"""RtpSession without sockets: datagrams, addresses and times are made up and stepped by hand."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.media.g711 import alaw_decode, alaw_encode, pre_encoded, ulaw_decode, ulaw_encode
from gateway.media.prompts import frames as prompt_frames
from gateway.media.rfc4733 import Rfc4733Error, event_packets, parse_event
from gateway.media.rtp import RtpPacket, parse_rtp
from gateway.media.session import SILENCE_GAP_S, RtpSession

PEER = ("192.0.2.10", 4000)  # the SDP address
NAT = ("198.51.100.7", 61000)  # where the peer's packets really come from
DTMF_PT = 101
T = 0.02  # one frame


def tone(n: int = 160, amp: float = 8000.0, freq: float = 400.0) -> np.ndarray:
    t = np.arange(n)
    return (np.sin(2 * np.pi * freq * t / 8000) * amp).astype(np.int16)


def session(codec: str = "PCMU", pt: int = 0, dtmf: int | None = DTMF_PT, **kw: int) -> RtpSession:
    s = RtpSession(ssrc=0xCAFE, sequence=1000, timestamp=50_000, **kw)
    s.configure(PEER, codec, pt, dtmf)
    return s


def audio(
    seq: int, ts: int | None = None, pcm: np.ndarray | None = None, ssrc: int = 77, pt: int = 0
) -> bytes:
    pcm = tone() if pcm is None else pcm
    return RtpPacket(pt, seq, seq * 160 if ts is None else ts, ssrc, ulaw_encode(pcm)).pack()


def sent(s: RtpSession, now: float, pcm: np.ndarray | None = None) -> RtpPacket:
    data = s.send_audio(tone() if pcm is None else pcm, now)
    assert data is not None
    return parse_rtp(data)


# --- negotiation ----------------------------------------------------------------


def test_nothing_before_configure() -> None:
    s = RtpSession()
    assert not s.configured and s.remote is None
    assert s.send_audio(tone(), 0.0) is None
    assert s.packets_out == 0
    assert s.receive_datagram(audio(1), NAT, 0.0) == ((), None)
    assert s.not_ready == 1 and s.latched is None


def test_configure_validates_and_normalises() -> None:
    s = RtpSession()
    with pytest.raises(ValueError):
        s.configure(PEER, "G729", 18)
    with pytest.raises(ValueError):
        s.configure(PEER, "PCMU", 128)
    with pytest.raises(ValueError):
        s.configure(PEER, "PCMU", 0, 200)
    assert not s.configured
    s.configure(list(PEER), "pcma", 8)  # type: ignore[arg-type]
    assert s.codec == "PCMA" and s.payload_type == 8 and s.remote == PEER


def test_random_start_state_unless_given() -> None:
    many = [RtpSession() for _ in range(8)]
    assert len({s.ssrc for s in many}) > 1
    assert len({s.sequence for s in many}) > 1 and len({s.timestamp for s in many}) > 1
    s = RtpSession(ssrc=1, sequence=2, timestamp=3)
    assert (s.ssrc, s.sequence, s.timestamp, s.marker) == (1, 2, 3, True)


# --- sending: talkspurts and time -----------------------------------------------


def test_packet_header_and_payload() -> None:
    s = session("PCMA", 8)
    p = sent(s, 0.0)
    assert (p.payload_type, p.ssrc, p.sequence, p.timestamp) == (8, 0xCAFE, 1000, 50_000)
    assert p.payload == alaw_encode(tone())
    assert s.packets_out == 1 and s.bytes_out == 12 + 160


def test_marker_on_first_packet_and_after_skip() -> None:
    s = session()
    pkts = [sent(s, i * T) for i in range(3)]
    s.skip(1, 3 * T)  # empty jitter buffer: time passes, nothing is sent
    s.skip(2, 4 * T)
    pkts.append(sent(s, 6 * T))
    pkts.append(sent(s, 7 * T))
    assert [p.marker for p in pkts] == [True, False, False, True, False]
    assert [p.sequence - 1000 for p in pkts] == [0, 1, 2, 3, 4]
    assert [p.timestamp - 50_000 for p in pkts] == [0, 160, 320, 960, 1120]


def test_timestamp_follows_samples_sent() -> None:
    s = session()
    a = sent(s, 0.0, tone(240))
    b = sent(s, T)
    assert b.timestamp - a.timestamp == 240


def test_unreported_silence_is_caught_up() -> None:
    s = session()
    first = sent(s, 1.0)
    second = sent(s, 1.0 + T)
    # Nothing for ~1 s (a sender that neither sent nor called skip()).
    third = sent(s, 2.0)
    assert not second.marker and third.marker
    missed = round((2.0 - (1.0 + T)) / T) - 1
    assert third.timestamp - second.timestamp == 160 + missed * 160
    assert third.timestamp - first.timestamp == round((2.0 - 1.0) / T) * 160


def test_reported_silence_is_not_counted_twice() -> None:
    s = session()
    a = sent(s, 0.0)
    for k in range(1, 50):  # a second of skip() ticks, far longer than the silence limit
        s.skip(1, k * T)
    b = sent(s, 50 * T)
    assert b.marker and b.timestamp - a.timestamp == 50 * 160


def test_catch_up_bursts_are_not_silence() -> None:
    s = session()
    sent(s, 0.0)
    # The clock catches up 5 late ticks at one moment, then a gap just under the limit.
    burst = [sent(s, 0.1) for _ in range(5)]
    last = sent(s, 0.1 + SILENCE_GAP_S)
    assert not any(p.marker for p in burst + [last])
    assert [p.timestamp - 50_000 for p in burst + [last]] == [160 * k for k in range(1, 7)]


def test_sequence_and_timestamp_wrap() -> None:
    s = RtpSession(ssrc=1, sequence=0xFFFF, timestamp=0xFFFFFFFF - 100)
    s.configure(PEER, "PCMU", 0)
    a, b = sent(s, 0.0), sent(s, T)
    assert (a.sequence, b.sequence) == (0xFFFF, 0)
    assert b.timestamp == (0xFFFFFFFF - 100 + 160) & 0xFFFFFFFF


def test_reinvite_keeps_outgoing_stream() -> None:
    s = session()
    a = sent(s, 0.0)
    s.configure(PEER, "PCMA", 8)
    b = sent(s, T)
    assert (b.ssrc, b.sequence, b.timestamp) == (a.ssrc, a.sequence + 1, a.timestamp + 160)
    assert b.payload_type == 8 and not b.marker


# --- receiving --------------------------------------------------------------------


def test_latches_onto_first_valid_source() -> None:
    s = session()
    assert s.remote == PEER
    frames, digit = s.receive_datagram(audio(1), NAT, 0.0)
    assert len(frames) == 1 and digit is None
    assert s.latched == NAT and s.remote == NAT
    stranger = ("203.0.113.9", 5000)
    assert s.receive_datagram(audio(2), stranger, T) == ((), None)
    assert s.wrong_source == 1 and s.remote == NAT


def test_strays_of_the_previous_call_on_the_port_are_dropped() -> None:
    s = session()
    s.previous = (NAT, 77)  # the port's last call latched onto NAT and received SSRC 77
    assert s.receive_datagram(audio(1, ssrc=77), NAT, 0.0) == ((), None)
    assert s.stale == 1 and s.latched is None
    # the new call's own peer, even from the same address, sends with another SSRC
    frames, _ = s.receive_datagram(audio(1, ssrc=78), NAT, T)
    assert len(frames) == 1 and s.latched == NAT
    assert s.peer == (NAT, 78)


def test_previous_peer_is_ours_when_our_sdp_names_it() -> None:
    s = session()  # SDP address PEER
    s.previous = (PEER, 77)  # same address and SSRC: nothing tells them apart, take it
    frames, _ = s.receive_datagram(audio(1, ssrc=77), PEER, 0.0)
    assert len(frames) == 1 and s.latched == PEER and s.stale == 0


def test_unknown_payload_type_does_not_latch() -> None:
    s = session("PCMA", 8)
    video = RtpPacket(96, 1, 0, 5, b"\x00" * 100).pack()
    assert s.receive_datagram(video, ("203.0.113.9", 5000), 0.0) == ((), None)
    assert s.unknown_pt == 1 and s.latched is None
    # Static PCMU is decodable even though PCMA was negotiated, and so is DTMF: either latches.
    frames, _ = s.receive_datagram(audio(1), NAT, T)
    assert len(frames) == 1 and s.latched == NAT


def test_telephone_event_latches() -> None:
    s = session()
    (p,) = event_packets("4", start_ts=0, first_seq=1, ssrc=5, payload_type=DTMF_PT)[:1]
    assert s.receive_datagram(p.pack(), NAT, 0.0) == ((), "4")
    assert s.latched == NAT


def test_reconfigure_same_address_keeps_latch_new_address_relatches() -> None:
    s = session()
    s.receive_datagram(audio(1), NAT, 0.0)
    s.configure(PEER, "PCMA", 8)  # re-INVITE, codec change only
    assert s.latched == NAT and s.remote == NAT
    s.configure(("192.0.2.11", 4002), "PCMA", 8)  # media moved
    assert s.latched is None and s.remote == ("192.0.2.11", 4002)


def test_decodes_frames() -> None:
    s = session()
    pcm = tone()
    frames, _ = s.receive_datagram(audio(1, pcm=pcm), NAT, 0.0)
    assert frames[0].dtype == np.int16 and frames[0].shape == (160,)
    np.testing.assert_array_equal(frames[0], ulaw_decode(ulaw_encode(pcm)))
    assert s.packets_in == 1 and s.bytes_in == 172 and s.payload_types_in == {0: 1}


def test_duplicates_and_overtaken_packets_dropped() -> None:
    s = session()
    got = []
    for i, seq in enumerate((100, 101, 101, 103, 102, 104)):
        frames, _ = s.receive_datagram(audio(seq, pcm=np.full(160, seq, np.int16)), NAT, i * T)
        got += frames
    assert len(got) == 4 and s.late == 2
    assert s.stats.expected == 5 and s.stats.received == 6  # stats still see them


def test_far_jump_back_or_new_ssrc_is_a_restart_not_late() -> None:
    s = session()
    s.receive_datagram(audio(5000), NAT, 0.0)
    frames, _ = s.receive_datagram(audio(5000 - 101), NAT, T)  # beyond the misorder window
    assert len(frames) == 1
    frames, _ = s.receive_datagram(audio(5000 - 101, ssrc=78), NAT, 2 * T)  # new source
    assert len(frames) == 1
    assert s.late == 0


def test_sequence_wrap_is_not_late() -> None:
    s = session()
    s.receive_datagram(audio(0xFFFF, ts=0), NAT, 0.0)
    frames, _ = s.receive_datagram(audio(0, ts=160), NAT, T)
    assert len(frames) == 1 and s.late == 0
    assert s.receive_datagram(audio(0xFFFF, ts=0), NAT, 2 * T) == ((), None)
    assert s.late == 1


def test_long_and_short_payloads_are_reframed() -> None:
    s = session()
    pcm = tone(800)
    out = []
    for seq, (a, b) in enumerate(((0, 480), (480, 560), (560, 640), (640, 800))):
        frames, _ = s.receive_datagram(audio(seq, ts=a, pcm=pcm[a:b]), NAT, seq * T)
        out.append(len(frames))
        for f in frames:
            assert f.shape == (160,)
    assert out == [3, 0, 1, 1]  # 60 ms -> 3 frames; two 10 ms packets -> 1 frame
    s2 = session()
    joined = [
        f
        for seq, (a, b) in enumerate(((0, 480), (480, 560), (560, 640), (640, 800)))
        for f in s2.receive_datagram(audio(seq, ts=a, pcm=pcm[a:b]), NAT, 0.0)[0]
    ]
    np.testing.assert_array_equal(np.concatenate(joined), ulaw_decode(ulaw_encode(pcm)))


def test_leftover_samples_dropped_on_new_source_or_codec() -> None:
    s = session()
    new = tone(freq=1000.0)
    s.receive_datagram(audio(1, pcm=tone(80)), NAT, 0.0)  # half a frame pending
    frames, _ = s.receive_datagram(audio(1, pcm=new, ssrc=99), NAT, T)
    assert len(frames) == 1  # the new source's frame, not 80 old + 80 new samples
    np.testing.assert_array_equal(frames[0], ulaw_decode(ulaw_encode(new)))
    s.receive_datagram(audio(2, pcm=tone(80), ssrc=99), NAT, 2 * T)
    s.configure(PEER, "PCMA", 8)  # re-INVITE to another codec
    frames, _ = s.receive_datagram(RtpPacket(8, 3, 480, 99, alaw_encode(new)).pack(), NAT, 3 * T)
    assert len(frames) == 1
    np.testing.assert_array_equal(frames[0], alaw_decode(alaw_encode(new)))


def test_junk_comfort_noise_and_unnegotiated_types_are_counted() -> None:
    s = session()
    for junk in (b"\x80", b"\x00" * 5, b"\x40" + b"\x00" * 20, b"\x8f" + b"\x00" * 11):
        assert s.receive_datagram(junk, NAT, 0.0) == ((), None)
    s.receive_datagram(audio(2), NAT, 0.0)
    assert s.receive_datagram(RtpPacket(13, 3, 320, 77, b"\x40").pack(), NAT, T) == ((), None)
    assert s.receive_datagram(RtpPacket(18, 4, 480, 77, b"\0" * 20).pack(), NAT, T) == ((), None)
    assert (s.malformed, s.cn_packets, s.unknown_pt, s.packets_in) == (4, 1, 1, 7)
    assert s.payload_types_in == {0: 1, 13: 1, 18: 1}


def test_dtmf_received_once_per_press() -> None:
    s = session("PCMA", 8)
    digits, frames = [], []
    seq = 0
    for i, d in enumerate("77#"):
        for p in event_packets(d, start_ts=i * 4000, first_seq=seq, ssrc=9, payload_type=DTMF_PT):
            f, digit = s.receive_datagram(p.pack(), NAT, seq * T)
            frames += f
            if digit is not None:
                digits.append(digit)
            seq += 1
    assert digits == ["7", "7", "#"] and frames == []
    assert s.stats.lost == 0 and s.stats.jitter == 0.0


def test_dtmf_payload_type_is_not_audio() -> None:
    s = session("PCMU", 0, dtmf=8)  # a peer mapping PT 8 to telephone-event
    p = event_packets("1", start_ts=0, first_seq=1, ssrc=5, payload_type=8)[0]
    assert s.receive_datagram(p.pack(), NAT, 0.0) == ((), "1")


# --- sending DTMF -------------------------------------------------------------------


def test_dtmf_packets_share_the_audio_timestamp() -> None:
    s = session()
    a0 = sent(s, 0.0)
    n = s.start_dtmf("5", T, duration_ms=60)
    assert n == 5 and s.sending_dtmf
    events = [parse_rtp(s.next_dtmf() or b"") for _ in range(n)]
    assert s.next_dtmf() is None
    assert {e.timestamp for e in events} == {a0.timestamp + 160}
    assert {e.payload_type for e in events} == {DTMF_PT}
    assert [e.marker for e in events] == [True] + [False] * 4
    assert [e.sequence for e in events] == [a0.sequence + 1 + k for k in range(5)]
    parsed = [parse_event(e.payload) for e in events]
    assert [(x.event, x.end, x.duration) for x in parsed] == [
        (5, False, 160),
        (5, False, 320),
        (5, True, 480),
        (5, True, 480),
        (5, True, 480),
    ]
    assert s.packets_out == 6


def test_audio_is_muted_during_dtmf_and_resumes_after_its_span() -> None:
    s = session()
    a0 = sent(s, 0.0)
    start = a0.timestamp + 160
    n = s.start_dtmf("5", T, duration_ms=60)
    events = [parse_rtp(s.next_dtmf() or b"")]
    for k in range(1, n):  # one packet per tick; the clock's audio is swallowed meanwhile
        assert s.send_audio(tone(), (1 + k) * T) is None
        events.append(parse_rtp(s.next_dtmf() or b""))
    assert {e.timestamp for e in events} == {start}  # the muted audio's time does not leak in
    # Five packets, 20 ms apart: the last went out 80 ms after the first.
    s.end_dtmf(T + 4 * T)
    assert not s.sending_dtmf
    a1 = sent(s, 6 * T)
    assert a1.marker and a1.sequence == a0.sequence + 6
    # max(60 ms duration, 4 frames elapsed + the current one) = 5 frames.
    assert a1.timestamp - start == 5 * 160


def test_dtmf_never_rewinds_the_timestamp() -> None:
    s = session()
    a0 = sent(s, 0.0)
    start = a0.timestamp + 160
    s.start_dtmf("1", T, duration_ms=40)
    for k in range(12):  # the audio side ran far ahead (e.g. a skip(10) while dialling)
        s.send_audio(tone(), (2 + k) * T)
    s.end_dtmf(2 * T)
    a1 = sent(s, 14 * T)
    assert a1.timestamp - start == 12 * 160 and a1.marker


def test_long_key_press_keeps_its_duration() -> None:
    s = session()
    a0 = sent(s, 0.0)
    s.start_dtmf("9", T, duration_ms=200)
    s.end_dtmf(T)  # gave up at once (e.g. the endpoint closed): the span still counts
    a1 = sent(s, 2 * T)
    assert a1.timestamp - (a0.timestamp + 160) == 200 * 8


def test_dtmf_after_silence_starts_at_current_time() -> None:
    s = session()
    a0 = sent(s, 0.0)
    s.start_dtmf("2", 1.0)
    ev = parse_rtp(s.next_dtmf() or b"")
    assert ev.timestamp - a0.timestamp == round(1.0 / T) * 160


def test_dtmf_errors() -> None:
    s = session(dtmf=None)
    with pytest.raises(RuntimeError):
        s.start_dtmf("1", 0.0)
    s = session()
    with pytest.raises(Rfc4733Error):
        s.start_dtmf("x", 0.0)
    assert not s.sending_dtmf and s.send_audio(tone(), T) is not None
    s.start_dtmf("1", 2 * T)
    with pytest.raises(RuntimeError):
        s.start_dtmf("2", 2 * T)
    s.end_dtmf(3 * T)
    s.end_dtmf(4 * T)  # idempotent
    assert s.next_dtmf() is None


def test_muted_sends_nothing_keeps_time_and_marks_the_resumed_talkspurt() -> None:
    """Hold (RFC 3264 6.1: the peer said inactive/recvonly or gave 0.0.0.0): no RTP goes to
    it, the timestamp keeps running, and the first packet after resuming is marked."""
    s = session()
    first = sent(s, 0.0)
    s.muted = True
    assert s.send_audio(tone(), 0.02) is None
    assert s.send_audio(tone(), 0.04) is None
    assert s.packets_out == 1
    s.muted = False
    resumed = sent(s, 0.06)
    assert resumed.marker
    assert resumed.sequence == (first.sequence + 1) & 0xFFFF
    assert resumed.timestamp == (first.timestamp + 3 * 160) & 0xFFFFFFFF


# --- the header fast path ----------------------------------------------------------


_COUNTERS = (
    "packets_in",
    "malformed",
    "unknown_pt",
    "wrong_source",
    "not_ready",
    "stale",
    "late",
    "cn_packets",
    "payload_types_in",
)


def _mixed_stream() -> list[RtpPacket]:
    """Audio in and out of order, duplicates, a restart, a new SSRC, an RFC 4733 key press,
    comfort noise, a payload type nobody takes, short and long packets, a sequence wrap."""
    rng = np.random.default_rng(5)
    out: list[RtpPacket] = []
    seqs = [65530 + i for i in range(12)] + [3, 2, 2, 9, 8, 40000, 40001, 40002, 11, 12]
    for i, seq in enumerate(seqs):
        n = 160 if i % 7 else (80 if i % 2 else 400)
        pcm = rng.integers(-20000, 20000, n).astype(np.int16)
        out.append(RtpPacket(0, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, 77, ulaw_encode(pcm)))
    out += event_packets("5", start_ts=1000, first_seq=13, ssrc=77, payload_type=DTMF_PT)
    out.append(RtpPacket(DTMF_PT, 19, 1800, 77, b"\x01"))  # a malformed event
    out.append(RtpPacket(13, 20, 5000, 77, b"\x40"))
    out.append(RtpPacket(18, 21, 5160, 77, b"\x00" * 20))
    out.append(RtpPacket(8, 22, 5320, 77, alaw_encode(tone())))
    for i in range(5):
        out.append(RtpPacket(0, 500 + i, 9000 + 160 * i, 0xBEEF, ulaw_encode(tone()), i == 0))
    return out


def test_fast_header_path_equals_the_general_parser() -> None:
    """Packets without CSRCs/extension/padding skip parse_rtp(); the same packets with a CSRC
    go through it. Frames, digits, counters and statistics must not differ."""
    fast, general = session(), session()
    now = 0.0
    digits = []
    for pkt in _mixed_stream():
        now += 0.0193
        plain = pkt.pack()
        assert plain[0] == 0x80  # takes the fast path
        extended = RtpPacket(
            pkt.payload_type, pkt.sequence, pkt.timestamp, pkt.ssrc, pkt.payload, pkt.marker, (9,)
        ).pack()
        frames_a, digit_a = fast.receive_datagram(plain, NAT, now)
        frames_b, digit_b = general.receive_datagram(extended, NAT, now)
        assert digit_a == digit_b
        digits.append(digit_a)
        assert [f.tobytes() for f in frames_a] == [f.tobytes() for f in frames_b]
    for name in _COUNTERS:
        assert getattr(fast, name) == getattr(general, name), name
    a, b = fast.stats, general.stats
    assert (a.packets, a.received, a.expected_total, a.lost, a.ssrc_changes) == (
        b.packets,
        b.received,
        b.expected_total,
        b.lost,
        b.ssrc_changes,
    )
    assert a.jitter == b.jitter and a.extended_max_seq == b.extended_max_seq
    assert fast.bytes_in + 4 * fast.packets_in == general.bytes_in
    assert fast.dtmf.malformed == general.dtmf.malformed
    # the stream exercised every branch
    assert "5" in digits and fast.dtmf.malformed == 1
    assert fast.late and fast.cn_packets and fast.unknown_pt and fast.stats.ssrc_changes


def test_fast_header_path_leaves_malformed_packets_to_the_parser() -> None:
    s = session()
    good = audio(1)
    for bad in (b"", b"\x80", good[:11], b"\x40" + good[1:], b"\xa0" + good[1:-1] + b"\x00"):
        assert s.receive_datagram(bad, NAT, 0.0) == ((), None)
    assert s.malformed == 5 and s.latched is None
    frames, _ = s.receive_datagram(memoryview(good), NAT, 0.0)
    assert len(frames) == 1 and frames[0].tobytes() == ulaw_decode(good[12:]).tobytes()


# --- pre-encoded (prompt) frames ---------------------------------------------------


@pytest.mark.parametrize(("codec", "pt"), [("PCMU", 0), ("PCMA", 8)])
def test_prompt_frames_send_the_same_packets_as_encoding_them(codec: str, pt: int) -> None:
    """Prompt frames go out as the payloads pre-encoded once; byte for byte what encoding the
    same samples every time gives, through talkspurts, a silence gap, mute and a key press."""
    rng = np.random.default_rng(3)
    prompt = prompt_frames(rng.integers(-32768, 32767, 160 * 30 + 17).astype(np.int16))
    assert all(pre_encoded(f) is not None for f in prompt)
    cached, encoded = session(codec, pt), session(codec, pt)
    now = 0.0
    out: list[tuple[bytes | None, bytes | None]] = []
    for i, frame in enumerate(prompt):
        now += T if i != 10 else 1.0  # a silence gap: timestamp jump and marker
        if i == 20:
            cached.muted = encoded.muted = True
        if i == 23:
            cached.muted = encoded.muted = False
        if i == 25:
            for s in (cached, encoded):
                s.start_dtmf("7", now, 40)
        if i == 28:
            for s in (cached, encoded):
                s.end_dtmf(now)
        copy = np.array(frame)  # writable, not pre-encoded: the encode path
        assert pre_encoded(copy) is None
        out.append((cached.send_audio(frame, now), encoded.send_audio(copy, now)))
    assert all(a == b for a, b in out)
    assert sum(a is not None for a, _ in out) == len(prompt) - 3 - 3
    assert cached.packets_out == encoded.packets_out and cached.bytes_out == encoded.bytes_out
