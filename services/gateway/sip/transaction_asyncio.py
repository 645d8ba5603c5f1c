"""The transaction layer on asyncio: a thin driver for the sans-I/O core in
:mod:`gateway.sip.transaction`.

:class:`TransactionLayer` feeds ``loop.time()`` as ``now`` into a
:class:`~gateway.sip.transaction.TransactionTable`, keeps ONE asyncio timer at the table's
``get_timer()`` (re-armed after every input, like aioquic's ``QuicConnectionProtocol``),
and turns the table's events into the TU-facing API: ``on_request(req, tx)`` calls (an
awaitable result runs as a task; if the handler fails before answering, 500),
``on_stray_response(resp, addr)`` calls, and per-transaction objects
(:class:`ServerTransaction`, :class:`ClientTransaction`) whose ``final()``/``responses()``
resolve from ``ResponseReceived`` events. :class:`InviteOkRetransmitter` drives one
:class:`~gateway.sip.transaction.OkRetransmission` with its own timer (it is the UA core's,
not part of any layer).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from .message import SipRequest, SipResponse
from .transaction import (
    TERMINATED,
    ClientTransactionBase,
    Event,
    OkRetransmission,
    RequestReceived,
    ResponseReceived,
    ServerTransactionBase,
    StrayResponse,
    Timers,
    TransactionTable,
    TransactionTerminated,
)
from .transport import Addr, Transport

__all__ = [
    "ClientTransaction",
    "InviteOkRetransmitter",
    "RequestHandler",
    "ServerTransaction",
    "StrayHandler",
    "TransactionLayer",
]

log = logging.getLogger(__name__)


class _Alarm:
    """One asyncio timer kept at a sans-I/O object's next deadline.

    ``update(at)`` moves it (None disarms); when it fires, ``on_fire(now)`` gets
    ``max(deadline, loop.time())``, so a callback the loop runs a hair early still
    counts as on time.
    """

    def __init__(self, on_fire: Callable[[float], None]) -> None:
        self._on_fire = on_fire
        self._handle: asyncio.TimerHandle | None = None
        self._at: float | None = None

    def close(self) -> None:
        """Disarm for good and let go of `on_fire`: an alarm owned by the object it calls
        back is a reference cycle, which only the garbage collector's full (slow, paused)
        collections would free otherwise."""
        self.update(None)
        self._on_fire = _closed

    def update(self, at: float | None) -> None:
        if at == self._at:
            return
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._at = at
        if at is not None:
            self._handle = asyncio.get_running_loop().call_at(at, self._fire)

    def _fire(self) -> None:
        at = self._at
        self._handle = None
        self._at = None
        assert at is not None
        self._on_fire(max(at, asyncio.get_running_loop().time()))


def _closed(now: float) -> None:
    """What a closed `_Alarm` calls back: nothing (it is disarmed, so never, in fact)."""


def _now() -> float:
    return asyncio.get_running_loop().time()


class ServerTransaction:
    """A server transaction as the TU sees it (RFC 3261 17.2). Answer with :meth:`respond`.

    Set ``on_timeout`` to learn that Timer H fired (no ACK for a non-2xx final), which
    the UA treats as a failed call leg; ``terminated`` is set when the transaction ends.
    One of these lives as long as its transaction (64*T1 after a final response), so it is
    small: slots, and the ``terminated`` event only made when someone asks for it.
    """

    __slots__ = ("_layer", "_machine", "_terminated", "on_timeout")

    def __init__(self, layer: TransactionLayer, machine: ServerTransactionBase) -> None:
        self._layer = layer
        self._machine = machine
        self.on_timeout: Callable[[ServerTransaction], None] | None = None
        self._terminated: asyncio.Event | None = None

    @property
    def terminated(self) -> asyncio.Event:
        """Set when the transaction has ended."""
        if self._terminated is None:
            self._terminated = asyncio.Event()
            if self._machine.state == TERMINATED:
                self._terminated.set()
        return self._terminated

    @property
    def request(self) -> SipRequest:
        return self._machine.request

    @property
    def transport(self) -> Transport:
        return self._machine.transport

    @property
    def source_addr(self) -> Addr:
        return self._machine.source_addr

    @property
    def response_addr(self) -> Addr:
        return self._machine.response_addr

    @property
    def method(self) -> str:
        return self._machine.method

    @property
    def is_invite(self) -> bool:
        return self._machine.is_invite

    @property
    def state(self) -> str:
        return self._machine.state

    @property
    def can_respond(self) -> bool:
        """True while a final response is still allowed."""
        return self._machine.can_respond

    @property
    def last_response(self) -> SipResponse | None:
        return self._machine.last_response

    @property
    def timed_out(self) -> bool:
        return self._machine.timed_out

    @property
    def transport_error(self) -> Exception | None:
        return self._machine.transport_error

    def local_tag(self) -> str:
        """The To tag already sent in a response of ours, else a fresh one."""
        return self._machine.local_tag()

    def respond(self, resp: SipResponse) -> None:
        """Send a response and advance the state machine (17.2.1 / 17.2.2)."""
        self._machine.respond(resp, _now())
        self._layer._flush()

    def respond_error(self, status: int, reason: str | None = None) -> None:
        """Final error response on the TU's behalf, keeping any To tag already used."""
        self._machine.respond_error(status, _now(), reason)
        self._layer._flush()


