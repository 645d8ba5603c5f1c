"""SIP transports (RFC 3261 18): UDP datagrams and TCP streams on asyncio.

The transaction layer talks to the :class:`Transport` protocol only, so tests
use an in-memory fake and production uses :class:`UdpTransport` or
:class:`TcpTransport`. Nothing arriving from the network may raise out of an
asyncio callback (that would kill the listener): garbage, oversized data and
parse errors go to ``on_error(data, addr, exc)`` so the gateway can answer
400 where it can, and exceptions from the message handler are logged.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from prometheus_client import Counter

from .framing import StreamFramer
from .message import SipRequest, SipResponse, parse_message
from .syntax import SipParseError

__all__ = [
    "Addr",
    "ErrorHandler",
    "MessageHandler",
    "TcpLimits",
    "TcpServer",
    "TcpTransport",
    "Transport",
    "UdpTransport",
]

log = logging.getLogger(__name__)

Addr = tuple[str, int]

RESPONSES = Counter(
    "hotline_sip_responses_total",
    "SIP responses sent and received, by status code",
    ["code", "direction"],
)


def _count_sent(data: bytes) -> None:
    """Counts a response by its status line: the serialised bytes are all a transport sees."""
    if data[:8] == b"SIP/2.0 " and data[8:11].isdigit():
        RESPONSES.labels(data[8:11].decode(), "sent").inc()


@runtime_checkable
class Transport(Protocol):
    """What the transaction layer needs from a transport."""

    reliable: bool
    local_addr: Addr
    name: str

    def send(self, data: bytes, addr: Addr) -> None:
        """Queue ``data`` for ``addr`` (ignored by connection-bound transports)."""
        ...


MessageHandler = Callable[["SipRequest | SipResponse", Transport, Addr], None]
ErrorHandler = Callable[[bytes, Addr, Exception], None]


def _report(on_error: ErrorHandler | None, data: bytes, addr: Addr, exc: Exception) -> None:
    if on_error is None:
        log.info("dropping bad SIP data from %s:%s: %s", addr[0], addr[1], exc)
        return
    try:
        on_error(data, addr, exc)
    except Exception:  # the error hook must not break the listener either
        log.exception("on_error callback failed for data from %s", addr)


def _deliver(
    on_message: MessageHandler,
    on_error: ErrorHandler | None,
    msg: SipRequest | SipResponse,
    transport: Transport,
    addr: Addr,
    raw: bytes,
) -> None:
    if isinstance(msg, SipResponse):
        RESPONSES.labels(str(msg.status), "received").inc()
    try:
        on_message(msg, transport, addr)
    except SipParseError as exc:  # e.g. a header the TU needed turned out malformed
        _report(on_error, raw, addr, exc)
    except Exception:
        log.exception("SIP message handler failed for message from %s", addr)


class UdpTransport(asyncio.DatagramProtocol):
    """Unreliable SIP over UDP: one datagram is one message (RFC 3261 18.3)."""

    reliable = False
    name = "UDP"

    def __init__(
        self,
        on_datagram: MessageHandler,
        on_error: ErrorHandler | None = None,
        max_datagram: int = 65507,
    ) -> None:
        self._on_datagram = on_datagram
        self._on_error = on_error
        self.max_datagram = max_datagram
        self._transport: asyncio.DatagramTransport | None = None
        self.local_addr: Addr = ("0.0.0.0", 0)
        self.keepalives = 0

    @classmethod
    async def listen(
        cls,
        host: str,
        port: int,
        on_datagram: MessageHandler,
        on_error: ErrorHandler | None = None,
        max_datagram: int = 65507,
    ) -> UdpTransport:
        """Bind a UDP socket and start delivering parsed messages."""
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_datagram_endpoint(
            lambda: cls(on_datagram, on_error, max_datagram), local_addr=(host, port)
        )
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("sockname")
        self.local_addr = (sock[0], sock[1])

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        peer: Addr = (addr[0], addr[1])
        if len(data) > self.max_datagram:
            _report(
                self._on_error,
                data,
                peer,
                SipParseError(f"datagram of {len(data)} bytes exceeds {self.max_datagram}"),
            )
            return
        if not data.strip(b"\r\n"):
            self.keepalives += 1  # RFC 5626 keepalive / stray CRLFs
            return
        try:
            msg = parse_message(data)
        except SipParseError as exc:
            _report(self._on_error, data, peer, exc)
            return
        except Exception as exc:  # parser bug: never take the socket down
            log.exception("unexpected parser failure")
            _report(self._on_error, data, peer, exc)
            return
        _deliver(self._on_datagram, self._on_error, msg, self, peer, data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable etc.; transactions time out on their own.
        log.debug("UDP error on %s: %s", self.local_addr, exc)

    def send(self, data: bytes, addr: Addr) -> None:
        if self._transport is None or self._transport.is_closing():
            raise ConnectionError("UDP transport is closed")
        self._transport.sendto(data, addr)
        _count_sent(data)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


@dataclass(frozen=True)
class TcpLimits:
    """What one TCP listener allows (docs/security.md). A peer gets `read_timeout_s` to finish
    a message it has started, a connection with no byte for `idle_timeout_s` is closed (phones
    on TCP send CRLF keepalives, RFC 5626), and so is any connection older than
    `max_lifetime_s` (the phone reconnects at its next request); at most `max_connections`
    at once, `max_per_source` from one IP address; a message (header section or body) over
    `max_message` bytes closes the connection, however the bytes arrive."""

    max_connections: int = 512
    max_per_source: int = 32
    read_timeout_s: float = 10.0
    idle_timeout_s: float = 300.0
    max_lifetime_s: float = 4 * 3600.0
    max_message: int = 65536

    def sweep_interval(self) -> float:
        shortest = min(self.read_timeout_s, self.idle_timeout_s, self.max_lifetime_s)
        return max(0.02, min(1.0, shortest / 4))


#: accept() errors that mean "out of descriptors/memory": back off and retry, never crash
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_RETRY_S = 0.5

TCP_CLOSED = Counter(
    "hotline_sip_tcp_closed_total", "SIP TCP connections closed by the gateway", ["reason"]
)
TCP_REFUSED = Counter(
    "hotline_sip_tcp_refused_total", "SIP TCP connections refused at accept", ["reason"]
)


class TcpTransport(asyncio.Protocol):
    """One SIP-over-TCP connection; itself a reliable Transport.

    Responses to requests received here go back over the same connection
    (RFC 3261 18.2.2), which is why each connection is its own Transport.
    """

    reliable = True
    name = "TCP"

    def __init__(
        self,
        on_message: MessageHandler,
        on_error: ErrorHandler | None = None,
        on_close: Callable[[TcpTransport], None] | None = None,
        max_message: int = 65536,
    ) -> None:
        self._on_message = on_message
        self._on_error = on_error
        self._on_close = on_close
        self._framer = StreamFramer(max_header=max_message, max_body=max_message)
        self._transport: asyncio.Transport | None = None
        self.local_addr: Addr = ("0.0.0.0", 0)
        self.peer_addr: Addr = ("0.0.0.0", 0)
        loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.opened_at = self.last_data_at = loop.time()
        #: when the bytes of a message still incomplete began (None: nothing pending)
        self.partial_since: float | None = None

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        on_message: MessageHandler,
        on_error: ErrorHandler | None = None,
    ) -> TcpTransport:
        """Open an outbound connection (e.g. to a carrier requiring TCP)."""
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(lambda: cls(on_message, on_error), host, port)
        return proto

    @classmethod
    async def listen(
        cls,
        host: str,
        port: int,
        on_message: MessageHandler,
        on_error: ErrorHandler | None = None,
        limits: TcpLimits | None = None,
    ) -> TcpServer:
        """Accept connections (within `limits`); each delivers messages as its own Transport."""
        limits = limits or TcpLimits()
        server = TcpServer(limits)

        def factory() -> TcpTransport:
            return cls(
                on_message, on_error, on_close=server._forget, max_message=limits.max_message
            )

        await server._listen(host, port, factory)
        return server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("sockname")
        peer = transport.get_extra_info("peername")
        self.local_addr = (sock[0], sock[1])
        self.peer_addr = (peer[0], peer[1])

    def data_received(self, data: bytes) -> None:
        now = asyncio.get_running_loop().time()
        self.last_data_at = now
        try:
            messages = self._framer.feed(data)
        except SipParseError as exc:
            # The stream is out of sync: report (a 400 written now is still
            # flushed by close()) and drop the connection.
            _report(self._on_error, data, self.peer_addr, exc)
            TCP_CLOSED.labels("bad_stream").inc()
            self.close()
            return
        except Exception as exc:
            log.exception("unexpected framing failure")
            _report(self._on_error, data, self.peer_addr, exc)
            self.close()
            return
        if self._framer.pending_message():
            if self.partial_since is None or messages:
                self.partial_since = now  # a new message began
        else:
            self.partial_since = None
        for msg in messages:
            _deliver(self._on_message, self._on_error, msg, self, self.peer_addr, b"")

    def expired(self, now: float, limits: TcpLimits) -> str | None:
        """Why this connection must be closed now, or None."""
        if self.partial_since is not None and now - self.partial_since >= limits.read_timeout_s:
            return "read_timeout"
        if now - self.last_data_at >= limits.idle_timeout_s:
            return "idle"
        if now - self.opened_at >= limits.max_lifetime_s:
            return "lifetime"
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if self._on_close is not None:
            self._on_close(self)

    def send(self, data: bytes, addr: Addr) -> None:
        if self._transport is None or self._transport.is_closing():
            raise ConnectionError("TCP connection is closed")
        self._transport.write(data)
        _count_sent(data)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


class TcpServer:
    """A TCP listener and the set of its live connections, within its `TcpLimits`.

    It runs its own accept loop so that it can refuse a connection over the limits at once
    (accept and close), and survive running out of file descriptors (EMFILE): it backs off,
    keeps the connections it has, and accepts again when descriptors are free. Trouble is
    logged when it starts and when it ends, not for every attempt.
    """

    def __init__(self, limits: TcpLimits | None = None) -> None:
        self.limits = limits or TcpLimits()
        self.connections: set[TcpTransport] = set()
        self.local_addr: Addr = ("0.0.0.0", 0)
        self._sock: socket.socket | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._per_source: dict[str, int] = {}
        self._trouble: str | None = None  # the accept problem being reported: its kind
        self._trouble_text = ""
        self._over_sources: set[str] = set()
        self.refused = 0

    async def _listen(self, host: str, port: int, factory: Callable[[], TcpTransport]) -> None:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, _, _, _, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        name = sock.getsockname()
        self.local_addr = (name[0], name[1])
        self._tasks = [
            asyncio.create_task(self._accept_loop(factory), name="sip-tcp-accept"),
            asyncio.create_task(self._sweep_loop(), name="sip-tcp-sweep"),
        ]

    def _state(self, trouble: str | None, text: str = "") -> None:
        """Log an accept problem once when it starts and once when it is over."""
        if trouble == self._trouble:
            return
        if trouble is None:
            log.warning(
                "SIP TCP on %s:%d accepting again (over: %s; %d connections refused meanwhile)",
                *self.local_addr,
                self._trouble_text,
                self.refused,
            )
        else:
            log.error("SIP TCP on %s:%d: %s", *self.local_addr, text)
        self._trouble, self._trouble_text = trouble, text

    async def _accept_loop(self, factory: Callable[[], TcpTransport]) -> None:
        loop = asyncio.get_running_loop()
        assert self._sock is not None
        while True:
            try:
                conn, addr = await loop.sock_accept(self._sock)
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRNOS:
                    TCP_REFUSED.labels("out_of_resources").inc()
                    self.refused += 1
                    self._state(
                        "out_of_resources",
                        f"cannot accept connections: {exc.strerror} (errno {exc.errno}); "
                        f"retrying every {ACCEPT_RETRY_S:g} s",
                    )
                    await asyncio.sleep(ACCEPT_RETRY_S)
                    continue
                log.warning("SIP TCP accept failed: %s", exc)
                await asyncio.sleep(ACCEPT_RETRY_S)
                continue
            source = str(addr[0])
            reason = self._over_limit(source)
            if reason is not None:
                TCP_REFUSED.labels(reason).inc()
                self.refused += 1
                conn.close()
                continue
            if self._trouble == "out_of_resources":
                self._state(None)
            self._over_sources.discard(source)
            conn.setblocking(False)
            try:
                _, proto = await loop.connect_accepted_socket(factory, conn)
            except OSError as exc:
                conn.close()
                log.warning("SIP TCP connection from %s could not be set up: %s", source, exc)
                continue
            self.connections.add(proto)
            self._per_source[source] = self._per_source.get(source, 0) + 1

    def _over_limit(self, source: str) -> str | None:
        """Why a new connection from `source` is refused (logged once per state), or None."""
        limits = self.limits
        if len(self.connections) >= limits.max_connections:
            self._state(
                "max_connections",
                f"{len(self.connections)} connections: the limit of {limits.max_connections} "
                "is reached; refusing new connections",
            )
            return "max_connections"
        if self._per_source.get(source, 0) >= limits.max_per_source:
            if source not in self._over_sources:
                self._over_sources.add(source)
                log.warning(
                    "SIP TCP: %s has %d connections, the limit per source; refusing more from it",
                    source,
                    limits.max_per_source,
                )
            return "max_per_source"
        return None

    async def _sweep_loop(self) -> None:
        """Close connections past their read timeout, idle timeout or lifetime."""
        loop = asyncio.get_running_loop()
        interval = self.limits.sweep_interval()
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for conn in list(self.connections):
                why = conn.expired(now, self.limits)
                if why is not None:
                    TCP_CLOSED.labels(why).inc()
                    log.debug("closing SIP TCP connection from %s:%d: %s", *conn.peer_addr, why)
                    if why == "read_timeout":
                        conn.abort()  # a peer drip-feeding bytes gets no graceful close
                    else:
                        conn.close()
                    self._forget(conn)

    def _forget(self, conn: TcpTransport) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            source = conn.peer_addr[0]
            left = self._per_source.get(source, 0) - 1
            if left > 0:
                self._per_source[source] = left
            else:
                self._per_source.pop(source, None)
            if self._trouble == "max_connections":
                self._state(None)

    async def close(self) -> None:
        """Stop listening and close every connection."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._sock is not None:
            self._sock.close()
        for conn in list(self.connections):
            conn.close()
