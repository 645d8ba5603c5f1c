"""RFC 4733 telephone-event parsing, generation and one-digit-per-press reception."""

from __future__ import annotations

import pytest

from gateway.media.rfc4733 import (
    EVENT_DIGITS,
    DtmfReceiver,
    Rfc4733Error,
    TelephoneEvent,
    encode_events,
    event_packets,
    parse_event,
)
from gateway.media.rtp import RtpPacket, parse_rtp

PT = 101
SSRC = 0xA1B2C3D4


def _press(digit: str, ts: int, seq: int, duration_ms: int = 100) -> list[RtpPacket]:
    """Packets as a typical phone sends them (round-tripped through the wire format)."""
    pkts = event_packets(
        digit, start_ts=ts, first_seq=seq, ssrc=SSRC, payload_type=PT, duration_ms=duration_ms
    )
    return [parse_rtp(p.pack()) for p in pkts]


def test_event_digits_mapping() -> None:
    assert EVENT_DIGITS[0] == "0" and EVENT_DIGITS[10] == "*" and EVENT_DIGITS[11] == "#"
    assert EVENT_DIGITS[12:] == "ABCD"


def test_parse_event_fields() -> None:
    ev = parse_event(bytes([11, 0x80 | 10, 0x03, 0x20]))
    assert ev == TelephoneEvent(event=11, end=True, volume=10, duration=800)
    assert ev.digit == "#"
    assert parse_event(bytes([16, 0, 0, 0])).digit is None  # flash


def test_parse_event_ignores_reserved_bit_and_trailing_blocks() -> None:
    ev = parse_event(bytes([5, 0x40 | 7, 0, 160]) + bytes([6, 0, 0, 160]))
    assert ev == TelephoneEvent(5, False, 7, 160)


def test_parse_event_too_short() -> None:
    with pytest.raises(Rfc4733Error):
        parse_event(b"\x01\x02\x03")


def test_encode_events_layout() -> None:
    payloads = encode_events("5", start_ts=1000, duration_ms=100, volume=10)
    events = [parse_event(p) for p in payloads]
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events] == [False] * 4 + [True] * 3
    assert {e.event for e in events} == {5}
    assert {e.volume for e in events} == {10}


def test_encode_events_short_press_still_three_end_packets() -> None:
    events = [parse_event(p) for p in encode_events("#", 0, duration_ms=10)]
    assert [(e.end, e.duration) for e in events] == [(True, 160)] * 3


@pytest.mark.parametrize("digit", ["x", "", "12", "E"])
def test_encode_events_rejects_non_digits(digit: str) -> None:
    with pytest.raises(Rfc4733Error):
        encode_events(digit, 0)


def test_encode_events_rejects_bad_args() -> None:
    with pytest.raises(Rfc4733Error):
        encode_events("1", 0, volume=64)
    with pytest.raises(Rfc4733Error):
        encode_events("1", 2**32)
    with pytest.raises(Rfc4733Error):
        encode_events("1", 0, duration_ms=9000)


def test_event_packets_rtp_fields() -> None:
    pkts = event_packets("a", start_ts=7, first_seq=65534, ssrc=1, payload_type=PT)
    assert [p.sequence for p in pkts] == [65534, 65535, 0, 1, 2, 3, 4]
    assert {p.timestamp for p in pkts} == {7}
    assert [p.marker for p in pkts] == [True] + [False] * 6
    assert parse_event(pkts[0].payload).digit == "A"


def test_receiver_one_digit_per_press_including_repeat() -> None:
    rx = DtmfReceiver()
    first = _press("5", ts=8000, seq=100)
    second = _press("5", ts=8000 + 1600, seq=107)  # same digit again, new timestamp
    third = _press("#", ts=8000 + 3200, seq=114)
    out = [rx.feed(p) for p in first + second + third]
    # Reported on the first packet of each event, never again.
    assert out[0] == "5" and out[7] == "5" and out[14] == "#"
    assert [d for d in out if d is not None] == ["5", "5", "#"]
    assert rx.events == 3


def test_receiver_reports_when_start_packets_lost() -> None:
    rx = DtmfReceiver()
    pkts = _press("9", ts=100, seq=1)
    # Only the redundant end packets made it.
    assert [rx.feed(p) for p in pkts[-3:]] == ["9", None, None]


def test_receiver_ignores_late_end_packet_of_previous_event() -> None:
    rx = DtmfReceiver()
    a = _press("1", ts=0, seq=0)
    b = _press("1", ts=1600, seq=7)
    got = [rx.feed(p) for p in a[:-1]]  # last end packet of 'a' is delayed...
    got += [rx.feed(b[0]), rx.feed(a[-1])]  # ...and arrives after b started
    got += [rx.feed(p) for p in b[1:]]
    assert [d for d in got if d is not None] == ["1", "1"]


def test_receiver_long_event_segments_are_one_press() -> None:
    rx = DtmfReceiver()
    seg1 = RtpPacket(PT, 1, 1000, SSRC, bytes([0, 10, 0xFF, 0xFF]))
    seg2 = RtpPacket(PT, 2, 1000 + 0xFFFF, SSRC, bytes([0, 10, 0x00, 0xA0]))
    seg2_end = RtpPacket(PT, 3, 1000 + 0xFFFF, SSRC, bytes([0, 0x80 | 10, 0x01, 0x40]))
    assert [rx.feed(p) for p in (seg1, seg2, seg2_end)] == ["0", None, None]


def test_receiver_distinguishes_ssrc() -> None:
    rx = DtmfReceiver()
    p1 = RtpPacket(PT, 1, 500, 1, encode_events("3", 500)[0])
    p2 = RtpPacket(PT, 1, 500, 2, encode_events("3", 500)[0])
    assert rx.feed(p1) == "3"
    assert rx.feed(p2) == "3"


def test_receiver_counts_malformed_and_non_digit_events() -> None:
    rx = DtmfReceiver()
    assert rx.feed(RtpPacket(PT, 1, 0, SSRC, b"\x01")) is None
    assert rx.malformed == 1
    assert rx.feed(RtpPacket(PT, 2, 160, SSRC, bytes([16, 0x80, 0, 160]))) is None
    assert rx.feed(RtpPacket(PT, 3, 320, SSRC, bytes([4, 0x80, 0, 160]))) == "4"
