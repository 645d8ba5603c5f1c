"""One RTP leg on an asyncio UDP socket: receive/decode, encode/send, DTMF, stats.

The receive path never raises: RTP ports are open to the network, so malformed,
foreign and unexpected packets are counted and dropped.  Symmetric RTP
(latching onto the source address of the first valid packet and sending back
there) makes calls work through the NAT in front of most softphones and
trunks, whose SDP advertises an address nobody can reach.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from .audio import FRAME_SAMPLES, FRAME_SECONDS, SAMPLES_PER_MS
from .g711 import CODECS, PAYLOAD_TYPES, Decoder, Encoder
from .rfc4733 import DtmfReceiver, encode_events
from .rtp import RtpError, RtpStats, parse_rtp

__all__ = ["CN_PAYLOAD_TYPE", "NoFreePort", "PortAllocator", "RtpEndpoint"]

log = logging.getLogger(__name__)

CN_PAYLOAD_TYPE = 13  # RFC 3389 comfort noise: ignored, we play nothing instead
# A sender that stops calling send_audio()/skip() for longer than this has
# been silent: advance the timestamp over the gap and mark the next packet.
# Must exceed the clock's catch-up window (5 frames) so catch-up bursts are not
# mistaken for silence.
_SILENCE_GAP_S = 0.25
_MAX_MISORDER = 100  # packets this far behind the newest are late, not a restart
_M32 = 0xFFFFFFFF
_HDR = struct.Struct("!BBHII")
_pack_hdr = _HDR.pack

Address = tuple[Any, ...]  # (host, port) or (host, port, flowinfo, scope_id) for IPv6


class NoFreePort(RuntimeError):
    """Every RTP port in the allocator's range is in use."""


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class PortAllocator:
    """Hands out even UDP ports (RTP convention, RTCP would be port + 1).

    Ports are handed out round-robin so a port released by a finished call is
    reused as late as possible and its stray packets cannot reach a new call.
    """

    def __init__(self, low: int = 20000, high: int = 20999) -> None:
        if not 0 < low <= high <= 65535:
            raise ValueError(f"invalid port range {low}-{high}")
        self.low, self.high = low, high
        self._ports = range(low + (low & 1), high + 1, 2)
        if not self._ports:
            raise ValueError(f"no even port in range {low}-{high}")
        self._in_use: set[int] = set()
        self._cursor = 0

    def allocate_socket(self, host: str = "0.0.0.0") -> socket.socket:
        """Bind a non-blocking UDP socket on the next free even port."""
        n = len(self._ports)
        for _ in range(n):
            port = self._ports[self._cursor]
            self._cursor = (self._cursor + 1) % n
            if port in self._in_use:
                continue
            sock = socket.socket(_family(host), socket.SOCK_DGRAM)
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()  # taken by another process; try the next one
                continue
            sock.setblocking(False)
            self._in_use.add(port)
            return sock
        raise NoFreePort(f"no free RTP port in {self.low}-{self.high} on {host}")

    def allocate(self, host: str = "0.0.0.0") -> int:
        """Reserve a free even port (verified by binding it) and return it."""
        sock = self.allocate_socket(host)
        port = sock.getsockname()[1]
        sock.close()
        return port

    def release(self, port: int) -> None:
        """Return a port to the pool (unknown ports are ignored)."""
        self._in_use.discard(port)

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    @property
    def capacity(self) -> int:
        return len(self._ports)


