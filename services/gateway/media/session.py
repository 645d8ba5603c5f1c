"""One RTP session without I/O: datagrams and times in, packets and audio out.

:class:`RtpSession` is the protocol half of an RTP leg: negotiated codec and
payload types, transmit state (SSRC, sequence number, timestamp, marker bit),
symmetric-RTP latching, the receive-side filters (foreign, malformed,
duplicate and overtaken packets), re-framing into 20 ms frames, RFC 4733
telephone-events both ways, and the counters and :class:`~.rtp.RtpStats`.

It owns no socket and no event loop (the design of aioquic's
``QuicConnection``): the caller passes every datagram with its source address
and the current time, and gets back what to deliver; it asks for the bytes of
the next packet and sends them to :attr:`RtpSession.remote` itself.  So the
timing rules (talkspurt markers, silence catch-up, DTMF timestamps) can be
stepped through in tests with made-up times, and a socket adapter
(:class:`~.endpoint.RtpEndpoint` for asyncio) stays a few lines per path.

The receive path never raises: RTP ports are open to the network, so
malformed, foreign and unexpected packets are counted and dropped.  Symmetric
RTP (latching onto the source address of the first valid packet and sending
back there) makes calls work through the NAT in front of most softphones and
trunks, whose SDP advertises an address nobody can reach.
"""

from __future__ import annotations

import secrets
import struct
from typing import Any

import numpy as np

from .audio import FRAME_SAMPLES, FRAME_SECONDS, SAMPLES_PER_MS
from .g711 import _PRE_ENCODED, CODECS, LAW_INDEX, PAYLOAD_TYPES, Decoder, Encoder
from .rfc4733 import DtmfReceiver, encode_events
from .rtp import RtpError, RtpPacket, RtpStats, parse_rtp

__all__ = ["CN_PAYLOAD_TYPE", "SILENCE_GAP_S", "Address", "Received", "RtpSession"]

CN_PAYLOAD_TYPE = 13  # RFC 3389 comfort noise: ignored, we play nothing instead
#: A sender that stops calling send_audio()/skip() for longer than this has
#: been silent: the timestamp is advanced over the gap and the next packet
#: marked.  Must exceed the media clock's catch-up window (5 frames) so
#: catch-up bursts are not mistaken for silence.
SILENCE_GAP_S = 0.25
_MAX_MISORDER = 100  # packets this far behind the newest are late, not a restart
_M32 = 0xFFFFFFFF
_HDR = struct.Struct("!BBHII")  # V/P/X/CC, M/PT, sequence, timestamp, SSRC
_HDR_SIZE = _HDR.size
_pack_hdr = _HDR.pack
_unpack_fields = struct.Struct("!xBHII").unpack_from  # M/PT, sequence, timestamp, SSRC

Address = tuple[Any, ...]  # (host, port) or (host, port, flowinfo, scope_id) for IPv6
#: What one datagram yields: (audio frames, DTMF digit or None).
Received = tuple[tuple[np.ndarray, ...], str | None]
_NOTHING: Received = ((), None)


