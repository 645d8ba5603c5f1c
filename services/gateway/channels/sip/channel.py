"""The SIP channel: the gateway's user agent on top of the transaction layer.

It turns SIP into the core's calls and legs (a trunk INVITE that passes admission becomes an
offered call, a BYE releases a leg) and the core's requests into SIP (180/200/480, BYE,
INVITEs to registered phones with CANCEL on timeout). It owns the SIP specifics the core must
not know: trunk admission codes, SDP offer/answer (late offer, re-INVITE and UPDATE with hold
and codec locking), dialogs and their route sets, INFO digits, reliable provisionals
(PRACK) and session timers. Anything malformed gets a 4xx that says what was wrong; an ACK
is never answered.

Placing calls (phones and the carrier trunk) is in :mod:`gateway.channels.sip.outbound`,
the carrier trunk itself (registration, keepalive, Originate) in
:mod:`gateway.channels.sip.carrier`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import deque
from collections.abc import Coroutine, Iterable
from typing import Any

from prometheus_client import Counter

from gateway.channels.sip.admission import Admission
from gateway.channels.sip.carrier import CarrierTrunk
from gateway.channels.sip.leg import FinishedDialog, SipLeg
from gateway.channels.sip.media import SipMedia
from gateway.channels.sip.negotiation import MediaNegotiation
from gateway.channels.sip.outbound import result_for, ring_phone
from gateway.channels.sip.refer import ReferTarget, parse_refer_to, sipfrag
from gateway.channels.sip.trunk import TrunkPolicy
from gateway.channels.sip.useragent import (
    ALLOW,
    ALLOWED,
    SUPPORTED,
    SUPPORTED_TAGS,
    USER_AGENT,
)
from gateway.core.contracts import Attempt, CallerParty, CallSink, Leg, Offer, Outcome, Release
from gateway.media.endpoint import NoFreePort, PortAllocator
from gateway.quality import observe_leg, prepare
from gateway.sip import sdp
from gateway.sip.builders import bad_request_for, make_response, new_branch, new_tag
from gateway.sip.dialog import Dialog, DialogError, contact_for
from gateway.sip.identity import asserted_identity, diversions, number_of
from gateway.sip.info_dtmf import (
    DTMF_CONTENT_TYPES,
    InfoDtmfError,
    content_type_of,
    parse_info_dtmf,
)
from gateway.sip.message import SipRequest, SipResponse
from gateway.sip.registrar import Registrar
from gateway.sip.reliable import PrackError, ReliableProvisional, option_tags
from gateway.sip.session_timer import (
    MIN_SE,
    IntervalTooSmall,
    SessionTimer,
    parse_session_expires,
    uas_negotiate,
)
from gateway.sip.syntax import SipParseError
from gateway.sip.transaction_asyncio import (
    ClientTransaction,
    InviteOkRetransmitter,
    ServerTransaction,
    TransactionLayer,
)
from gateway.sip.transport import Addr, TcpTransport, Transport

__all__ = ["ALLOW", "SUPPORTED", "USER_AGENT", "SipChannel", "resolve", "result_for"]

log = logging.getLogger(__name__)

SIP_REQUESTS = Counter("hotline_sip_requests_total", "SIP requests received", ["method"])
SIP_BAD = Counter("hotline_sip_malformed_total", "Malformed SIP messages received")
REJECTED = Counter("hotline_gateway_rejected_total", "INVITEs refused", ["status", "site"])

KNOWN_UNSUPPORTED = {"SUBSCRIBE", "NOTIFY", "MESSAGE", "PUBLISH"}
COUNTED_METHODS = frozenset(ALLOWED) | KNOWN_UNSUPPORTED  # metric labels stay bounded
LINGER_S = 5.0  # a failed outbound leg stays routable for late retransmissions
RETRY_AFTER_S = "60"  # a draining gateway's advice: try another one, or come back later


class SipChannel:
    """SIP trunks and phones as a channel of the core: Signalling for its legs, and the
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
        min_se: int = MIN_SE,
        admission: Admission | None = None,
    ) -> None:
        self.layer, self.registrar, self.trunk, self.site = layer, registrar, trunk, site
        self.host, self.port = advertised
        self.media_host, self.allocator = media_host, allocator
        self.min_se = min_se
        self.admission = admission or Admission()  # new-call limits (admission.py)
        prepare(site)
        self.contact = self.contact_for("UDP")
        self.carriers: list[CarrierTrunk] = []
        self.udp: Transport | None = None
        self._sink: CallSink | None = None
        self._dialogs: dict[str, SipLeg] = {}  # SIP Call-ID -> leg
        #: SIP Call-ID -> what is left of a released leg, for 64*T1 (late retransmissions)
        self._finished: dict[str, FinishedDialog] = {}
        #: the same records in the order they were released, each with when it is forgotten
        #: (all live 64*T1, so the oldest is always first): one timer for all of them
        self._forget_queue: deque[tuple[float, FinishedDialog]] = deque()
        self._forget_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._tcp_out: dict[Addr, TcpTransport] = {}

    def start(self, sink: CallSink, udp: Transport | None = None) -> None:
        """From now on new calls are offered to ``sink`` (before this, INVITEs get 503);
        ``udp`` is the listening UDP transport our own UDP requests leave from."""
        self._sink = sink
        self.udp = udp

    @property
    def sink(self) -> CallSink | None:
        return self._sink

    @property
    def draining(self) -> bool:
        return self._sink is not None and not self._sink.accepting

    def add_carrier(self, carrier: Any) -> None:
        assert isinstance(carrier, CarrierTrunk)
        self.carriers.append(carrier)

    def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for conn in self._tcp_out.values():
            conn.close()
        self._finished.clear()
        self._forget_queue.clear()
        if self._forget_timer is not None:
            self._forget_timer.cancel()
            self._forget_timer = None

    def spawn(self, coro: Coroutine[Any, Any, None], name: str, leg: SipLeg | None = None) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if leg is not None:
            leg.tasks.add(task)
            task.add_done_callback(leg.tasks.discard)

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

    def contact_for(self, transport_name: str) -> str:
        """Our Contact on a transport: ``;transport=tcp`` on TCP (RFC 3261 19.1.1)."""
        return contact_for("hotline", self.host, self.port, transport_name)

    def via(self, transport: Transport) -> str:
        return f"SIP/2.0/{transport.name} {self.host}:{self.port};branch={new_branch()};rport"

    def leg_for(self, sip_call_id: str) -> SipLeg | None:
        """The leg of a dialog by its SIP Call-ID (tests and in-dialog routing)."""
        return self._dialogs.get(sip_call_id)

    def track(self, leg: SipLeg) -> None:
        self._dialogs[leg.sip_call_id] = leg

    def carrier_for(self, ip: str) -> CarrierTrunk | None:
        return next((c for c in self.carriers if c.is_source(ip)), None)

    async def transport_to(self, host: str, port: int, name: str) -> tuple[Transport, Addr]:
        """A transport and address for a request to ``host:port``: our UDP socket, or a TCP
        connection (opened once and reused while it lives)."""
        addr = await resolve(host, port)
        if name.upper() == "TCP":
            conn = self._tcp_out.get(addr)
            if conn is None or conn.closed.done():
                conn = await TcpTransport.connect(
                    addr[0],
                    addr[1],
                    self.layer.receive,
                    lambda data, a, exc: log.info("bad SIP over TCP from %s: %s", a, exc),
                )
                self._tcp_out[addr] = conn
            return conn, addr
        if self.udp is None:
            raise ConnectionError("the SIP channel has no UDP transport")
        return self.udp, addr

    async def route(self, leg: SipLeg | FinishedDialog) -> tuple[Transport, Addr]:
        """Where a request inside ``leg``'s dialog goes (RFC 3261 12.2.1.1, 18.1.1): over its
        TCP connection while it lives; else to the first Route of the route set; without a
        route set, to the address the peer's requests come from (it reaches NATed phones)."""
        transport = leg.transport
        reliable_open = transport.reliable and not (
            isinstance(transport, TcpTransport) and transport.closed.done()
        )
        if reliable_open:
            return transport, leg.peer
        dialog = leg.dialog
        if dialog is not None and (dialog.route_set or transport.reliable):
            host, port, tparam = dialog.next_hop()
            name = tparam or transport.name
            new_transport, addr = await self.transport_to(host, port, name)
            leg.transport = new_transport
            return new_transport, addr
        return transport, leg.peer

    async def request_in_dialog(
        self,
        leg: SipLeg,
        method: str,
        *,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> SipResponse:
        """Send a request inside the leg's dialog and wait for its final response; when its
        first hop cannot be reached (no connection, no address) a 503 stands for the answer,
        as a transport error does in a transaction (RFC 3261 8.1.3.1)."""
        sent = await self._start_in_dialog(leg, method, headers=headers, body=body)
        return sent if isinstance(sent, SipResponse) else await sent.final()

    async def _start_in_dialog(
        self,
        leg: SipLeg,
        method: str,
        *,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> ClientTransaction | SipResponse:
        """:meth:`request_in_dialog` up to the request sent: its client transaction, or the
        503 that stands for an unreachable first hop."""
        assert leg.dialog is not None, "no dialog yet"
        try:
            transport, addr = await self.route(leg)
        except (OSError, ConnectionError) as exc:
            req = leg.dialog.request(method, f"SIP/2.0/UDP {self.host}:{self.port};branch=z9hG4bKx")
            log.warning("%s on %s: first hop unreachable: %s", method, leg.sip_call_id, exc)
            return make_response(req, 503, "Service Unavailable (first hop unreachable)")
        req = leg.dialog.request(method, self.via(transport), headers=headers, body=body)
        return await self.layer.request(req, transport, addr)

    async def send_ack(self, leg: SipLeg | FinishedDialog, cseq: int, body: bytes = b"") -> None:
        """ACK a 2xx to our INVITE (RFC 3261 13.2.2.4): a new request, along the route set."""
        assert leg.dialog is not None
        try:
            transport, addr = await self.route(leg)
        except (OSError, ConnectionError) as exc:
            log.warning("could not route ACK on %s: %s", leg.sip_call_id, exc)
            return
        extra = [("Content-Type", "application/sdp")] if body else []
        ack = leg.dialog.request("ACK", self.via(transport), cseq=cseq, headers=extra, body=body)
        try:
            transport.send(ack.to_bytes(), addr)
        except (OSError, ConnectionError) as exc:
            log.warning("could not send ACK on %s: %s", leg.sip_call_id, exc)

    # ---- inbound -----------------------------------------------------------------------
    def on_malformed(self, data: bytes, addr: Addr, exc: Exception, transport: Transport) -> None:
        """Answer 400 to a malformed request when it has enough to route a response (never to
        an ACK: bad_request_for refuses those)."""
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
        if tx is None:  # ACK for a 2xx: end-to-end, no transaction, never answered
            if req.method == "ACK":
                self._ack_received(req)
            return
        method = req.method
        if method not in ("CANCEL", "REGISTER"):
            unknown = option_tags(req, "Require") - SUPPORTED_TAGS
            if unknown:  # RFC 3261 8.2.2.3
                tx.respond(
                    self.response(req, 420, extra=[("Unsupported", ", ".join(sorted(unknown)))])
                )
                return
        if method == "REGISTER":
            tx.respond(self.registrar.handle(req, tx.source_addr, tx.transport))
        elif method == "OPTIONS" and self.draining:  # keepalives tell proxies to go elsewhere
            tx.respond(self.response(req, 503, "Draining", extra=[("Retry-After", RETRY_AFTER_S)]))
        elif method == "OPTIONS":
            tx.respond(
                self.response(
                    req,
                    200,
                    extra=[
                        ("Allow", ALLOW),
                        ("Accept", "application/sdp"),
                        ("Supported", SUPPORTED),
                    ],
                )
            )
        elif method == "INVITE":
            await self._invite(req, tx)
        elif method == "BYE":
            self._bye(req, tx)
        elif method == "CANCEL":
            self._cancel(req, tx)
        elif method == "UPDATE":
            self._update(req, tx)
        elif method == "INFO":
            self._info(req, tx)
        elif method == "PRACK":
            self._prack(req, tx)
        elif method == "REFER":
            self._refer(req, tx)
        elif method in KNOWN_UNSUPPORTED:
            tx.respond(self.response(req, 405, extra=[("Allow", ALLOW)]))
        else:
            tx.respond(self.response(req, 501, extra=[("Allow", ALLOW)]))

    def _refuse(
        self,
        req: SipRequest,
        tx: ServerTransaction,
        status: int,
        reason: str | None = None,
        extra: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.admission.release(req.call_id)
        REJECTED.labels(str(status), self.site).inc()
        tx.respond(self.response(req, status, reason[:100] if reason else None, extra=extra))

    def _not_acceptable(
        self, req: SipRequest, tx: ServerTransaction, exc: sdp.SdpRejected, to_tag: str | None
    ) -> None:
        """488 with a Warning that says why (RFC 3261 20.43, 21.4.26)."""
        REJECTED.labels("488", self.site).inc()
        text = str(exc).replace('"', "'")[:200]
        tx.respond(
            self.response(
                req,
                488,
                to_tag=to_tag,
                extra=[("Warning", f'{exc.warning_code} {self.host} "{text}"')],
            )
        )

    async def _invite(self, req: SipRequest, tx: ServerTransaction) -> None:
        try:
            to_tag = req.to.tag
        except SipParseError as exc:
            tx.respond(self.response(req, 400, f"Bad To: {exc}"[:100]))
            return
        if to_tag:
            self._reinvite(req, tx)
            return
        if req.headers.get("Contact") is None:
            tx.respond(self.response(req, 400, "Missing Contact"))
            return
        await self._admit(req, tx)

    async def _admit(self, req: SipRequest, tx: ServerTransaction) -> None:
        """A new INVITE from a trunk: admission, media, then the call is offered."""
        source = tx.source_addr
        carrier = self.carrier_for(source[0])
        if self._sink is None:
            self._refuse(req, tx, 503, "Starting Up", [("Retry-After", "5")])
            return
        if self.draining:  # before any media is taken: the caller's side tries elsewhere
            self._refuse(req, tx, 503, "Draining", [("Retry-After", RETRY_AFTER_S)])
            return
        if carrier is None and not self.trunk.source_allowed(source[0]):
            self._refuse(req, tx, 403, "Source Not Allowed On Trunk")
            return
        dnis = carrier.inbound_dnis(req) if carrier is not None else req.request_uri.user or ""
        if not self.trunk.serves(dnis):
            log.info("INVITE to unknown number %r from %s:%d refused", dnis, source[0], source[1])
            self._refuse(req, tx, 404, "No Such Number")
            return
        trunk_name = carrier.name if carrier is not None else self.trunk.name
        if refused := self.admission.admit(req.call_id, source[0], trunk_name):
            REJECTED.labels(str(refused.status), self.site).inc()
            tx.respond(self.response(req, refused.status, refused.reason, extra=refused.headers))
            return
        if carrier is not None:
            limit = carrier.admit_inbound()
            if limit:
                self._refuse(req, tx, 503, limit, [("Retry-After", "5")])
                return
        try:
            timer, timer_headers = uas_negotiate(req, self.min_se)
        except IntervalTooSmall as exc:
            self._refuse(req, tx, 422, extra=[("Min-SE", str(exc.min_se))])
            return
        except SipParseError as exc:
            self._refuse(req, tx, 400, f"Bad Session-Expires: {exc}")
            return
        try:
            dialog = Dialog.as_uas(req, new_tag())
        except (DialogError, SipParseError) as exc:
            self._refuse(req, tx, 400, f"Bad Contact: {exc}")
            return
        try:
            media = await SipMedia.open(self.media_host, self.allocator)
        except NoFreePort:
            self._refuse(req, tx, 503, "No Media Ports", [("Retry-After", "5")])
            return
        codecs = carrier.codecs if carrier is not None else ("PCMU", "PCMA")
        negotiation = MediaNegotiation(media, self.media_host, codecs)
        if req.body:
            try:
                negotiation.answer(req.body)
            except sdp.SdpRejected as exc:
                media.close()
                self._not_acceptable(req, tx, exc, None)
                return
            except sdp.SdpError as exc:
                media.close()
                self._refuse(req, tx, 400, f"Bad SDP: {exc}")
                return
        leg = SipLeg(
            sip_call_id=req.call_id,
            transport=tx.transport,
            peer=tx.source_addr,
            media=media,
            negotiation=negotiation,
            signalling=self,
            inbound=True,
            invite=req,
            contact=self.contact_for(tx.transport.name),
            dialog=dialog,
            trunk=carrier.name if carrier is not None else self.trunk.name,
            server_tx=tx,
            late_offer=not req.body,
            session_timer=timer,
        )
        leg.timer_headers = timer_headers
        leg.peer_allow = req.headers.get("Allow", "") or ""
        if "100rel" in option_tags(req, "Require"):
            leg.reliable = ReliableProvisional(self.layer.timers.t1)
        else:
            leg.prack_done.set()
        self.track(leg)
        ani, name = self._caller(req, carrier)
        diverted = diversions(req)
        diverted_from = diverted[0].number if diverted else ""
        if carrier is not None:
            carrier.call_started(leg)
            ani = carrier.number_in(ani)
            diverted_from = carrier.number_in(diverted_from) if diverted_from else ""
        call_id = self._sink.offer(
            leg,
            Offer(
                ani=ani,
                dnis=dnis,
                trunk=leg.trunk,
                channel="sip",
                caller_name=name,
                diverted_from=diverted_from,
            ),
        )
        log.info(
            "call %s offered: %s -> %s (%s)",
            call_id,
            ani,
            dnis,
            negotiation.negotiated.codec if negotiation.negotiated else "late offer",
        )

    def _caller(self, req: SipRequest, carrier: CarrierTrunk | None) -> tuple[str, str]:
        """ANI and name: P-Asserted-Identity from a trusted peer (RFC 3325), else From."""
        trusted = carrier.trust_pai if carrier is not None else self.trunk.trust_pai
        pai = asserted_identity(req) if trusted else None
        if pai is not None:
            return number_of(pai), pai.display or ""
        try:
            from_ = req.from_
            return from_.uri.user or from_.uri.host, from_.display or ""
        except SipParseError:
            return "", ""

    # ---- in-dialog requests --------------------------------------------------------------
    def _in_dialog(self, req: SipRequest, tx: ServerTransaction) -> SipLeg | None:
        """The leg of an in-dialog request, or None after answering 481/500 (RFC 3261 12.2.2)."""
        leg = self._dialogs.get(req.call_id)
        if leg is None or leg.dialog is None or leg.ended:
            tx.respond(self.response(req, 481))
            return None
        if not leg.dialog.accept_remote_cseq(req):
            tx.respond(self.response(req, 500, "CSeq Out Of Order"))
            return None
        return leg

    def _session_headers(self, leg: SipLeg) -> list[tuple[str, str]]:
        timer = leg.session_timer
        if timer is None:
            return []
        return [("Session-Expires", f"{timer.interval};refresher={timer.refresher}")]

    def _refresh_timer_from(self, leg: SipLeg, req: SipRequest) -> None:
        """A re-INVITE/UPDATE from the peer refreshes the session timer (RFC 4028 9).

        ``refresher`` in it names the roles of that request: ``uac`` is the peer, ``uas`` us.
        Without one, whoever refreshed so far keeps doing it. IntervalTooSmall: 422.
        """
        raw = req.headers.get("Session-Expires") or req.headers.get("x")
        timer = leg.session_timer
        now = asyncio.get_running_loop().time()
        if raw is None:
            if timer is not None:
                timer.refreshed(now)
                leg.timer_changed.set()
            return
        interval, refresher = parse_session_expires(raw)
        if interval < self.min_se:
            raise IntervalTooSmall(self.min_se)
        if refresher is None:
            refresher = "uas" if timer is not None and timer.we_refresh else "uac"
        we_refresh = refresher == "uas"
        if timer is None:
            leg.session_timer = SessionTimer(interval, we_refresh, refresher)
            if leg.answered:
                self.start_session_timer(leg)
            return
        timer.refresher = refresher
        timer.refreshed(now, interval, we_refresh)
        leg.timer_changed.set()

    def _reinvite(self, req: SipRequest, tx: ServerTransaction) -> None:
        """A re-INVITE: answer its offer (hold, resume, codec change) or, offerless, offer
        in our 2xx and take the answer from the ACK (RFC 3264, RFC 6337)."""
        leg = self._in_dialog(req, tx)
        if leg is None:
            return
        if leg.reinvite_pending or leg.negotiation.offer_pending:
            tx.respond(self.response(req, 491))  # glare (RFC 3261 14.2)
            return
        if leg.ok_retransmitter is not None and leg.ok_retransmitter.active:
            tx.respond(self.response(req, 500, extra=[("Retry-After", "1")]))
            return
        try:
            self._refresh_timer_from(leg, req)
        except IntervalTooSmall as exc:
            tx.respond(self.response(req, 422, extra=[("Min-SE", str(exc.min_se))]))
            return
        except SipParseError as exc:
            tx.respond(self.response(req, 400, f"Bad Session-Expires: {exc}"[:100]))
            return
        was_held = leg.media.held
        try:
            body = leg.negotiation.answer(req.body) if req.body else leg.negotiation.offer()
        except sdp.SdpRejected as exc:
            self._not_acceptable(req, tx, exc, None)
            return
        except sdp.SdpError as exc:
            tx.respond(self.response(req, 400, f"Bad SDP: {exc}"[:100]))
            return
        assert leg.dialog is not None
        try:
            leg.dialog.refresh_target(req)
        except SipParseError:
            pass
        resp = self.response(
            req,
            200,
            body=body,
            extra=[
                ("Contact", leg.contact),
                ("Allow", ALLOW),
                ("Supported", SUPPORTED),
                ("Content-Type", "application/sdp"),
                *self._session_headers(leg),
            ],
        )
        tx.respond(resp)
        if leg.ok_retransmitter is not None:
            leg.ok_retransmitter.stop()
        leg.ok_retransmitter = InviteOkRetransmitter(
            resp, tx.transport, tx.response_addr, self.layer.timers
        )
        leg.ok_retransmitter.start()
        self._hold_changed(leg, was_held)

    def _hold_changed(self, leg: SipLeg, was_held: bool) -> None:
        """The peer's offer put the call on hold (sendonly, inactive, 0.0.0.0) or took it
        off: the core lets the other party hear music meanwhile."""
        if leg.media.held != was_held and self._sink is not None and leg.answered:
            self._sink.leg_held(leg, leg.media.held)

    def _update(self, req: SipRequest, tx: ServerTransaction) -> None:
        """UPDATE (RFC 3311): a new offer or a session refresh, without touching the dialog's
        INVITE state; allowed in early and confirmed dialogs."""
        leg = self._in_dialog(req, tx)
        if leg is None:
            return
        try:
            self._refresh_timer_from(leg, req)
        except IntervalTooSmall as exc:
            tx.respond(self.response(req, 422, extra=[("Min-SE", str(exc.min_se))]))
            return
        except SipParseError as exc:
            tx.respond(self.response(req, 400, f"Bad Session-Expires: {exc}"[:100]))
            return
        extra: list[tuple[str, str]] = [("Contact", leg.contact), *self._session_headers(leg)]
        body = b""
        was_held = leg.media.held
        if req.body:
            if leg.negotiation.offer_pending or (leg.late_offer and not leg.answered):
                tx.respond(self.response(req, 491))
                return
            try:
                body = leg.negotiation.answer(req.body)
            except sdp.SdpRejected as exc:
                self._not_acceptable(req, tx, exc, None)
                return
            except sdp.SdpError as exc:
                tx.respond(self.response(req, 400, f"Bad SDP: {exc}"[:100]))
                return
            extra.append(("Content-Type", "application/sdp"))
        assert leg.dialog is not None
        try:
            leg.dialog.refresh_target(req)
        except SipParseError:
            pass
        tx.respond(self.response(req, 200, body=body, extra=extra))
        if req.body:
            self._hold_changed(leg, was_held)

    def _info(self, req: SipRequest, tx: ServerTransaction) -> None:
        """INFO: a DTMF digit (application/dtmf-relay or application/dtmf) goes to the core
        like an RFC 4733 one; an empty INFO is a keepalive."""
        leg = self._in_dialog(req, tx)
        if leg is None:
            return
        if not req.body:
            tx.respond(self.response(req, 200))
            return
        kind = content_type_of(req.headers.get("Content-Type"))
        if kind not in DTMF_CONTENT_TYPES:
            tx.respond(self.response(req, 415, extra=[("Accept", ", ".join(DTMF_CONTENT_TYPES))]))
            return
        try:
            digit = parse_info_dtmf(kind, req.body)
        except InfoDtmfError as exc:
            tx.respond(self.response(req, 400, f"Bad DTMF: {exc}"[:100]))
            return
        tx.respond(self.response(req, 200))
        leg.media.info_digit(digit)

    def _refer(self, req: SipRequest, tx: ServerTransaction) -> None:
        """REFER (RFC 3515) from a phone in a call: 202, then NOTIFYs with the transfer's
        progress as message/sipfrag; after a success the phone's leg is released (BYE)."""
        leg = self._in_dialog(req, tx)
        if leg is None:
            return
        refer_to = req.headers.get_all("Refer-To") or req.headers.get_all("r")
        if len(refer_to) != 1:
            tx.respond(self.response(req, 400, "Exactly One Refer-To Required"))
            return
        try:
            target = parse_refer_to(refer_to[0])
        except SipParseError as exc:
            tx.respond(self.response(req, 400, f"Bad Refer-To: {exc}"[:100]))
            return
        replaces = ""
        if target.replaces_call_id:
            other = self._dialogs.get(target.replaces_call_id)
            if other is None or other.ended or not _tags_match(other, target):
                tx.respond(self.response(req, 481, "Replaced Dialog Does Not Exist"))
                return
            if other.peer != leg.peer:  # RFC 3891 6: only the phone's own other call
                tx.respond(self.response(req, 403, "Replaced Dialog Is Another Party's"))
                return
            replaces = other.leg_id
        if self._sink is None:
            tx.respond(self.response(req, 503, "Starting Up"))
            return
        tx.respond(self.response(req, 202, extra=[("Contact", leg.contact)]))
        self.spawn(self._run_refer(leg, target, replaces), f"refer-{leg.leg_id}", None)

    async def _run_refer(self, leg: SipLeg, target: ReferTarget, replaces: str) -> None:
        assert self._sink is not None
        await self._notify(leg, sipfrag(None), "active;expires=60")
        kind = "extension" if self.registrar.lookup(target.user) is not None else "number"
        try:
            attempt = await self._sink.refer(leg, kind, target.user, replaces)
        except Exception:
            log.exception("REFER on %s failed", leg.sip_call_id)
            attempt = Attempt(Outcome.REJECTED, None, "transfer failed")
        if leg.ended:
            return
        await self._notify(leg, sipfrag(attempt.outcome), "terminated;reason=noresource")
        if attempt.outcome is Outcome.ANSWERED and not leg.ended:
            leg.ended = True  # the transferor's part is over (RFC 5589 6)
            await self._send_bye(leg)

    async def _notify(self, leg: SipLeg, body: bytes, state: str) -> None:
        if leg.ended or leg.dialog is None:
            return
        try:
            final = await self.request_in_dialog(
                leg,
                "NOTIFY",
                headers=[
                    ("Event", "refer"),
                    ("Subscription-State", state),
                    ("Contact", leg.contact),
                    ("Content-Type", "message/sipfrag;version=2.0"),
                ],
                body=body,
            )
        except (OSError, ConnectionError) as exc:
            log.info("NOTIFY on %s could not be sent: %s", leg.sip_call_id, exc)
            return
        if final.status >= 300:
            log.info("NOTIFY on %s answered %d %s", leg.sip_call_id, final.status, final.reason)

    async def hold(self, leg: Leg, held: bool) -> str:
        """Hold (re-INVITE a=sendonly, RFC 3264 8.4) or resume (sendrecv) the far end."""
        sip = self._own(leg)
        if sip.ended or sip.dialog is None or not sip.answered:
            return "the leg is not connected"
        if sip.reinvite_pending or sip.negotiation.offer_pending:
            return "another offer is in progress on the leg"
        sip.reinvite_pending = True
        try:
            body = sip.negotiation.offer("sendonly" if held else "sendrecv")
            try:
                final = await self.request_in_dialog(
                    sip,
                    "INVITE",
                    headers=[
                        ("Contact", sip.contact),
                        ("Supported", SUPPORTED),
                        ("Content-Type", "application/sdp"),
                        *self._session_headers(sip),
                    ],
                    body=body,
                )
            except (OSError, ConnectionError) as exc:
                sip.negotiation.cancel_offer()
                return f"re-INVITE could not be sent: {exc}"
            if not 200 <= final.status < 300:
                sip.negotiation.cancel_offer()
                return f"re-INVITE answered {final.status} {final.reason}"
            await self.send_ack(sip, final.cseq[0])
            if not final.body:
                sip.negotiation.cancel_offer()
                return "re-INVITE 2xx without SDP answer"
            try:
                sip.negotiation.accept_answer(final.body)
            except sdp.SdpError as exc:
                sip.negotiation.cancel_offer()
                return f"unusable SDP answer to re-INVITE: {exc}"
            return ""
        finally:
            sip.reinvite_pending = False

    def _prack(self, req: SipRequest, tx: ServerTransaction) -> None:
        """PRACK for our reliable 1xx (RFC 3262 3): the answer may follow."""
        leg = self._in_dialog(req, tx)
        if leg is None:
            return
        if leg.reliable is None:
            tx.respond(self.response(req, 481))
            return
        try:
            matched = leg.reliable.prack(req)
        except PrackError as exc:
            tx.respond(self.response(req, 400, f"Bad RAck: {exc}"[:100]))
            return
        if not matched:
            tx.respond(self.response(req, 481, "No Such Reliable Response"))
            return
        tx.respond(self.response(req, 200))
        leg.prack_done.set()

    def _ack_received(self, req: SipRequest) -> None:
        """The ACK of a 2xx of ours; after a late offer or an offerless re-INVITE it carries
        the answer (RFC 3264 5), and without a usable one the session is ended with BYE."""
        leg = self._dialogs.get(req.call_id)
        if leg is None:
            return
        if leg.ok_retransmitter is not None:
            leg.ok_retransmitter.ack_received()
        if not leg.negotiation.offer_pending:
            return
        problem = ""
        if not req.body:
            problem = "ACK without the SDP answer to our offer"
        else:
            try:
                leg.negotiation.accept_answer(req.body)
            except sdp.SdpError as exc:
                problem = f"unusable SDP answer in ACK: {exc}"
        if problem:
            leg.negotiation.cancel_offer()
            if leg.late_offer and not leg.ended:
                log.warning("%s on %s; ending the call", problem, leg.sip_call_id)
                leg.ended = True
                self.spawn(self._send_bye(leg), f"bye-{leg.leg_id}")
                self._released(leg, Release.TIMEOUT, problem)
            else:
                log.warning("%s on %s; keeping the previous session", problem, leg.sip_call_id)

    def _bye(self, req: SipRequest, tx: ServerTransaction) -> None:
        leg = self._dialogs.get(req.call_id)
        if leg is None:  # a dialog released a moment ago is over: as that BYE wants
            tx.respond(self.response(req, 200 if req.call_id in self._finished else 481))
            return
        tx.respond(self.response(req, 200))
        self._released(leg, Release.HANGUP, "BYE from " + ("caller" if leg.inbound else "endpoint"))

    def _cancel(self, req: SipRequest, tx: ServerTransaction) -> None:
        invite_tx = self.layer.find_invite_server_transaction(req)
        leg = self._dialogs.get(req.call_id)
        if invite_tx is None or (leg is None and req.call_id not in self._finished):
            tx.respond(self.response(req, 481))
            return
        # RFC 3261 9.2: a CANCEL matching a live INVITE transaction gets 200, also when that
        # INVITE was answered and its call has ended since (its leg released)
        tx.respond(self.response(req, 200))
        if leg is not None and not leg.answered and not leg.ended:
            leg.ended = True
            leg.prack_done.set()
            if leg.reliable is not None:
                leg.reliable.pending = None
            invite_tx.respond(self.response(leg.invite, 487, to_tag=leg.local_tag))
            self._released(leg, Release.HANGUP, "CANCEL from caller")

    def _released(self, leg: SipLeg, why: Release, detail: str) -> None:
        """The far end ended the leg: tell the core (a leg still being rung is the dialer's)."""
        leg.ended = True
        if leg.client_tx is not None and not leg.answered:
            return
        if self._sink is not None:
            self._sink.leg_released(leg, why, detail)
        self.free_media(leg)

    def on_stray_response(self, resp: SipResponse, addr: Addr) -> None:
        """A retransmitted 2xx to one of our INVITEs (our ACK was lost): ACK it again."""
        try:
            number, method = resp.cseq
        except SipParseError:
            return
        leg: SipLeg | FinishedDialog | None = self._dialogs.get(resp.call_id)
        if leg is None:
            leg = self._finished.get(resp.call_id)
        if method == "INVITE" and 200 <= resp.status < 300 and leg is not None:
            if leg.dialog is not None and (not leg.inbound or number > 1 or leg.answered):
                self.spawn(self.send_ack(leg, number), f"ack-{leg.leg_id}")

    # ---- Signalling: what the core asks of an inbound leg ----------------------------------
    def _own(self, leg: Leg) -> SipLeg:
        if not isinstance(leg, SipLeg) or leg.signalling is not self:
            raise TypeError(f"leg {leg.leg_id} does not belong to the SIP channel")
        return leg

    def ring(self, leg: Leg) -> None:
        sip = self._own(leg)
        tx = sip.server_tx
        if tx is None or not tx.can_respond:
            return
        resp = self.response(
            sip.invite, 180, to_tag=sip.local_tag, extra=[("Contact", sip.contact)]
        )
        if sip.reliable is not None:
            now = asyncio.get_running_loop().time()
            sip.reliable.make_reliable(resp, now)
            tx.respond(resp)
            self.spawn(self._retransmit_reliable(sip, tx), f"100rel-{sip.leg_id}", sip)
            return
        tx.respond(resp)

    async def _retransmit_reliable(self, sip: SipLeg, tx: ServerTransaction) -> None:
        """RFC 3262 3: resend the reliable 1xx until its PRACK; no PRACK in 64*T1 - 504."""
        reliable = sip.reliable
        assert reliable is not None
        loop = asyncio.get_running_loop()
        while (at := reliable.get_timer()) is not None:
            await asyncio.sleep(max(0.0, at - loop.time()))
            again = reliable.handle_timer(loop.time())
            if again is not None and tx.can_respond:
                tx.respond(again)
        if reliable.timed_out and not sip.ended and tx.can_respond:
            log.warning("no PRACK for reliable 180 on %s; rejecting", sip.sip_call_id)
            sip.ended = True
            tx.respond(self.response(sip.invite, 504, "No PRACK", to_tag=sip.local_tag))
            self._released(sip, Release.TIMEOUT, "no PRACK for reliable provisional response")

    def answer(self, leg: Leg) -> None:
        sip = self._own(leg)
        tx = sip.server_tx
        if tx is None or not tx.can_respond or sip.answered:
            return
        sip.answered = True
        self.admission.answered(sip.sip_call_id, time.monotonic() - sip.created_at)
        if sip.prack_done.is_set():
            self._send_ok(sip, tx)
        else:  # RFC 3262 3: no 2xx while a reliable 1xx awaits its PRACK
            self.spawn(self._ok_after_prack(sip, tx), f"answer-{sip.leg_id}", sip)

    async def _ok_after_prack(self, sip: SipLeg, tx: ServerTransaction) -> None:
        await sip.prack_done.wait()
        if not sip.ended and tx.can_respond:
            self._send_ok(sip, tx)

    def _send_ok(self, sip: SipLeg, tx: ServerTransaction) -> None:
        body = sip.negotiation.offer() if sip.late_offer else sip.negotiation.local_sdp
        resp = self.response(
            sip.invite,
            200,
            to_tag=sip.local_tag,
            body=body,
            extra=[
                ("Contact", sip.contact),
                ("Allow", ALLOW),
                ("Supported", SUPPORTED),
                ("Content-Type", "application/sdp"),
                *sip.timer_headers,
            ],
        )
        tx.respond(resp)
        sip.ok_retransmitter = InviteOkRetransmitter(
            resp,
            sip.transport,
            tx.response_addr,
            self.layer.timers,
            on_timeout=lambda: self._no_ack(sip),
        )
        sip.ok_retransmitter.start()
        self.start_session_timer(sip)

    def start_session_timer(self, sip: SipLeg) -> None:
        if sip.session_timer is not None:
            sip.session_timer.start(asyncio.get_running_loop().time())
            self.spawn(self._run_session_timer(sip), f"session-timer-{sip.leg_id}", sip)

    async def _run_session_timer(self, sip: SipLeg) -> None:
        """RFC 4028: refresh at half the interval when we refresh; BYE when the other side
        let it run out (before the interval ends by min(32 s, interval/3))."""
        loop = asyncio.get_running_loop()
        while not sip.ended and sip.session_timer is not None:
            timer = sip.session_timer
            at = timer.get_timer()
            sip.timer_changed.clear()
            try:
                await asyncio.wait_for(
                    sip.timer_changed.wait(),
                    None if at is None else max(0.0, at - loop.time()),
                )
                continue  # refreshed meanwhile: look again
            except asyncio.TimeoutError:
                pass
            action = timer.handle_timer(loop.time())
            if action == "expire":
                log.warning("session timer expired on %s; ending the call", sip.sip_call_id)
                await self._session_over(sip, "session timer expired without refresh")
                return
            if action == "refresh":
                final = await self._refresh_session(sip)
                if final is None or final.status in (408, 481):
                    detail = f"session refresh failed ({final.status if final else 'no answer'})"
                    await self._session_over(sip, detail)
                    return
                if final.status < 300:
                    raw = final.headers.get("Session-Expires") or final.headers.get("x")
                    interval, refresher = timer.interval, "uac"
                    if raw is not None:
                        try:
                            interval, said = parse_session_expires(raw)
                            refresher = said or "uac"
                        except SipParseError:
                            pass
                    timer.refresher = refresher
                    timer.refreshed(loop.time(), interval, refresher == "uac")
                else:
                    timer.refreshed(loop.time())  # keep the session; try again later

    async def _session_over(self, sip: SipLeg, detail: str) -> None:
        if sip.ended:
            return
        sip.ended = True
        self.free_media(sip)
        await self._send_bye(sip)
        self._released(sip, Release.TIMEOUT, detail)

    async def _refresh_session(self, sip: SipLeg) -> SipResponse | None:
        """A session refresh: UPDATE without a body when the peer allows it (RFC 4028 9),
        else a re-INVITE with our unchanged SDP."""
        timer = sip.session_timer
        headers = [("Supported", SUPPORTED), ("Contact", sip.contact)]
        if timer is not None:  # we send it and keep refreshing: we are its UAC
            headers.append(("Session-Expires", f"{timer.interval};refresher=uac"))
        if "UPDATE" in sip.peer_allow.upper():
            return await self.request_in_dialog(sip, "UPDATE", headers=headers)
        sip.reinvite_pending = True
        try:
            assert sip.dialog is not None
            body = sip.negotiation.local_sdp
            final = await self.request_in_dialog(
                sip,
                "INVITE",
                headers=[*headers, ("Content-Type", "application/sdp")],
                body=body,
            )
            if 200 <= final.status < 300:
                await self.send_ack(sip, final.cseq[0])
            return final
        finally:
            sip.reinvite_pending = False

    def _no_ack(self, leg: SipLeg) -> None:
        """RFC 3261 13.3.1.4: no ACK within 64*T1 - the session is ended with a BYE."""
        if leg.ended:
            return
        log.warning("no ACK for 200 OK on %s; ending the call", leg.sip_call_id)
        leg.ended = True
        self.spawn(self._send_bye(leg), f"bye-{leg.leg_id}")
        self._released(leg, Release.TIMEOUT, "no ACK for 200 OK")

    def reject(self, leg: Leg, detail: str) -> None:
        sip = self._own(leg)
        sip.ended = True
        sip.prack_done.set()
        if sip.server_tx is not None and sip.server_tx.can_respond:
            sip.server_tx.respond(
                self.response(sip.invite, 480, "Temporarily Unavailable", to_tag=sip.local_tag)
            )
        self.free_media(sip)

    async def hang_up(self, leg: Leg) -> None:
        """End a confirmed dialog from our side with BYE."""
        sip = self._own(leg)
        if sip.ended:
            return
        sip.ended = True
        self.free_media(sip)
        bye = self._send_bye(sip)
        del leg, sip  # waiting for the BYE's answer holds nothing of the leg (see _send_bye)
        await bye

    async def _send_bye(self, sip: SipLeg) -> None:
        """BYE, and log a failed answer. Once the BYE is sent this holds nothing of the leg:
        a peer that never answers keeps only the BYE's client transaction for 64*T1 (Timer
        F), not the leg with its media, SDP and INVITE."""
        if sip.ok_retransmitter is not None:
            sip.ok_retransmitter.ack_received()
        if sip.dialog is None:
            return
        call_id = sip.sip_call_id
        try:
            sent = await self._start_in_dialog(sip, "BYE", headers=[("User-Agent", USER_AGENT)])
        except (OSError, ConnectionError) as exc:
            log.info("BYE on %s could not be sent: %s", call_id, exc)
            return
        del sip
        final = sent if isinstance(sent, SipResponse) else await sent.final()
        if final.status >= 300:
            log.info("BYE on %s answered %d %s", call_id, final.status, final.reason)

    def free_media(self, sip: SipLeg) -> None:
        """The leg is over: its RTP quality is recorded and its port is free at once (the next
        call on the port drops this peer's strays, `RtpSession.previous`); only the dialog
        stays routable for late retransmissions until `release`."""
        if not sip.media.closed:
            observe_leg(sip.media.stats, "caller" if sip.inbound else "agent", self.site, sip.seat)
            sip.media.close()

    def release(self, leg: Leg) -> None:
        sip = self._own(leg)
        self.free_media(sip)
        self.admission.release(sip.sip_call_id)
        if sip.ok_retransmitter is not None:
            sip.ok_retransmitter.stop()
        for task in list(sip.tasks):
            task.cancel()
        if self._dialogs.get(sip.sip_call_id) is sip:
            del self._dialogs[sip.sip_call_id]
            self._linger(FinishedDialog.of(sip))
        for carrier in self.carriers:
            carrier.call_ended(sip)

    def _linger(self, finished: FinishedDialog) -> None:
        """Keep a released leg's dialog routable for 64*T1, as its INVITE transaction keeps
        absorbing retransmissions (RFC 6026 Timer L); only the small record stays: the leg,
        its media and its call are no longer reachable from the channel."""
        self._finished[finished.sip_call_id] = finished
        loop = asyncio.get_running_loop()
        self._forget_queue.append((loop.time() + self.layer.timers.b, finished))
        if self._forget_timer is None:
            self._forget_timer = loop.call_at(self._forget_queue[0][0], self._forget_finished)

    def _forget_finished(self) -> None:
        """Forget the finished dialogs whose 64*T1 are over; re-arm for the next one."""
        self._forget_timer = None
        loop = asyncio.get_running_loop()
        now, queue = loop.time(), self._forget_queue
        while queue and queue[0][0] <= now:
            _, finished = queue.popleft()
            if self._finished.get(finished.sip_call_id) is finished:
                del self._finished[finished.sip_call_id]
        if queue:
            self._forget_timer = loop.call_at(queue[0][0], self._forget_finished)

    def release_later(self, leg: SipLeg) -> None:
        async def later() -> None:
            await asyncio.sleep(LINGER_S)
            self.release(leg)

        self.spawn(later(), f"release-{leg.leg_id}")

    # ---- EndpointDialer: ringing a registered phone ---------------------------------------
    async def ring_endpoint(
        self, target: str, caller: CallerParty, ring_timeout_s: float, abandon: asyncio.Event
    ) -> Attempt:
        """INVITE the phone registered as ``target``; CANCEL it on timeout or abandon."""
        return await ring_phone(self, target, caller, ring_timeout_s, abandon)

    async def open_leg(
        self,
        *,
        invite: SipRequest,
        transport: Transport,
        peer: Addr,
        media: SipMedia,
        negotiation: MediaNegotiation,
        trunk: str = "",
        seat: str = "",
    ) -> SipLeg:
        """A leg for an INVITE we are about to send (the dialog comes with the answer)."""
        leg = SipLeg(
            sip_call_id=invite.call_id,
            transport=transport,
            peer=peer,
            media=media,
            negotiation=negotiation,
            signalling=self,
            inbound=False,
            invite=invite,
            contact=self.contact_for(transport.name),
            trunk=trunk,
            seat=seat,
        )
        leg.prack_done.set()
        self.track(leg)
        return leg

    async def start_client(self, leg: SipLeg) -> ClientTransaction:
        """Send the leg's INVITE (again, after a challenge or 422) as a client transaction."""
        leg.client_tx = await self.layer.request(leg.invite, leg.transport, leg.peer)
        return leg.client_tx


def _tags_match(leg: SipLeg, target: ReferTarget) -> bool:
    """A Replaces names the dialog as the phone sees it: its from-tag is the phone's (our
    remote tag), its to-tag ours (RFC 3891 3)."""
    dialog = leg.dialog
    if dialog is None:
        return False
    if target.to_tag and target.to_tag != dialog.local_tag:
        return False
    return not (target.from_tag and target.from_tag != dialog.remote_tag)


async def resolve(host: str, port: int) -> Addr:
    """An address for ``host`` (an IP as it is; a name through the resolver, first IPv4)."""
    try:
        ipaddress.ip_address(host)
        return host, port
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=2)  # SOCK_DGRAM
    if not infos:
        raise ConnectionError(f"cannot resolve {host}")
    address = infos[0][4]
    return str(address[0]), int(address[1])
