"""One RTP leg on an asyncio UDP socket, and the RTP port allocator.

:class:`RtpEndpoint` is a thin asyncio ``DatagramProtocol`` around a
:class:`~.session.RtpSession`: it owns the socket and its port, stamps every
datagram with the event loop's time and hands it to the session, delivers what
comes back to ``on_audio``/``on_dtmf``, and sends the packets the session
builds.  All RTP rules (latching, talkspurts, DTMF timing, counters) live in
the session, which has no I/O and is tested without sockets.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from operator import attrgetter
from typing import Any, Self

import numpy as np

from .audio import FRAME_SECONDS
from .session import CN_PAYLOAD_TYPE, Address, RtpSession

__all__ = ["CN_PAYLOAD_TYPE", "NoFreePort", "PortAllocator", "RtpEndpoint"]

log = logging.getLogger(__name__)


class NoFreePort(RuntimeError):
    """Every RTP port in the allocator's range is in use."""


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class PortAllocator:
    """Hands out even UDP ports (RTP convention, RTCP would be port + 1).

    Ports are handed out round-robin, so a port released by a finished call is reused as
    late as possible, and a port is free again the moment its call ends: the allocator keeps
    the last peer (address, SSRC) each port had, and the next session on the port drops that
    peer's stray packets (:attr:`RtpSession.previous`) rather than latching onto them.
    """

    def __init__(self, low: int = 20000, high: int = 20999) -> None:
        if not 0 < low <= high <= 65535:
            raise ValueError(f"invalid port range {low}-{high}")
        self.low, self.high = low, high
        self._ports = range(low + (low & 1), high + 1, 2)
        if not self._ports:
            raise ValueError(f"no even port in range {low}-{high}")
        self._in_use: set[int] = set()
        self._previous: dict[int, tuple[Address, int]] = {}
        self._cursor = 0

    def allocate_socket(self, host: str = "0.0.0.0") -> socket.socket:
        """Bind a non-blocking UDP socket on the next free even port."""
        n = len(self._ports)
        for _ in range(n):
            port = self._ports[self._cursor]
            self._cursor = (self._cursor + 1) % n
            if port in self._in_use:
                continue
            try:
                sock = socket.socket(_family(host), socket.SOCK_DGRAM)
            except OSError as exc:  # out of descriptors (EMFILE) or memory: no port now
                raise NoFreePort(f"cannot open an RTP socket: {exc.strerror or exc}") from exc
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
        port: int = sock.getsockname()[1]
        sock.close()
        return port

    def release(self, port: int, previous: tuple[Address, int] | None = None) -> None:
        """Return a port to the pool (unknown ports are ignored), with the peer (address,
        SSRC) it last received from, whose strays the port's next session will drop."""
        self._in_use.discard(port)
        if previous is None:
            self._previous.pop(port, None)
        else:
            self._previous[port] = previous

    def previous(self, port: int) -> tuple[Address, int] | None:
        """The peer the port's last call received from (None: unknown or none)."""
        return self._previous.get(port)

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    @property
    def capacity(self) -> int:
        return len(self._ports)


def _session_attr(name: str, doc: str) -> Any:
    """A read-only property forwarding to ``self.session.<name>``."""
    return property(attrgetter(f"_session.{name}"), doc=doc)