class ClientTransaction:
    """A client transaction as the TU sees it (17.1): read responses with
    :meth:`responses` or :meth:`final`."""

    def __init__(self, layer: TransactionLayer, machine: ClientTransactionBase) -> None:
        self._layer = layer
        self._machine = machine
        self._queue: asyncio.Queue[SipResponse] = asyncio.Queue()
        self._final: asyncio.Future[SipResponse] = asyncio.get_running_loop().create_future()

    @property
    def request(self) -> SipRequest:
        return self._machine.request

    @property
    def transport(self) -> Transport:
        return self._machine.transport

    @property
    def addr(self) -> Addr:
        return self._machine.addr

    @property
    def is_invite(self) -> bool:
        return self._machine.is_invite

    @property
    def state(self) -> str:
        return self._machine.state

    @property
    def timed_out(self) -> bool:
        return self._machine.timed_out

    @property
    def transport_error(self) -> Exception | None:
        return self._machine.transport_error

    @property
    def ack(self) -> SipRequest | None:
        """The ACK this transaction sent for a non-2xx final (17.1.1.3), if any."""
        return self._machine.ack

    def _deliver(self, resp: SipResponse) -> None:
        self._queue.put_nowait(resp)
        if resp.status >= 200 and not self._final.done():
            self._final.set_result(resp)

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

    def abandon(self) -> None:
        """Give up waiting (RFC 3261 9.1: no final 64*T1 after CANCEL): synthesize 408."""
        self._machine.abandon()
        self._layer._flush()


RequestHandler = Callable[[SipRequest, "ServerTransaction | None"], "Awaitable[None] | None"]
StrayHandler = Callable[[SipResponse, Addr], None]


