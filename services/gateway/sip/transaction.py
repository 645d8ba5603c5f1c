"""RFC 3261 section 17 transactions, sans I/O: state machines on an explicit clock.

The four state machines (client/server x INVITE/non-INVITE) and the UA core's 2xx
retransmission never read a clock and never schedule anything. Every input carries the
current time (``start(now)``, ``receive_request(req, now)``, ``receive_response(resp, addr,
now)``, ``respond(resp, now)``, ``handle_timer(now)``) and each machine says when it next
needs the clock with ``get_timer()``: an absolute deadline on the caller's clock, or None.
Timers are plain deadlines, so a test steps time by calling ``handle_timer`` at the
deadline ``get_timer`` reports: no sleeping, no event loop, exact RFC timer arithmetic.

What the machines produce:

* bytes to send, handed at once to the ``Transport`` the transaction was created with
  (``send`` only queues, and a failure comes back as an exception, which is how the
  transport errors of 17.1.4/17.2.4 become inputs: 503 for a client, logged for a server);
* events for the TU, read with :meth:`TransactionTable.next_event`:
  :class:`RequestReceived`, :class:`ResponseReceived`, :class:`StrayResponse`,
  :class:`TransactionTerminated`.

:class:`TransactionTable` routes messages to transactions and creates them (17.1.3,
17.2.3) and aggregates their deadlines: its ``get_timer()`` is the earliest of them all and
its ``handle_timer(now)`` fires the machines that are due, so whoever drives it needs one
timer. :mod:`gateway.sip.transaction_asyncio` is that driver on asyncio.

Two deliberate refinements from later RFCs, because plain RFC 3261 behaviour is known to be
broken:

* RFC 6026: after a 2xx the server INVITE transaction stops responding (the UA core
  retransmits the 2xx with :class:`OkRetransmission`) but lingers in "Accepted" for 64*T1
  so a retransmitted INVITE is absorbed instead of being handed to the TU as a new call.
* RFC 3581: rport/received handling in :func:`stamp_received` and
  :func:`response_destination` so responses traverse NAT.

Transactions leave the table the moment they terminate, so memory is bounded by the
traffic of the last 64*T1 seconds. A server transaction that has sent its final response and
waits out Timer L, G/H, I or J keeps only the wire bytes of its request and of that response
(all that absorbing retransmissions needs); ``request`` and ``last_response`` still answer,
parsed again from those bytes.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from .builders import build_ack, make_response, new_tag
from .message import SipRequest, SipResponse, parse_message
from .uri import NameAddr
from .via import MAGIC_COOKIE, Via, same_ip

if TYPE_CHECKING:
    from .transport import Addr, Transport

__all__ = [
    "ACCEPTED",
    "CALLING",
    "COMPLETED",
    "CONFIRMED",
    "PROCEEDING",
    "TERMINATED",
    "TRYING",
    "ClientTransactionBase",
    "Event",
    "InviteClientTransaction",
    "InviteServerTransaction",
    "NonInviteClientTransaction",
    "NonInviteServerTransaction",
    "OkRetransmission",
    "RequestReceived",
    "ResponseReceived",
    "ServerTransactionBase",
    "StrayResponse",
    "Timers",
    "TransactionError",
    "TransactionTable",
    "TransactionTerminated",
    "response_destination",
    "stamp_received",
]

log = logging.getLogger(__name__)

#: How a transaction is found again (RFC 3261 17.1.3 / 17.2.3): branch and method, sent-by...
TxKey = tuple[object, ...]

# States (RFC 3261 figures 5-8, RFC 6026 "Accepted").
CALLING = "calling"
TRYING = "trying"
PROCEEDING = "proceeding"
COMPLETED = "completed"
CONFIRMED = "confirmed"
ACCEPTED = "accepted"
TERMINATED = "terminated"


@dataclass
class Timers:
    """RFC 3261 timer base values (17.1.1.1 table 4); tests shrink them.

    ``d`` is Timer D for unreliable transports (">32 s", not derived from T1
    in the RFC) and ``trying`` the 200 ms after which a server INVITE
    transaction answers 100 Trying on the TU's behalf (17.2.1).
    ``invite_guard`` bounds how long an INVITE may wait for the TU's final
    response before the transaction answers 408 itself (a memory safety net,
    like a proxy's Timer C).
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    d: float = 32.0
    trying: float = 0.2
    invite_guard: float = 600.0

    @property
    def b(self) -> float:
        """Timers B, F, H, J, L: 64*T1."""
        return 64 * self.t1


class TransactionError(RuntimeError):
    """The TU used a transaction in a way its state machine forbids."""


def _default_port(via: Via) -> int:
    return 5061 if via.transport in ("TLS", "WSS") else 5060


def stamp_received(req: SipRequest, source_addr: Addr) -> None:
    """Record the packet source in the top Via (RFC 3261 18.2.1, RFC 3581 4).

    Adds ``received`` when the sent-by host is a name or a different IP; when
    the client asked for ``rport``, fills in the source port and (as RFC 3581
    requires) always sets ``received``.
    """
    values = req.headers.get_all("Via")
    if not values:
        return
    via = Via.parse(values[0])
    ip, port = source_addr[0], source_addr[1]
    if via.has_rport:
        via.params["received"] = ip
        via.params["rport"] = str(port)
    elif not same_ip(via.host, ip):
        via.params["received"] = ip
    else:
        return
    req.headers.set_first("Via", str(via))


def response_destination(via: Via, source_addr: Addr | None = None) -> Addr:
    """Where to send a response over an unreliable transport (18.2.2, RFC 3581).

    maddr wins (multicast), then ``received``, then the sent-by host; the
    port is ``rport`` when present (the source port if not stamped yet), else
    the sent-by port or the transport default.
    """
    maddr = via.params.get("maddr")
    host = maddr or via.received or via.host_ip
    if maddr is None and via.rport is not None:
        port = via.rport
    elif maddr is None and via.has_rport and source_addr is not None:
        port = source_addr[1]
        if via.received is None:
            host = source_addr[0]
    else:
        port = via.port or _default_port(via)
    return host, port


# ---------------------------------------------------------------------------
# Events for the TU


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A request for the TU: a new one with its server transaction, or (``transaction``
    None) an ACK matching no transaction, i.e. the ACK of a 2xx (17.2.3, RFC 6026)."""

    request: SipRequest
    transaction: ServerTransactionBase | None


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response for a client transaction's TU: provisional, or the final one (received,
    or synthesized: 408 when Timer B/F fired or on abandon, 503 on a transport error)."""

    transaction: ClientTransactionBase
    response: SipResponse


@dataclass(frozen=True, slots=True)
class StrayResponse:
    """A response matching no client transaction, e.g. a retransmitted 2xx to an INVITE."""

    response: SipResponse
    addr: Addr


@dataclass(frozen=True, slots=True)
class TransactionTerminated:
    """The transaction reached Terminated; a server one has ``timed_out`` set if Timer H
    fired (no ACK for its non-2xx final), which the UA treats as a failed call leg."""

    transaction: ServerTransactionBase | ClientTransactionBase


Event = RequestReceived | ResponseReceived | StrayResponse | TransactionTerminated


# ---------------------------------------------------------------------------
# Deadlines


class _Timed:
    """Named deadlines on the caller's clock: the base of every state machine here.

    ``watcher`` is told whenever :meth:`get_timer` changes or the machine terminates
    (the table keeps its own index of deadlines up to date that way).
    """

    def __init__(self, watcher: Callable[[_Timed], None] | None = None) -> None:
        self._deadlines: dict[str, tuple[float, Callable[[float], None]]] = {}
        self._next: float | None = None
        self._watcher = watcher
        self._queued: float | None = None  # the deadline a table has indexed for us

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called (absolute time), None if never."""
        return self._next

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now``, earliest first (calling early is harmless)."""
        fired: set[str] = set()
        while True:
            name: str | None = None
            earliest = now
            for n, (at, _) in self._deadlines.items():
                if at <= now and n not in fired and (name is None or at < earliest):
                    name, earliest = n, at
            if name is None:
                break
            _, callback = self._deadlines.pop(name)
            fired.add(name)
            try:
                callback(now)
            except Exception:
                log.exception("timer %s failed", name)
        self._update()

    def _set(self, name: str, at: float, callback: Callable[[float], None]) -> None:
        self._deadlines[name] = (at, callback)
        self._update()

    def _cancel(self, *names: str) -> None:
        for name in names:
            self._deadlines.pop(name, None)
        self._update()

    def _update(self) -> None:
        nxt = min((at for at, _ in self._deadlines.values()), default=None)
        if nxt != self._next:
            self._next = nxt
            if self._watcher is not None:
                self._watcher(self)


class _Transaction(_Timed):
    """State, events and termination, common to the four transaction machines.

    ``events`` is where TU events go (the table passes its own queue); ``key`` is the
    table's matching key.
    """

    is_invite = False

    def __init__(
        self,
        timers: Timers,
        request: SipRequest,
        transport: Transport,
        *,
        key: TxKey,
        events: deque[Event] | None,
        watcher: Callable[[_Timed], None] | None,
    ) -> None:
        super().__init__(watcher)
        self.timers = timers
        self._request: SipRequest | None = request
        self.transport = transport
        self.key = key
        self.state = TRYING
        self.timed_out = False
        self.transport_error: Exception | None = None
        self.events: deque[Event] = events if events is not None else deque()

    @property
    def request(self) -> SipRequest:
        """The request that created the transaction."""
        assert self._request is not None
        return self._request

    def start(self, now: float) -> None:  # pragma: no cover - overridden
        """Begin (arm the first timers, send the request); called once, by the creator."""
        raise NotImplementedError

    def _expire(self, now: float) -> None:
        self._terminate()

    def _terminate(self) -> None:
        if self.state == TERMINATED:
            return
        self.state = TERMINATED
        self._deadlines.clear()
        self._next = None
        done = cast("ServerTransactionBase | ClientTransactionBase", self)
        self.events.append(TransactionTerminated(done))
        if self._watcher is not None:
            self._watcher(self)


# ---------------------------------------------------------------------------
# Server transactions (17.2)


class ServerTransactionBase(_Transaction):
    """What both server transactions share; the TU answers with :meth:`respond`."""

    def __init__(
        self,
        timers: Timers,
        request: SipRequest,
        transport: Transport,
        source_addr: Addr,
        *,
        key: TxKey = (),
        events: deque[Event] | None = None,
        watcher: Callable[[_Timed], None] | None = None,
    ) -> None:
        super().__init__(timers, request, transport, key=key, events=events, watcher=watcher)
        self.source_addr = source_addr
        self.method = request.method
        self._last_response: SipResponse | None = None
        self.response_addr: Addr = (
            source_addr
            if transport.reliable
            else response_destination(request.top_via, source_addr)
        )
        self._last_bytes: bytes | None = None
        self._request_bytes: bytes | None = None  # once settled (see _settle)

    @property
    def request(self) -> SipRequest:
        """The request that created the transaction (parsed again from its wire bytes once
        the transaction has settled after its final response)."""
        if self._request is not None:
            return self._request
        assert self._request_bytes is not None
        req = parse_message(self._request_bytes)
        assert isinstance(req, SipRequest)
        return req

    @property
    def last_response(self) -> SipResponse | None:
        """The last response sent (parsed again from its wire bytes once settled)."""
        if self._last_response is not None or self._last_bytes is None:
            return self._last_response
        resp = parse_message(self._last_bytes)
        assert isinstance(resp, SipResponse)
        return resp

    def _settle(self) -> None:
        """The final response is sent and the transaction only absorbs retransmissions from
        now on (Timer L, G/H, I, J): keep the request's and the response's wire bytes and
        drop the parsed messages, a few KB per call while they wait out 64*T1."""
        if self.state == TERMINATED:
            return
        if self._request is not None:
            self._request_bytes = self._request.to_bytes()
            self._request = None
        self._last_response = None

    @property
    def can_respond(self) -> bool:
        """True while a final response is still allowed."""
        return self.state in (TRYING, PROCEEDING)

    def respond(self, resp: SipResponse, now: float) -> None:  # pragma: no cover - overridden
        """Send a response and advance the state machine; TransactionError if not allowed."""
        raise NotImplementedError

    def receive_request(self, req: SipRequest, now: float) -> None:  # pragma: no cover
        """A request matching this transaction: a retransmission, or the ACK of a non-2xx."""
        raise NotImplementedError

    def local_tag(self) -> str:
        """The To tag already sent in a response of ours, else a fresh one."""
        if self.last_response is not None:
            tag = self.last_response.to.tag
            if tag:
                return tag
        return new_tag()

    def respond_error(self, status: int, now: float, reason: str | None = None) -> None:
        """Final error response on the TU's behalf, keeping any To tag already used."""
        self.respond(make_response(self.request, status, reason, to_tag=self.local_tag()), now)

    def _send(self, resp: SipResponse) -> None:
        self._last_response = resp
        self._last_bytes = resp.to_bytes()
        self._transmit(self._last_bytes)

    def _transmit(self, data: bytes) -> None:
        try:
            self.transport.send(data, self.response_addr)
        except (OSError, ConnectionError) as exc:  # 17.2.4: report, do not crash the TU
            self.transport_error = exc
            log.warning("failed to send response to %s: %s", self.response_addr, exc)

    def _refuse(self, status: int) -> TransactionError:
        return TransactionError(
            f"cannot send {status} in state {self.state} of {self.method} transaction"
        )


class InviteServerTransaction(ServerTransactionBase):
    """Server INVITE transaction (17.2.1, figure 7) with the RFC 6026 Accepted state.

    Answers 100 Trying itself if the TU has not responded within ``Timers.trying``;
    retransmits a non-2xx final with Timer G until the ACK (or Timer H); after a 2xx
    absorbs retransmitted INVITEs for Timer L and passes the 2xx's ACK to the TU.
    """

    is_invite = True

    def __init__(
        self,
        timers: Timers,
        request: SipRequest,
        transport: Transport,
        source_addr: Addr,
        *,
        key: TxKey = (),
        events: deque[Event] | None = None,
        watcher: Callable[[_Timed], None] | None = None,
    ) -> None:
        super().__init__(
            timers, request, transport, source_addr, key=key, events=events, watcher=watcher
        )
        self.state = PROCEEDING
        self._g_interval = 0.0

    def start(self, now: float) -> None:
        self._set("trying", now + self.timers.trying, self._auto_trying)
        self._set("guard", now + self.timers.invite_guard, self._invite_guard)

    def _auto_trying(self, now: float) -> None:
        if self.state == PROCEEDING and self._last_bytes is None:
            self._send(make_response(self.request, 100))

    def _invite_guard(self, now: float) -> None:
        if self.state == PROCEEDING:
            log.warning("TU left INVITE %s unanswered; answering 408", self.request.call_id)
            self.respond_error(408, now)

    def respond(self, resp: SipResponse, now: float) -> None:
        status = resp.status
        t = self.timers
        if self.state == PROCEEDING:
            self._cancel("trying")
            self._send(resp)
            if status < 200:
                return
            self._cancel("guard")
            if status < 300:
                self.state = ACCEPTED
                self._set("L", now + t.b, self._expire)
                self._settle()
                return
            self.state = COMPLETED
            if not self.transport.reliable:
                self._g_interval = t.t1
                self._set("G", now + t.t1, self._timer_g)
            self._set("H", now + t.b, self._timer_h)
            self._settle()
            return
        if self.state == ACCEPTED and 200 <= status < 300:
            self._send(resp)  # RFC 6026 7.1: further 2xx pass straight through
            self._settle()
            return
        raise self._refuse(status)

    def _timer_g(self, now: float) -> None:
        if self.state != COMPLETED or self._last_bytes is None:
            return
        self._transmit(self._last_bytes)
        self._g_interval = min(self._g_interval * 2, self.timers.t2)
        self._set("G", now + self._g_interval, self._timer_g)

    def _timer_h(self, now: float) -> None:
        if self.state == COMPLETED:
            self.timed_out = True
            self._terminate()

    def receive_request(self, req: SipRequest, now: float) -> None:
        if req.method == "ACK":
            if self.state == COMPLETED:
                self.state = CONFIRMED
                self._cancel("G", "H")
                if self.transport.reliable:
                    self._terminate()
                else:
                    self._set("I", now + self.timers.t4, self._expire)
            elif self.state == ACCEPTED:
                self.events.append(RequestReceived(req, None))  # RFC 6026: the 2xx's ACK
            return
        if self.state in (PROCEEDING, COMPLETED):
            if self._last_bytes is not None:
                self._transmit(self._last_bytes)
            else:
                self._send(make_response(self.request, 100))


class NonInviteServerTransaction(ServerTransactionBase):
    """Server non-INVITE transaction (17.2.2, figure 8).

    A TU that never answers is dropped after 64*T1 (the client has given up by then:
    Timer F), so it cannot pin memory; that is a safety net, not an RFC timer.
    """

    def start(self, now: float) -> None:
        self._set("tu", now + self.timers.b, self._tu_silent)

    def _tu_silent(self, now: float) -> None:
        if self.state in (TRYING, PROCEEDING):
            log.warning(
                "TU never answered %s %s; dropping transaction", self.method, self.request.call_id
            )
            self._terminate()

    def respond(self, resp: SipResponse, now: float) -> None:
        status = resp.status
        if self.state not in (TRYING, PROCEEDING):
            raise self._refuse(status)
        self._cancel("tu")
        self._send(resp)
        if status < 200:
            self.state = PROCEEDING
            self._set("tu", now + self.timers.b, self._tu_silent)
            return
        self.state = COMPLETED
        if self.transport.reliable:
            self._terminate()
        else:
            self._set("J", now + self.timers.b, self._expire)
            self._settle()

    def receive_request(self, req: SipRequest, now: float) -> None:
        if req.method == "ACK":
            return
        if self.state in (PROCEEDING, COMPLETED) and self._last_bytes is not None:
            self._transmit(self._last_bytes)


# ---------------------------------------------------------------------------
# Client transactions (17.1)


class ClientTransactionBase(_Transaction):
    """What both client transactions share. Responses reach the TU as
    :class:`ResponseReceived` events; exactly one of them is final."""

    def __init__(
        self,
        timers: Timers,
        request: SipRequest,
        transport: Transport,
        addr: Addr,
        *,
        key: TxKey = (),
        events: deque[Event] | None = None,
        watcher: Callable[[_Timed], None] | None = None,
    ) -> None:
        super().__init__(timers, request, transport, key=key, events=events, watcher=watcher)
        self.addr = addr
        self.ack: SipRequest | None = None
        self.final_response: SipResponse | None = None
        self.events: deque[Event] = events if events is not None else deque()
        self._data = request.to_bytes()
        self._interval = 0.0

    def start(self, now: float) -> None:
        """Send the request and arm the timers; a transport error ends it with 503 at once."""
        if not self._transmit(self._data):
            self._deliver(make_response(self.request, 503, "Service Unavailable (transport error)"))
            self._terminate()
            return
        self._arm(now)

    def receive_response(
        self, resp: SipResponse, addr: Addr, now: float
    ) -> None:  # pragma: no cover
        """A response whose branch and CSeq method match this transaction."""
        raise NotImplementedError

    def abandon(self) -> None:
        """Give up waiting (RFC 3261 9.1: no final 64*T1 after CANCEL): synthesize 408."""
        if self.final_response is None:
            self.timed_out = True
            self._deliver(make_response(self.request, 408))
        self._terminate()

    def _arm(self, now: float) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _transmit(self, data: bytes) -> bool:
        try:
            self.transport.send(data, self.addr)
            return True
        except (OSError, ConnectionError) as exc:
            self.transport_error = exc
            log.warning("failed to send request to %s: %s", self.addr, exc)
            return False

    def _deliver(self, resp: SipResponse) -> None:
        if resp.status >= 200:
            self.final_response = resp
        self.events.append(ResponseReceived(self, resp))

    def _time_out(self, now: float) -> None:
        """Timer B / F: no final response in 64*T1."""
        if self.state in (CALLING, TRYING, PROCEEDING):
            self.timed_out = True
            self._deliver(make_response(self.request, 408))
            self._terminate()


class InviteClientTransaction(ClientTransactionBase):
    """Client INVITE transaction (17.1.1, figure 5).

    Timer A retransmits (doubling, no T2 cap) until a response; Timer B gives 408 in
    Calling only: a provisional stops both, and the TU ends a stuck Proceeding with
    :meth:`abandon`. A non-2xx final is ACKed here (17.1.1.3), also when retransmitted,
    until Timer D; a 2xx ends the transaction, its ACK is the UA core's.
    """

    is_invite = True

    def __init__(
        self,
        timers: Timers,
        request: SipRequest,
        transport: Transport,
        addr: Addr,
        *,
        key: TxKey = (),
        events: deque[Event] | None = None,
        watcher: Callable[[_Timed], None] | None = None,
    ) -> None:
        super().__init__(timers, request, transport, addr, key=key, events=events, watcher=watcher)
        self.state = CALLING
        self._ack_bytes: bytes | None = None

    def _arm(self, now: float) -> None:
        t = self.timers
        if not self.transport.reliable:
            self._interval = t.t1
            self._set("A", now + t.t1, self._timer_a)
        self._set("B", now + t.b, self._time_out)

    def _timer_a(self, now: float) -> None:
        if self.state != CALLING:
            return
        self._transmit(self._data)
        self._interval *= 2  # Timer A doubles without the T2 cap
        self._set("A", now + self._interval, self._timer_a)

    def receive_response(self, resp: SipResponse, addr: Addr, now: float) -> None:
        status = resp.status
        if self.state in (CALLING, PROCEEDING):
            if status < 200:
                self.state = PROCEEDING
                self._cancel("A", "B")
                self._deliver(resp)
                return
            if status < 300:
                self._deliver(resp)
                self._terminate()
                return
            self.ack = build_ack(self.request, resp)
            self._ack_bytes = self.ack.to_bytes()
            self._transmit(self._ack_bytes)
            self._deliver(resp)
            self.state = COMPLETED
            self._cancel("A", "B")
            if self.transport.reliable:
                self._terminate()
            else:
                self._set("D", now + self.timers.d, self._expire)
            return
        if self.state == COMPLETED and status >= 300 and self._ack_bytes is not None:
            self._transmit(self._ack_bytes)  # final retransmitted: our ACK was lost
            return
        self.events.append(StrayResponse(resp, addr))


class NonInviteClientTransaction(ClientTransactionBase):
    """Client non-INVITE transaction (17.1.2, figure 6).

    Timer E retransmits, doubling up to T2 (at T2 once Proceeding); Timer F gives 408;
    retransmitted finals are absorbed for Timer K.
    """

    def _arm(self, now: float) -> None:
        t = self.timers
        if not self.transport.reliable:
            self._interval = t.t1
            self._set("E", now + t.t1, self._timer_e)
        self._set("F", now + t.b, self._time_out)

    def _timer_e(self, now: float) -> None:
        if self.state not in (TRYING, PROCEEDING):
            return
        self._transmit(self._data)
        t = self.timers
        self._interval = min(self._interval * 2, t.t2) if self.state == TRYING else t.t2
        self._set("E", now + self._interval, self._timer_e)

    def receive_response(self, resp: SipResponse, addr: Addr, now: float) -> None:
        if self.state not in (TRYING, PROCEEDING):
            return  # Completed: retransmitted finals are absorbed (Timer K window)
        if resp.status < 200:
            self.state = PROCEEDING
            self._deliver(resp)
            return
        self._deliver(resp)
        self.state = COMPLETED
        self._cancel("E", "F")
        if self.transport.reliable:
            self._terminate()
        else:
            self._set("K", now + self.timers.t4, self._expire)


# ---------------------------------------------------------------------------
# UA core: 2xx retransmission


class OkRetransmission(_Timed):
    """UA-core 2xx retransmission for INVITE (RFC 3261 13.3.1.4).

    The transaction sends the first 2xx; this resends it at T1, 2*T1 ... capped
    at T2 until :meth:`ack_received`, and after 64*T1 without ACK stops and sets
    ``timed_out`` (the UA then sends BYE). Runs on every transport: 2xx
    reliability is end-to-end, not hop-by-hop.
    """

    def __init__(
        self, response: SipResponse, transport: Transport, addr: Addr, timers: Timers
    ) -> None:
        super().__init__()
        self.response = response
        self.transport = transport
        self.addr = addr
        self.timers = timers
        self.retransmissions = 0
        self.active = False
        self.timed_out = False
        self._data = response.to_bytes()
        self._interval = timers.t1

    def start(self, now: float) -> None:
        self.active = True
        self.timed_out = False
        self._interval = self.timers.t1
        self._set("retransmit", now + self._interval, self._retransmit)
        self._set("timeout", now + self.timers.b, self._timeout)

    def _retransmit(self, now: float) -> None:
        try:
            self.transport.send(self._data, self.addr)
        except (OSError, ConnectionError) as exc:
            log.warning("2xx retransmission to %s failed: %s", self.addr, exc)
        self.retransmissions += 1
        self._interval = min(self._interval * 2, self.timers.t2)
        self._set("retransmit", now + self._interval, self._retransmit)

    def _timeout(self, now: float) -> None:
        self.stop()
        self.timed_out = True

    def ack_received(self) -> None:
        """The ACK arrived: stop retransmitting."""
        self.stop()

    def stop(self) -> None:
        self.active = False
        self._cancel(*self._deadlines)


# ---------------------------------------------------------------------------
# The table


class TransactionTable:
    """Routes messages to transactions and creates them (RFC 3261 17.1.3, 17.2.3).

    Every new request becomes a :class:`RequestReceived` event with its server
    transaction; an ACK that matches no transaction (the ACK of a 2xx, 17.2.3) comes
    with None. ``get_timer()`` is the earliest deadline of all live transactions,
    kept in a heap that each transaction updates as its own deadline moves.
    """

    def __init__(self, timers: Timers) -> None:
        self.timers = timers
        self._server: dict[TxKey, ServerTransactionBase] = {}
        self._client: dict[TxKey, ClientTransactionBase] = {}
        self._events: deque[Event] = deque()
        self._heap: list[tuple[float, int, _Timed]] = []
        self._seq = itertools.count()

    @property
    def server_count(self) -> int:
        return len(self._server)

    @property
    def client_count(self) -> int:
        return len(self._client)

    def next_event(self) -> Event | None:
        """The oldest event not yet taken, or None."""
        return self._events.popleft() if self._events else None

    # -- time --------------------------------------------------------------
    def get_timer(self) -> float | None:
        """The earliest deadline of any transaction (absolute time), None if none."""
        heap = self._heap
        while heap:
            at, _, tx = heap[0]
            if tx._queued == at:
                return at
            heapq.heappop(heap)  # stale: that transaction's deadline moved
        return None

    def handle_timer(self, now: float) -> None:
        """Fire the timers of every transaction due at ``now``."""
        heap = self._heap
        due: dict[_Timed, None] = {}
        while heap and heap[0][0] <= now:
            at, _, tx = heapq.heappop(heap)
            if tx._queued == at:
                tx._queued = None
                due[tx] = None
        for tx in due:
            tx.handle_timer(now)  # its new deadline reaches us through _watch

    def _watch(self, tx: _Timed) -> None:
        """A transaction's deadline changed or it terminated: index it again."""
        if isinstance(tx, _Transaction) and tx.state == TERMINATED:
            table: dict[TxKey, Any] = (
                self._server if isinstance(tx, ServerTransactionBase) else self._client
            )
            if table.get(tx.key) is tx:
                del table[tx.key]
        at = tx.get_timer()
        if at == tx._queued:
            return
        tx._queued = at
        if at is None:
            return
        heapq.heappush(self._heap, (at, next(self._seq), tx))
        live = len(self._server) + len(self._client)
        # each live transaction has one current entry; a compaction leaves about `live`
        # entries, so the next one comes after as many pushes again (amortized O(1)) and
        # stale entries never outnumber the live ones (they are kept 64*T1 under load)
        if len(self._heap) > 64 and len(self._heap) > 2 * live:
            self._compact()

    def _compact(self) -> None:
        """Drop stale heap entries (deadlines that moved later, finished transactions)."""
        self._heap = [e for e in self._heap if e[2]._queued == e[0]]
        heapq.heapify(self._heap)

    # -- matching ----------------------------------------------------------
    @staticmethod
    def _server_key(req: SipRequest, method: str | None = None) -> TxKey:
        """17.2.3 matching key; RFC 2543 fallback when the branch lacks the cookie."""
        via = req.top_via
        m = method or ("INVITE" if req.method == "ACK" else req.method)
        branch = via.branch
        sent_by = (via.host.lower(), via.port or _default_port(via))
        if branch and branch.startswith(MAGIC_COOKIE):
            return (branch, sent_by, m)
        from_tag = NameAddr.parse(req.require("From")).tag
        return ("rfc2543", req.uri, from_tag, req.call_id, req.cseq[0], sent_by, branch, m)

    def find_invite_server_transaction(self, cancel: SipRequest) -> InviteServerTransaction | None:
        """The INVITE transaction a CANCEL targets (RFC 3261 9.2), if still alive."""
        tx = self._server.get(self._server_key(cancel, "INVITE"))
        return tx if isinstance(tx, InviteServerTransaction) else None

    # -- inbound -----------------------------------------------------------
    def receive(
        self, msg: SipRequest | SipResponse, transport: Transport, addr: Addr, now: float
    ) -> None:
        """Entry point for every parsed message from any transport."""
        if isinstance(msg, SipRequest):
            self._receive_request(msg, transport, addr, now)
        else:
            self._receive_response(msg, addr, now)

    def _receive_request(
        self, req: SipRequest, transport: Transport, addr: Addr, now: float
    ) -> None:
        stamp_received(req, addr)
        key = self._server_key(req)
        tx = self._server.get(key)
        if tx is not None:
            tx.receive_request(req, now)
            return
        if req.method == "ACK":
            self._events.append(RequestReceived(req, None))
            return
        cls = InviteServerTransaction if req.method == "INVITE" else NonInviteServerTransaction
        tx = cls(
            self.timers, req, transport, addr, key=key, events=self._events, watcher=self._watch
        )
        self._server[key] = tx
        tx.start(now)
        self._events.append(RequestReceived(req, tx))

    def _receive_response(self, resp: SipResponse, addr: Addr, now: float) -> None:
        branch = resp.top_via.branch
        ctx = self._client.get((branch, resp.cseq[1])) if branch else None
        if ctx is None:
            self._events.append(StrayResponse(resp, addr))
            return
        ctx.receive_response(resp, addr, now)

    # -- outbound ----------------------------------------------------------
    def request(
        self, req: SipRequest, transport: Transport, addr: Addr, now: float
    ) -> ClientTransactionBase:
        """Start a client transaction; the request needs a top Via with a fresh branch."""
        if req.method == "ACK":
            raise TransactionError("ACK is sent without a client transaction (17.1.1.3, 13.2.2.4)")
        branch = req.top_via.branch
        if not branch or not branch.startswith(MAGIC_COOKIE):
            raise TransactionError("request needs a top Via branch starting with z9hG4bK")
        key = (branch, req.method)
        if key in self._client:
            raise TransactionError(f"client transaction {key} already exists")
        cls = InviteClientTransaction if req.method == "INVITE" else NonInviteClientTransaction
        ctx = cls(
            self.timers, req, transport, addr, key=key, events=self._events, watcher=self._watch
        )
        self._client[key] = ctx
        ctx.start(now)
        return ctx

    def close(self) -> None:
        """Terminate every transaction (shutdown); pending client finals become 408."""
        for ctx in list(self._client.values()):
            ctx.abandon()
        for stx in list(self._server.values()):
            stx._terminate()
        self._heap.clear()
