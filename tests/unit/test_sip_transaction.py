"""Transaction layer tests: RFC 3261 17 timers with shrunk T1, fake and real transports."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from gateway.sip.builders import build_cancel, make_response, new_branch
from gateway.sip.headers import Headers
from gateway.sip.message import SipRequest, SipResponse, parse_message
from gateway.sip.syntax import SipParseError
from gateway.sip.via import parse_via
from gateway.sip.transaction import (
    ClientTransaction,
    InviteOkRetransmitter,
    ServerTransaction,
    Timers,
    TransactionError,
    TransactionLayer,
    _TimerOwner,
    response_destination,
    stamp_received,
)
from gateway.sip.transport import Addr, TcpTransport, Transport, UdpTransport

# T1 = 10 ms => 64*T1 = 0.64 s. Timer D and the 100-Trying delay shrunk too.
FAST = Timers(t1=0.01, t2=0.04, t4=0.05, d=0.1, trying=0.03)
PEER: Addr = ("192.0.2.10", 5060)


class FakeTransport:
    """In-memory Transport recording every send with a timestamp."""

    def __init__(self, reliable: bool = False) -> None:
        self.reliable = reliable
        self.name = "TCP" if reliable else "UDP"
        self.local_addr: Addr = ("10.0.0.1", 5060)
        self.sent: list[tuple[float, bytes, Addr]] = []
        self.fail = False

    def send(self, data: bytes, addr: Addr) -> None:
        if self.fail:
            raise ConnectionError("link down")
        self.sent.append((time.monotonic(), data, addr))

    def messages(self) -> list[SipRequest | SipResponse]:
        return [parse_message(d) for _, d, _ in self.sent]

    def statuses(self) -> list[int]:
        return [m.status for m in self.messages() if isinstance(m, SipResponse)]

    def methods(self) -> list[str]:
        return [m.method for m in self.messages() if isinstance(m, SipRequest)]

    def times(self) -> list[float]:
        return [t for t, _, _ in self.sent]


@pytest.fixture
def scheduled(monkeypatch: pytest.MonkeyPatch) -> list[tuple[object, str, float]]:
    """Every timer armed by a transaction: (owner, timer name, delay).

    Asserting on the delays the state machines *schedule* checks the RFC
    timer arithmetic exactly, independent of how loaded the test machine is.
    """
    calls: list[tuple[object, str, float]] = []
    original = _TimerOwner._set

    def record(self: _TimerOwner, name: str, delay: float, cb: Callable[[], None]) -> None:
        calls.append((self, name, delay))
        original(self, name, delay, cb)

    monkeypatch.setattr(_TimerOwner, "_set", record)
    return calls


def delays(calls: list[tuple[object, str, float]], name: str) -> list[float]:
    return [round(d / FAST.t1, 6) for _, n, d in calls if n == name]


def test_fake_transport_satisfies_protocol() -> None:
    assert isinstance(FakeTransport(), Transport)


def make_request(method: str = "INVITE", branch: str = "z9hG4bKinv1", *, rport: bool = False,
                 host: str = "192.0.2.10", cseq: int = 1, to_tag: str | None = None) -> SipRequest:
    via = f"SIP/2.0/UDP {host}:5060;branch={branch}" + (";rport" if rport else "")
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    h = Headers([
        ("Via", via),
        ("Max-Forwards", "70"),
        ("From", "<sip:alice@example.com>;tag=a1"),
        ("To", to),
        ("Call-ID", "call-1@192.0.2.10"),
        ("CSeq", f"{cseq} {method}"),
    ])
    return SipRequest(method, "sip:bob@example.com", h)


def wire(msg: SipRequest | SipResponse) -> SipRequest | SipResponse:
    """What the peer receives: a fresh parse of the serialized message."""
    return parse_message(msg.to_bytes())


def response_to(req: SipRequest, status: int, to_tag: str | None = "b1") -> SipResponse:
    resp = wire(make_response(req, status, to_tag=to_tag if status > 100 else None))
    assert isinstance(resp, SipResponse)
    return resp


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


# ---------------------------------------------------------------------------
# Client INVITE (17.1.1)


async def test_timer_a_retransmits_with_doubling_and_timer_b_gives_408(
    scheduled: list[tuple[object, str, float]],
) -> None:
    layer, _ = layer_with()
    t = FakeTransport()
    req = make_request()
    ctx = await layer.request(req, t, PEER)
    start = time.monotonic()
    final = await asyncio.wait_for(ctx.final(), 2)
    elapsed = time.monotonic() - start
    assert final.status == 408 and ctx.timed_out
    assert final.call_id == req.call_id and final.cseq == (1, "INVITE")
    assert elapsed >= 0.6  # Timer B = 64*T1
    assert set(t.methods()) == {"INVITE"}
    # Timer A doubles with no T2 cap: sends at 0, T1, 3T1, 7T1, 15T1, 31T1, 63T1.
    assert delays(scheduled, "B") == [64]
    assert delays(scheduled, "A")[:6] == [1, 2, 4, 8, 16, 32]
    assert 4 <= len(t.sent) <= 7  # upper bound is exact; fewer only on a starved loop
    gaps = [b - a for a, b in zip(t.times(), t.times()[1:])]
    assert all(gap >= FAST.t1 * 2**i * 0.9 for i, gap in enumerate(gaps))
    assert layer.client_count == 0


async def test_reliable_invite_is_never_retransmitted() -> None:
    layer, _ = layer_with()
    t = FakeTransport(reliable=True)
    ctx = await layer.request(make_request(), t, PEER)
    assert (await asyncio.wait_for(ctx.final(), 2)).status == 408
    assert len(t.sent) == 1


async def test_provisional_stops_timer_a_and_486_generates_ack() -> None:
    layer, rec = layer_with()
    t = FakeTransport()
    req = make_request()
    ctx = await layer.request(req, t, PEER)
    layer.receive(response_to(req, 100), t, PEER)
    layer.receive(response_to(req, 180), t, PEER)
    await asyncio.sleep(0.1)
    assert len(t.sent) == 1  # no retransmission after a provisional
    busy = response_to(req, 486)
    layer.receive(busy, t, PEER)
    got = [r.status async for r in ctx.responses()]
    assert got == [100, 180, 486]
    assert (await ctx.final()).status == 486
    ack = t.messages()[-1]
    assert isinstance(ack, SipRequest) and ack.method == "ACK"
    assert ack.uri == req.uri
    assert ack.top_via.branch == req.top_via.branch  # same transaction (17.1.1.3)
    assert len(ack.via) == 1
    assert ack.cseq == (1, "ACK")
    assert ack.to.tag == "b1"  # To taken from the response
    assert ack.from_.tag == "a1" and ack.call_id == req.call_id
    # A retransmitted 486 is answered with the same ACK, not delivered again.
    layer.receive(response_to(req, 486), t, PEER)
    assert t.methods() == ["INVITE", "ACK", "ACK"]
    assert ctx.state == "completed" and layer.client_count == 1
    await asyncio.sleep(FAST.d + 0.05)  # Timer D
    assert layer.client_count == 0 and not rec.strays


async def test_2xx_ends_client_invite_and_retransmissions_are_stray() -> None:
    layer, rec = layer_with()
    t = FakeTransport()
    req = make_request()
    ctx = await layer.request(req, t, PEER)
    layer.receive(response_to(req, 200), t, PEER)
    assert (await ctx.final()).status == 200
    assert layer.client_count == 0
    assert "ACK" not in t.methods()  # the UA core ACKs 2xx, not the transaction
    layer.receive(response_to(req, 200), t, PEER)
    assert [r.status for r in rec.strays] == [200]


async def test_abandon_synthesizes_408() -> None:
    layer, _ = layer_with()
    t = FakeTransport()
    req = make_request()
    ctx = await layer.request(req, t, PEER)
    layer.receive(response_to(req, 180), t, PEER)
    ctx.abandon()
    assert (await ctx.final()).status == 408 and layer.client_count == 0


async def test_transport_error_gives_503() -> None:
    layer, _ = layer_with()
    t = FakeTransport()
    t.fail = True
    ctx = await layer.request(make_request(), t, PEER)
    final = await ctx.final()
    assert final.status == 503 and ctx.transport_error is not None and layer.client_count == 0


async def test_request_validation() -> None:
    layer, _ = layer_with()
    t = FakeTransport()
    with pytest.raises(TransactionError, match="ACK"):
        await layer.request(make_request("ACK"), t, PEER)
    with pytest.raises(TransactionError, match="z9hG4bK"):
        await layer.request(make_request(branch="oldstyle"), t, PEER)
    ctx = await layer.request(make_request(), t, PEER)
    with pytest.raises(TransactionError, match="already exists"):
        await layer.request(make_request(), t, PEER)
    ctx.abandon()


# ---------------------------------------------------------------------------
# Client non-INVITE (17.1.2)


async def test_timer_e_capped_at_t2_and_timer_f_gives_408(
    scheduled: list[tuple[object, str, float]],
) -> None:
    layer, _ = layer_with()
    t = FakeTransport()
    ctx = await layer.request(make_request("OPTIONS", branch=new_branch()), t, PEER)
    final = await asyncio.wait_for(ctx.final(), 2)
    assert final.status == 408
    assert delays(scheduled, "F") == [64]
    e = delays(scheduled, "E")
    assert e[:5] == [1, 2, 4, 4, 4] and set(e[3:]) == {4}  # doubling, capped at T2 = 4*T1
    gaps = [b - a for a, b in zip(t.times(), t.times()[1:])]
    assert gaps[0] >= FAST.t1 * 0.9 and gaps[1] >= 2 * FAST.t1 * 0.9
    assert 6 <= len(t.sent) <= 18  # nominally 0,1,3,7,11,...,63 T1
    assert layer.client_count == 0


async def test_non_invite_provisional_then_final_then_timer_k(
    scheduled: list[tuple[object, str, float]],
) -> None:
    layer, rec = layer_with()
    t = FakeTransport()
    req = make_request("REGISTER", branch=new_branch())
    ctx = await layer.request(req, t, PEER)
    layer.receive(response_to(req, 100), t, PEER)
    before = len(t.sent)
    await asyncio.sleep(FAST.t2 * 2.5)
    assert len(t.sent) > before  # Timer E keeps firing in Proceeding...
    assert delays(scheduled, "E")[-1] == 4  # ...at T2
    layer.receive(response_to(req, 401), t, PEER)
    assert (await ctx.final()).status == 401
    n = len(t.sent)
    layer.receive(response_to(req, 401), t, PEER)  # absorbed during Timer K
    await asyncio.sleep(FAST.t4 + 0.05)
    assert len(t.sent) == n and not rec.strays and layer.client_count == 0
    assert delays(scheduled, "K") == [FAST.t4 / FAST.t1]


async def test_non_invite_over_reliable_terminates_on_final() -> None:
    layer, _ = layer_with()
    t = FakeTransport(reliable=True)
    req = make_request("BYE", branch=new_branch())
    ctx = await layer.request(req, t, PEER)
    layer.receive(response_to(req, 200), t, PEER)
    assert (await ctx.final()).status == 200 and layer.client_count == 0


async def test_response_matching_uses_branch_and_cseq_method() -> None:
    layer, rec = layer_with()
    t = FakeTransport()
    req = make_request()
    ctx = await layer.request(req, t, PEER)
    cancel = build_cancel(req)
    cctx = await layer.request(cancel, t, PEER)
    layer.receive(response_to(cancel, 200), t, PEER)
    assert (await cctx.final()).status == 200
    assert not ctx._final.done()  # the INVITE transaction did not see the CANCEL's 200
    layer.receive(response_to(req, 487), t, PEER)
    assert (await ctx.final()).status == 487
    other = make_request(branch="z9hG4bKunknown")
    layer.receive(response_to(other, 200), t, PEER)
    assert [r.status for r in rec.strays] == [200]


# ---------------------------------------------------------------------------
# Server INVITE (17.2.1)


async def test_auto_100_trying_when_tu_is_slow() -> None:
    layer, rec = layer_with()
    t = FakeTransport()
    layer.receive(wire(make_request()), t, PEER)
    assert len(rec.requests) == 1 and t.sent == []
    await asyncio.sleep(FAST.trying + 0.03)
    assert t.statuses() == [100]
    trying = t.messages()[0]
    assert trying.to.tag is None and trying.top_via.branch == "z9hG4bKinv1"


async def test_no_auto_100_when_tu_answers_quickly() -> None:
    rec = Recorder()

    def on_request(req: SipRequest, tx: ServerTransaction | None) -> None:
        rec.requests.append((req, tx))
        assert tx is not None
        tx.respond(make_response(req, 180, to_tag="b1"))

    layer = TransactionLayer(FAST, on_request)
    t = FakeTransport()
    layer.receive(wire(make_request()), t, PEER)
    await asyncio.sleep(FAST.trying + 0.03)
    assert t.statuses() == [180]


async def test_retransmitted_invite_resends_last_response() -> None:
    layer, rec = layer_with()
    t = FakeTransport()
    req = make_request()
    layer.receive(wire(req), t, PEER)
    tx = rec.requests[0][1]
    assert tx is not None
    tx.respond(make_response(tx.request, 180, to_tag="b1"))
    layer.receive(wire(req), t, PEER)
    layer.receive(wire(req), t, PEER)
    assert t.statuses() == [180, 180, 180]
    assert len(rec.requests) == 1  # the TU saw the INVITE once


async def test_retransmission_before_any_response_gets_100() -> None:
    layer, rec = layer_with()
    t = FakeTransport()
    layer.receive(wire(make_request()), t, PEER)
    layer.receive(wire(make_request()), t, PEER)
    assert t.statuses() == [100] and len(rec.requests) == 1


async def test_486_retransmitted_by_timer_g_until_ack_then_timer_i(
    scheduled: list[tuple[object, str, float]],
) -> None:
    layer, rec = layer_with()
    t = FakeTransport()
    req = make_request()
    layer.receive(wire(req), t, PEER)
    tx = rec.requests[0][1]
    assert tx is not None
    tx.respond(make_response(tx.request, 486, to_tag="b1"))
    await asyncio.sleep(0.2)
    sent_486 = t.statuses().count(486)
    # 1 + retransmits at T1, 3T1, 7T1, 11T1, 15T1, 19T1 (T2 cap = 4*T1) within 20*T1
    assert 3 <= sent_486 <= 7
    g = delays(scheduled, "G")
    assert g[:4] == [1, 2, 4, 4] and set(g[2:]) == {4}
    assert delays(scheduled, "H") == [64]
    gaps = [b - a for a, b in zip(t.times(), t.times()[1:])]
    assert gaps[0] >= FAST.t1 * 0.9
    ack = make_request("ACK", to_tag="b1")
    layer.receive(wire(ack), t, PEER)
    assert tx.state == "confirmed"
    n = len(t.sent)
    layer.receive(wire(ack), t, PEER)  # duplicate ACK absorbed
    await asyncio.sleep(FAST.t4 + 0.05)
    assert len(t.sent) == n  # no retransmissions after the ACK
    assert tx.state == "terminated" and layer.server_count == 0
    assert delays(scheduled, "I") == [FAST.t4 / FAST.t1]
    assert [r.method for r, _ in rec.requests] == ["INVITE"]  # the ACK was not passed up


async def test_timer_h_fires_without_ack_and_notifies() -> None:
    layer, rec = layer_with()
    t = FakeTransport()
    layer.receive(wire(make_request()), t, PEER)
    tx = rec.requests[0][1]
    assert tx is not None
    timeouts: list[ServerTransaction] = []
    tx.on_timeout = timeouts.append
    tx.respond(make_response(tx.request, 603, to_tag="b1"))
    await asyncio.wait_for(tx.terminated.wait(), 2)
    assert timeouts == [tx] and tx.timed_out and layer.server_count == 0
    assert t.statuses().count(603) >= 6  # nominally 17 within 64*T1


async def test_non_2xx_over_reliable_is_not_retransmitted() -> None:
    layer, rec = layer_with()
    t = FakeTransport(reliable=True)
    layer.receive(wire(make_request()), t, PEER)
    tx = rec.requests[0][1]
    assert tx is not None
    tx.respond(make_response(tx.request, 486, to_tag="b1"))
    await asyncio.sleep(0.1)
    assert t.statuses() == [486]
    layer.receive(wire(make_request("ACK", to_tag="b1")), t, PEER)
    assert tx.state == "terminated"  # Timer I = 0 on reliable transports


async def test_2xx_accepted_state_absorbs_retransmissions_and_passes_ack() -> None:
    layer, rec = layer_with()
    t = FakeTransport()
    req = make_request()
    layer.receive(wire(req), t, PEER)
    tx = rec.requests[0][1]
    assert tx is not None
    tx.respond(make_response(tx.request, 200, to_tag="b1"))
    assert tx.state == "accepted"
    layer.receive(wire(req), t, PEER)  # retransmitted INVITE: absorbed, not a new call
    assert len(rec.requests) == 1 and t.statuses() == [200]
    ack = make_request("ACK", branch="z9hG4bKack2xx", to_tag="b1")  # 2xx ACK: new branch
    layer.receive(wire(ack), t, PEER)
    assert [(r.method, tx_) for r, tx_ in rec.requests[1:]] == [("ACK", None)]
    with pytest.raises(TransactionError):
        tx.respond(make_response(tx.request, 486))
    await asyncio.wait_for(tx.terminated.wait(), 2)  # Timer L
    assert layer.server_count == 0


async def test_stray_ack_for_2xx_goes_to_tu_without_transaction() -> None:
    layer, rec = layer_with()
    layer.receive(wire(make_request("ACK", branch="z9hG4bKlonely", to_tag="b1")), FakeTransport(), PEER)
    assert len(rec.requests) == 1 and rec.requests[0][1] is None and layer.server_count == 0


async def test_cancel_matching() -> None:
    rec = Recorder()
    layer_ref: list[TransactionLayer] = []

    def on_request(req: SipRequest, tx: ServerTransaction | None) -> None:
        rec.requests.append((req, tx))
        assert tx is not None
        if req.method == "INVITE":
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
    t = FakeTransport()
    invite = make_request()
    layer.receive(wire(invite), t, PEER)
    cancel = build_cancel(invite)
    assert cancel.top_via.branch == invite.top_via.branch
    layer.receive(wire(cancel), t, PEER)
    sent = [(m.status, m.cseq[1]) for m in t.messages() if isinstance(m, SipResponse)]
    assert sent == [(180, "INVITE"), (200, "CANCEL"), (487, "INVITE")]
    assert layer.server_count == 2  # CANCEL (Timer J) and INVITE (completed) are separate
    # A CANCEL for an unknown INVITE gets 481.
    layer.receive(wire(build_cancel(make_request(branch="z9hG4bKnone"))), t, PEER)
    assert t.statuses()[-1] == 481


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
# Server non-INVITE (17.2.2)


async def test_non_invite_retransmission_resends_final_until_timer_j() -> None:
    layer, rec = layer_with()
    t = FakeTransport()
    req = make_request("OPTIONS", branch="z9hG4bKopt")
    layer.receive(wire(req), t, PEER)
    layer.receive(wire(req), t, PEER)  # Trying: absorbed
    assert t.sent == [] and len(rec.requests) == 1
    tx = rec.requests[0][1]
    assert tx is not None and tx.state == "trying"
    tx.respond(make_response(tx.request, 200, to_tag="b1"))
    layer.receive(wire(req), t, PEER)
    assert t.statuses() == [200, 200]
    await asyncio.wait_for(tx.terminated.wait(), 2)  # Timer J = 64*T1
    assert layer.server_count == 0
    layer.receive(wire(req), t, PEER)  # after J it is a new request again
    assert len(rec.requests) == 2


async def test_non_invite_reliable_terminates_at_once() -> None:
    layer, rec = layer_with()
    t = FakeTransport(reliable=True)
    layer.receive(wire(make_request("BYE", branch="z9hG4bKbye")), t, PEER)
    tx = rec.requests[0][1]
    assert tx is not None
    tx.respond(make_response(tx.request, 100))
    assert tx.state == "proceeding"
    tx.respond(make_response(tx.request, 200, to_tag="b1"))
    assert tx.state == "terminated" and layer.server_count == 0


async def test_handler_exceptions_become_500() -> None:
    def boom(req: SipRequest, tx: ServerTransaction | None) -> None:
        raise RuntimeError("bug")

    async def aboom(req: SipRequest, tx: ServerTransaction | None) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("async bug")

    for handler in (boom, aboom):
        layer = TransactionLayer(FAST, handler)
        t = FakeTransport()
        layer.receive(wire(make_request("OPTIONS", branch=new_branch())), t, PEER)
        await asyncio.sleep(0.01)
        assert t.statuses() == [500]
        assert t.messages()[0].to.tag  # final responses carry a To tag (8.2.6.2)


async def test_async_handler_is_awaited() -> None:
    done = asyncio.Event()

    async def handler(req: SipRequest, tx: ServerTransaction | None) -> None:
        await asyncio.sleep(0)
        assert tx is not None
        tx.respond(make_response(req, 200, to_tag="x"))
        done.set()

    layer = TransactionLayer(FAST, handler)
    t = FakeTransport()
    layer.receive(wire(make_request("OPTIONS", branch=new_branch())), t, PEER)
    await asyncio.wait_for(done.wait(), 1)
    assert t.statuses() == [200]


async def test_invite_guard_answers_408_for_a_silent_tu() -> None:
    timers = Timers(t1=0.01, t2=0.04, t4=0.05, d=0.1, trying=0.01, invite_guard=0.1)
    rec = Recorder()
    layer = TransactionLayer(timers, rec.on_request)
    t = FakeTransport(reliable=True)
    layer.receive(wire(make_request()), t, PEER)
    tx = rec.requests[0][1]
    assert tx is not None
    tx.respond(make_response(tx.request, 180, to_tag="ring"))
    await asyncio.sleep(0.2)
    assert t.statuses() == [180, 408]
    assert t.messages()[-1].to.tag == "ring"  # same dialog tag as the 180
    layer.receive(wire(make_request("ACK", to_tag="ring")), t, PEER)
    assert layer.server_count == 0


async def test_silent_tu_does_not_leak_non_invite_transactions() -> None:
    layer, _ = layer_with()
    t = FakeTransport()
    for _ in range(20):
        layer.receive(wire(make_request("OPTIONS", branch=new_branch())), t, PEER)
    assert layer.server_count == 20
    await asyncio.sleep(FAST.b + 0.1)
    assert layer.server_count == 0


async def test_many_transactions_leave_no_residue() -> None:
    layer, rec = layer_with()
    t = FakeTransport(reliable=True)
    for i in range(200):
        layer.receive(wire(make_request("MESSAGE", branch=new_branch(), cseq=i + 1)), t, PEER)
        tx = rec.requests[-1][1]
        assert tx is not None
        tx.respond(make_response(tx.request, 202, to_tag="b"))
        req = make_request("OPTIONS", branch=new_branch(), cseq=i + 1)
        ctx = await layer.request(req, t, PEER)
        layer.receive(response_to(req, 200), t, PEER)
        await ctx.final()
    assert layer.server_count == 0 and layer.client_count == 0


async def test_rfc2543_branchless_retransmission_matching() -> None:
    layer, rec = layer_with()
    t = FakeTransport()
    req = make_request("OPTIONS", branch="old1")
    layer.receive(wire(req), t, PEER)
    tx = rec.requests[0][1]
    assert tx is not None
    tx.respond(make_response(tx.request, 200, to_tag="b1"))
    layer.receive(wire(req), t, PEER)
    assert t.statuses() == [200, 200] and len(rec.requests) == 1


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
    assert response_destination(parse_via("SIP/2.0/UDP 10.0.0.9;received=203.0.113.5;rport=40000")) == ("203.0.113.5", 40000)
    assert response_destination(parse_via("SIP/2.0/UDP 10.0.0.9:5070;received=203.0.113.5")) == ("203.0.113.5", 5070)
    assert response_destination(parse_via("SIP/2.0/UDP 10.0.0.9")) == ("10.0.0.9", 5060)
    assert response_destination(parse_via("SIP/2.0/TLS [2001:db8::1]")) == ("2001:db8::1", 5061)
    assert response_destination(parse_via("SIP/2.0/UDP 10.0.0.9;rport"), ("203.0.113.5", 40000)) == ("203.0.113.5", 40000)
    assert response_destination(parse_via("SIP/2.0/UDP 10.0.0.9:5062;maddr=224.0.1.75;received=1.2.3.4")) == ("224.0.1.75", 5062)


async def test_server_responses_follow_rport_through_nat() -> None:
    layer, rec = layer_with()
    t = FakeTransport()
    layer.receive(wire(make_request("OPTIONS", branch=new_branch(), host="10.0.0.9", rport=True)), t, ("203.0.113.5", 40000))
    tx = rec.requests[0][1]
    assert tx is not None and tx.response_addr == ("203.0.113.5", 40000)
    tx.respond(make_response(tx.request, 200, to_tag="b"))
    _, data, addr = t.sent[0]
    assert addr == ("203.0.113.5", 40000)
    assert b";rport=40000" in data and b";received=203.0.113.5" in data  # the Via echoes the stamp


# ---------------------------------------------------------------------------
# 2xx retransmission helper (13.3.1.4)


async def test_invite_ok_retransmitter_until_ack(scheduled: list[tuple[object, str, float]]) -> None:
    t = FakeTransport()
    ok = make_response(make_request(), 200, to_tag="b1")
    timeouts: list[bool] = []
    rtx = InviteOkRetransmitter(ok, t, PEER, FAST, on_timeout=lambda: timeouts.append(True))
    rtx.start()
    await asyncio.sleep(0.2)
    rtx.ack_received()
    n = len(t.sent)
    assert 3 <= n <= 7 and rtx.retransmissions == n and not rtx.active
    r = delays(scheduled, "retransmit")
    assert r[:4] == [1, 2, 4, 4] and set(r[2:]) == {4}  # T1 doubling, capped at T2
    assert delays(scheduled, "timeout") == [64]
    await asyncio.sleep(0.1)
    assert len(t.sent) == n and not timeouts
    assert all(d == ok.to_bytes() for _, d, _ in t.sent)


async def test_invite_ok_retransmitter_times_out() -> None:
    t = FakeTransport()
    ok = make_response(make_request(), 200, to_tag="b1")
    fired = asyncio.Event()
    rtx = InviteOkRetransmitter(ok, t, PEER, FAST, on_timeout=fired.set)
    rtx.start()
    await asyncio.wait_for(fired.wait(), 2)
    assert not rtx.active and len(t.sent) >= 6  # nominally 17 within 64*T1
    n = len(t.sent)
    await asyncio.sleep(0.1)
    assert len(t.sent) == n


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
    uas = await UdpTransport.listen("127.0.0.1", 0, uas_layer.receive, on_error=lambda d, a, e: errors.append((d, a, e)))
    uac = await UdpTransport.listen("127.0.0.1", 0, uac_layer.receive, max_datagram=4000)
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
        raw_sender.send(b"OPTIONS sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\n\r\n", uas.local_addr)
        await asyncio.sleep(0.05)
        assert len(errors) == 2
        assert all(isinstance(e, SipParseError) and a == raw_sender.local_addr for _, a, e in errors)
        assert "missing mandatory" in str(errors[1][2])
        assert uas.keepalives == 1
        raw_sender.close()

        big_errors: list[Exception] = []
        uac._on_error = lambda d, a, e: big_errors.append(e)
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
    server = await TcpTransport.listen("127.0.0.1", 0, uas_layer.receive, on_error=lambda d, a, e: errors.append(e))
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