class TransactionLayer:
    """Routes messages to transactions and creates them (RFC 3261 17.1.3, 17.2.3).

    ``on_request(req, tx)`` gets every new request; ``tx`` is None for an ACK
    that matches no transaction (the ACK for a 2xx, 17.2.3). If the handler
    raises before answering, the layer answers 500 itself.
    """

    def __init__(
        self,
        timers: Timers,
        on_request: RequestHandler,
        on_stray_response: StrayHandler | None = None,
    ) -> None:
        self.timers = timers
        self._table = TransactionTable(timers)
        self._on_request = on_request
        self._on_stray_response = on_stray_response
        self._servers: dict[ServerTransactionBase, ServerTransaction] = {}
        self._clients: dict[ClientTransactionBase, ClientTransaction] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._alarm = _Alarm(self._on_timer)

    @property
    def server_count(self) -> int:
        return self._table.server_count

    @property
    def client_count(self) -> int:
        return self._table.client_count

    def close(self) -> None:
        """Terminate every transaction (shutdown); pending finals resolve as 408."""
        self._table.close()
        self._flush()
        for task in list(self._tasks):
            task.cancel()

    def find_invite_server_transaction(self, cancel: SipRequest) -> ServerTransaction | None:
        """The INVITE transaction a CANCEL targets (RFC 3261 9.2), if still alive."""
        machine = self._table.find_invite_server_transaction(cancel)
        return None if machine is None else self._server_tx(machine)

    # -- inputs ------------------------------------------------------------
    def receive(self, msg: SipRequest | SipResponse, transport: Transport, addr: Addr) -> None:
        """Entry point for every parsed message from any transport."""
        self._table.receive(msg, transport, addr, _now())
        self._flush()

    async def request(self, req: SipRequest, transport: Transport, addr: Addr) -> ClientTransaction:
        """Start a client transaction; the request needs a top Via with a fresh branch."""
        machine = self._table.request(req, transport, addr, _now())
        ctx = ClientTransaction(self, machine)
        self._clients[machine] = ctx
        self._flush()
        return ctx

    def _on_timer(self, now: float) -> None:
        self._table.handle_timer(now)
        self._flush()

    # -- outputs -----------------------------------------------------------
    def _flush(self) -> None:
        """Hand every pending event to the TU, then move the timer to the next deadline."""
        table = self._table
        try:
            while (event := table.next_event()) is not None:
                self._handle(event)
        finally:
            self._alarm.update(table.get_timer())

    def _handle(self, event: Event) -> None:
        if isinstance(event, RequestReceived):
            tx = event.transaction
            self._dispatch(event.request, None if tx is None else self._server_tx(tx))
        elif isinstance(event, ResponseReceived):
            ctx = self._clients.get(event.transaction)
            if ctx is not None:
                ctx._deliver(event.response)
        elif isinstance(event, StrayResponse):
            if self._on_stray_response is not None:
                self._on_stray_response(event.response, event.addr)
            else:
                log.debug("dropping stray %s response from %s", event.response.status, event.addr)
        elif isinstance(event, TransactionTerminated):
            machine = event.transaction
            if isinstance(machine, ClientTransactionBase):
                self._clients.pop(machine, None)
                return
            stx = self._servers.pop(machine, None)
            if stx is None:
                return
            if stx._terminated is not None:
                stx._terminated.set()
            if machine.timed_out and stx.on_timeout is not None:
                try:
                    stx.on_timeout(stx)
                except Exception:
                    log.exception("on_timeout failed for %s", machine.request.call_id)

    def _server_tx(self, machine: ServerTransactionBase) -> ServerTransaction:
        stx = self._servers.get(machine)
        if stx is None:
            stx = self._servers[machine] = ServerTransaction(self, machine)
        return stx

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


class InviteOkRetransmitter:
    """UA-core 2xx retransmission for INVITE (RFC 3261 13.3.1.4) on asyncio.

    The transaction sends the first 2xx; this resends it at T1, 2*T1 ... capped
    at T2 until :meth:`ack_received`, and after 64*T1 without ACK stops and
    calls ``on_timeout`` (the UA then sends BYE). Runs on every transport:
    2xx reliability is end-to-end, not hop-by-hop.
    """

    def __init__(
        self,
        response: SipResponse,
        transport: Transport,
        addr: Addr,
        timers: Timers,
        on_timeout: Callable[[], None] | None = None,
    ) -> None:
        asyncio.get_running_loop()  # like every asyncio-facing object here: needs a loop
        self._core = OkRetransmission(response, transport, addr, timers)
        self.on_timeout = on_timeout
        self._alarm = _Alarm(self._on_timer)

    @property
    def response(self) -> SipResponse:
        return self._core.response

    @property
    def transport(self) -> Transport:
        return self._core.transport

    @property
    def addr(self) -> Addr:
        return self._core.addr

    @property
    def timers(self) -> Timers:
        return self._core.timers

    @property
    def active(self) -> bool:
        return self._core.active

    @property
    def retransmissions(self) -> int:
        return self._core.retransmissions

    def start(self) -> None:
        self._core.start(_now())
        self._alarm.update(self._core.get_timer())

    def ack_received(self) -> None:
        """The ACK arrived: stop retransmitting."""
        self._core.ack_received()
        self._finish()

    def stop(self) -> None:
        self._core.stop()
        self._finish()

    def _finish(self) -> None:
        """Done for good: drop the callbacks. `on_timeout` usually closes over the call leg
        that holds this retransmitter; kept, every ended call would be cyclic garbage (its
        media, negotiation and recording with it) until a full collection."""
        self._alarm.close()
        self.on_timeout = None

    def _on_timer(self, now: float) -> None:
        self._core.handle_timer(now)
        if not self._core.timed_out:
            self._alarm.update(self._core.get_timer())
            return
        on_timeout = self.on_timeout
        self._finish()  # the alarm is closed: this is the only time-out
        if on_timeout is not None:
            try:
                on_timeout()
            except Exception:
                log.exception("2xx retransmission on_timeout failed")
