"""RTP packet parsing/packing and RFC 3550 reception statistics."""

from __future__ import annotations

import struct

import pytest

from gateway.media.rtp import RtpError, RtpPacket, RtpStats, e_model_mos, parse_rtp


def _pkt(seq: int, ts: int = 0, ssrc: int = 0x1234, pt: int = 0) -> RtpPacket:
    return RtpPacket(pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc, b"\xff" * 160)


# --- wire format -----------------------------------------------------------


def test_pack_known_bytes() -> None:
    p = RtpPacket(8, 0xBEEF, 0x01020304, 0xCAFEBABE, b"ab", marker=True)
    assert p.pack() == bytes.fromhex("8088beef01020304cafebabe") + b"ab"


def test_roundtrip_simple() -> None:
    p = RtpPacket(0, 65535, 2**32 - 1, 7, b"\x00" * 160)
    assert parse_rtp(p.pack()) == p


def test_roundtrip_csrcs_and_extension() -> None:
    p = RtpPacket(
        101,
        5,
        1000,
        9,
        b"\x01\x02\x03\x04",
        marker=True,
        csrcs=(1, 2, 3),
        extension=(0xBEDE, b"\x10\xaa\x00\x00"),
    )
    raw = p.pack()
    assert raw[0] == 0x80 | 0x10 | 3
    assert parse_rtp(raw) == p


def test_parse_strips_padding() -> None:
    raw = bytearray(RtpPacket(0, 1, 2, 3, b"data").pack())
    raw[0] |= 0x20
    raw += b"\x00\x00\x03"
    assert parse_rtp(bytes(raw)).payload == b"data"


@pytest.mark.parametrize(
    "raw, why",
    [
        (b"", "short"),
        (b"\x80\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00", "short"),
        (bytes([0x40]) + bytes(11), "version"),
        (bytes([0x00]) + bytes(11), "version"),
        (bytes([0x82]) + bytes(11) + bytes(4), "CSRC"),
        (bytes([0x90]) + bytes(11) + b"\x00\x00", "extension"),
        (bytes([0x90]) + bytes(11) + b"\xbe\xde\x00\x05" + bytes(8), "extension"),
        (bytes([0xA0]) + bytes(11) + b"ab\x09", "padding"),
        (bytes([0xA0]) + bytes(11) + b"ab\x00", "padding"),
    ],
)
def test_parse_rejects_malformed(raw: bytes, why: str) -> None:
    with pytest.raises(RtpError, match=why if why != "short" else "too short"):
        parse_rtp(raw)


def test_rtp_error_is_value_error() -> None:
    assert issubclass(RtpError, ValueError)


def test_parse_random_garbage_only_raises_rtp_error() -> None:
    import random

    rng = random.Random(1)
    for _ in range(5000):
        raw = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 40)))
        try:
            parse_rtp(raw)
        except RtpError:
            pass


def test_pack_rejects_too_many_csrcs() -> None:
    with pytest.raises(RtpError):
        RtpPacket(0, 0, 0, 0, b"", csrcs=tuple(range(16))).pack()


# --- sequence tracking (A.1) ----------------------------------------------


def test_stats_in_order_no_loss() -> None:
    s = RtpStats()
    for i in range(100):
        assert s.update(_pkt(1000 + i, 160 * i), i * 0.02)
    assert s.received == 100
    assert s.expected == 100
    assert s.lost == 0
    assert s.fraction_lost == 0.0
    assert s.extended_max_seq == 1099


def test_stats_loss_and_reordering() -> None:
    s = RtpStats()
    order = [0, 1, 2, 4, 3, 5, 6, 9, 8, 10]  # 7 lost, 3/4 and 8/9 swapped
    for n, i in enumerate(order):
        s.update(_pkt(500 + i, 160 * i), n * 0.02)
    assert s.expected == 11
    assert s.received == 10
    assert s.lost == 1
    assert s.fraction_lost == pytest.approx(1 / 11)
    assert s.extended_max_seq == 510


def test_stats_sequence_wraparound() -> None:
    s = RtpStats()
    start = 65530
    for i in range(20):
        if i == 10:
            continue  # lose one after the wrap
        s.update(_pkt(start + i, 160 * i), i * 0.02)
    assert s.extended_max_seq == 65536 + (start + 19 - 65536)
    assert s.expected == 20
    assert s.received == 19
    assert s.lost == 1


def test_stats_reordered_across_wrap_does_not_add_cycle() -> None:
    s = RtpStats()
    for seq in (65534, 65535, 1, 0, 2):
        s.update(_pkt(seq), 0.0)
    assert s.extended_max_seq == 65536 + 2
    assert s.expected == 5
    assert s.lost == 0


def test_stats_duplicates_give_negative_lost() -> None:
    s = RtpStats()
    for seq in (1, 2, 2, 3):
        s.update(_pkt(seq), 0.0)
    assert s.lost == -1
    assert s.fraction_lost == 0.0