class RtpSession:
    """One bidirectional RTP stream of G.711 audio plus RFC 4733 events.

    Nothing is sent or delivered until :meth:`configure` has been called with
    the negotiated SDP parameters.  Every method that depends on time takes
    ``now`` in seconds on a monotonic clock (the event loop's ``time()``).
    ``ssrc``, ``sequence`` and ``timestamp`` are random unless given (RFC 3550
    §5.1); ``sequence``, ``timestamp`` and ``marker`` describe the next packet.
    """

    def __init__(
        self, *, ssrc: int | None = None, sequence: int | None = None, timestamp: int | None = None
    ) -> None:
        # Negotiated media.
        self.codec: str | None = None
        self.payload_type: int | None = None
        self.dtmf_payload_type: int | None = None
        self._encode: Encoder | None = None
        self._law = 0  # index of our codec's payload in a pre-encoded frame's entry
        self._decoders: dict[int, Decoder] = {}
        self._remote: Address | None = None  # from SDP
        self._latched: Address | None = None  # actual source (symmetric RTP)
        #: Where packets go: the latched source if any, else the SDP address
        #: (read-only; a plain attribute because every packet sent reads it).
        self.remote: Address | None = None

        # Transmit state.
        self.ssrc = secrets.randbits(32) if ssrc is None else ssrc & _M32
        self.sequence = secrets.randbits(16) if sequence is None else sequence & 0xFFFF
        self.timestamp = secrets.randbits(32) if timestamp is None else timestamp & _M32
        self.marker = True
        #: On hold (the peer said inactive/recvonly, or c=0.0.0.0): no RTP goes out, time
        #: still passes, and the first packet after it is marked (RFC 3264 6.1, 8.4).
        self.muted = False
        self._last_tx: float | None = None
        # The key press being sent: payloads, next index, start timestamp,
        # duration in timestamp units, start time.  None when idle.
        self._dtmf_payloads: list[bytes] | None = None
        self._dtmf_next = 0
        self._dtmf_ts = 0
        self._dtmf_total = 0
        self._dtmf_t0 = 0.0

        #: The peer (latched address, SSRC) of the call that used this port before; its
        #: stray packets are dropped instead of being latched onto, so a port can be reused
        #: the moment a call ends rather than being held back for them (docs/performance.md).
        self.previous: tuple[Address, int] | None = None

        # Receive state.
        self.stats = RtpStats()
        self.dtmf = DtmfReceiver()
        self._rx_ssrc: int | None = None
        self._rx_seq = 0
        self._pending: np.ndarray | None = None  # leftover samples (< 1 frame)

        # Counters.
        self.packets_in = 0
        self.bytes_in = 0
        self.packets_out = 0
        self.bytes_out = 0
        self.malformed = 0
        self.unknown_pt = 0
        self.wrong_source = 0  # packets from someone other than the latched peer
        self.not_ready = 0  # packets before configure()
        self.stale = 0  # strays of the call that had this port before (see `previous`)
        self.late = 0  # duplicate or reordered audio, dropped
        self.cn_packets = 0
        self.payload_types_in: dict[int, int] = {}

    # -- negotiation -----------------------------------------------------------

    def configure(
        self, remote: Address, codec: str, payload_type: int, dtmf_payload_type: int | None = None
    ) -> None:
        """Apply (re-)negotiated SDP: peer address, audio codec and PTs.

        Re-INVITEs call this again.  The outgoing stream (SSRC, sequence,
        timestamp) continues; the latch is reset only when the SDP address
        changes, so a hold/unhold keeps working through NAT.
        """
        name = codec.upper()
        if name not in CODECS:
            raise ValueError(f"unsupported codec {codec!r}; expected one of {sorted(CODECS)}")
        if not 0 <= payload_type <= 127:
            raise ValueError(f"invalid payload type {payload_type}")
        if dtmf_payload_type is not None and not 0 <= dtmf_payload_type <= 127:
            raise ValueError(f"invalid telephone-event payload type {dtmf_payload_type}")
        remote = tuple(remote)
        if remote != self._remote:
            self._remote = remote
            self._latched = None
        self.remote = self._latched or self._remote
        if name != self.codec or payload_type != self.payload_type:
            self._pending = None
        self.codec = name
        self.payload_type = payload_type
        self.dtmf_payload_type = dtmf_payload_type
        self._encode = CODECS[name][0]
        self._law = LAW_INDEX[name]
        # Static G.711 types are always decodable; the negotiated one wins.
        decoders = {pt: CODECS[n][1] for n, pt in PAYLOAD_TYPES.items()}
        decoders[payload_type] = CODECS[name][1]
        if dtmf_payload_type is not None:
            decoders.pop(dtmf_payload_type, None)
        self._decoders = decoders

    @property
    def configured(self) -> bool:
        return self._encode is not None

    @property
    def latched(self) -> Address | None:
        return self._latched

    # -- receiving -------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> Received:
        """Take one datagram from ``addr``; returns ``(frames, digit)``.

        ``frames`` are the decoded 160-sample int16 frames it completes (none,
        one, or several for long packets; short ones are joined), ``digit`` the
        DTMF key of a new RFC 4733 event, else None.  Never raises.
        """
        self.packets_in += 1
        self.bytes_in += len(data)
        if len(data) >= _HDR_SIZE and data[0] == 0x80:
            # parse_rtp()'s fast path (version 2, no padding, extension or CSRCs), without
            # building an RtpPacket: the header fields are all the audio path needs.
            b1, seq, ts, ssrc = _unpack_fields(data)
            payload = data[_HDR_SIZE:]
        else:
            try:
                pkt = parse_rtp(data)
            except RtpError:
                self.malformed += 1
                return _NOTHING
            b1 = pkt.payload_type | (0x80 if pkt.marker else 0)
            seq, ts, ssrc, payload = pkt.sequence, pkt.timestamp, pkt.ssrc, pkt.payload
        pt = b1 & 0x7F
        if self._latched is None:
            if self._remote is None:
                self.not_ready += 1
                return _NOTHING
            if pt not in self._decoders and pt != self.dtmf_payload_type:
                self.unknown_pt += 1
                return _NOTHING
            if self.previous is not None and self._is_stale(addr, ssrc):
                self.stale += 1
                return _NOTHING
            self._latched = self.remote = addr
        elif addr != self._latched:
            self.wrong_source += 1
            return _NOTHING
        counts = self.payload_types_in
        counts[pt] = counts.get(pt, 0) + 1

        if pt == self.dtmf_payload_type:
            self.stats.track(ssrc, seq, ts, now, False)
            digit = self.dtmf.feed(RtpPacket(pt, seq, ts, ssrc, payload, bool(b1 & 0x80)))
            return _NOTHING if digit is None else ((), digit)
        decode = self._decoders.get(pt)
        if decode is None:
            if pt == CN_PAYLOAD_TYPE:
                self.cn_packets += 1
                self.stats.track(ssrc, seq, ts, now)
            else:
                self.unknown_pt += 1
            return _NOTHING
        self.stats.track(ssrc, seq, ts, now)

        # Playout is a FIFO, so drop duplicates and packets overtaken by newer ones.
        if ssrc == self._rx_ssrc:
            delta = (seq - self._rx_seq) & 0xFFFF
            if delta == 0 or (delta >= 0x8000 and 0x10000 - delta <= _MAX_MISORDER):
                self.late += 1
                return _NOTHING
        else:
            self._rx_ssrc = ssrc
            self._pending = None
        self._rx_seq = seq

        pcm = decode(payload)
        pending = self._pending
        if pending is None:
            if len(pcm) == FRAME_SAMPLES:
                return ((pcm,), None)
        else:
            pcm = np.concatenate((pending, pcm))
        whole = len(pcm) - len(pcm) % FRAME_SAMPLES
        self._pending = pcm[whole:] if whole < len(pcm) else None
        return tuple(pcm[i : i + FRAME_SAMPLES] for i in range(0, whole, FRAME_SAMPLES)), None

    def _is_stale(self, addr: Address, ssrc: int) -> bool:
        """A packet of the port's previous call: its peer's address and SSRC, unless our own
        SDP names that address (then the two cannot be told apart, and it is ours)."""
        previous = self.previous
        return previous is not None and previous == (addr, ssrc) and addr != self._remote

    @property
    def peer(self) -> tuple[Address, int] | None:
        """(latched address, SSRC last received) of the peer, once it has sent audio."""
        if self._latched is None or self._rx_ssrc is None:
            return None
        return self._latched, self._rx_ssrc

    # -- sending ---------------------------------------------------------------

    def _catch_up(self, now: float) -> None:
        """Advance the timestamp over a silence the sender did not report."""
        last = self._last_tx
        if last is not None and now - last > SILENCE_GAP_S:
            self._skip_gap(now - last)
        self._last_tx = now

    def _skip_gap(self, gap: float) -> None:
        """``gap`` seconds passed since the last frame: a talkspurt starts after them."""
        missed = round(gap / FRAME_SECONDS) - 1
        self.timestamp = (self.timestamp + missed * FRAME_SAMPLES) & _M32
        self.marker = True

    def send_audio(self, pcm: np.ndarray, now: float) -> bytes | None:
        """The packet carrying one frame (normally 160 samples), for :attr:`remote`.

        None before :meth:`configure`, while :attr:`muted` (held), and while a
        DTMF event is being sent (the frame's time still elapses, so the far end
        does not hear the in-band remains of the key press).
        """
        encode = self._encode
        if encode is None:
            return None
        last = self._last_tx  # self._catch_up(now), inlined: this runs 50 times a second
        if last is not None and now - last > SILENCE_GAP_S:
            self._skip_gap(now - last)
        self._last_tx = now
        n = len(pcm)
        if self._dtmf_payloads is not None or self.muted:
            self.timestamp = (self.timestamp + n) & _M32
            self.marker = self.marker or self.muted
            return None
        # A prompt frame was encoded once for every call (g711.pre_encode): send those bytes.
        pre = _PRE_ENCODED.get(id(pcm))  # g711.pre_encoded(pcm), inlined
        payload = pre[1][self._law] if pre is not None and pre[0]() is pcm else encode(pcm)
        b1 = self.payload_type | (0x80 if self.marker else 0)  # type: ignore[operator]
        data = _pack_hdr(0x80, b1, self.sequence, self.timestamp, self.ssrc) + payload
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + n) & _M32
        self.marker = False
        self.packets_out += 1
        self.bytes_out += len(data)
        return data

    def skip(self, frames: int, now: float) -> None:
        """Let ``frames`` frames of silence elapse without sending RTP.

        Keeps the timestamp in step with real time and sets the marker bit on
        the next packet (start of a talkspurt), per RFC 3551 §4.1.
        """
        self._last_tx = now
        self.timestamp = (self.timestamp + frames * FRAME_SAMPLES) & _M32
        self.marker = True

    @property
    def sending_dtmf(self) -> bool:
        """True between :meth:`start_dtmf` and :meth:`end_dtmf`."""
        return self._dtmf_payloads is not None

    def start_dtmf(self, digit: str, now: float, duration_ms: int = 100, volume: int = 10) -> int:
        """Begin one RFC 4733 key press; returns how many packets it takes.

        Take them with :meth:`next_dtmf`, the first at once and then one per
        20 ms; all carry the timestamp the audio had reached at ``now``.  Audio
        is muted until :meth:`end_dtmf`.  Raises RuntimeError if
        telephone-event was not negotiated or another key press is under way,
        and :class:`~.rfc4733.Rfc4733Error` for a bad digit, duration or volume.
        """
        if self.dtmf_payload_type is None:
            raise RuntimeError("telephone-event was not negotiated for this leg")
        if self._dtmf_payloads is not None:
            raise RuntimeError("a DTMF key press is already being sent")
        self._catch_up(now)
        payloads = encode_events(digit, self.timestamp, duration_ms, volume)
        self._dtmf_payloads = payloads
        self._dtmf_next = 0
        self._dtmf_ts = self.timestamp
        self._dtmf_total = max(FRAME_SAMPLES, duration_ms * SAMPLES_PER_MS)
        self._dtmf_t0 = now
        return len(payloads)

    def next_dtmf(self) -> bytes | None:
        """The next packet of the key press (marker on the first), or None when done."""
        payloads = self._dtmf_payloads
        pt = self.dtmf_payload_type
        if payloads is None or pt is None or self._dtmf_next >= len(payloads):
            return None
        i = self._dtmf_next
        self._dtmf_next = i + 1
        data = (
            _pack_hdr(0x80, pt | (0x80 if i == 0 else 0), self.sequence, self._dtmf_ts, self.ssrc)
            + payloads[i]
        )
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.packets_out += 1
        self.bytes_out += len(data)
        return data

    def end_dtmf(self, now: float) -> None:
        """Finish the key press (unsent packets are dropped) and unmute audio.

        The next audio packet starts a talkspurt no earlier than the event's
        start plus the longer of its duration and the time it took to send,
        counted in whole frames including the one the last packet went out in.
        """
        if self._dtmf_payloads is None:
            return
        self._dtmf_payloads = None
        start_ts = self._dtmf_ts
        elapsed = round((now - self._dtmf_t0) / FRAME_SECONDS + 1) * FRAME_SAMPLES
        need = max(self._dtmf_total, elapsed)
        if (self.timestamp - start_ts) & _M32 < need:
            self.timestamp = (start_ts + need) & _M32
        self._last_tx = now
        self.marker = True

    def __repr__(self) -> str:
        return (
            f"<RtpSession ssrc={self.ssrc:08x} -> {self.remote} "
            f"{self.codec}/{self.payload_type} in={self.packets_in} out={self.packets_out}>"
        )