class RtpEndpoint(asyncio.DatagramProtocol):
    """One bidirectional RTP stream of G.711 audio plus RFC 4733 events.

    Set ``on_audio(pcm)`` to receive decoded 160-sample int16 frames and
    ``on_dtmf(digit)`` for key presses.  Nothing is sent or delivered until
    :meth:`configure` has been called with the negotiated SDP parameters.
    The RTP state is in :attr:`session`; its counters, stats and negotiated
    parameters are readable here too.
    """

    def __init__(
        self,
        allocator: PortAllocator | None,
        local_host: str,
        local_port: int,
        session: RtpSession | None = None,
    ) -> None:
        self.local_host = local_host
        self.local_port = local_port
        self._session = session if session is not None else RtpSession()
        self._allocator = allocator
        self._loop = asyncio.get_running_loop()
        self._time = self._loop.time
        self._receive = self._session.receive_datagram
        self._transport: asyncio.DatagramTransport | None = None
        self._closed = False
        self._dtmf_lock = asyncio.Lock()

        self.on_audio: Callable[[np.ndarray], None] | None = None
        self.on_dtmf: Callable[[str], None] | None = None

        # Counters of the socket side (the RTP ones are the session's).
        self.send_errors = 0  # errors the socket reported (ICMP unreachable etc.)
        self.callback_errors = 0  # exceptions raised by on_audio/on_dtmf

    # -- lifecycle -------------------------------------------------------------

    @classmethod
    async def open(cls, host: str, allocator: PortAllocator) -> Self:
        """Bind a UDP socket on a free even port of ``allocator``."""
        loop = asyncio.get_running_loop()
        sock = allocator.allocate_socket(host)
        port = sock.getsockname()[1]
        try:
            ep = cls(allocator, host, port)
            ep.session.previous = allocator.previous(port)
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
            self._allocator.release(self.local_port, self._session.peer)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def session(self) -> RtpSession:
        """The RTP state of this leg (fixed for the endpoint's life)."""
        return self._session

    # -- negotiation -----------------------------------------------------------

    def configure(
        self,
        remote: tuple[str, int],
        codec: str,
        payload_type: int,
        dtmf_payload_type: int | None = None,
    ) -> None:
        """Apply (re-)negotiated SDP; see :meth:`RtpSession.configure`."""
        self._session.configure(remote, codec, payload_type, dtmf_payload_type)

    remote = _session_attr(
        "remote", "Where audio is sent: the latched source if any, else the SDP address."
    )
    latched = _session_attr("latched", "The peer's actual source address, once latched.")
    codec = _session_attr("codec", "Negotiated codec name (PCMU/PCMA), None before configure().")
    payload_type = _session_attr("payload_type", "Negotiated audio payload type.")
    dtmf_payload_type = _session_attr("dtmf_payload_type", "telephone-event PT, if negotiated.")
    ssrc = _session_attr("ssrc", "Our SSRC.")
    stats = _session_attr("stats", "Reception statistics (RtpStats).")
    dtmf = _session_attr("dtmf", "The RFC 4733 receiver (DtmfReceiver).")
    packets_in = _session_attr("packets_in", "Datagrams received.")
    bytes_in = _session_attr("bytes_in", "Bytes received.")
    packets_out = _session_attr("packets_out", "RTP packets sent.")
    bytes_out = _session_attr("bytes_out", "Bytes sent.")
    malformed = _session_attr("malformed", "Datagrams that were not RTP.")
    unknown_pt = _session_attr("unknown_pt", "Packets of a payload type we do not take.")
    wrong_source = _session_attr("wrong_source", "Packets from other than the latched peer.")
    not_ready = _session_attr("not_ready", "Packets before configure().")
    stale = _session_attr("stale", "Strays of the port's previous call, dropped.")
    late = _session_attr("late", "Duplicate or overtaken audio packets, dropped.")
    cn_packets = _session_attr("cn_packets", "Comfort-noise packets (ignored).")
    payload_types_in = _session_attr("payload_types_in", "Packets per payload type.")

    # -- asyncio protocol ------------------------------------------------------

    def _open_transport(self) -> asyncio.DatagramTransport | None:
        """The socket's transport now (None once closed): re-read after every await."""
        return self._transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable etc.: normal while the peer is not listening yet.
        self.send_errors += 1
        log.debug("RTP port %s: %s", self.local_port, exc)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        frames, digit = self._receive(data, addr, self._time())
        if frames:
            cb = self.on_audio
            if cb is not None:
                for pcm in frames:
                    try:
                        cb(pcm)
                    except Exception:  # a consumer bug must not kill the socket
                        self._callback_failed(cb)
        elif digit is not None:
            cb_dtmf = self.on_dtmf
            if cb_dtmf is not None:
                try:
                    cb_dtmf(digit)
                except Exception:
                    self._callback_failed(cb_dtmf)

    def _callback_failed(self, cb: Callable[[Any], None]) -> None:
        self.callback_errors += 1
        log.exception("RTP port %s: callback %r failed", self.local_port, cb)

    # -- sending ---------------------------------------------------------------

    def send_audio(self, pcm: np.ndarray) -> bool:
        """Encode and send one frame (normally 160 samples); False if not sent.

        Nothing is sent before :meth:`configure`, after :meth:`close`, or while
        a DTMF event is being transmitted (the frame's time still elapses).
        """
        transport = self._transport
        if transport is None:
            return False
        session = self._session
        data = session.send_audio(pcm, self._time())
        if data is None:
            return False
        transport.sendto(data, session.remote)
        return True

    def skip(self, frames: int = 1) -> None:
        """Let ``frames`` frames of silence elapse without sending RTP.

        Keeps the timestamp in step with real time and sets the marker bit on
        the next packet (start of a talkspurt), per RFC 3551 §4.1.
        """
        self._session.skip(frames, self._time())

    async def send_dtmf(self, digit: str, duration_ms: int = 100, volume: int = 10) -> None:
        """Send one RFC 4733 key press, paced at 20 ms, end packet three times.

        Audio frames passed to :meth:`send_audio` meanwhile are suppressed
        (their time still elapses) so the far end does not hear the in-band
        remains.  Concurrent calls are serialised.
        """
        session = self._session
        if session.dtmf_payload_type is None:
            raise RuntimeError("telephone-event was not negotiated for this leg")
        async with self._dtmf_lock:
            if self._transport is None:
                raise RuntimeError("RTP endpoint is closed")
            n = session.start_dtmf(digit, self._loop.time(), duration_ms, volume)
            try:
                for i in range(n):
                    if i:
                        await asyncio.sleep(FRAME_SECONDS)
                    transport = self._open_transport()
                    if transport is None:  # closed meanwhile: the event's time still runs
                        continue
                    data = session.next_dtmf()
                    if data is not None:
                        transport.sendto(data, session.remote)
            finally:
                session.end_dtmf(self._loop.time())

    async def send_digits(self, digits: str, duration_ms: int = 100, gap_ms: int = 60) -> None:
        """Dial a digit string with an inter-digit pause (outbound IVR navigation)."""
        for i, d in enumerate(digits):
            if i:
                await asyncio.sleep(gap_ms / 1000)
            await self.send_dtmf(d, duration_ms)

    def __repr__(self) -> str:
        s = self._session
        return (
            f"<RtpEndpoint {self.local_host}:{self.local_port} -> {s.remote} "
            f"{s.codec}/{s.payload_type} in={s.packets_in} out={s.packets_out}>"
        )
