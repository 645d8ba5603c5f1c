"""RFC 3261 section 17 transaction layer on asyncio.

Four state machines (client/server x INVITE/non-INVITE) with the RFC timers,
retransmitting only over unreliable transports. Two deliberate refinements
from later RFCs, because plain RFC 3261 behaviour is known to be broken:

* RFC 6026: after a 2xx the server INVITE transaction stops responding (the UA
  core retransmits the 2xx with :class:`InviteOkRetransmitter`) but lingers in
  "Accepted" for 64*T1 so a retransmitted INVITE is absorbed instead of being
  handed to the TU as a new call.
* RFC 3581: rport/received handling in :func:`stamp_received` and
  :func:`response_destination` so responses traverse NAT.

Transactions are removed from the layer's tables the moment they terminate,
so memory is bounded by the traffic of the last 64*T1 seconds.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from .builders import build_ack, make_response, new_tag
from .message import SipRequest, SipResponse
from .transport import Addr, Transport
from .uri import parse_name_addr
from .via import MAGIC_COOKIE, Via, parse_via, same_ip

__all__ = [
    "ClientTransaction",
    "InviteOkRetransmitter",
    "ServerTransaction",
    "Timers",
    "TransactionError",
    "TransactionLayer",
    "response_destination",
    "stamp_received",
]

log = logging.getLogger(__name__)

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
    via = parse_via(values[0])
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


class _TimerOwner:
    """Named asyncio timers that are all cancelled on termination."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._handles: dict[str, asyncio.TimerHandle] = {}

    def _set(self, name: str, delay: float, cb: Callable[[], None]) -> None:
        self._cancel(name)
        self._handles[name] = self._loop.call_later(delay, self._fire, name, cb)

    def _fire(self, name: str, cb: Callable[[], None]) -> None:
        self._handles.pop(name, None)
        try:
            cb()
        except Exception:
            log.exception("timer %s failed", name)

    def _cancel(self, name: str) -> None:
        h = self._handles.pop(name, None)
        if h is not None:
            h.cancel()

    def _cancel_all(self) -> None:
        for h in self._handles.values():
            h.cancel()
        self._handles.clear()


