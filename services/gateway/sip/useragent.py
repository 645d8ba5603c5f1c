"""The gateway's SIP user agent core: requests in, dialogs, and the requests we send.

It sits on the transaction layer and turns SIP into switch events (a trunk INVITE becomes
an offered call, a BYE ends a leg) and switch decisions into SIP (180/200/BYE/CANCEL/ACK,
INVITEs to registered phones). Anything malformed gets a 400 that says what was wrong.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from hotline.v1 import events_pb2 as ev
from prometheus_client import Counter

from gateway.calls import Call, SipLeg
from gateway.media.endpoint import RtpEndpoint
from gateway.sip.builders import (bad_request_for, build_cancel, make_response, new_branch,
                                  new_call_id, new_tag)
from gateway.sip.headers import Headers
from gateway.sip.message import SipRequest, SipResponse
from gateway.sip.registrar import Binding, Registrar
from gateway.sip.syntax import SipParseError
from gateway.sip.transaction_asyncio import (InviteOkRetransmitter, ServerTransaction,
                                             TransactionLayer)
from gateway.sip.transport import Addr, Transport
from gateway.sip.uri import parse_name_addr

if TYPE_CHECKING:
    from gateway.switch import Switch

log = logging.getLogger(__name__)

SIP_REQUESTS = Counter("hotline_sip_requests_total", "SIP requests received", ["method"])
SIP_BAD = Counter("hotline_sip_malformed_total", "Malformed SIP messages received")

ALLOWED = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER")
ALLOW = ", ".join(ALLOWED)
KNOWN_UNSUPPORTED = {"SUBSCRIBE", "NOTIFY", "MESSAGE", "INFO", "REFER", "UPDATE", "PRACK",
                     "PUBLISH"}
USER_AGENT = "Hotline/0.1"
COUNTED_METHODS = frozenset(ALLOWED) | KNOWN_UNSUPPORTED   # metric labels stay bounded


class UserAgent:
    def __init__(self, layer: TransactionLayer, switch: Switch, registrar: Registrar,
                 advertised: Addr) -> None:
        self.layer, self.switch, self.registrar = layer, switch, registrar
        self.host, self.port = advertised
        self.contact = f"<sip:hotline@{self.host}:{self.port}>"

    # ---- helpers ------------------------------------------------------------------------
    def response(self, req: SipRequest, status: int, reason: str | None = None,
                 **kw: object) -> SipResponse:
        resp = make_response(req, status, reason, **kw)
        resp.headers.add("Server", USER_AGENT)
        return resp

    def _via(self, transport: Transport) -> str:
        return f"SIP/2.0/{transport.name} {self.host}:{self.port};branch={new_branch()};rport"

    # ---- inbound -----------------------------------------------------------------------
    def on_malformed(self, data: bytes, addr: Addr, exc: Exception, transport: Transport) -> None:
        """Answer 400 to a malformed request when it has enough to route a response."""
        SIP_BAD.inc()
        log.info("malformed SIP from %s:%d: %s", *addr, exc)
        resp = bad_request_for(data, str(exc), server=USER_AGENT)
        if resp is not None:
            try:
                transport.send(resp, addr)
            except ConnectionError:
                pass

    async def on_request(self, req: SipRequest, tx: ServerTransaction | None) -> None:
        SIP_REQUESTS.labels(req.method if req.method in COUNTED_METHODS else "other").inc()
        if tx is None:                       # ACK for a 2xx: end-to-end, no transaction
            if req.method == "ACK":
                found = self.switch.registry.leg(req.call_id)
                if found is not None and found[1].ok_retransmitter is not None:
                    found[1].ok_retransmitter.ack_received()
            return
        method = req.method
        if method == "REGISTER":
            tx.respond(self.registrar.handle(req, tx.source_addr, tx.transport))
        elif method == "OPTIONS":
            tx.respond(self.response(req, 200, extra=[("Allow", ALLOW), ("Accept", "application/sdp")]))
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
        local_tag = new_tag()

        def make_leg(endpoint: RtpEndpoint, local_sdp: bytes) -> SipLeg:
            to_value = req.headers.get("To") or ""
            return SipLeg(sip_call_id=req.call_id, local_party=f"{to_value};tag={local_tag}",
                          remote_party=req.headers.get("From") or "", remote_target=target,
                          transport=tx.transport, peer=tx.source_addr, endpoint=endpoint, uas=True,
                          invite=req, server_tx=tx, local_sdp=local_sdp)

        error = await self.switch.incoming(req, make_leg, tx.source_addr)
        if error is not None:
            tx.respond(error)

    def _reinvite(self, req: SipRequest, tx: ServerTransaction) -> None:
        """A re-INVITE (refresh, hold): keep our media as it is and answer with our SDP."""
        found = self.switch.registry.leg(req.call_id)
        if found is None:
            tx.respond(self.response(req, 481))
            return
        _, leg = found
        resp = self.response(req, 200, to_tag=None, body=leg.local_sdp,
                             extra=[("Contact", self.contact), ("Content-Type", "application/sdp")])
        tx.respond(resp)
        leg.ok_retransmitter = InviteOkRetransmitter(resp, leg.transport, tx.response_addr,
                                                     self.layer.timers)
        leg.ok_retransmitter.start()

    def _bye(self, req: SipRequest, tx: ServerTransaction) -> None:
        found = self.switch.registry.leg(req.call_id)
        if found is None:
            tx.respond(self.response(req, 481))
            return
        call, leg = found
        tx.respond(self.response(req, 200))
        self.switch.leg_released(call, leg, "BYE from " + ("caller" if leg.uas else "endpoint"))

    def _cancel(self, req: SipRequest, tx: ServerTransaction) -> None:
        invite_tx = self.layer.find_invite_server_transaction(req)
        found = self.switch.registry.leg(req.call_id)
        if invite_tx is None or found is None:
            tx.respond(self.response(req, 481))
            return
        tx.respond(self.response(req, 200))
        call, leg = found
        if not leg.confirmed and not leg.terminated:
            leg.terminated = True
            invite_tx.respond(self.response(leg.invite, 487, to_tag=self._tag(leg)))
            self.switch.leg_released(call, leg, "CANCEL from caller")

    def on_stray_response(self, resp: SipResponse, addr: Addr) -> None:
        """A retransmitted 2xx to our INVITE (our ACK was lost): ACK it again."""
        try:
            method = resp.cseq[1]
        except SipParseError:
            return
        found = self.switch.registry.leg(resp.call_id)
        if method == "INVITE" and 200 <= resp.status < 300 and found is not None:
            _, leg = found
            if not leg.uas:
                self.ack(leg, resp)

    # ---- UAS actions -------------------------------------------------------------------
    @staticmethod
    def _tag(leg: SipLeg) -> str:
        return parse_name_addr(leg.local_party).tag or ""

    def ring(self, leg: SipLeg) -> None:
        leg.server_tx.respond(self.response(leg.invite, 180, to_tag=self._tag(leg),
                                            extra=[("Contact", self.contact)]))

    def answer(self, leg: SipLeg) -> None:
        resp = self.response(leg.invite, 200, to_tag=self._tag(leg), body=leg.local_sdp,
                             extra=[("Contact", self.contact), ("Allow", ALLOW),
                                    ("Content-Type", "application/sdp")])
        leg.server_tx.respond(resp)
        leg.confirmed = True
        leg.ok_retransmitter = InviteOkRetransmitter(resp, leg.transport,
                                                     leg.server_tx.response_addr,
                                                     self.layer.timers,
                                                     on_timeout=lambda: self._no_ack(leg))
        leg.ok_retransmitter.start()

    def _no_ack(self, leg: SipLeg) -> None:
        found = self.switch.registry.leg(leg.sip_call_id)
        if found is not None and not leg.terminated:
            log.warning("no ACK for 200 OK on %s; ending the call", leg.sip_call_id)
            self.switch.end(found[0], ev.END_REASON_TIMEOUT, "no ACK for 200 OK")

    def reject(self, leg: SipLeg, status: int, reason: str) -> None:
        leg.server_tx.respond(self.response(leg.invite, status, reason, to_tag=self._tag(leg)))

    # ---- UAC actions -------------------------------------------------------------------
    async def invite(self, binding: Binding, call: Call, offer_sdp: bytes,
                     endpoint: RtpEndpoint) -> SipLeg:
        """Send an INVITE to a registered phone; the leg's client transaction gives the answer."""
        transport = binding.transport
        sip_call_id = new_call_id(self.host)
        from_party = f"\"{call.caller_name or call.ani}\" <sip:{call.ani or 'anonymous'}@" \
                     f"{self.host}>;tag={new_tag()}"
        to_party = f"<sip:{binding.extension}@{self.host}>"
        target = str(binding.uri)
        headers = Headers([
            ("Via", self._via(transport)), ("Max-Forwards", "70"), ("From", from_party),
            ("To", to_party), ("Call-ID", sip_call_id), ("CSeq", "1 INVITE"),
            ("Contact", self.contact), ("Allow", ALLOW), ("User-Agent", USER_AGENT),
            ("X-Hotline-Call-ID", call.call_id), ("Content-Type", "application/sdp"),
        ])
        req = SipRequest("INVITE", target, headers, offer_sdp)
        leg = SipLeg(sip_call_id=sip_call_id, local_party=from_party, remote_party=to_party,
                     remote_target=target, transport=transport, peer=binding.target,
                     endpoint=endpoint, uas=False, invite=req, local_sdp=offer_sdp)
        leg.client_tx = await self.layer.request(req, transport, binding.target)
        return leg

    def ack(self, leg: SipLeg, resp: SipResponse) -> None:
        """ACK a 2xx (RFC 3261 13.2.2.4): a new request, straight to the remote target."""
        leg.remote_party = resp.headers.get("To") or leg.remote_party
        contact = resp.headers.get("Contact")
        if contact:
            try:
                leg.remote_target = str(parse_name_addr(contact).uri)
            except SipParseError:
                pass
        leg.confirmed = True
        headers = Headers([
            ("Via", self._via(leg.transport)), ("Max-Forwards", "70"), ("From", leg.local_party),
            ("To", leg.remote_party), ("Call-ID", leg.sip_call_id),
            ("CSeq", f"{resp.cseq[0]} ACK"),
        ])
        leg.transport.send(SipRequest("ACK", leg.remote_target, headers).to_bytes(), leg.peer)

    async def cancel(self, leg: SipLeg) -> None:
        """CANCEL a ringing INVITE (RFC 3261 9.1); the INVITE then ends with 487."""
        if leg.invite is not None and not leg.confirmed:
            tx = await self.layer.request(build_cancel(leg.invite), leg.transport, leg.peer)
            await tx.final()

    async def bye(self, leg: SipLeg) -> None:
        """End a confirmed dialog from our side."""
        if leg.terminated:
            return
        leg.terminated = True
        if leg.ok_retransmitter is not None:
            leg.ok_retransmitter.ack_received()
        headers = Headers([
            ("Via", self._via(leg.transport)), ("Max-Forwards", "70"), ("From", leg.local_party),
            ("To", leg.remote_party), ("Call-ID", leg.sip_call_id),
            ("CSeq", f"{leg.next_cseq()} BYE"), ("User-Agent", USER_AGENT),
        ])
        tx = await self.layer.request(SipRequest("BYE", leg.remote_target, headers),
                                      leg.transport, leg.peer)
        final = await tx.final()
        if final.status >= 300:
            log.info("BYE on %s answered %d %s", leg.sip_call_id, final.status, final.reason)
