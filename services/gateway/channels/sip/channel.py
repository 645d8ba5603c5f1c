"""The SIP channel: the gateway's user agent on top of the transaction layer.

It turns SIP into the core's calls and legs (a trunk INVITE that passes admission becomes an
offered call, a BYE releases a leg) and the core's requests into SIP (180/200/480, BYE,
INVITEs to registered phones with CANCEL on timeout). It owns the SIP specifics the core must
not know: trunk admission codes, SDP offer/answer, dialogs, re-INVITEs, media ports.
Anything malformed gets a 400 that says what was wrong.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable
from typing import Any

from prometheus_client import Counter

from gateway.channels.sip.admission import Admission
from gateway.channels.sip.leg import SipLeg
from gateway.channels.sip.trunk import TrunkPolicy
from gateway.core.contracts import Attempt, CallerParty, CallSink, Leg, Offer, Outcome, Release
from gateway.media.endpoint import NoFreePort, PortAllocator, RtpEndpoint
from gateway.quality import observe_leg, prepare
from gateway.sip import sdp
from gateway.sip.builders import (
    bad_request_for,
    build_cancel,
    make_response,
    new_branch,
    new_call_id,
    new_tag,
)
from gateway.sip.headers import Headers
from gateway.sip.message import SipRequest, SipResponse
from gateway.sip.registrar import Binding, Registrar
from gateway.sip.syntax import SipParseError
from gateway.sip.transaction_asyncio import (
    InviteOkRetransmitter,
    ServerTransaction,
    TransactionLayer,
)
from gateway.sip.transport import Addr, Transport
from gateway.sip.uri import parse_name_addr

__all__ = ["ALLOW", "SipChannel", "result_for"]

log = logging.getLogger(__name__)

SIP_REQUESTS = Counter("hotline_sip_requests_total", "SIP requests received", ["method"])
SIP_BAD = Counter("hotline_sip_malformed_total", "Malformed SIP messages received")
REJECTED = Counter("hotline_gateway_rejected_total", "INVITEs refused", ["status", "site"])

ALLOWED = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER")
ALLOW = ", ".join(ALLOWED)
KNOWN_UNSUPPORTED = {
    "SUBSCRIBE",
    "NOTIFY",
    "MESSAGE",
    "INFO",
    "REFER",
    "UPDATE",
    "PRACK",
    "PUBLISH",
}
USER_AGENT = "Hotline/0.1"
RETRY_AFTER_S = "60"  # a draining gateway's advice: try another one, or come back later
COUNTED_METHODS = frozenset(ALLOWED) | KNOWN_UNSUPPORTED  # metric labels stay bounded
CANCEL_WAIT_S = 5.0  # how long a CANCELled INVITE may take to end with its final response
LINGER_S = 5.0  # a failed outbound leg stays routable for late retransmissions


def result_for(status: int) -> Outcome:
    """What a final SIP status to our INVITE means for the attempt."""
    if status in (486, 600):
        return Outcome.BUSY
    if status == 603:
        return Outcome.REJECTED
    if status in (404, 410, 484, 604):
        return Outcome.UNREACHABLE
    if status in (408, 480, 487):
        return Outcome.NO_ANSWER
    return Outcome.REJECTED


class SipChannel:
    """SIP trunk and phones as a channel of the core: Signalling for its legs, and the
    EndpointDialer that rings registered extensions."""

    def __init__(
        self,
        layer: TransactionLayer,
        registrar: Registrar,
        advertised: Addr,
        *,
        media_host: str,
        allocator: PortAllocator,
        trunk: TrunkPolicy,
        site: str,
        admission: Admission | None = None,
    ) -> None:
        self.layer, self.registrar, self.trunk, self.site = layer, registrar, trunk, site
        self.admission = admission or Admission()  # new-call limits (admission.py)
        self.host, self.port = advertised
        self.media_host, self.allocator = media_host, allocator
        self.contact = f"<sip:hotline@{self.host}:{self.port}>"
        self._sink: CallSink | None = None
        prepare(site)
        self._dialogs: dict[str, SipLeg] = {}  # SIP Call-ID -> leg
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, sink: CallSink) -> None:
        """From now on new calls are offered to ``sink`` (before this, INVITEs get 503)."""
        self._sink = sink

    def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- helpers ------------------------------------------------------------------------
    def response(
        self,
        req: SipRequest,
        status: int,
        reason: str | None = None,
        *,
        to_tag: str | None = None,
        body: bytes = b"",
        extra: Iterable[tuple[str, str]] = (),
    ) -> SipResponse:
        resp = make_response(req, status, reason, to_tag=to_tag, body=body, extra=list(extra))
        resp.headers.add("Server", USER_AGENT)
        return resp

    def _via(self, transport: Transport) -> str:
        return f"SIP/2.0/{transport.name} {self.host}:{self.port};branch={new_branch()};rport"

    def leg_for(self, sip_call_id: str) -> SipLeg | None:
        """The leg of a dialog by its SIP Call-ID (tests and in-dialog routing)."""
        return self._dialogs.get(sip_call_id)

    # ---- inbound -----------------------------------------------------------------------
    def on_malformed(self, data: bytes, addr: Addr, exc: Exception, transport: Transport) -> None:
        """Answer 400 to a malformed request when it has enough to route a response."""
        SIP_BAD.inc()
        log.info("malformed SIP from %s:%d: %s", addr[0], addr[1], exc)
        resp = bad_request_for(data, str(exc), server=USER_AGENT)
        if resp is not None:
            try:
                transport.send(resp, addr)
            except ConnectionError:
                pass

    async def on_request(self, req: SipRequest, tx: ServerTransaction | None) -> None:
        SIP_REQUESTS.labels(req.method if req.method in COUNTED_METHODS else "other").inc()
        if tx is None:  # ACK for a 2xx: end-to-end, no transaction
            if req.method == "ACK":
                leg = self._dialogs.get(req.call_id)
                if leg is not None and leg.ok_retransmitter is not None:
                    leg.ok_retransmitter.ack_received()
            return
        method = req.method
        if method == "REGISTER":
            tx.respond(self.registrar.handle(req, tx.source_addr, tx.transport))
        elif method == "OPTIONS" and self.draining:  # keepalives tell proxies to go elsewhere
            tx.respond(self.response(req, 503, "Draining", extra=[("Retry-After", RETRY_AFTER_S)]))
        elif method == "OPTIONS":
            tx.respond(
                self.response(req, 200, extra=[("Allow", ALLOW), ("Accept", "application/sdp")])
            )
        elif method == "INVITE":
            await self._invite(req, tx)
        elif method == "BYE":
            self._bye(req, tx)
        elif method == "CANCEL":
            self._cancel(req, tx)
        elif method in KNOWN_UNSUPPORTED:
            tx.respond(self.response(req, 405, extra=[("Allow", ALLOW)]))
        else:
            tx.respond(self.response(req, 501, extra=[("Allow", ALLOW)]))

    def _refuse(
        self,
        req: SipRequest,
        tx: ServerTransaction,
        status: int,
        reason: str,
        extra: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.admission.release(req.call_id)
        REJECTED.labels(str(status), self.site).inc()
        tx.respond(self.response(req, status, reason[:100], extra=extra))

    @property
    def draining(self) -> bool:
        return self._sink is not None and not self._sink.accepting

    async def _invite(self, req: SipRequest, tx: ServerTransaction) -> None:
        try:
            to_tag = req.to.tag
        except SipParseError as exc:
            tx.respond(self.response(req, 400, f"Bad To: {exc}"[:100]))
            return
        if to_tag:
            self._reinvite(req, tx)
            return
        try:
            contact_raw = req.headers.get("Contact")
            if contact_raw is None:
                tx.respond(self.response(req, 400, "Missing Contact"))
                return
            target = str(parse_name_addr(contact_raw).uri)
        except SipParseError as exc:
            tx.respond(self.response(req, 400, f"Bad Contact: {exc}"[:100]))
            return
        await self._admit(req, tx, target)

    async def _admit(self, req: SipRequest, tx: ServerTransaction, target: str) -> None:
        """A new INVITE from the trunk: admission, media, then the call is offered."""
        source = tx.source_addr
        dnis = req.request_uri.user or ""
        if self._sink is None:
            self._refuse(req, tx, 503, "Starting Up")
            return
        if self.draining:  # before any media is taken: the caller's side tries elsewhere
            self._refuse(req, tx, 503, "Draining", extra=[("Retry-After", RETRY_AFTER_S)])
            return
        if not self.trunk.source_allowed(source[0]):
            self._refuse(req, tx, 403, "Source Not Allowed On Trunk")
            return
        if not self.trunk.serves(dnis):
            log.info("INVITE to unknown number %r from %s:%d refused", dnis, source[0], source[1])
            self._refuse(req, tx, 404, "No Such Number")
            return
        if refused := self.admission.admit(req.call_id, source[0], self.trunk.name):
            REJECTED.labels(str(refused.status), self.site).inc()
            tx.respond(self.response(req, refused.status, refused.reason, extra=refused.headers))
            return
        if not req.body:
            self._refuse(req, tx, 488, "SDP Offer Required")
            return
        try:
            offer = sdp.parse_sdp(req.body)
        except sdp.SdpError as exc:
            self._refuse(req, tx, 400, f"Bad SDP: {exc}")
            return
        try:
            endpoint = await RtpEndpoint.open(self.media_host, self.allocator)
        except NoFreePort:
            self._refuse(req, tx, 503, "No Media Ports")
            return
        try:
            negotiated, answer = sdp.answer(offer, self.media_host, endpoint.local_port)
        except sdp.SdpError as exc:
            endpoint.close()
            self._refuse(req, tx, 488, f"{exc}")
            return
        endpoint.configure(
            (negotiated.remote_addr, negotiated.remote_port),
            negotiated.codec,
            negotiated.payload_type,
            negotiated.dtmf_payload_type,
        )
        to_value = req.headers.get("To") or ""
        leg = SipLeg(
            sip_call_id=req.call_id,
            local_party=f"{to_value};tag={new_tag()}",
            remote_party=req.headers.get("From") or "",
            remote_target=target,
            transport=tx.transport,
            peer=tx.source_addr,
            media=endpoint,
            signalling=self,
            inbound=True,
            invite=req,
            server_tx=tx,
            local_sdp=answer.to_bytes(),
        )
        self._dialogs[leg.sip_call_id] = leg
        try:
            from_ = req.from_
            ani = from_.uri.user or from_.uri.host
            name = from_.display or ""
        except SipParseError:
            ani, name = "", ""
        call_id = self._sink.offer(
            leg, Offer(ani=ani, dnis=dnis, trunk=self.trunk.name, channel="sip", caller_name=name)
        )
        log.info("call %s offered: %s -> %s (%s)", call_id, ani, dnis, negotiated.codec)

    def _reinvite(self, req: SipRequest, tx: ServerTransaction) -> None:
        """A re-INVITE (refresh, hold): keep our media as it is and answer with our SDP."""
        leg = self._dialogs.get(req.call_id)
        if leg is None:
            tx.respond(self.response(req, 481))
            return
        resp = self.response(
            req,
            200,
            body=leg.local_sdp,
            extra=[("Contact", self.contact), ("Content-Type", "application/sdp")],
        )
        tx.respond(resp)
        leg.ok_retransmitter = InviteOkRetransmitter(
            resp, leg.transport, tx.response_addr, self.layer.timers
        )
        leg.ok_retransmitter.start()

    def _bye(self, req: SipRequest, tx: ServerTransaction) -> None:
        leg = self._dialogs.get(req.call_id)
        if leg is None:
            tx.respond(self.response(req, 481))
            return
        tx.respond(self.response(req, 200))
        self._released(leg, Release.HANGUP, "BYE from " + ("caller" if leg.inbound else "endpoint"))

    def _cancel(self, req: SipRequest, tx: ServerTransaction) -> None:
        invite_tx = self.layer.find_invite_server_transaction(req)
        leg = self._dialogs.get(req.call_id)
        if invite_tx is None or leg is None:
            tx.respond(self.response(req, 481))
            return
        tx.respond(self.response(req, 200))
        if not leg.answered and not leg.ended:
            leg.ended = True
            invite_tx.respond(self.response(leg.invite, 487, to_tag=leg.local_tag))
            self._released(leg, Release.HANGUP, "CANCEL from caller")

    def _released(self, leg: SipLeg, why: Release, detail: str) -> None:
        """The far end ended the leg: tell the core (a leg still being rung is the dialer's)."""
        leg.ended = True
        if leg.client_tx is not None and not leg.answered:
            return
        if self._sink is not None:
            self._sink.leg_released(leg, why, detail)

    def on_stray_response(self, resp: SipResponse, addr: Addr) -> None:
        """A retransmitted 2xx to our INVITE (our ACK was lost): ACK it again."""
        try:
            method = resp.cseq[1]
        except SipParseError:
            return
        leg = self._dialogs.get(resp.call_id)
        if method == "INVITE" and 200 <= resp.status < 300 and leg is not None and not leg.inbound:
            self._ack(leg, resp)

    # ---- Signalling: what the core asks of an inbound leg ----------------------------------
    def _own(self, leg: Leg) -> SipLeg:
        if not isinstance(leg, SipLeg) or leg.signalling is not self:
            raise TypeError(f"leg {leg.leg_id} does not belong to the SIP channel")
        return leg

    def ring(self, leg: Leg) -> None:
        sip = self._own(leg)
        if sip.server_tx is not None and sip.server_tx.can_respond:
            sip.server_tx.respond(
                self.response(
                    sip.invite, 180, to_tag=sip.local_tag, extra=[("Contact", self.contact)]
                )
            )

    def answer(self, leg: Leg) -> None:
        sip = self._own(leg)
        tx = sip.server_tx
        if tx is None or not tx.can_respond:
            return
        resp = self.response(
            sip.invite,
            200,
            to_tag=sip.local_tag,
            body=sip.local_sdp,
            extra=[
                ("Contact", self.contact),
                ("Allow", ALLOW),
                ("Content-Type", "application/sdp"),
            ],
        )
        tx.respond(resp)
        sip.answered = True
        sip.ok_retransmitter = InviteOkRetransmitter(
            resp,
            sip.transport,
            tx.response_addr,
            self.layer.timers,
            on_timeout=lambda: self._no_ack(sip),
        )
        sip.ok_retransmitter.start()

    def _no_ack(self, leg: SipLeg) -> None:
        """RFC 3261 13.3.1.4: no ACK within 64*T1 - the session is ended with a BYE."""
        if leg.ended:
            return
        log.warning("no ACK for 200 OK on %s; ending the call", leg.sip_call_id)
        leg.ended = True
        self._spawn(self._send_bye(leg), f"bye-{leg.leg_id}")
        self._released(leg, Release.TIMEOUT, "no ACK for 200 OK")

    def reject(self, leg: Leg, detail: str) -> None:
        sip = self._own(leg)
        sip.ended = True
        if sip.server_tx is not None and sip.server_tx.can_respond:
            sip.server_tx.respond(
                self.response(sip.invite, 480, "Temporarily Unavailable", to_tag=sip.local_tag)
            )

    async def hang_up(self, leg: Leg) -> None:
        """End a confirmed dialog from our side with BYE."""
        sip = self._own(leg)
        if sip.ended:
            return
        sip.ended = True
        await self._send_bye(sip)

    async def _send_bye(self, sip: SipLeg) -> None:
        if sip.ok_retransmitter is not None:
            sip.ok_retransmitter.ack_received()
        headers = Headers(
            [
                ("Via", self._via(sip.transport)),
                ("Max-Forwards", "70"),
                ("From", sip.local_party),
                ("To", sip.remote_party),
                ("Call-ID", sip.sip_call_id),
                ("CSeq", f"{sip.next_cseq()} BYE"),
                ("User-Agent", USER_AGENT),
            ]
        )
        tx = await self.layer.request(
            SipRequest("BYE", sip.remote_target, headers), sip.transport, sip.peer
        )
        final = await tx.final()
        if final.status >= 300:
            log.info("BYE on %s answered %d %s", sip.sip_call_id, final.status, final.reason)

    def release(self, leg: Leg) -> None:
        sip = self._own(leg)
        if not sip.media.closed:
            observe_leg(sip.media.stats, "caller" if sip.inbound else "agent", self.site, sip.seat)
        self.admission.release(sip.sip_call_id)
        sip.media.close()
        if sip.ok_retransmitter is not None:
            sip.ok_retransmitter.stop()
        if self._dialogs.get(sip.sip_call_id) is sip:
            del self._dialogs[sip.sip_call_id]

    def _release_later(self, leg: SipLeg) -> None:
        async def later() -> None:
            await asyncio.sleep(LINGER_S)
            self.release(leg)

        self._spawn(later(), f"release-{leg.leg_id}")

    # ---- EndpointDialer: ringing a registered phone ---------------------------------------
    async def ring_endpoint(
        self, target: str, caller: CallerParty, ring_timeout_s: float, abandon: asyncio.Event
    ) -> Attempt:
        """INVITE the phone registered as ``target``; CANCEL it on timeout or abandon."""
        binding = self.registrar.lookup(target)
        if binding is None:
            return Attempt(Outcome.UNREACHABLE, None, f"extension {target} is not registered")
        try:
            endpoint = await RtpEndpoint.open(self.media_host, self.allocator)
        except NoFreePort:
            return Attempt(Outcome.UNREACHABLE, None, "no media ports")
        offer = sdp.offer(self.media_host, endpoint.local_port)
        leg = await self._invite_phone(binding, caller, offer.to_bytes(), endpoint)
        assert leg.client_tx is not None
        final_task = asyncio.ensure_future(leg.client_tx.final())
        abandon_task = asyncio.ensure_future(abandon.wait())
        try:
            await asyncio.wait(
                {final_task, abandon_task},
                timeout=ring_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            abandon_task.cancel()
        if not final_task.done():
            self._spawn(self._cancel_invite(leg), f"cancel-{leg.leg_id}")
            gone = abandon.is_set()
            try:
                final: SipResponse | None = await asyncio.wait_for(final_task, CANCEL_WAIT_S)
            except asyncio.TimeoutError:
                final = None
            if final is None or final.status >= 300:
                self._fail(leg)
                if gone:
                    return Attempt(Outcome.CALLER_GONE, None, "caller hung up while ringing")
                return Attempt(Outcome.NO_ANSWER, None, f"no answer within {ring_timeout_s:.0f}s")
        else:
            final = final_task.result()
        if final.status >= 300:
            self._fail(leg)
            return Attempt(result_for(final.status), None, f"{final.status} {final.reason}")
        # 2xx: the dialog is up; ACK it whatever happens next.
        leg.client_tx = None
        self._ack(leg, final)
        try:
            negotiated = sdp.negotiate_answer(offer, sdp.parse_sdp(final.body))
        except sdp.SdpError as exc:
            self._spawn(self.hang_up(leg), f"bye-{leg.leg_id}")
            self._fail(leg)
            return Attempt(Outcome.REJECTED, None, f"unusable SDP answer: {exc}")
        if abandon.is_set():
            self._spawn(self.hang_up(leg), f"bye-{leg.leg_id}")
            self._fail(leg)
            return Attempt(Outcome.CALLER_GONE, None, "caller hung up while connecting")
        endpoint.configure(
            (negotiated.remote_addr, negotiated.remote_port),
            negotiated.codec,
            negotiated.payload_type,
            negotiated.dtmf_payload_type,
        )
        return Attempt(Outcome.ANSWERED, leg, "")

    def _fail(self, leg: SipLeg) -> None:
        """An outbound attempt that will not become part of a call."""
        leg.ended = True
        leg.media.close()
        self._release_later(leg)

    async def _invite_phone(
        self, binding: Binding, caller: CallerParty, offer_sdp: bytes, endpoint: RtpEndpoint
    ) -> SipLeg:
        """Send an INVITE to a registered phone; the leg's client transaction gives the answer."""
        transport = binding.transport
        sip_call_id = new_call_id(self.host)
        from_party = (
            f'"{caller.name or caller.number}" <sip:{caller.number or "anonymous"}@'
            f"{self.host}>;tag={new_tag()}"
        )
        to_party = f"<sip:{binding.extension}@{self.host}>"
        target = str(binding.uri)
        headers = Headers(
            [
                ("Via", self._via(transport)),
                ("Max-Forwards", "70"),
                ("From", from_party),
                ("To", to_party),
                ("Call-ID", sip_call_id),
                ("CSeq", "1 INVITE"),
                ("Contact", self.contact),
                ("Allow", ALLOW),
                ("User-Agent", USER_AGENT),
                ("X-Hotline-Call-ID", caller.call_id),
                ("Content-Type", "application/sdp"),
            ]
        )
        req = SipRequest("INVITE", target, headers, offer_sdp)
        leg = SipLeg(
            sip_call_id=sip_call_id,
            local_party=from_party,
            remote_party=to_party,
            remote_target=target,
            transport=transport,
            peer=binding.target,
            media=endpoint,
            signalling=self,
            inbound=False,
            invite=req,
            local_sdp=offer_sdp,
            seat=binding.extension,
        )
        self._dialogs[sip_call_id] = leg
        leg.client_tx = await self.layer.request(req, transport, binding.target)
        return leg

    def _ack(self, leg: SipLeg, resp: SipResponse) -> None:
        """ACK a 2xx (RFC 3261 13.2.2.4): a new request, straight to the remote target."""
        leg.remote_party = resp.headers.get("To") or leg.remote_party
        contact = resp.headers.get("Contact")
        if contact:
            try:
                leg.remote_target = str(parse_name_addr(contact).uri)
            except SipParseError:
                pass
        leg.answered = True
        headers = Headers(
            [
                ("Via", self._via(leg.transport)),
                ("Max-Forwards", "70"),
                ("From", leg.local_party),
                ("To", leg.remote_party),
                ("Call-ID", leg.sip_call_id),
                ("CSeq", f"{resp.cseq[0]} ACK"),
            ]
        )
        leg.transport.send(SipRequest("ACK", leg.remote_target, headers).to_bytes(), leg.peer)

    async def _cancel_invite(self, leg: SipLeg) -> None:
        """CANCEL a ringing INVITE (RFC 3261 9.1); the INVITE then ends with 487."""
        if not leg.answered:
            tx = await self.layer.request(build_cancel(leg.invite), leg.transport, leg.peer)
            await tx.final()
