"""Transaction layer tests (RFC 3261 17).

The sans-I/O core is driven by hand: time only moves when a test calls ``advance``, which
fires each deadline the table reports at exactly that instant. So the RFC timers are
checked with their real values (T1 = 500 ms ...) and exact send times, with no sleeping
and no event loop. A few tests at the end run the asyncio adapter on a real loop with
shrunk timers, and over real UDP/TCP sockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from gateway.sip.builders import build_cancel, make_response, new_branch
from gateway.sip.headers import Headers
from gateway.sip.message import SipRequest, SipResponse, parse_message
from gateway.sip.syntax import SipParseError
from gateway.sip.transaction import (
    ClientTransactionBase,
    Event,
    InviteServerTransaction,
    OkRetransmission,
    RequestReceived,
    ResponseReceived,
    ServerTransactionBase,
    StrayResponse,
    Timers,
    TransactionError,
    TransactionTable,
    TransactionTerminated,
    response_destination,
    stamp_received,
)
from gateway.sip.transaction_asyncio import (
    ClientTransaction,
    InviteOkRetransmitter,
    ServerTransaction,
    TransactionLayer,
)
from gateway.sip.transport import Addr, TcpTransport, Transport, UdpTransport
from gateway.sip.via import parse_via

RFC = Timers()  # the real values: T1 = 0.5 s, T2 = 4 s, T4 = 5 s, D = 32 s, 64*T1 = 32 s
T1 = RFC.t1
# For the adapter on a real loop: T1 = 10 ms => 64*T1 = 0.64 s.
FAST = Timers(t1=0.01, t2=0.04, t4=0.05, d=0.1, trying=0.03)
PEER: Addr = ("192.0.2.10", 5060)


class FakeTransport:
    """In-memory Transport recording every send with the time it happened."""

    def __init__(self, reliable: bool = False, clock: Callable[[], float] = lambda: 0.0) -> None:
        self.reliable = reliable
        self.name = "TCP" if reliable else "UDP"
        self.local_addr: Addr = ("10.0.0.1", 5060)
        self.sent: list[tuple[float, bytes, Addr]] = []
        self.fail = False
        self._clock = clock

    def send(self, data: bytes, addr: Addr) -> None:
        if self.fail:
            raise ConnectionError("link down")
        self.sent.append((self._clock(), data, addr))

    def messages(self) -> list[SipRequest | SipResponse]:
        return [parse_message(d) for _, d, _ in self.sent]

    def statuses(self) -> list[int]:
        return [m.status for m in self.messages() if isinstance(m, SipResponse)]

    def methods(self) -> list[str]:
        return [m.method for m in self.messages() if isinstance(m, SipRequest)]

    def times(self) -> list[float]:
        return [t for t, _, _ in self.sent]

    def times_in_t1(self) -> list[float]:
        return [t / T1 for t in self.times()]


def test_fake_transport_satisfies_protocol() -> None:
    assert isinstance(FakeTransport(), Transport)


def make_request(
    method: str = "INVITE",
    branch: str = "z9hG4bKinv1",
    *,
    rport: bool = False,
    host: str = "192.0.2.10",
    cseq: int = 1,
    to_tag: str | None = None,
) -> SipRequest:
    via = f"SIP/2.0/UDP {host}:5060;branch={branch}" + (";rport" if rport else "")
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    h = Headers(
        [
            ("Via", via),
            ("Max-Forwards", "70"),
            ("From", "<sip:alice@example.com>;tag=a1"),
            ("To", to),
            ("Call-ID", "call-1@192.0.2.10"),
            ("CSeq", f"{cseq} {method}"),
        ]
    )
    return SipRequest(method, "sip:bob@example.com", h)


def wire(msg: SipRequest | SipResponse) -> SipRequest | SipResponse:
    """What the peer receives: a fresh parse of the serialized message."""
    return parse_message(msg.to_bytes())


def response_to(req: SipRequest, status: int, to_tag: str | None = "b1") -> SipResponse:
    resp = wire(make_response(req, status, to_tag=to_tag if status > 100 else None))
    assert isinstance(resp, SipResponse)
    return resp


class Harness:
    """A TransactionTable on a hand-driven clock, collecting its events with their times."""

    def __init__(self, timers: Timers = RFC) -> None:
        self.now = 0.0
        self.table = TransactionTable(timers)
        self.events: list[tuple[float, Event]] = []

    def transport(self, reliable: bool = False) -> FakeTransport:
        return FakeTransport(reliable, clock=lambda: self.now)

    def drain(self) -> None:
        while (event := self.table.next_event()) is not None:
            self.events.append((self.now, event))

    def receive(self, msg: SipRequest | SipResponse, t: FakeTransport, addr: Addr = PEER) -> None:
        self.table.receive(msg, t, addr, self.now)
        self.drain()

    def request(
        self, req: SipRequest, t: FakeTransport, addr: Addr = PEER
    ) -> ClientTransactionBase:
        ctx = self.table.request(req, t, addr, self.now)
        self.drain()
        return ctx

    def respond(self, tx: ServerTransactionBase, resp: SipResponse) -> None:
        tx.respond(resp, self.now)
        self.drain()

    def advance(self, until: float) -> None:
        """Move the clock to ``until``, firing each deadline on the way at its exact time."""
        while (at := self.table.get_timer()) is not None and at <= until:
            assert at >= self.now, "a deadline in the past was reported"
            self.now = at
            self.table.handle_timer(at)
            self.drain()
        self.now = until

    # -- what happened -----------------------------------------------------
    def requests(self) -> list[RequestReceived]:
        return [e for _, e in self.events if isinstance(e, RequestReceived)]

    def last_tx(self) -> ServerTransactionBase:
        tx = self.requests()[-1].transaction
        assert tx is not None
        return tx

    def responses(self, ctx: ClientTransactionBase) -> list[tuple[float, int]]:
        return [
            (at, e.response.status)
            for at, e in self.events
            if isinstance(e, ResponseReceived) and e.transaction is ctx
        ]

    def strays(self) -> list[int]:
        return [e.response.status for _, e in self.events if isinstance(e, StrayResponse)]

    def terminated_at(self, tx: object) -> float | None:
        ends = [
            at
            for at, e in self.events
            if isinstance(e, TransactionTerminated) and e.transaction is tx
        ]
        assert len(ends) <= 1, "terminated twice"
        return ends[0] if ends else None


# ---------------------------------------------------------------------------
# Client INVITE (17.1.1)


def test_timer_a_doubles_without_cap_and_timer_b_gives_408() -> None:
    h = Harness()
    t = h.transport()
    req = make_request()
    ctx = h.request(req, t)
    assert h.table.get_timer() == T1  # Timer A first
    h.advance(100.0)
    # Timer A doubles with no T2 cap: sends at 0, T1, 3T1, 7T1, 15T1, 31T1, 63T1.
    assert t.times_in_t1() == [0, 1, 3, 7, 15, 31, 63]
    assert set(t.methods()) == {"INVITE"}
    assert h.responses(ctx) == [(RFC.b, 408)]  # Timer B = 64*T1
    final = ctx.final_response
    assert final is not None and final.status == 408 and ctx.timed_out
    assert final.call_id == req.call_id and final.cseq == (1, "INVITE")
    assert h.terminated_at(ctx) == RFC.b and ctx.state == "terminated"
    assert h.table.client_count == 0 and h.table.get_timer() is None


def test_reliable_invite_is_never_retransmitted() -> None:
    h = Harness()
    t = h.transport(reliable=True)
    ctx = h.request(make_request(), t)
    assert h.table.get_timer() == RFC.b  # only Timer B
    h.advance(100.0)
    assert len(t.sent) == 1 and h.responses(ctx) == [(RFC.b, 408)]


def test_provisional_stops_timers_a_and_b_and_486_generates_ack() -> None:
    h = Harness()
    t = h.transport()
    req = make_request()
    ctx = h.request(req, t)
    h.advance(0.1)
    h.receive(response_to(req, 100), t)
    h.receive(response_to(req, 180), t)
    assert ctx.state == "proceeding" and h.table.get_timer() is None  # B runs in Calling only
    h.advance(1000.0)
    assert len(t.sent) == 1  # no retransmission after a provisional
    h.receive(response_to(req, 486), t)
    assert [s for _, s in h.responses(ctx)] == [100, 180, 486]
    assert ctx.final_response is not None and ctx.final_response.status == 486
    ack = t.messages()[-1]
    assert isinstance(ack, SipRequest) and ack.method == "ACK" and ctx.ack is not None
    assert ack.to_bytes() == ctx.ack.to_bytes()
    assert ack.uri == req.uri
    assert ack.top_via.branch == req.top_via.branch  # same transaction (17.1.1.3)
    assert len(ack.via) == 1
    assert ack.cseq == (1, "ACK")
    assert ack.to.tag == "b1"  # To taken from the response
    assert ack.from_.tag == "a1" and ack.call_id == req.call_id
    # A retransmitted 486 is answered with the same ACK, not delivered again.
    h.receive(response_to(req, 486), t)
    assert t.methods() == ["INVITE", "ACK", "ACK"] and len(h.responses(ctx)) == 3
    assert ctx.state == "completed" and h.table.client_count == 1
    assert h.table.get_timer() == 1000.0 + RFC.d  # Timer D
    h.advance(1000.0 + RFC.d - 0.001)
    assert h.table.client_count == 1
    h.advance(1000.0 + RFC.d)
    assert h.table.client_count == 0 and not h.strays()


def test_2xx_ends_client_invite_and_retransmissions_are_stray() -> None:
    h = Harness()
    t = h.transport()
    req = make_request()
    ctx = h.request(req, t)
    h.receive(response_to(req, 200), t)
    assert h.responses(ctx) == [(0.0, 200)] and h.terminated_at(ctx) == 0.0
    assert h.table.client_count == 0 and h.table.get_timer() is None
    assert "ACK" not in t.methods()  # the UA core ACKs 2xx, not the transaction
    h.receive(response_to(req, 200), t)
    assert h.strays() == [200]


def test_abandon_synthesizes_408() -> None:
    h = Harness()
    t = h.transport()
    req = make_request()
    ctx = h.request(req, t)
    h.receive(response_to(req, 180), t)
    ctx.abandon()
    h.drain()
    assert [s for _, s in h.responses(ctx)] == [180, 408] and ctx.timed_out
    assert h.table.client_count == 0


def test_abandon_after_a_final_adds_nothing() -> None:
    h = Harness()
    t = h.transport()
    req = make_request()
    ctx = h.request(req, t)
    h.receive(response_to(req, 486), t)
    ctx.abandon()  # Completed (waiting for Timer D): just end it
    h.drain()
    assert [s for _, s in h.responses(ctx)] == [486] and not ctx.timed_out
    assert h.terminated_at(ctx) == 0.0 and h.table.get_timer() is None


def test_transport_error_gives_503() -> None:
    h = Harness()
    t = h.transport()
    t.fail = True
    ctx = h.request(make_request(), t)
    assert h.responses(ctx) == [(0.0, 503)] and h.terminated_at(ctx) == 0.0
    assert ctx.transport_error is not None and h.table.client_count == 0
    assert h.table.get_timer() is None


def test_request_validation() -> None:
    h = Harness()
    t = h.transport()
    with pytest.raises(TransactionError, match="ACK"):
        h.request(make_request("ACK"), t)
    with pytest.raises(TransactionError, match="z9hG4bK"):
        h.request(make_request(branch="oldstyle"), t)
    ctx = h.request(make_request(), t)
    with pytest.raises(TransactionError, match="already exists"):
        h.request(make_request(), t)
    assert h.table.client_count == 1 and len(t.sent) == 1
    ctx.abandon()


# ---------------------------------------------------------------------------
# Client non-INVITE (17.1.2)


def test_timer_e_capped_at_t2_and_timer_f_gives_408() -> None:
    h = Harness()
    t = h.transport()
    ctx = h.request(make_request("OPTIONS", branch=new_branch()), t)
    h.advance(100.0)
    # doubling from T1, capped at T2 = 8*T1: 0, 1, 3, 7, then every 8*T1 up to 64*T1
    assert t.times_in_t1() == [0, 1, 3, 7, 15, 23, 31, 39, 47, 55, 63]
    assert h.responses(ctx) == [(RFC.b, 408)] and ctx.timed_out
    assert h.table.client_count == 0


def test_non_invite_provisional_then_final_then_timer_k() -> None:
    h = Harness()
    t = h.transport()
    req = make_request("REGISTER", branch=new_branch())
    ctx = h.request(req, t)
    h.receive(response_to(req, 100), t)
    h.advance(3 * RFC.t2)
    # In Proceeding Timer E keeps firing, at T2: the armed T1 one, then every T2 (8*T1).
    assert t.times_in_t1() == [0, 1, 9, 17]
    h.receive(response_to(req, 401), t)
    assert [s for _, s in h.responses(ctx)] == [100, 401] and ctx.state == "completed"
    n = len(t.sent)
    h.receive(response_to(req, 401), t)  # absorbed during Timer K
    assert h.table.get_timer() == 3 * RFC.t2 + RFC.t4
    h.advance(100.0)
    assert len(t.sent) == n and not h.strays() and h.table.client_count == 0
    assert len(h.responses(ctx)) == 2 and h.terminated_at(ctx) == 3 * RFC.t2 + RFC.t4


def test_non_invite_over_reliable_terminates_on_final() -> None:
    h = Harness()
    t = h.transport(reliable=True)
    req = make_request("BYE", branch=new_branch())
    ctx = h.request(req, t)
    assert h.table.get_timer() == RFC.b  # Timer F only, no E
    h.receive(response_to(req, 200), t)
    assert h.responses(ctx) == [(0.0, 200)] and h.table.client_count == 0
    assert h.table.get_timer() is None


def test_response_matching_uses_branch_and_cseq_method() -> None:
    h = Harness()
    t = h.transport()
    req = make_request()
    ctx = h.request(req, t)
    cancel = build_cancel(req)
    cctx = h.request(cancel, t)
    h.receive(response_to(cancel, 200), t)
    assert h.responses(cctx) == [(0.0, 200)]
    assert h.responses(ctx) == []  # the INVITE transaction did not see the CANCEL's 200
    h.receive(response_to(req, 487), t)
    assert h.responses(ctx) == [(0.0, 487)]
    h.receive(response_to(make_request(branch="z9hG4bKunknown"), 200), t)
    assert h.strays() == [200]


def test_build_cancel_fields() -> None:
    invite = make_request()
    invite.headers.add("Route", "<sip:proxy.example.com;lr>")
    invite.headers.add("Via", "SIP/2.0/UDP second.example.com;branch=z9hG4bK2")
    cancel = build_cancel(invite)
    assert cancel.method == "CANCEL" and cancel.uri == invite.uri
    assert cancel.cseq == (1, "CANCEL") and cancel.call_id == invite.call_id
    assert cancel.headers.get("From") == invite.headers.get("From")
    assert cancel.headers.get("To") == invite.headers.get("To")
    assert cancel.headers.get_all("Via") == [invite.headers.get("Via")]
    assert cancel.headers.get_all("Route") == ["<sip:proxy.example.com;lr>"]
    assert parse_message(cancel.to_bytes()).to_bytes() == cancel.to_bytes()


# ---------------------------------------------------------------------------
# Server INVITE (17.2.1)


def test_auto_100_trying_when_tu_is_slow() -> None:
    h = Harness()
    t = h.transport()
    h.receive(wire(make_request()), t)
    assert len(h.requests()) == 1 and t.sent == []
    h.advance(RFC.trying - 0.001)
    assert t.sent == []
    h.advance(RFC.trying)
    assert t.statuses() == [100] and t.times() == [RFC.trying]
    trying = t.messages()[0]
    assert trying.to.tag is None and trying.top_via.branch == "z9hG4bKinv1"


def test_no_auto_100_when_tu_answers_quickly() -> None:
    h = Harness()
    t = h.transport()
    h.receive(wire(make_request()), t)
    h.advance(RFC.trying / 2)
    h.respond(h.last_tx(), make_response(h.last_tx().request, 180, to_tag="b1"))
    h.advance(10.0)
    assert t.statuses() == [180]


def test_retransmitted_invite_resends_last_response() -> None:
    h = Harness()
    t = h.transport()
    req = make_request()
    h.receive(wire(req), t)
    tx = h.last_tx()
    h.respond(tx, make_response(tx.request, 180, to_tag="b1"))
    h.receive(wire(req), t)
    h.receive(wire(req), t)
    assert t.statuses() == [180, 180, 180]
    assert len(h.requests()) == 1  # the TU saw the INVITE once


def test_retransmission_before_any_response_gets_100() -> None:
    h = Harness()
    t = h.transport()
    h.receive(wire(make_request()), t)
    h.receive(wire(make_request()), t)
    assert t.statuses() == [100] and len(h.requests()) == 1
    h.advance(RFC.trying)
    assert t.statuses() == [100]  # the 100 was sent: no automatic one on top


def test_486_retransmitted_by_timer_g_until_ack_then_timer_i() -> None:
    h = Harness()
    t = h.transport()
    req = make_request()
    h.receive(wire(req), t)
    tx = h.last_tx()
    h.respond(tx, make_response(tx.request, 486, to_tag="b1"))
    h.advance(20 * T1)
    # Timer G: T1, 2T1, 4T1, then capped at T2 = 8*T1
    assert t.statuses() == [486] * 5 and t.times_in_t1() == [0, 1, 3, 7, 15]
    ack = make_request("ACK", to_tag="b1")
    h.receive(wire(ack), t)
    assert tx.state == "confirmed" and h.table.get_timer() == 20 * T1 + RFC.t4  # Timer I
    n = len(t.sent)
    h.receive(wire(ack), t)  # duplicate ACK absorbed
    h.advance(100.0)
    assert len(t.sent) == n  # no retransmissions after the ACK
    assert tx.state == "terminated" and h.terminated_at(tx) == 20 * T1 + RFC.t4
    assert h.table.server_count == 0 and not tx.timed_out
    assert [e.request.method for e in h.requests()] == ["INVITE"]  # the ACK was not passed up


def test_timer_h_fires_without_ack_and_times_out() -> None:
    h = Harness()
    t = h.transport()
    h.receive(wire(make_request()), t)
    tx = h.last_tx()
    h.respond(tx, make_response(tx.request, 603, to_tag="b1"))
    h.advance(100.0)
    assert t.times_in_t1() == [0, 1, 3, 7, 15, 23, 31, 39, 47, 55, 63]
    assert set(t.statuses()) == {603}
    assert h.terminated_at(tx) == RFC.b and tx.timed_out and h.table.server_count == 0


def test_non_2xx_over_reliable_is_not_retransmitted() -> None:
    h = Harness()
    t = h.transport(reliable=True)
    h.receive(wire(make_request()), t)
    tx = h.last_tx()
    h.respond(tx, make_response(tx.request, 486, to_tag="b1"))
    assert h.table.get_timer() == RFC.b  # Timer H only, no G
    h.advance(10.0)
    assert t.statuses() == [486]
    h.receive(wire(make_request("ACK", to_tag="b1")), t)
    assert tx.state == "terminated" and h.terminated_at(tx) == 10.0  # Timer I = 0 on TCP


def test_2xx_accepted_state_absorbs_retransmissions_and_passes_ack() -> None:
    h = Harness()
    t = h.transport()
    req = make_request()
    h.receive(wire(req), t)
    tx = h.last_tx()
    h.respond(tx, make_response(tx.request, 200, to_tag="b1"))
    assert tx.state == "accepted" and h.table.get_timer() == RFC.b  # Timer L
    h.receive(wire(req), t)  # retransmitted INVITE: absorbed, not a new call
    assert len(h.requests()) == 1 and t.statuses() == [200]
    ack = make_request("ACK", branch="z9hG4bKack2xx", to_tag="b1")  # 2xx ACK: new branch
    h.receive(wire(ack), t)
    same_branch_ack = make_request("ACK", to_tag="b1")  # one sharing the INVITE's branch
    h.receive(wire(same_branch_ack), t)
    assert [(e.request.method, e.transaction) for e in h.requests()[1:]] == [("ACK", None)] * 2
    with pytest.raises(TransactionError, match="cannot send 486 in state accepted"):
        h.respond(tx, make_response(tx.request, 486))
    h.respond(tx, make_response(tx.request, 200, to_tag="b1"))  # RFC 6026: 2xx pass through
    assert t.statuses() == [200, 200]
    h.advance(100.0)
    assert h.terminated_at(tx) == RFC.b and h.table.server_count == 0
    assert t.statuses() == [200, 200]  # the transaction never retransmits a 2xx


@pytest.mark.parametrize(
    ("method", "status"), [("INVITE", 200), ("INVITE", 486), ("BYE", 200), ("OPTIONS", 404)]
)
def test_a_settled_server_transaction_keeps_only_wire_bytes(method: str, status: int) -> None:
    """After its final response a server transaction waiting out Timer L/G-H/J holds the
    request's and the response's bytes, not the parsed messages; it still absorbs or answers
    retransmissions byte for byte, and ``request``/``last_response`` still answer."""
    h = Harness()
    t = h.transport()
    req = make_request(method, branch="z9hG4bKsettle", rport=True)
    h.receive(wire(req), t, ("198.51.100.7", 40000))
    tx = h.last_tx()
    received = tx.request
    h.respond(tx, make_response(received, status, to_tag="b1"))
    assert tx._request is None and tx._last_response is None  # the parsed messages let go
    # the API still answers, from the bytes: the request as received (Via stamped)
    assert tx.request.to_bytes() == received.to_bytes()
    assert tx.request.method == method and tx.request.call_id == "call-1@192.0.2.10"
    assert tx.request.top_via.params["rport"] == "40000"
    assert tx.last_response is not None and tx.last_response.status == status
    assert tx.local_tag() == "b1"
    first = t.sent[-1][1]
    h.receive(wire(req), t, ("198.51.100.7", 40000))  # a retransmission of the request
    if method == "INVITE" and status == 200:
        assert len(t.sent) == 1  # Accepted absorbs it (RFC 6026); the UA core resends 2xx
        h.respond(tx, make_response(tx.request, 200, to_tag="b1"))  # 2xx pass through
        assert tx._last_response is None and t.sent[-1][1] == first
    else:
        assert t.sent[-1][1] == first and len(t.sent) == 2  # the same bytes again
    if method == "INVITE" and status >= 300:
        h.advance(RFC.t1)  # Timer G resends the same bytes too
        assert t.sent[-1][1] == first and len(t.sent) == 3
    with pytest.raises(TransactionError):
        tx.respond_error(500, h.now)
    assert len(h.requests()) == 1  # no retransmission reached the TU as a new request
    h.advance(100.0)
    assert h.table.server_count == 0


def test_a_transaction_ended_by_its_final_on_a_reliable_transport_keeps_its_messages() -> None:
    h = Harness()
    t = h.transport(reliable=True)
    h.receive(wire(make_request("BYE", branch="z9hG4bKtcp")), t)
    tx = h.last_tx()
    resp = make_response(tx.request, 200, to_tag="b1")
    h.respond(tx, resp)
    assert tx.state == "terminated" and tx.last_response is resp  # nothing to settle


def test_stray_ack_for_2xx_goes_to_tu_without_transaction() -> None:
    h = Harness()
    h.receive(wire(make_request("ACK", branch="z9hG4bKlonely", to_tag="b1")), h.transport())
    assert [e.transaction for e in h.requests()] == [None] and h.table.server_count == 0


def test_cancel_matching() -> None:
    h = Harness()
    t = h.transport()
    invite = make_request()
    h.receive(wire(invite), t)
    itx = h.last_tx()
    h.respond(itx, make_response(itx.request, 180, to_tag="b1"))
    cancel = build_cancel(invite)
    assert cancel.top_via.branch == invite.top_via.branch
    h.receive(wire(cancel), t)
    ctx = h.last_tx()
    assert ctx is not itx and ctx.method == "CANCEL"
    assert h.table.find_invite_server_transaction(ctx.request) is itx
    h.respond(ctx, make_response(ctx.request, 200, to_tag="b1"))
    h.respond(itx, make_response(itx.request, 487, to_tag="b1"))
    sent = [(m.status, m.cseq[1]) for m in t.messages() if isinstance(m, SipResponse)]
    assert sent == [(180, "INVITE"), (200, "CANCEL"), (487, "INVITE")]
    assert h.table.server_count == 2  # CANCEL (Timer J) and INVITE (completed) are separate
    # A CANCEL for an unknown INVITE finds nothing (the TU answers 481).
    h.receive(wire(build_cancel(make_request(branch="z9hG4bKnone"))), t)
    assert h.table.find_invite_server_transaction(h.last_tx().request) is None


def test_invite_guard_answers_408_for_a_silent_tu() -> None:
    h = Harness(Timers(invite_guard=90.0))
    t = h.transport(reliable=True)
    h.receive(wire(make_request()), t)
    tx = h.last_tx()
    h.respond(tx, make_response(tx.request, 180, to_tag="ring"))
    h.advance(89.0)
    assert t.statuses() == [180]
    h.advance(90.0)
    assert t.statuses() == [180, 408] and t.times() == [0.0, 90.0]
    assert t.messages()[-1].to.tag == "ring"  # same dialog tag as the 180
    h.receive(wire(make_request("ACK", to_tag="ring")), t)
    assert h.table.server_count == 0


def test_server_transport_error_is_recorded_and_the_machine_moves_on() -> None:
    h = Harness()
    t = h.transport()
    h.receive(wire(make_request()), t)
    tx = h.last_tx()
    t.fail = True
    h.respond(tx, make_response(tx.request, 486, to_tag="b1"))  # 17.2.4: no exception to the TU
    assert isinstance(tx.transport_error, ConnectionError) and tx.state == "completed"
    t.fail = False
    h.advance(T1)
    assert t.statuses() == [486]  # Timer G retransmits once the link is back


# ---------------------------------------------------------------------------
# Server non-INVITE (17.2.2)


def test_non_invite_retransmission_resends_final_until_timer_j() -> None:
    h = Harness()
    t = h.transport()
    req = make_request("OPTIONS", branch="z9hG4bKopt")
    h.receive(wire(req), t)
    h.receive(wire(req), t)  # Trying: absorbed
    assert t.sent == [] and len(h.requests()) == 1
    tx = h.last_tx()
    assert tx.state == "trying"
    h.advance(1.0)
    h.respond(tx, make_response(tx.request, 200, to_tag="b1"))
    h.receive(wire(req), t)
    assert t.statuses() == [200, 200]
    h.advance(100.0)
    assert h.terminated_at(tx) == 1.0 + RFC.b and h.table.server_count == 0  # Timer J
    h.receive(wire(req), t)  # after J it is a new request again
    assert len(h.requests()) == 2


def test_non_invite_provisional_then_final() -> None:
    h = Harness()
    t = h.transport()
    req = make_request("OPTIONS", branch=new_branch())
    h.receive(wire(req), t)
    tx = h.last_tx()
    h.respond(tx, make_response(tx.request, 100))
    assert tx.state == "proceeding"
    h.receive(wire(req), t)  # Proceeding: the provisional is resent
    h.respond(tx, make_response(tx.request, 200, to_tag="b1"))
    assert t.statuses() == [100, 100, 200] and tx.state == "completed"
    with pytest.raises(TransactionError):
        h.respond(tx, make_response(tx.request, 200, to_tag="b1"))


def test_non_invite_reliable_terminates_at_once() -> None:
    h = Harness()
    t = h.transport(reliable=True)
    h.receive(wire(make_request("BYE", branch="z9hG4bKbye")), t)
    tx = h.last_tx()
    h.respond(tx, make_response(tx.request, 100))
    assert tx.state == "proceeding"
    h.respond(tx, make_response(tx.request, 200, to_tag="b1"))
    assert tx.state == "terminated" and h.table.server_count == 0
    assert h.table.get_timer() is None


def test_silent_tu_does_not_leak_non_invite_transactions() -> None:
    h = Harness()
    t = h.transport()
    for i in range(20):
        h.now = i * 0.1
        h.receive(wire(make_request("OPTIONS", branch=new_branch())), t)
    assert h.table.server_count == 20
    h.advance(RFC.b + 1.0)  # the last one arrived at 1.9: still alive
    assert h.table.server_count == 9
    h.advance(RFC.b + 2.0)
    assert h.table.server_count == 0 and t.sent == [] and h.table.get_timer() is None


def test_many_transactions_leave_no_residue() -> None:
    h = Harness()
    t = h.transport(reliable=True)
    for i in range(200):
        h.receive(wire(make_request("MESSAGE", branch=new_branch(), cseq=i + 1)), t)
        tx = h.last_tx()
        h.respond(tx, make_response(tx.request, 202, to_tag="b"))
        req = make_request("OPTIONS", branch=new_branch(), cseq=i + 1)
        ctx = h.request(req, t)
        h.receive(response_to(req, 200), t)
        assert ctx.final_response is not None
        h.receive(wire(make_request("INVITE", branch=new_branch(), cseq=i + 1)), t)
        itx = h.last_tx()
        h.respond(itx, make_response(itx.request, 486, to_tag="b"))
    assert h.table.server_count == 200 and h.table.client_count == 0  # INVITEs await ACK
    h.advance(RFC.invite_guard + 1)
    assert h.table.server_count == 0 and h.table.client_count == 0
    assert h.table.get_timer() is None


def test_stale_timer_entries_never_outnumber_live_transactions() -> None:
    """Each answered INVITE moves its deadline (100 Trying, guard, then Timer L) and leaves
    stale heap entries behind; they are compacted before they outnumber the live ones twice,
    so a burst of calls in Accepted (64*T1) costs one entry each, not one per timer set."""
    h = Harness()
    t = h.transport()
    for i in range(300):
        h.receive(wire(make_request("INVITE", branch=new_branch(), cseq=i + 1)), t)
        tx = h.last_tx()
        h.respond(tx, make_response(tx.request, 180, to_tag="b"))
        h.respond(tx, make_response(tx.request, 200, to_tag="b"))
        assert len(h.table._heap) <= max(64, 2 * h.table.server_count) + 1
    assert h.table.server_count == 300
    h.advance(RFC.b + 1)
    assert h.table.server_count == 0 and h.table.get_timer() is None


def test_rfc2543_branchless_retransmission_matching() -> None:
    h = Harness()
    t = h.transport()
    req = make_request("OPTIONS", branch="old1")
    h.receive(wire(req), t)
    tx = h.last_tx()
    h.respond(tx, make_response(tx.request, 200, to_tag="b1"))
    h.receive(wire(req), t)
    assert t.statuses() == [200, 200] and len(h.requests()) == 1
    other = make_request("OPTIONS", branch="old1", cseq=2)  # same branch, new CSeq: new request
    h.receive(wire(other), t)
    assert len(h.requests()) == 2


def test_server_matching_needs_branch_and_sent_by() -> None:
    h = Harness()
    t = h.transport()
    h.receive(wire(make_request("OPTIONS", branch="z9hG4bKsame")), t)
    h.receive(wire(make_request("OPTIONS", branch="z9hG4bKsame", host="192.0.2.99")), t)
    assert len(h.requests()) == 2 and h.table.server_count == 2  # 17.2.3: two transactions


# ---------------------------------------------------------------------------
# The table's clock


def test_table_timer_is_the_earliest_deadline_of_all() -> None:
    h = Harness()
    t = h.transport()
    h.receive(wire(make_request("OPTIONS", branch=new_branch())), t)  # "tu" guard at 64*T1
    assert h.table.get_timer() == RFC.b
    h.now = 1.0
    h.receive(wire(make_request()), t)  # auto-100 at 1.2
    assert h.table.get_timer() == 1.0 + RFC.trying
    h.respond(h.last_tx(), make_response(h.last_tx().request, 180, to_tag="x"))
    assert h.table.get_timer() == RFC.b  # the 100 is off; the INVITE guard is at 601
    h.now = 2.0
    ctx = h.request(make_request("REGISTER", branch=new_branch()), t)
    assert h.table.get_timer() == 2.0 + T1  # Timer E
    ctx.abandon()
    assert h.table.get_timer() == RFC.b


def test_late_handle_timer_fires_once_and_early_does_nothing() -> None:
    h = Harness()
    t = h.transport()
    h.request(make_request(), t)
    h.table.handle_timer(T1 / 2)  # early: nothing due
    assert len(t.sent) == 1 and h.table.get_timer() == T1
    h.table.handle_timer(10 * T1)  # late: one retransmission, next interval counted from now
    assert len(t.sent) == 2 and h.table.get_timer() == 12 * T1


# ---------------------------------------------------------------------------
# Via stamping and response routing (18.2.1, 18.2.2, RFC 3581)


def test_stamp_received_rules() -> None:
    req = make_request(host="10.0.0.9")
    stamp_received(req, ("203.0.113.5", 40000))
    assert req.top_via.received == "203.0.113.5" and not req.top_via.has_rport

    same = make_request(host="203.0.113.5")
    stamp_received(same, ("203.0.113.5", 5060))
    assert same.top_via.received is None

    named = make_request(host="phone.example.com")
    stamp_received(named, ("203.0.113.5", 5060))
    assert named.top_via.received == "203.0.113.5"

    nat = make_request(host="10.0.0.9", rport=True)
    stamp_received(nat, ("203.0.113.5", 40000))
    via = nat.top_via
    assert via.received == "203.0.113.5" and via.rport == 40000

    v6 = make_request(host="[2001:db8::1]")
    stamp_received(v6, ("2001:db8:0:0::1", 5060))
    assert v6.top_via.received is None  # same address, different spelling


def test_response_destination_rules() -> None:
    assert response_destination(
        parse_via("SIP/2.0/UDP 10.0.0.9;received=203.0.113.5;rport=40000")
    ) == ("203.0.113.5", 40000)
    assert response_destination(parse_via("SIP/2.0/UDP 10.0.0.9:5070;received=203.0.113.5")) == (
        "203.0.113.5",
        5070,
    )
    assert response_destination(parse_via("SIP/2.0/UDP 10.0.0.9")) == ("10.0.0.9", 5060)
    assert response_destination(parse_via("SIP/2.0/TLS [2001:db8::1]")) == ("2001:db8::1", 5061)
    assert response_destination(
        parse_via("SIP/2.0/UDP 10.0.0.9;rport"), ("203.0.113.5", 40000)
    ) == ("203.0.113.5", 40000)
    assert response_destination(
        parse_via("SIP/2.0/UDP 10.0.0.9:5062;maddr=224.0.1.75;received=1.2.3.4")
    ) == ("224.0.1.75", 5062)


def test_server_responses_follow_rport_through_nat() -> None:
    h = Harness()
    t = h.transport()
    h.receive(
        wire(make_request("OPTIONS", branch=new_branch(), host="10.0.0.9", rport=True)),
        t,
        ("203.0.113.5", 40000),
    )
    tx = h.last_tx()
    assert tx.response_addr == ("203.0.113.5", 40000)
    h.respond(tx, make_response(tx.request, 200, to_tag="b"))
    _, data, addr = t.sent[0]
    assert addr == ("203.0.113.5", 40000)
    assert b";rport=40000" in data and b";received=203.0.113.5" in data  # the Via echoes the stamp


# ---------------------------------------------------------------------------
# 2xx retransmission (13.3.1.4)


def ok_retransmission(t: FakeTransport) -> OkRetransmission:
    return OkRetransmission(make_response(make_request(), 200, to_tag="b1"), t, PEER, RFC)


def run(machine: OkRetransmission, clock: list[float], until: float) -> None:
    while (at := machine.get_timer()) is not None and at <= until:
        clock[0] = at
        machine.handle_timer(at)
    clock[0] = until


def test_ok_retransmission_until_ack() -> None:
    clock = [0.0]
    t = FakeTransport(clock=lambda: clock[0])
    rtx = ok_retransmission(t)
    rtx.start(0.0)
    assert rtx.active and rtx.get_timer() == T1
    run(rtx, clock, 20 * T1)
    # T1 doubling, capped at T2 = 8*T1
    assert t.times_in_t1() == [1, 3, 7, 15] and rtx.retransmissions == 4
    assert all(d == rtx.response.to_bytes() for _, d, _ in t.sent)
    rtx.ack_received()
    assert not rtx.active and rtx.get_timer() is None and not rtx.timed_out
    run(rtx, clock, 100.0)
    assert rtx.retransmissions == 4


def test_ok_retransmission_times_out() -> None:
    clock = [0.0]
    t = FakeTransport(clock=lambda: clock[0])
    rtx = ok_retransmission(t)
    rtx.start(0.0)
    run(rtx, clock, RFC.b - 0.001)
    assert rtx.active and not rtx.timed_out
    run(rtx, clock, 100.0)
    assert rtx.timed_out and not rtx.active and rtx.get_timer() is None
    assert t.times_in_t1() == [1, 3, 7, 15, 23, 31, 39, 47, 55, 63]


def test_ok_retransmission_survives_transport_errors() -> None:
    t = FakeTransport()
    t.fail = True
    rtx = ok_retransmission(t)
    rtx.start(0.0)
    rtx.handle_timer(T1)
    assert rtx.retransmissions == 1 and rtx.get_timer() == 3 * T1 and rtx.active


# ---------------------------------------------------------------------------
# The asyncio adapter, on a real loop


class Recorder:
    """on_request / on_stray_response sink."""

    def __init__(self) -> None:
        self.requests: list[tuple[SipRequest, ServerTransaction | None]] = []
        self.strays: list[SipResponse] = []

    def on_request(self, req: SipRequest, tx: ServerTransaction | None) -> None:
        self.requests.append((req, tx))

    def on_stray(self, resp: SipResponse, addr: Addr) -> None:
        self.strays.append(resp)


def layer_with(rec: Recorder | None = None) -> tuple[TransactionLayer, Recorder]:
    rec = rec or Recorder()
    return TransactionLayer(FAST, rec.on_request, rec.on_stray), rec


def loop_transport(reliable: bool = False) -> FakeTransport:
    return FakeTransport(reliable, clock=asyncio.get_running_loop().time)


async def test_adapter_runs_timers_a_and_b_on_the_loop() -> None:
    layer, _ = layer_with()
    t = loop_transport()
    req = make_request()
    start = asyncio.get_running_loop().time()
    ctx = await layer.request(req, t, PEER)
    final = await asyncio.wait_for(ctx.final(), 2)
    assert final.status == 408 and ctx.timed_out and ctx.state == "terminated"
    assert asyncio.get_running_loop().time() - start >= FAST.b
    assert [r.status async for r in ctx.responses()] == [408]
    gaps = [b - a for a, b in zip(t.times(), t.times()[1:], strict=False)]
    # timers never fire early (each gap at least doubles); how many retransmissions fit before
    # Timer B depends on how punctual the loop is, so only the bounds that cannot move: Timer A
    # is due before Timer B (one retransmission at least), and never-early doubling caps the count
    assert 2 <= len(t.sent) <= 7 and all(gap >= FAST.t1 * 2**i for i, gap in enumerate(gaps))
    assert layer.client_count == 0


async def test_adapter_keeps_one_asyncio_timer_per_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    handles: list[tuple[asyncio.TimerHandle, list[bool]]] = []
    original = loop.call_at

    def call_at(
        when: float, callback: Callable[..., object], *args: object, context: object = None
    ) -> asyncio.TimerHandle:
        fired: list[bool] = []

        def run() -> None:
            fired.append(True)
            callback(*args)

        handle = original(when, run, context=context)  # type: ignore[arg-type]
        handles.append((handle, fired))
        return handle

    monkeypatch.setattr(loop, "call_at", call_at)

    def armed() -> int:
        return sum(1 for h, fired in handles if not h.cancelled() and not fired)

    layer, rec = layer_with()
    t = loop_transport()
    ctxs = [
        await layer.request(make_request("OPTIONS", branch=new_branch()), t, PEER)
        for _ in range(10)
    ]
    for i in range(10):
        layer.receive(wire(make_request("INVITE", branch=new_branch(), cseq=i + 1)), t, PEER)
    assert layer.client_count == 10 and layer.server_count == 10
    assert armed() == 1
    await asyncio.sleep(FAST.t1 * 3)
    assert armed() == 1 and len(t.sent) >= 20  # retransmissions and 100s went out meanwhile
    before = len(handles)
    for _ in range(10):  # a request and its retransmissions, all due after the earliest
        layer.receive(wire(make_request("OPTIONS", branch="z9hG4bKlate")), t, PEER)
    assert len(handles) == before  # the earliest deadline did not move: no re-arming
    for ctx in ctxs:
        ctx.abandon()
    for _, tx in rec.requests:
        assert tx is not None
        tx.respond(make_response(tx.request, 486, to_tag="b"))
    assert armed() == 1  # Timers G and H of the INVITEs
    layer.close()
    assert armed() == 0


async def test_adapter_server_flow_cancel_and_terminated() -> None:
    rec = Recorder()
    layer_ref: list[TransactionLayer] = []
    timeouts: list[ServerTransaction] = []

    def on_request(req: SipRequest, tx: ServerTransaction | None) -> None:
        rec.requests.append((req, tx))
        assert tx is not None
        if req.method == "INVITE":
            tx.on_timeout = timeouts.append
            tx.respond(make_response(req, 180, to_tag="b1"))
        elif req.method == "CANCEL":
            invite_tx = layer_ref[0].find_invite_server_transaction(req)
            if invite_tx is None:
                tx.respond(make_response(req, 481))
                return
            tx.respond(make_response(req, 200, to_tag="b1"))
            invite_tx.respond(make_response(invite_tx.request, 487, to_tag="b1"))

    layer = TransactionLayer(FAST, on_request)
    layer_ref.append(layer)
    t = loop_transport()
    invite = make_request()
    layer.receive(wire(invite), t, PEER)
    invite_tx = rec.requests[0][1]
    assert invite_tx is not None and invite_tx.is_invite and invite_tx.can_respond
    assert invite_tx.source_addr == PEER and invite_tx.response_addr == PEER
    layer.receive(wire(build_cancel(invite)), t, PEER)
    assert [(m.status, m.cseq[1]) for m in t.messages()] == [
        (180, "INVITE"),
        (200, "CANCEL"),
        (487, "INVITE"),
    ]
    assert not invite_tx.can_respond and invite_tx.last_response is not None
    layer.receive(wire(build_cancel(make_request(branch="z9hG4bKnone"))), t, PEER)
    assert t.statuses()[-1] == 481
    # No ACK for the 487: Timer H ends the INVITE transaction and tells the TU.
    await asyncio.wait_for(invite_tx.terminated.wait(), 2)
    assert timeouts == [invite_tx] and invite_tx.timed_out and invite_tx.state == "terminated"
    with pytest.raises(TransactionError):
        invite_tx.respond(make_response(invite, 500))
    layer.close()


async def test_adapter_terminated_event_is_made_on_demand() -> None:
    """A server transaction's wrapper lives as long as the transaction (64*T1 after a final
    response); its ``terminated`` event is only made when asked for, and is set when asked
    for after the end."""
    seen: list[ServerTransaction] = []

    def on_request(req: SipRequest, tx: ServerTransaction | None) -> None:
        assert tx is not None
        seen.append(tx)
        tx.respond(make_response(req, 200, to_tag="b1"))

    layer = TransactionLayer(FAST, on_request)
    t = loop_transport()
    layer.receive(wire(make_request("OPTIONS", branch="z9hG4bKa")), t, PEER)
    layer.receive(wire(make_request("OPTIONS", branch="z9hG4bKb")), t, PEER)
    early, late = seen
    assert early._terminated is None and late._terminated is None
    waiting = early.terminated  # asked for while the transaction lives
    assert not waiting.is_set()
    await asyncio.wait_for(waiting.wait(), 2)  # Timer J
    assert late._terminated is None and late.state == "terminated"
    assert late.terminated.is_set()  # asked for after the end: already set
    assert not hasattr(late, "__dict__")  # slots: a small object per transaction
    layer.close()


async def test_handler_exceptions_become_500() -> None:
    def boom(req: SipRequest, tx: ServerTransaction | None) -> None:
        raise RuntimeError("bug")

    async def aboom(req: SipRequest, tx: ServerTransaction | None) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("async bug")

    for handler in (boom, aboom):
        layer = TransactionLayer(FAST, handler)
        t = loop_transport()
        layer.receive(wire(make_request("OPTIONS", branch=new_branch())), t, PEER)
        await asyncio.sleep(0.01)
        assert t.statuses() == [500]
        assert t.messages()[0].to.tag  # final responses carry a To tag (8.2.6.2)
        layer.close()


async def test_async_handler_is_awaited() -> None:
    done = asyncio.Event()

    async def handler(req: SipRequest, tx: ServerTransaction | None) -> None:
        await asyncio.sleep(0)
        assert tx is not None
        tx.respond(make_response(req, 200, to_tag="x"))
        done.set()

    layer = TransactionLayer(FAST, handler)
    t = loop_transport()
    layer.receive(wire(make_request("OPTIONS", branch=new_branch())), t, PEER)
    await asyncio.wait_for(done.wait(), 1)
    assert t.statuses() == [200]
    layer.close()


async def test_adapter_responses_strays_and_close() -> None:
    layer, rec = layer_with()
    t = loop_transport()
    req = make_request()
    ctx: ClientTransaction = await layer.request(req, t, PEER)
    assert ctx.is_invite and ctx.request is req and ctx.addr == PEER
    layer.receive(response_to(req, 180), t, PEER)
    layer.receive(response_to(req, 486), t, PEER)
    assert [r.status async for r in ctx.responses()] == [180, 486]
    assert (await ctx.final()).status == 486 and ctx.ack is not None
    layer.receive(response_to(make_request(branch="z9hG4bKother"), 200), t, PEER)
    assert [r.status for r in rec.strays] == [200]
    pending = await layer.request(make_request("OPTIONS", branch=new_branch()), t, PEER)
    failing = loop_transport()
    failing.fail = True
    broken = await layer.request(make_request("BYE", branch=new_branch()), failing, PEER)
    assert (await broken.final()).status == 503 and broken.transport_error is not None
    layer.close()
    assert (await pending.final()).status == 408
    assert layer.client_count == 0 and layer.server_count == 0


async def test_adapter_abandon_resolves_the_final_at_once() -> None:
    layer, _ = layer_with()
    t = loop_transport(reliable=True)  # no Timer A: nothing else would wake the layer soon
    req = make_request()
    ctx = await layer.request(req, t, PEER)
    layer.receive(response_to(req, 180), t, PEER)
    ctx.abandon()
    final = await asyncio.wait_for(ctx.final(), FAST.b / 4)
    assert final.status == 408 and ctx.timed_out and layer.client_count == 0
    assert [r.status async for r in ctx.responses()] == [180, 408]


async def test_invite_ok_retransmitter_until_ack() -> None:
    t = loop_transport()
    ok = make_response(make_request(), 200, to_tag="b1")
    timeouts: list[bool] = []
    rtx = InviteOkRetransmitter(ok, t, PEER, FAST, on_timeout=lambda: timeouts.append(True))
    assert rtx.response is ok and rtx.transport is t and rtx.addr == PEER and rtx.timers is FAST
    rtx.start()
    assert rtx.active
    await asyncio.sleep(0.2)
    rtx.ack_received()
    n = len(t.sent)
    assert 3 <= n <= 7 and rtx.retransmissions == n and not rtx.active
    await asyncio.sleep(0.1)
    assert len(t.sent) == n and not timeouts
    assert all(d == ok.to_bytes() for _, d, _ in t.sent)


async def test_invite_ok_retransmitter_times_out() -> None:
    t = loop_transport()
    ok = make_response(make_request(), 200, to_tag="b1")
    fired = asyncio.Event()
    rtx = InviteOkRetransmitter(ok, t, PEER, FAST, on_timeout=fired.set)
    rtx.start()
    await asyncio.wait_for(fired.wait(), 2)
    assert not rtx.active and len(t.sent) >= 6  # nominally 17 within 64*T1
    n = len(t.sent)
    await asyncio.sleep(0.1)
    assert len(t.sent) == n


async def test_invite_ok_retransmitter_stop() -> None:
    t = loop_transport()
    rtx = InviteOkRetransmitter(make_response(make_request(), 200, to_tag="b1"), t, PEER, FAST)
    rtx.start()
    rtx.stop()
    await asyncio.sleep(FAST.t1 * 3)
    assert t.sent == [] and not rtx.active and rtx.retransmissions == 0


# ---------------------------------------------------------------------------
# Real sockets on loopback


async def test_udp_loopback_transaction() -> None:
    errors: list[tuple[bytes, Addr, Exception]] = []

    uas_txs: list[ServerTransaction] = []

    def uas_request(req: SipRequest, tx: ServerTransaction | None) -> None:
        assert tx is not None
        uas_txs.append(tx)
        if req.method == "INVITE":
            tx.respond(make_response(req, 486, to_tag="uas"))
        else:
            tx.respond(make_response(req, 200, to_tag="uas"))

    uas_layer = TransactionLayer(FAST, uas_request)
    uac_rec = Recorder()
    uac_layer = TransactionLayer(FAST, uac_rec.on_request, uac_rec.on_stray)
    uas = await UdpTransport.listen(
        "127.0.0.1", 0, uas_layer.receive, on_error=lambda d, a, e: errors.append((d, a, e))
    )
    big_errors: list[Exception] = []
    uac = await UdpTransport.listen(
        "127.0.0.1",
        0,
        uac_layer.receive,
        max_datagram=4000,
        on_error=lambda d, a, e: big_errors.append(e),
    )
    try:
        host, port = uac.local_addr
        req = make_request("OPTIONS", branch=new_branch(), host=host, rport=True)
        req.headers.set_first("Via", f"SIP/2.0/UDP {host}:{port};branch={new_branch()};rport")
        ctx = await uac_layer.request(req, uac, uas.local_addr)
        final = await asyncio.wait_for(ctx.final(), 2)
        assert final.status == 200 and final.to.tag == "uas"
        assert final.top_via.rport == port and final.top_via.received == "127.0.0.1"

        invite = make_request("INVITE", host=host)
        invite.headers.set_first("Via", f"SIP/2.0/UDP {host}:{port};branch={new_branch()}")
        ictx = await uac_layer.request(invite, uac, uas.local_addr)
        assert (await asyncio.wait_for(ictx.final(), 2)).status == 486
        await asyncio.sleep(0.05)
        # our ACK reached the UAS transaction and stopped Timer G
        invite_tx = uas_txs[-1]
        assert invite_tx.is_invite and invite_tx.state in ("confirmed", "terminated")
        assert not invite_tx.timed_out

        # Garbage never escapes the protocol callback; it reaches on_error.
        raw_sender = await UdpTransport.listen("127.0.0.1", 0, lambda m, t, a: None)
        raw_sender.send(b"this is not SIP\r\n\r\n", uas.local_addr)
        raw_sender.send(b"\r\n\r\n", uas.local_addr)  # keepalive: silently ignored
        raw_sender.send(
            b"OPTIONS sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\n\r\n", uas.local_addr
        )
        await asyncio.sleep(0.05)
        assert len(errors) == 2
        assert all(
            isinstance(e, SipParseError) and a == raw_sender.local_addr for _, a, e in errors
        )
        assert "missing mandatory" in str(errors[1][2])
        assert uas.keepalives == 1
        raw_sender.close()

        sender2 = await UdpTransport.listen("127.0.0.1", 0, lambda m, t, a: None)
        sender2.send(b"X" * 5000, uac.local_addr)
        await asyncio.sleep(0.05)
        assert len(big_errors) == 1 and "exceeds" in str(big_errors[0])
        sender2.close()
    finally:
        uac.close()
        uas.close()
        uas_layer.close()
        uac_layer.close()


async def test_tcp_loopback_responses_use_the_same_connection() -> None:
    errors: list[Exception] = []

    def uas_request(req: SipRequest, tx: ServerTransaction | None) -> None:
        assert tx is not None
        tx.respond(make_response(req, 200, to_tag="tcp"))

    uas_layer = TransactionLayer(FAST, uas_request)
    server = await TcpTransport.listen(
        "127.0.0.1", 0, uas_layer.receive, on_error=lambda d, a, e: errors.append(e)
    )
    uac_layer = TransactionLayer(FAST, Recorder().on_request)
    conn = await TcpTransport.connect("127.0.0.1", server.local_addr[1], uac_layer.receive)
    try:
        assert conn.reliable and conn.name == "TCP"
        req = make_request("OPTIONS", branch=new_branch())
        ctx: ClientTransaction = await uac_layer.request(req, conn, server.local_addr)
        final = await asyncio.wait_for(ctx.final(), 2)
        assert final.status == 200 and final.to.tag == "tcp"
        assert uac_layer.client_count == 0 and len(server.connections) == 1

        bad = await TcpTransport.connect("127.0.0.1", server.local_addr[1], lambda m, t, a: None)
        bad.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", server.local_addr)
        await asyncio.wait_for(bad.closed, 2)  # the server dropped the out-of-sync stream
        assert len(errors) == 1 and isinstance(errors[0], SipParseError)
    finally:
        conn.close()
        await server.close()
        uas_layer.close()
        uac_layer.close()


def test_core_types_are_what_the_events_carry() -> None:
    h = Harness()
    t = h.transport()
    h.receive(wire(make_request()), t)
    assert isinstance(h.last_tx(), InviteServerTransaction)
    assert h.table.find_invite_server_transaction(build_cancel(make_request())) is h.last_tx()