class ServerTransaction(_TimerOwner):
    """Server transaction (17.2). The TU answers with :meth:`respond`.

    Set ``on_timeout`` to learn that Timer H fired (no ACK for a non-2xx
    final), which the UA treats as a failed call leg.
    """

    def __init__(self, layer: TransactionLayer, request: SipRequest, transport: Transport,
                 source_addr: Addr, key: tuple) -> None:
        super().__init__()
        self.layer = layer
        self.request = request
        self.transport = transport
        self.source_addr = source_addr
        self.key = key
        self.method = request.method
        self.is_invite = request.method == "INVITE"
        self.state = PROCEEDING if self.is_invite else TRYING
        self.last_response: SipResponse | None = None
        self._last_bytes: bytes | None = None
        self.timed_out = False
        self.transport_error: Exception | None = None
        self.on_timeout: Callable[[ServerTransaction], None] | None = None
        self.terminated = asyncio.Event()
        self.response_addr: Addr = (
            source_addr if transport.reliable
            else response_destination(request.top_via, source_addr)
        )
        self._g_interval = 0.0

    @property
    def can_respond(self) -> bool:
        """True while a final response is still allowed."""
        return self.state in (TRYING, PROCEEDING)

    def _start(self) -> None:
        t = self.layer.timers
        if self.is_invite:
            self._set("trying", t.trying, self._auto_trying)
            self._set("guard", t.invite_guard, self._invite_guard)
        else:
            # Safety net, not an RFC timer: the client gives up after 64*T1
            # (Timer F), so a TU that never answers must not pin memory.
            self._set("tu", t.b, self._tu_silent)

    def _auto_trying(self) -> None:
        if self.state == PROCEEDING and self.last_response is None:
            self._send(make_response(self.request, 100))

    def local_tag(self) -> str:
        """The To tag already sent in a response of ours, else a fresh one."""
        if self.last_response is not None:
            tag = self.last_response.to.tag
            if tag:
                return tag
        return new_tag()

    def respond_error(self, status: int, reason: str | None = None) -> None:
        """Final error response on the TU's behalf, keeping any To tag already used."""
        self.respond(make_response(self.request, status, reason, to_tag=self.local_tag()))

    def _invite_guard(self) -> None:
        if self.state == PROCEEDING:
            log.warning("TU left INVITE %s unanswered; answering 408", self.request.call_id)
            self.respond_error(408)

    def _tu_silent(self) -> None:
        if self.state in (TRYING, PROCEEDING):
            log.warning("TU never answered %s %s; dropping transaction",
                        self.method, self.request.call_id)
            self._terminate()

    def respond(self, resp: SipResponse) -> None:
        """Send a response and advance the state machine (17.2.1 / 17.2.2)."""
        status = resp.status
        t = self.layer.timers
        if self.is_invite:
            if self.state == PROCEEDING:
                self._cancel("trying")
                self._send(resp)
                if status < 200:
                    return
                self._cancel("guard")
                if status < 300:
                    self.state = ACCEPTED
                    self._set("L", t.b, self._terminate)
                    return
                self.state = COMPLETED
                if not self.transport.reliable:
                    self._g_interval = t.t1
                    self._set("G", t.t1, self._timer_g)
                self._set("H", t.b, self._timer_h)
                return
            if self.state == ACCEPTED and 200 <= status < 300:
                self._send(resp)  # RFC 6026 7.1: further 2xx pass straight through
                return
        elif self.state in (TRYING, PROCEEDING):
            self._cancel("tu")
            self._send(resp)
            if status < 200:
                self.state = PROCEEDING
                self._set("tu", t.b, self._tu_silent)
                return
            self.state = COMPLETED
            if self.transport.reliable:
                self._terminate()
            else:
                self._set("J", t.b, self._terminate)
            return
        raise TransactionError(
            f"cannot send {status} in state {self.state} of {self.method} transaction"
        )

    def _send(self, resp: SipResponse) -> None:
        self.last_response = resp
        self._last_bytes = resp.to_bytes()
        self._transmit(self._last_bytes)

    def _transmit(self, data: bytes) -> None:
        try:
            self.transport.send(data, self.response_addr)
        except (OSError, ConnectionError) as exc:  # 17.2.4: report, do not crash the TU
            self.transport_error = exc
            log.warning("failed to send response to %s: %s", self.response_addr, exc)

    def _timer_g(self) -> None:
        if self.state != COMPLETED or self._last_bytes is None:
            return
        self._transmit(self._last_bytes)
        self._g_interval = min(self._g_interval * 2, self.layer.timers.t2)
        self._set("G", self._g_interval, self._timer_g)

    def _timer_h(self) -> None:
        if self.state != COMPLETED:
            return
        self.timed_out = True
        self._terminate()
        if self.on_timeout is not None:
            self.on_timeout(self)

    def _on_retransmission(self, req: SipRequest) -> None:
        if req.method == "ACK":
            if self.state == COMPLETED:
                self.state = CONFIRMED
                self._cancel("G")
                self._cancel("H")
                if self.transport.reliable:
                    self._terminate()
                else:
                    self._set("I", self.layer.timers.t4, self._terminate)
            elif self.state == ACCEPTED:
                self.layer._dispatch(req, None)  # RFC 6026: ACK for the 2xx goes to the TU
            return
        if self.state in (PROCEEDING, COMPLETED):
            if self._last_bytes is not None:
                self._transmit(self._last_bytes)
            elif self.is_invite:
                self._send(make_response(self.request, 100))

    def _terminate(self) -> None:
        if self.state == TERMINATED:
            return
        self.state = TERMINATED
        self._cancel_all()
        self.layer._forget_server(self)
        self.terminated.set()