class RtpEndpoint(asyncio.DatagramProtocol):
    """One bidirectional RTP stream of G.711 audio plus RFC 4733 events.

    Set ``on_audio(pcm)`` to receive decoded 160-sample int16 frames and
    ``on_dtmf(digit)`` for key presses.  Nothing is sent or delivered until
    :meth:`configure` has been called with the negotiated SDP parameters.
    """

    def __init__(self, allocator: PortAllocator | None, local_host: str, local_port: int) -> None:
        self.local_host = local_host
        self.local_port = local_port
        self._allocator = allocator
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.DatagramTransport | None = None
        self._closed = False

        self.on_audio: Callable[[np.ndarray], None] | None = None
        self.on_dtmf: Callable[[str], None] | None = None

        # Negotiated media.
        self.codec: str | None = None
        self.payload_type: int | None = None
        self.dtmf_payload_type: int | None = None
        self._encode: Encoder | None = None
        self._decoders: dict[int, Decoder] = {}
        self._remote: Address | None = None  # from SDP
        self._latched: Address | None = None  # actual source (symmetric RTP)
        self._send_addr: Address | None = None

        # Transmit state (RFC 3550 §5.1: random SSRC and initial seq/timestamp).
        self.ssrc = secrets.randbits(32)
        self._seq = secrets.randbits(16)
        self._ts = secrets.randbits(32)
        self._marker = True
        self._last_tx: float | None = None
        self._dtmf_busy = False
        self._dtmf_lock = asyncio.Lock()

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
        self.late = 0  # duplicate or reordered audio, dropped
        self.cn_packets = 0
        self.send_errors = 0
        self.callback_errors = 0
        self.payload_types_in: dict[int, int] = {}

    # -- lifecycle -------------------------------------------------------------

    @classmethod
    async def open(cls, host: str, allocator: PortAllocator) -> RtpEndpoint:
        """Bind a UDP socket on a free even port of ``allocator``."""
        loop = asyncio.get_running_loop()
        sock = allocator.allocate_socket(host)
        port = sock.getsockname()[1]
        try:
            ep = cls(allocator, host, port)
            await loop.create_datagram_endpoint(lambda: ep, sock=sock)
        except BaseException:
            sock.close()
            allocator.release(port)
            raise
        return ep

    def close(self) -> None:
        """Close the socket and give the port back; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._allocator is not None:
            self._allocator.release(self.local_port)

    @property
    def closed(self) -> bool:
        return self._closed

    # -- negotiation -----------------------------------------------------------

    def configure(self, remote: tuple[str, int], codec: str, payload_type: int,
                  dtmf_payload_type: int | None = None) -> None:
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
        self._send_addr = self._latched or self._remote
        if name != self.codec or payload_type != self.payload_type:
            self._pending = None
        self.codec = name
        self.payload_type = payload_type
        self.dtmf_payload_type = dtmf_payload_type
        self._encode = CODECS[name][0]
        # Static G.711 types are always decodable; the negotiated one wins.
        decoders = {pt: CODECS[n][1] for n, pt in PAYLOAD_TYPES.items()}
        decoders[payload_type] = CODECS[name][1]
        if dtmf_payload_type is not None:
            decoders.pop(dtmf_payload_type, None)
        self._decoders = decoders

    @property
    def remote(self) -> Address | None:
        """Where audio is sent: the latched source if any, else the SDP address."""
        return self._send_addr

    @property
    def latched(self) -> Address | None:
        return self._latched

    # -- asyncio protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable etc.: normal while the peer is not listening yet.
        self.send_errors += 1
        log.debug("RTP port %s: %s", self.local_port, exc)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.packets_in += 1
        self.bytes_in += len(data)
        try:
            pkt = parse_rtp(data)
        except RtpError:
            self.malformed += 1
            return
        pt = pkt.payload_type
        if self._latched is None:
            if self._remote is None:
                self.not_ready += 1
                return
            if pt not in self._decoders and pt != self.dtmf_payload_type:
                self.unknown_pt += 1
                return
            self._latched = self._send_addr = addr
        elif addr != self._latched:
            self.wrong_source += 1
            return
        counts = self.payload_types_in
        counts[pt] = counts.get(pt, 0) + 1
        now = self._loop.time()

        if pt == self.dtmf_payload_type:
            self.stats.update(pkt, now, timing=False)
            digit = self.dtmf.feed(pkt)
            if digit is not None and self.on_dtmf is not None:
                self._call(self.on_dtmf, digit)
            return
        decode = self._decoders.get(pt)
        if decode is None:
            if pt == CN_PAYLOAD_TYPE:
                self.cn_packets += 1
                self.stats.update(pkt, now)
            else:
                self.unknown_pt += 1
            return
        self.stats.update(pkt, now)

        # Playout is a FIFO, so drop duplicates and packets overtaken by newer ones.
        if pkt.ssrc == self._rx_ssrc:
            delta = (pkt.sequence - self._rx_seq) & 0xFFFF
            if delta == 0 or (delta >= 0x8000 and 0x10000 - delta <= _MAX_MISORDER):
                self.late += 1
                return
        else:
            self._rx_ssrc = pkt.ssrc
            self._pending = None
        self._rx_seq = pkt.sequence

        pcm = decode(pkt.payload)
        cb = self.on_audio
        if len(pcm) == FRAME_SAMPLES and self._pending is None:
            if cb is not None:
                self._call(cb, pcm)
            return
        if self._pending is not None:
            pcm = np.concatenate((self._pending, pcm))
        whole = len(pcm) - len(pcm) % FRAME_SAMPLES
        self._pending = pcm[whole:] if whole < len(pcm) else None
        if cb is not None:
            for i in range(0, whole, FRAME_SAMPLES):
                self._call(cb, pcm[i:i + FRAME_SAMPLES])

    def _call(self, cb: Callable[[Any], None], arg: Any) -> None:
        try:
            cb(arg)
        except Exception:  # a consumer bug must not kill the socket
            self.callback_errors += 1
            log.exception("RTP port %s: callback %r failed", self.local_port, cb)

    # -- sending ---------------------------------------------------------------

    def _sendto(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or self._send_addr is None:
            return
        transport.sendto(data, self._send_addr)
        self.packets_out += 1
        self.bytes_out += len(data)

    def _catch_up(self, now: float) -> None:
        """Advance the timestamp over a silence the caller did not report."""
        last = self._last_tx
        if last is not None and now - last > _SILENCE_GAP_S:
            missed = round((now - last) / FRAME_SECONDS) - 1
            self._ts = (self._ts + missed * FRAME_SAMPLES) & _M32
            self._marker = True
        self._last_tx = now

    def send_audio(self, pcm: np.ndarray) -> bool:
        """Encode and send one frame (normally 160 samples); False if not sent.

        Nothing is sent before :meth:`configure`, after :meth:`close`, or while
        a DTMF event is being transmitted (the frame's time still elapses).
        """
        if self._encode is None or self._transport is None:
            return False
        self._catch_up(self._loop.time())
        n = len(pcm)
        if self._dtmf_busy:
            self._ts = (self._ts + n) & _M32
            return False
        b1 = self.payload_type | (0x80 if self._marker else 0)  # type: ignore[operator]
        self._sendto(_pack_hdr(0x80, b1, self._seq, self._ts, self.ssrc) + self._encode(pcm))
        self._seq = (self._seq + 1) & 0xFFFF
        self._ts = (self._ts + n) & _M32
        self._marker = False
        return True

    def skip(self, frames: int = 1) -> None:
        """Let ``frames`` frames of silence elapse without sending RTP.

        Keeps the timestamp in step with real time and sets the marker bit on
        the next packet (start of a talkspurt), per RFC 3551 §4.1.
        """
        self._last_tx = self._loop.time()
        self._ts = (self._ts + frames * FRAME_SAMPLES) & _M32
        self._marker = True

    async def send_dtmf(self, digit: str, duration_ms: int = 100, volume: int = 10) -> None:
        """Send one RFC 4733 key press, paced at 20 ms, end packet three times.

        Audio frames passed to :meth:`send_audio` meanwhile are suppressed
        (their time still elapses) so the far end does not hear the in-band
        remains.  Concurrent calls are serialised.
        """
        if self.dtmf_payload_type is None:
            raise RuntimeError("telephone-event was not negotiated for this leg")
        async with self._dtmf_lock:
            if self._transport is None:
                raise RuntimeError("RTP endpoint is closed")
            self._catch_up(self._loop.time())
            start_ts = self._ts
            payloads = encode_events(digit, start_ts, duration_ms, volume)
            total = max(FRAME_SAMPLES, duration_ms * SAMPLES_PER_MS)
            t0 = self._loop.time()
            self._dtmf_busy = True
            try:
                for i, payload in enumerate(payloads):
                    if i:
                        await asyncio.sleep(FRAME_SECONDS)
                    b1 = self.dtmf_payload_type | (0x80 if i == 0 else 0)
                    self._sendto(_pack_hdr(0x80, b1, self._seq, start_ts, self.ssrc) + payload)
                    self._seq = (self._seq + 1) & 0xFFFF
            finally:
                self._dtmf_busy = False
                now = self._loop.time()
                elapsed = round((now - t0) / FRAME_SECONDS + 1) * FRAME_SAMPLES
                need = max(total, elapsed)
                if (self._ts - start_ts) & _M32 < need:
                    self._ts = (start_ts + need) & _M32
                self._last_tx = now
                self._marker = True

    async def send_digits(self, digits: str, duration_ms: int = 100, gap_ms: int = 60) -> None:
        """Dial a digit string with an inter-digit pause (outbound IVR navigation)."""
        for i, d in enumerate(digits):
            if i:
                await asyncio.sleep(gap_ms / 1000)
            await self.send_dtmf(d, duration_ms)

    def __repr__(self) -> str:
        return (f"<RtpEndpoint {self.local_host}:{self.local_port} -> {self._send_addr} "
                f"{self.codec}/{self.payload_type} in={self.packets_in} out={self.packets_out}>")
