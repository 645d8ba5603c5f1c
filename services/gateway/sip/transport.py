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
import logging
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from .framing import StreamFramer
from .message import SipRequest, SipResponse, parse_message
from .syntax import SipParseError

__all__ = [
    "Addr",
    "ErrorHandler",
    "MessageHandler",
    "TcpServer",
    "TcpTransport",
    "Transport",
    "UdpTransport",
]

log = logging.getLogger(__name__)

Addr = tuple[str, int]


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

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


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
        max_message: int = 1 << 20,
    ) -> None:
        self._on_message = on_message
        self._on_error = on_error
        self._on_close = on_close
        self._framer = StreamFramer(max_body=max_message)
        self._transport: asyncio.Transport | None = None
        self.local_addr: Addr = ("0.0.0.0", 0)
        self.peer_addr: Addr = ("0.0.0.0", 0)
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

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
    ) -> TcpServer:
        """Accept connections; each one delivers messages as its own Transport."""
        server = TcpServer()
        loop = asyncio.get_running_loop()

        def factory() -> TcpTransport:
            conn = cls(on_message, on_error, on_close=server._forget)
            server.connections.add(conn)
            return conn

        server._server = await loop.create_server(factory, host, port)
        sock = server._server.sockets[0].getsockname()
        server.local_addr = (sock[0], sock[1])
        return server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("sockname")
        peer = transport.get_extra_info("peername")
        self.local_addr = (sock[0], sock[1])
        self.peer_addr = (peer[0], peer[1])

    def data_received(self, data: bytes) -> None:
        try:
            messages = self._framer.feed(data)
        except SipParseError as exc:
            # The stream is out of sync: report (a 400 written now is still
            # flushed by close()) and drop the connection.
            _report(self._on_error, data, self.peer_addr, exc)
            self.close()
            return
        except Exception as exc:
            log.exception("unexpected framing failure")
            _report(self._on_error, data, self.peer_addr, exc)
            self.close()
            return
        for msg in messages:
            _deliver(self._on_message, self._on_error, msg, self, self.peer_addr, b"")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if self._on_close is not None:
            self._on_close(self)

    def send(self, data: bytes, addr: Addr) -> None:
        if self._transport is None or self._transport.is_closing():
            raise ConnectionError("TCP connection is closed")
        self._transport.write(data)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class TcpServer:
    """A TCP listener and the set of its live connections."""

    def __init__(self) -> None:
        self._server: asyncio.AbstractServer | None = None
        self.connections: set[TcpTransport] = set()
        self.local_addr: Addr = ("0.0.0.0", 0)

    def _forget(self, conn: TcpTransport) -> None:
        self.connections.discard(conn)

    async def close(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close()
        if self._server is not None:
            await self._server.wait_closed()