class ClientTransaction(_TimerOwner):
    """Client transaction (17.1). Read responses with :meth:`responses` or :meth:`final`."""

    def __init__(self, layer: TransactionLayer, request: SipRequest, transport: Transport,
                 addr: Addr, key: tuple) -> None:
        super().__init__()
        self.layer = layer
        self.request = request
        self.transport = transport
        self.addr = addr
        self.key = key
        self.is_invite = request.method == "INVITE"
        self.state = CALLING if self.is_invite else TRYING
        self.timed_out = False
        self.transport_error: Exception | None = None
        self.ack: SipRequest | None = None
        self._queue: asyncio.Queue[SipResponse] = asyncio.Queue()
        self._final: asyncio.Future[SipResponse] = self._loop.create_future()
        self._data = request.to_bytes()
        self._ack_bytes: bytes | None = None
        self._interval = 0.0

    def _start(self) -> None:
        if not self._transmit(self._data):
            self._deliver_final(make_response(self.request, 503, "Service Unavailable (transport error)"))
            self._terminate()
            return
        t = self.layer.timers
        if not self.transport.reliable:
            self._interval = t.t1
            self._set("A" if self.is_invite else "E", t.t1, self._retransmit)
        self._set("B" if self.is_invite else "F", t.b, self._timeout)

    def _transmit(self, data: bytes) -> bool:
        try:
            self.transport.send(data, self.addr)
            return True
        except (OSError, ConnectionError) as exc:
            self.transport_error = exc
            log.warning("failed to send request to %s: %s", self.addr, exc)
            return False

    def _retransmit(self) -> None:
        t = self.layer.timers
        if self.is_invite:
            if self.state != CALLING:
                return
            self._transmit(self._data)
            self._interval *= 2  # Timer A doubles without the T2 cap
            self._set("A", self._interval, self._retransmit)
            return
        if self.state not in (TRYING, PROCEEDING):
            return
        self._transmit(self._data)
        self._interval = min(self._interval * 2, t.t2) if self.state == TRYING else t.t2
        self._set("E", self._interval, self._retransmit)

    def _timeout(self) -> None:
        if self.state in (CALLING, TRYING, PROCEEDING):
            self.timed_out = True
            self._deliver_final(make_response(self.request, 408))
            self._terminate()

    def abandon(self) -> None:
        """Give up waiting (RFC 3261 9.1: no final 64*T1 after CANCEL): synthesize 408."""
        if not self._final.done():
            self.timed_out = True
            self._deliver_final(make_response(self.request, 408))
        self._terminate()

    def _deliver_final(self, resp: SipResponse) -> None:
        self._queue.put_nowait(resp)
        if not self._final.done():
            self._final.set_result(resp)

    def _on_response(self, resp: SipResponse, addr: Addr) -> None:
        status = resp.status
        t = self.layer.timers
        if self.is_invite:
            if self.state in (CALLING, PROCEEDING):
                if status < 200:
                    self.state = PROCEEDING
                    self._cancel("A")
                    self._cancel("B")
                    self._queue.put_nowait(resp)
                    return
                if status < 300:
                    self._deliver_final(resp)
                    self._terminate()
                    return
                self.ack = build_ack(self.request, resp)
                self._ack_bytes = self.ack.to_bytes()
                self._transmit(self._ack_bytes)
                self._deliver_final(resp)
                self.state = COMPLETED
                self._cancel("A")
                self._cancel("B")
                if self.transport.reliable:
                    self._terminate()
                else:
                    self._set("D", t.d, self._terminate)
                return
            if self.state == COMPLETED and status >= 300 and self._ack_bytes is not None:
                self._transmit(self._ack_bytes)  # final retransmitted: our ACK was lost
                return
            self.layer._stray(resp, addr)
            return
        if self.state in (TRYING, PROCEEDING):
            if status < 200:
                self.state = PROCEEDING
                self._queue.put_nowait(resp)
                return
            self._deliver_final(resp)
            self.state = COMPLETED
            self._cancel("E")
            self._cancel("F")
            if self.transport.reliable:
                self._terminate()
            else:
                self._set("K", t.t4, self._terminate)
        # COMPLETED: retransmitted finals are absorbed (Timer K window).

    async def responses(self) -> AsyncIterator[SipResponse]:
        """Yield provisional responses then the final one (a synthesized 408 on timeout)."""
        while True:
            resp = await self._queue.get()
            yield resp
            if resp.status >= 200:
                return

    async def final(self) -> SipResponse:
        """Wait for the final response (408 if Timer B/F fired, 503 on transport error)."""
        return await asyncio.shield(self._final)

    def _terminate(self) -> None:
        if self.state == TERMINATED:
            return
        self.state = TERMINATED
        self._cancel_all()
        self.layer._forget_client(self)