def test_stats_sender_restart_after_big_jump() -> None:
    s = RtpStats()
    for i in range(10):
        s.update(_pkt(100 + i), 0.0)
    assert not s.update(_pkt(40000), 0.0)  # first of the jump: suspicious
    assert s.update(_pkt(40001), 0.0)  # confirmed: restart
    for i in range(2, 10):
        s.update(_pkt(40000 + i), 0.0)
    assert s.lost == 0
    assert s.received == 19


def test_stats_new_ssrc_keeps_totals() -> None:
    s = RtpStats()
    for i in range(10):
        if i != 5:
            s.update(_pkt(i, ssrc=1), 0.0)
    for i in range(10):
        s.update(_pkt(30000 + i, ssrc=2), 0.0)
    assert s.ssrc_changes == 1
    assert s.expected_total == 20
    assert s.lost == 1


def test_stats_probation() -> None:
    s = RtpStats(min_sequential=2)
    assert not s.update(_pkt(10), 0.0)
    assert s.update(_pkt(11), 0.0)
    assert s.received == 1 and s.expected == 1


def test_interval_fraction_lost() -> None:
    s = RtpStats()
    for i in range(10):
        s.update(_pkt(i), 0.0)
    assert s.interval_fraction_lost() == 0.0
    for i in range(10, 20, 2):
        s.update(_pkt(i), 0.0)
    assert s.interval_fraction_lost() == pytest.approx(4 / 9)


# --- jitter (A.8) and MOS ----------------------------------------------------


def test_jitter_zero_for_perfect_timing() -> None:
    s = RtpStats()
    for i in range(50):
        s.update(_pkt(i, 1000 + 160 * i), 100.0 + i * 0.02)
    assert s.jitter == pytest.approx(0.0, abs=1e-6)


def test_jitter_converges_for_alternating_delay() -> None:
    s = RtpStats()
    # Every other packet 4 ms late: |D| = 32 timestamp units on every packet.
    for i in range(2000):
        s.update(_pkt(i, 160 * i), i * 0.02 + (0.004 if i % 2 else 0.0))
    assert s.jitter == pytest.approx(32.0, rel=1e-3)
    assert s.jitter_ms == pytest.approx(4.0, rel=1e-3)


def test_jitter_survives_timestamp_wrap() -> None:
    s = RtpStats()
    ts0 = 2**32 - 160 * 5
    for i in range(20):
        s.update(_pkt(i, ts0 + 160 * i), i * 0.02)
    assert s.jitter == pytest.approx(0.0, abs=1e-6)


def test_timing_false_skips_jitter() -> None:
    s = RtpStats()
    for i in range(20):  # constant timestamp like RFC 4733 event packets
        s.update(_pkt(i, 5000), i * 0.02, timing=False)
    assert s.jitter == 0.0
    assert s.received == 20


def test_e_model_reference_points() -> None:
    assert e_model_mos(0.0, 0.0) == pytest.approx(4.41, abs=0.01)  # R = 93.2
    # 1 % random loss, no PLC: Ie_eff = 95 * 1 / (1 + 4.3) = 17.92
    r = 93.2 - 0.024 * 40 - 95 / 5.3
    expect = 1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r)
    assert e_model_mos(0.01, 40.0) == pytest.approx(expect)
    assert e_model_mos(0.01, 40.0, bpl=25.1) > e_model_mos(0.01, 40.0)
    assert e_model_mos(0.0, 300.0) < e_model_mos(0.0, 150.0) < e_model_mos(0.0, 0.0)
    assert e_model_mos(1.0, 1000.0) == 1.0


def test_mos_estimate_drops_with_loss_and_jitter() -> None:
    clean, lossy, jittery = RtpStats(), RtpStats(), RtpStats()
    for i in range(500):
        clean.update(_pkt(i, 160 * i), i * 0.02)
        if i % 20:
            lossy.update(_pkt(i, 160 * i), i * 0.02)
        jittery.update(_pkt(i, 160 * i), i * 0.02 + (0.03 if i % 2 else 0.0))
    assert clean.mos_estimate() == pytest.approx(e_model_mos(0.0, 40.0))
    assert clean.mos_estimate() > 4.3
    assert lossy.mos_estimate() < 3.5  # 5 % loss without PLC is poor
    assert jittery.mos_estimate() < clean.mos_estimate()


def test_parse_is_struct_compatible_with_manual_header() -> None:
    raw = struct.pack("!BBHII", 0x80, 0x80 | 101, 7, 8, 9) + b"\x05\x8a\x03\x20"
    p = parse_rtp(raw)
    assert (p.payload_type, p.marker, p.sequence, p.timestamp, p.ssrc) == (101, True, 7, 8, 9)
