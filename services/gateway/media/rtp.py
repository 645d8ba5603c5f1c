"""RTP packets (RFC 3550 §5.1) and per-source reception statistics (RFC 3550 A.1/A.8).

Parsing is defensive because RTP ports are reachable by anyone on the network:
every malformed datagram raises :class:`RtpError` and never anything else.
:class:`RtpStats` feeds the per-seat call-quality metrics, including a MOS
estimate from a simplified ITU-T G.107 E-model.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .audio import SAMPLE_RATE

__all__ = [
    "RTP_VERSION",
    "RtpError",
    "RtpPacket",
    "RtpStats",
    "e_model_mos",
    "parse_rtp",
]

RTP_VERSION = 2
_HDR = struct.Struct("!BBHII")  # V/P/X/CC, M/PT, sequence, timestamp, SSRC
_HDR_SIZE = _HDR.size
_EXT_HDR = struct.Struct("!HH")  # profile-defined, length in 32-bit words
_unpack_hdr = _HDR.unpack_from
_pack_hdr = _HDR.pack


class RtpError(ValueError):
    """A datagram is not a well-formed RTP packet."""


@dataclass(slots=True)
class RtpPacket:
    """One RTP packet; ``extension`` is ``(profile, data)`` with ``len(data) % 4 == 0``."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None

    def pack(self) -> bytes:
        """Serialise to wire format (no padding is ever generated)."""
        b1 = (self.payload_type & 0x7F) | (0x80 if self.marker else 0)
        if not self.csrcs and self.extension is None:
            return (
                _pack_hdr(
                    0x80,
                    b1,
                    self.sequence & 0xFFFF,
                    self.timestamp & 0xFFFFFFFF,
                    self.ssrc & 0xFFFFFFFF,
                )
                + self.payload
            )
        cc = len(self.csrcs)
        if cc > 15:
            raise RtpError(f"at most 15 CSRCs allowed, got {cc}")
        b0 = 0x80 | cc | (0x10 if self.extension is not None else 0)
        parts = [
            _pack_hdr(
                b0, b1, self.sequence & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc & 0xFFFFFFFF
            )
        ]
        if cc:
            parts.append(struct.pack(f"!{cc}I", *self.csrcs))
        if self.extension is not None:
            profile, data = self.extension
            if len(data) % 4:
                raise RtpError("header extension data must be a multiple of 4 bytes")
            parts.append(_EXT_HDR.pack(profile & 0xFFFF, len(data) // 4))
            parts.append(data)
        parts.append(self.payload)
        return b"".join(parts)


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse one RTP datagram, raising :class:`RtpError` if it is malformed."""
    n = len(data)
    if n < _HDR_SIZE:
        raise RtpError(f"packet too short for RTP header: {n} bytes")
    b0, b1, seq, ts, ssrc = _unpack_hdr(data)
    if b0 >> 6 != RTP_VERSION:
        raise RtpError(f"unsupported RTP version {b0 >> 6}")
    if b0 & 0x3F == 0:  # fast path: no padding, extension or CSRCs
        return RtpPacket(b1 & 0x7F, seq, ts, ssrc, data[_HDR_SIZE:], bool(b1 & 0x80))
    offset = _HDR_SIZE
    cc = b0 & 0x0F
    csrcs: tuple[int, ...] = ()
    if cc:
        end = offset + 4 * cc
        if end > n:
            raise RtpError(f"CSRC count {cc} overruns {n}-byte packet")
        csrcs = struct.unpack_from(f"!{cc}I", data, offset)
        offset = end
    extension: tuple[int, bytes] | None = None
    if b0 & 0x10:
        if offset + 4 > n:
            raise RtpError("header extension overruns packet")
        profile, words = _EXT_HDR.unpack_from(data, offset)
        offset += 4
        end = offset + 4 * words
        if end > n:
            raise RtpError(f"header extension of {words} words overruns packet")
        extension = (profile, bytes(data[offset:end]))
        offset = end
    end = n
    if b0 & 0x20:
        pad = data[-1]
        if pad == 0:
            raise RtpError("padding bit set but padding count is zero")
        end = n - pad
        if end < offset:
            raise RtpError(f"padding of {pad} bytes overruns packet")
    return RtpPacket(
        b1 & 0x7F, seq, ts, ssrc, bytes(data[offset:end]), bool(b1 & 0x80), csrcs, extension
    )


def e_model_mos(
    loss_fraction: float,
    one_way_delay_ms: float,
    *,
    ie: float = 0.0,
    bpl: float = 4.3,
    burst_r: float = 1.0,
) -> float:
    """MOS-CQE from a simplified ITU-T G.107 E-model.

    ``R = 93.2 - Id - Ie_eff`` (Is and the advantage factor A taken as 0), with

    * ``Ie_eff = Ie + (95 - Ie) * Ppl / (Ppl / BurstR + Bpl)``, ``Ppl`` = loss in %;
      G.711 has ``Ie = 0``; ``Bpl = 4.3`` is G.711 without packet-loss concealment
      (25.1 with PLC), ``BurstR = 1`` means random loss;
    * ``Id = 0.024 d + 0.11 (d - 177.3) H(d - 177.3)`` (Cole & Rosenbluth's fit of
      the G.107 delay impairment), ``d`` = one-way mouth-to-ear delay in ms;
    * ``MOS = 1 + 0.035 R + 7e-6 R (R - 60) (100 - R)`` for ``0 < R < 100``.
    """
    ppl = min(max(loss_fraction, 0.0), 1.0) * 100.0
    ie_eff = ie + (95.0 - ie) * ppl / (ppl / burst_r + bpl)
    d = max(one_way_delay_ms, 0.0)
    idd = 0.024 * d + (0.11 * (d - 177.3) if d > 177.3 else 0.0)
    r = 93.2 - idd - ie_eff
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return 1.0 + 0.035 * r + 7e-6 * r * (r - 60.0) * (100.0 - r)


_SEQ_MOD = 1 << 16
_MAX_DROPOUT = 3000
_MAX_MISORDER = 100


class RtpStats:
    """Reception statistics for one RTP leg.

    Sequence tracking follows RFC 3550 A.1 (16-bit wraparound via ``cycles``,
    restart detection after a large jump confirmed by two sequential packets);
    jitter follows A.8.  ``min_sequential`` is the A.1 probation length; the
    default 1 counts the first packet, which suits legs already validated by
    symmetric-RTP latching.  A new SSRC (e.g. after a transfer) restarts
    sequence/jitter tracking but keeps the cumulative received/expected totals.
    """

    __slots__ = (
        "clock_rate",
        "min_sequential",
        "ssrc",
        "packets",
        "ssrc_changes",
        "_base_seq",
        "_max_seq",
        "_bad_seq",
        "_cycles",
        "_received",
        "_probation",
        "_expected_prior",
        "_received_prior",
        "_prev_expected",
        "_prev_received",
        "_transit",
        "_jitter",
    )

    def __init__(self, clock_rate: int = SAMPLE_RATE, min_sequential: int = 1) -> None:
        self.clock_rate = clock_rate
        self.min_sequential = max(1, min_sequential)
        self.ssrc: int | None = None
        self.packets = 0  # every packet handed to update(), valid or not
        self.ssrc_changes = 0
        self._expected_prior = 0  # totals from earlier SSRCs
        self._received_prior = 0
        self._prev_expected = 0  # snapshot for interval_fraction_lost()
        self._prev_received = 0
        self._reset_source()

    def _reset_source(self, seq: int = 0) -> None:
        """A.1 init for a new source: the first packet is checked as ``seq == max+1``."""
        self._init_seq(seq)
        self._max_seq = (seq - 1) & 0xFFFF
        self._probation = self.min_sequential
        self._transit: float | None = None
        self._jitter = 0.0

    def _init_seq(self, seq: int) -> None:
        self._base_seq = seq
        self._max_seq = seq
        self._bad_seq = _SEQ_MOD + 1
        self._cycles = 0
        self._received = 0

    def _update_seq(self, seq: int) -> bool:
        """RFC 3550 A.1 update_seq(); returns False for packets not (yet) counted."""
        udelta = (seq - self._max_seq) & 0xFFFF
        if self._probation:
            # Source not yet valid until min_sequential packets arrive in sequence.
            if seq == (self._max_seq + 1) & 0xFFFF:
                self._probation -= 1
                self._max_seq = seq
                if self._probation == 0:
                    self._init_seq(seq)
                    self._received += 1
                    return True
            else:
                self._probation = self.min_sequential - 1
                self._max_seq = seq
            return False
        if udelta < _MAX_DROPOUT:
            if seq < self._max_seq:
                self._cycles += _SEQ_MOD
            self._max_seq = seq
        elif udelta <= _SEQ_MOD - _MAX_MISORDER:
            if seq == self._bad_seq:
                # Two sequential packets after a big jump: the sender restarted.
                self._expected_prior += self.expected
                self._received_prior += self._received
                self._init_seq(seq)
                self._transit = None
            else:
                self._bad_seq = (seq + 1) & 0xFFFF
                return False
        # else: duplicate or reordered packet, counted but max_seq unchanged
        self._received += 1
        return True

    def update(self, pkt: RtpPacket, arrival_time_s: float, *, timing: bool = True) -> bool:
        """Account for one received packet; returns False if it was not counted.

        Pass ``timing=False`` for packets whose timestamp does not advance with
        the media clock (RFC 4733 events keep the event's start timestamp), so
        they count for loss but do not distort jitter.
        """
        return self.track(pkt.ssrc, pkt.sequence, pkt.timestamp, arrival_time_s, timing)

    def track(
        self, ssrc: int, sequence: int, timestamp: int, arrival_time_s: float, timing: bool = True
    ) -> bool:
        """:meth:`update` from the header fields, for the receive path that builds no packet."""
        self.packets += 1
        if ssrc != self.ssrc:
            if self.ssrc is not None:
                self.ssrc_changes += 1
                self._expected_prior += self.expected
                self._received_prior += self._received
            self.ssrc = ssrc
            self._reset_source(sequence)
        max_seq = self._max_seq
        if not self._probation and (sequence - max_seq) & 0xFFFF < _MAX_DROPOUT:
            # _update_seq()'s in-order case (nearly every packet), inlined.
            if sequence < max_seq:
                self._cycles += _SEQ_MOD
            self._max_seq = sequence
            self._received += 1
        elif not self._update_seq(sequence):
            return False
        if timing:
            # A.8: transit in timestamp units; 32-bit timestamps wrap, so use
            # the signed modular difference against the previous transit.
            transit = arrival_time_s * self.clock_rate - timestamp
            prev = self._transit
            if prev is not None:
                # Undo timestamp wraparound (a jump of ~2**32 units).
                d = (transit - prev + 2**31) % 2**32 - 2**31
                self._jitter += (abs(d) - self._jitter) / 16.0
            self._transit = transit
        return True

    @property
    def received(self) -> int:
        """Packets counted (including duplicates), across all SSRCs."""
        return self._received_prior + self._received

    @property
    def extended_max_seq(self) -> int:
        """Highest sequence number seen, extended with the wrap count (current SSRC)."""
        return self._cycles + self._max_seq

    @property
    def expected(self) -> int:
        """Packets expected from the current SSRC (A.3)."""
        if self._received == 0:
            return 0
        return self.extended_max_seq - self._base_seq + 1

    @property
    def expected_total(self) -> int:
        """Packets expected across all SSRCs seen on this leg."""
        return self._expected_prior + self.expected

    @property
    def lost(self) -> int:
        """Cumulative packets lost; negative when duplicates outnumber losses (A.3)."""
        return self.expected_total - self.received

    @property
    def fraction_lost(self) -> float:
        """Cumulative loss ratio in [0, 1]."""
        exp = self.expected_total
        return min(max(self.lost / exp, 0.0), 1.0) if exp > 0 else 0.0

    def interval_fraction_lost(self) -> float:
        """Loss ratio since the previous call (the RTCP RR 'fraction lost', A.3)."""
        exp, rec = self.expected_total, self.received
        exp_int = exp - self._prev_expected
        lost_int = exp_int - (rec - self._prev_received)
        self._prev_expected, self._prev_received = exp, rec
        if exp_int <= 0 or lost_int <= 0:
            return 0.0
        return lost_int / exp_int

    @property
    def jitter(self) -> float:
        """Interarrival jitter in timestamp units (A.8)."""
        return self._jitter

    @property
    def jitter_ms(self) -> float:
        """Interarrival jitter in milliseconds."""
        return self._jitter * 1000.0 / self.clock_rate

    def mos_estimate(
        self, *, base_delay_ms: float = 40.0, bpl: float = 4.3, ie: float = 0.0
    ) -> float:
        """Estimated MOS for this leg (see :func:`e_model_mos`).

        The one-way delay is modelled as ``base_delay_ms`` (packetisation plus
        nominal network delay) plus ``2 * jitter_ms`` for the jitter buffer that
        absorbs it; loss is the cumulative loss ratio.  With no packets yet the
        estimate is that of an unimpaired G.711 call (about 4.4).
        """
        return e_model_mos(self.fraction_lost, base_delay_ms + 2.0 * self.jitter_ms, ie=ie, bpl=bpl)