RequestHandler = Callable[[SipRequest, "ServerTransaction | None"], "Awaitable[None] | None"]
StrayHandler = Callable[[SipResponse, Addr], None]


class TransactionLayer:
    """Routes messages to transactions and creates them (RFC 3261 17.1.3, 17.2.3).

    ``on_request(req, tx)`` gets every new request; ``tx`` is None for an ACK
    that matches no transaction (the ACK for a 2xx, 17.2.3). If the handler
    raises before answering, the layer answers 500 itself.
    """

    def __init__(self, timers: Timers, on_request: RequestHandler,
                 on_stray_response: StrayHandler | None = None) -> None:
        self.timers = timers
        self._on_request = on_request
        self._on_stray_response = on_stray_response
        self._server: dict[tuple, ServerTransaction] = {}
        self._client: dict[tuple, ClientTransaction] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- bookkeeping -------------------------------------------------------
    @property
    def server_count(self) -> int:
        return len(self._server)

    @property
    def client_count(self) -> int:
        return len(self._client)

    def _forget_server(self, tx: ServerTransaction) -> None:
        if self._server.get(tx.key) is tx:
            del self._server[tx.key]

    def _forget_client(self, tx: ClientTransaction) -> None:
        if self._client.get(tx.key) is tx:
            del self._client[tx.key]

    def close(self) -> None:
        """Terminate every transaction (shutdown); pending finals resolve as 408."""
        for ctx in list(self._client.values()):
            ctx.abandon()
        for stx in list(self._server.values()):
            stx._terminate()
        for task in list(self._tasks):
            task.cancel()

    # -- matching ----------------------------------------------------------
    @staticmethod
    def _server_key(req: SipRequest, method: str | None = None) -> tuple:
        """17.2.3 matching key; RFC 2543 fallback when the branch lacks the cookie."""
        via = req.top_via
        m = method or ("INVITE" if req.method == "ACK" else req.method)
        branch = via.branch
        sent_by = (via.host.lower(), via.port or _default_port(via))
        if branch and branch.startswith(MAGIC_COOKIE):
            return (branch, sent_by, m)
        from_tag = parse_name_addr(req.require("From")).tag
        return ("rfc2543", req.uri, from_tag, req.call_id, req.cseq[0], sent_by, branch, m)

    def find_invite_server_transaction(self, cancel: SipRequest) -> ServerTransaction | None:
        """The INVITE transaction a CANCEL targets (RFC 3261 9.2), if still alive."""
        return self._server.get(self._server_key(cancel, "INVITE"))

    # -- inbound -----------------------------------------------------------
    def receive(self, msg: SipRequest | SipResponse, transport: Transport, addr: Addr) -> None:
        """Entry point for every parsed message from any transport."""
        if isinstance(msg, SipRequest):
            self._receive_request(msg, transport, addr)
        else:
            self._receive_response(msg, addr)

    def _receive_request(self, req: SipRequest, transport: Transport, addr: Addr) -> None:
        stamp_received(req, addr)
        key = self._server_key(req)
        tx = self._server.get(key)
        if tx is not None:
            tx._on_retransmission(req)
            return
        if req.method == "ACK":
            self._dispatch(req, None)
            return
        tx = ServerTransaction(self, req, transport, addr, key)
        self._server[key] = tx
        tx._start()
        self._dispatch(req, tx)

    def _receive_response(self, resp: SipResponse, addr: Addr) -> None:
        branch = resp.top_via.branch
        ctx = self._client.get((branch, resp.cseq[1])) if branch else None
        if ctx is None:
            self._stray(resp, addr)
            return
        ctx._on_response(resp, addr)

    def _stray(self, resp: SipResponse, addr: Addr) -> None:
        if self._on_stray_response is not None:
            self._on_stray_response(resp, addr)
        else:
            log.debug("dropping stray %s response from %s", resp.status, addr)

    def _dispatch(self, req: SipRequest, tx: ServerTransaction | None) -> None:
        try:
            result = self._on_request(req, tx)
        except Exception:
            log.exception("request handler failed for %s", req.method)
            self._fail(tx)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(lambda t: self._task_done(t, tx))

    def _task_done(self, task: asyncio.Task[None], tx: ServerTransaction | None) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("request handler failed", exc_info=exc)
            self._fail(tx)

    @staticmethod
    def _fail(tx: ServerTransaction | None) -> None:
        if tx is not None and tx.can_respond:
            tx.respond_error(500)

    # -- outbound ----------------------------------------------------------
    async def request(self, req: SipRequest, transport: Transport, addr: Addr) -> ClientTransaction:
        """Start a client transaction; the request needs a top Via with a fresh branch."""
        if req.method == "ACK":
            raise TransactionError("ACK is sent without a client transaction (17.1.1.3, 13.2.2.4)")
        branch = req.top_via.branch
        if not branch or not branch.startswith(MAGIC_COOKIE):
            raise TransactionError("request needs a top Via branch starting with z9hG4bK")
        key = (branch, req.method)
        if key in self._client:
            raise TransactionError(f"client transaction {key} already exists")
        ctx = ClientTransaction(self, req, transport, addr, key)
        self._client[key] = ctx
        ctx._start()
        return ctx


