"""RFC 4733 telephone-events (DTMF over RTP): parsing, de-duplication, generation.

A single key press arrives as many packets (start, updates every 20 ms, and
the end packet repeated three times), all carrying the event's start RTP
timestamp.  :class:`DtmfReceiver` turns that stream into exactly one digit per
event, reported on the first packet seen so IVR menus react with minimum
latency.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

from .audio import FRAME_SAMPLES, SAMPLES_PER_MS
from .rtp import RtpPacket

__all__ = [
    "EVENT_DIGITS",
    "DtmfReceiver",
    "Rfc4733Error",
    "TelephoneEvent",
    "encode_events",
    "event_packets",
    "parse_event",
]

#: Event code -> DTMF character (codes 0-15, RFC 4733 §3.2).
EVENT_DIGITS = "0123456789*#ABCD"
_DIGIT_EVENTS = {c: i for i, c in enumerate(EVENT_DIGITS)}
_EVENT = struct.Struct("!BBH")
_SAMPLES_PER_PACKET = FRAME_SAMPLES  # one update per 20 ms frame
_END_REPEATS = 3
# Only an unfinished event this long (4 s) can continue in a new segment; real
# key presses are far shorter, so a quick re-press is never mistaken for one.
_MIN_SEGMENT = 0x8000


class Rfc4733Error(ValueError):
    """A telephone-event payload or digit is invalid."""


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """One named event; ``duration`` is in timestamp units, ``volume`` in -dBm0."""

    event: int
    end: bool
    volume: int
    duration: int

    @property
    def digit(self) -> str | None:
        """The DTMF character for events 0-15, else None (e.g. flash = 16)."""
        return EVENT_DIGITS[self.event] if self.event < 16 else None


def parse_event(payload: bytes) -> TelephoneEvent:
    """Parse the first event block of a telephone-event payload."""
    if len(payload) < 4:
        raise Rfc4733Error(f"telephone-event payload too short: {len(payload)} bytes")
    event, flags, duration = _EVENT.unpack_from(payload)
    return TelephoneEvent(event, bool(flags & 0x80), flags & 0x3F, duration)


def _event_code(digit: str) -> int:
    code = _DIGIT_EVENTS.get(digit.upper()) if len(digit) == 1 else None
    if code is None:
        raise Rfc4733Error(f"not a DTMF digit: {digit!r}")
    return code


def encode_events(
    digit: str, start_ts: int, duration_ms: int = 100, volume: int = 10
) -> list[bytes]:
    """Payloads for one key press, one per 20 ms: updates, then the end packet x3.

    All packets of the event are sent with RTP timestamp ``start_ts`` (the
    payload itself carries only the duration relative to it); the first one
    should carry the marker bit.  ``start_ts`` is validated here so callers
    fail early rather than on the wire; :func:`event_packets` builds complete
    packets.
    """
    code = _event_code(digit)
    if not 0 <= start_ts <= 0xFFFFFFFF:
        raise Rfc4733Error(f"RTP timestamp out of range: {start_ts}")
    if not 0 <= volume <= 63:
        raise Rfc4733Error(f"volume must be 0-63 (-dBm0), got {volume}")
    total = max(_SAMPLES_PER_PACKET, duration_ms * SAMPLES_PER_MS)
    if total > 0xFFFF:
        raise Rfc4733Error(f"event longer than {0xFFFF // SAMPLES_PER_MS} ms needs segmentation")
    out = [
        _EVENT.pack(code, volume, dur)
        for dur in range(_SAMPLES_PER_PACKET, total, _SAMPLES_PER_PACKET)
    ]
    out.extend([_EVENT.pack(code, 0x80 | volume, total)] * _END_REPEATS)
    return out


def event_packets(
    digit: str,
    *,
    start_ts: int,
    first_seq: int,
    ssrc: int,
    payload_type: int,
    duration_ms: int = 100,
    volume: int = 10,
) -> list[RtpPacket]:
    """Complete RTP packets for one key press (marker on the first, seq +1 each)."""
    payloads = encode_events(digit, start_ts, duration_ms, volume)
    return [
        RtpPacket(payload_type, (first_seq + i) & 0xFFFF, start_ts, ssrc, p, marker=(i == 0))
        for i, p in enumerate(payloads)
    ]


class DtmfReceiver:
    """Turns a telephone-event packet stream into one digit per key press.

    An event is identified by (SSRC, RTP timestamp): a new timestamp is a new
    key press even for the same digit.  A few recent identities are kept so a
    late redundant end packet of the previous event cannot re-trigger it.  Long
    events split into segments (RFC 4733 §2.5.1.3: new timestamp = previous
    timestamp + previous duration) are recognised as one press.
    """

    __slots__ = ("_recent", "_last", "malformed", "events")

    def __init__(self, history: int = 8) -> None:
        self._recent: deque[tuple[int, int]] = deque(maxlen=history)
        # (ssrc, timestamp, event, end seen, max duration) of the latest event.
        self._last: tuple[int, int, int, bool, int] | None = None
        self.malformed = 0
        self.events = 0

    def feed(self, pkt: RtpPacket) -> str | None:
        """Return the digit on the first packet of a new event, else None."""
        try:
            ev = parse_event(pkt.payload)
        except Rfc4733Error:
            self.malformed += 1
            return None
        key = (pkt.ssrc, pkt.timestamp)
        last = self._last
        if last is not None and last[0] == pkt.ssrc and last[1] == pkt.timestamp:
            self._last = (last[0], last[1], last[2], last[3] or ev.end, max(last[4], ev.duration))
            return None
        if key in self._recent:
            return None  # straggler from an older event
        self._recent.append(key)
        is_segment = (
            last is not None
            and last[0] == pkt.ssrc
            and last[2] == ev.event
            and not last[3]
            and last[4] >= _MIN_SEGMENT
            and pkt.timestamp == (last[1] + last[4]) & 0xFFFFFFFF
        )
        self._last = (pkt.ssrc, pkt.timestamp, ev.event, ev.end, ev.duration)
        if is_segment:
            return None
        self.events += 1
        return ev.digit