class InviteOkRetransmitter(_TimerOwner):
    """UA-core 2xx retransmission for INVITE (RFC 3261 13.3.1.4).

    The transaction sends the first 2xx; this resends it at T1, 2*T1 ... capped
    at T2 until :meth:`ack_received`, and after 64*T1 without ACK stops and
    calls ``on_timeout`` (the UA then sends BYE). Runs on every transport:
    2xx reliability is end-to-end, not hop-by-hop.
    """

    def __init__(self, response: SipResponse, transport: Transport, addr: Addr, timers: Timers,
                 on_timeout: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._data = response.to_bytes()
        self.response = response
        self.transport = transport
        self.addr = addr
        self.timers = timers
        self.on_timeout = on_timeout
        self.retransmissions = 0
        self.active = False
        self._interval = timers.t1

    def start(self) -> None:
        self.active = True
        self._interval = self.timers.t1
        self._set("retransmit", self._interval, self._retransmit)
        self._set("timeout", self.timers.b, self._timeout)

    def _retransmit(self) -> None:
        try:
            self.transport.send(self._data, self.addr)
        except (OSError, ConnectionError) as exc:
            log.warning("2xx retransmission to %s failed: %s", self.addr, exc)
        self.retransmissions += 1
        self._interval = min(self._interval * 2, self.timers.t2)
        self._set("retransmit", self._interval, self._retransmit)

    def _timeout(self) -> None:
        self.stop()
        if self.on_timeout is not None:
            self.on_timeout()

    def ack_received(self) -> None:
        """The ACK arrived: stop retransmitting."""
        self.stop()

    def stop(self) -> None:
        self.active = False
        self._cancel_all()
