"""Placing a call as the UAC: the INVITE to a registered phone or to the carrier, until it is
answered, refused, times out or the call it serves goes away.

:func:`dial` runs one outgoing INVITE (RFC 3261 13.2): provisional responses create the early
dialog and reliable ones get their PRACK (RFC 3262); a 401/407 is answered with credentials
(22.2) and a 422 with a larger Session-Expires (RFC 4028 7.4), each once; on a 2xx the
dialog is made from it (route set = Record-Route reversed), the ACK goes along that route,
the SDP answer configures the media and the session timer starts. Timeout or abandon send
CANCEL (9.1); a 2xx that crosses the CANCEL is ACKed and ended with BYE.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.channels.sip.media import SipMedia
from gateway.channels.sip.negotiation import MediaNegotiation
from gateway.channels.sip.useragent import ALLOW, SUPPORTED, USER_AGENT, UserAgent
from gateway.core.contracts import Attempt, CallerParty, Outcome
from gateway.media.endpoint import NoFreePort
from gateway.sip import sdp
from gateway.sip.builders import build_cancel, new_call_id, new_tag
from gateway.sip.dialog import Dialog, DialogError
from gateway.sip.digest import DigestError
from gateway.sip.digest_client import DigestClient, with_new_branch
from gateway.sip.headers import Headers
from gateway.sip.message import SipRequest, SipResponse
from gateway.sip.reliable import RseqTracker, needs_prack, rack_for
from gateway.sip.session_timer import min_se_of, uac_from_response
from gateway.sip.syntax import SipParseError
from gateway.sip.transaction_asyncio import ClientTransaction
from gateway.sip.transport import Transport

if TYPE_CHECKING:
    from gateway.channels.sip.leg import SipLeg

__all__ = ["Dialed", "build_invite", "dial", "result_for", "ring_phone"]

log = logging.getLogger(__name__)

CANCEL_WAIT_S = 5.0  # how long a CANCELled INVITE may take to end with its final response


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


@dataclass(frozen=True, slots=True)
class Dialed:
    """How an INVITE ended: answered (the 2xx), refused (the final), or not answered in
    time / abandoned (``final`` None)."""

    final: SipResponse | None
    answered: bool = False
    abandoned: bool = False
    detail: str = ""


def build_invite(
    channel: UserAgent,
    uri: str,
    *,
    from_party: str,
    to_party: str,
    transport: Transport,
    body: bytes,
    extra: list[tuple[str, str]] | None = None,
) -> SipRequest:
    """Our INVITE with an SDP offer: Contact on the transport used, what we support."""
    headers = Headers(
        [
            ("Via", channel.via(transport)),
            ("Max-Forwards", "70"),
            ("From", from_party),
            ("To", to_party),
            ("Call-ID", new_call_id(channel.host)),
            ("CSeq", "1 INVITE"),
            ("Contact", channel.contact_for(transport.name)),
            ("Allow", ALLOW),
            ("Supported", SUPPORTED),
            ("User-Agent", USER_AGENT),
            *(extra or []),
            ("Content-Type", "application/sdp"),
        ]
    )
    return SipRequest("INVITE", uri, headers, body)


async def _next_response(
    responses: object, deadline: float, abandon: asyncio.Event
) -> SipResponse | None:
    """The next response of a transaction, or None when the deadline passed or abandoned."""
    loop = asyncio.get_running_loop()
    nxt = asyncio.ensure_future(responses.__anext__())  # type: ignore[attr-defined]
    gone = asyncio.ensure_future(abandon.wait())
    try:
        done, _ = await asyncio.wait(
            {nxt, gone},
            timeout=max(0.0, deadline - loop.time()),
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        gone.cancel()
    if nxt in done:
        result: SipResponse = nxt.result()
        return result
    nxt.cancel()
    return None


def _provisional(channel: UserAgent, leg: SipLeg, resp: SipResponse, rseq: RseqTracker) -> None:
    """A 1xx: the early dialog, its PRACK when reliable, an early answer to our offer."""
    try:
        if resp.to.tag and resp.headers.get("Contact") is not None:
            if leg.dialog is None or leg.dialog.remote_tag != resp.to.tag:
                leg.dialog = Dialog.as_uac(leg.invite, resp)
    except (DialogError, SipParseError) as exc:
        log.info("ignoring %d on %s: %s", resp.status, leg.sip_call_id, exc)
        return
    if resp.body and leg.negotiation.offer_pending:
        try:
            leg.negotiation.accept_answer(resp.body)
        except sdp.SdpError as exc:
            log.info("unusable early SDP on %s: %s", leg.sip_call_id, exc)
    if needs_prack(resp) and leg.dialog is not None:
        try:
            if not rseq.is_new(resp):
                return  # a retransmission: our PRACK's transaction takes care of it
            rack = rack_for(resp)
        except SipParseError as exc:
            log.info("bad reliable %d on %s: %s", resp.status, leg.sip_call_id, exc)
            return
        channel.spawn(_prack(channel, leg, rack), f"prack-{leg.leg_id}", leg)


async def _prack(channel: UserAgent, leg: SipLeg, rack: str) -> None:
    final = await channel.request_in_dialog(leg, "PRACK", headers=[("RAck", rack)])
    if final.status >= 300:
        log.info("PRACK on %s answered %d %s", leg.sip_call_id, final.status, final.reason)


async def _cancel(channel: UserAgent, leg: SipLeg, tx: ClientTransaction) -> None:
    """CANCEL a ringing INVITE (RFC 3261 9.1); the INVITE then ends with 487."""
    cancel = await channel.layer.request(build_cancel(tx.request), tx.transport, tx.addr)
    await cancel.final()


async def dial(
    channel: UserAgent,
    leg: SipLeg,
    timeout_s: float,
    abandon: asyncio.Event,
    digest: DigestClient | None = None,
) -> Dialed:
    """Run the leg's INVITE to its end (see the module doc)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    rseq = RseqTracker()
    challenged = refused_422 = False
    while True:
        tx = await channel.start_client(leg)
        responses = tx.responses()
        final: SipResponse | None = None
        while final is None:
            resp = await _next_response(responses, deadline, abandon)
            if resp is None:
                break
            if resp.status < 200:
                _provisional(channel, leg, resp, rseq)
            else:
                final = resp
        if final is None:
            return await _give_up(channel, leg, tx, abandon)
        if final.status in (401, 407) and digest is not None and not challenged:
            challenged = True
            try:
                leg.invite = digest.authorize(leg.invite, final)
            except DigestError as exc:
                return Dialed(final, detail=f"{final.status}: {exc}")
            continue
        if final.status == 422 and not refused_422:
            refused_422 = True
            try:
                min_se = min_se_of(final)
            except SipParseError as exc:
                return Dialed(final, detail=f"422: {exc}")
            retry = with_new_branch(leg.invite)
            retry.headers.set("Session-Expires", str(min_se))
            retry.headers.set("Min-SE", str(min_se))
            leg.invite = retry
            continue
        if final.status >= 300:
            return Dialed(final, detail=f"{final.status} {final.reason}")
        return await _answered(channel, leg, final)


async def _give_up(
    channel: UserAgent, leg: SipLeg, tx: ClientTransaction, abandon: asyncio.Event
) -> Dialed:
    channel.spawn(_cancel(channel, leg, tx), f"cancel-{leg.leg_id}")
    try:
        final: SipResponse | None = await asyncio.wait_for(tx.final(), CANCEL_WAIT_S)
    except asyncio.TimeoutError:
        final = None
    if final is not None and 200 <= final.status < 300:  # answered as we cancelled
        await _answered(channel, leg, final)
        leg.ended = True
        channel.spawn(_bye(channel, leg), f"bye-{leg.leg_id}")
    return Dialed(None, abandoned=abandon.is_set(), detail="cancelled")


async def _bye(channel: UserAgent, leg: SipLeg) -> None:
    await channel.request_in_dialog(leg, "BYE")


async def _answered(channel: UserAgent, leg: SipLeg, final: SipResponse) -> Dialed:
    try:
        leg.dialog = Dialog.as_uac(leg.invite, final)
    except (DialogError, SipParseError) as exc:
        return Dialed(final, detail=f"unusable 2xx: {exc}")
    leg.client_tx = None
    leg.answered = True
    leg.peer_allow = final.headers.get("Allow", "") or ""
    await channel.send_ack(leg, final.cseq[0])
    if leg.negotiation.offer_pending:
        try:
            leg.negotiation.accept_answer(final.body)
        except sdp.SdpError as exc:
            leg.ended = True
            channel.spawn(_bye(channel, leg), f"bye-{leg.leg_id}")
            return Dialed(final, detail=f"unusable SDP answer: {exc}")
    try:
        leg.session_timer = uac_from_response(final)
    except SipParseError as exc:
        log.info("ignoring bad Session-Expires on %s: %s", leg.sip_call_id, exc)
    channel.start_session_timer(leg)
    return Dialed(final, answered=True)


def fail(channel: UserAgent, leg: SipLeg) -> None:
    """An outbound attempt that will not become part of a call."""
    leg.ended = True
    leg.media.close()
    channel.release_later(leg)


async def ring_phone(
    channel: UserAgent,
    target: str,
    caller: CallerParty,
    ring_timeout_s: float,
    abandon: asyncio.Event,
) -> Attempt:
    """INVITE the phone registered as ``target``; CANCEL it on timeout or abandon."""
    binding = channel.registrar.lookup(target)
    if binding is None:
        return Attempt(Outcome.UNREACHABLE, None, f"extension {target} is not registered")
    try:
        media = await SipMedia.open(channel.media_host, channel.allocator)
    except NoFreePort:
        return Attempt(Outcome.UNREACHABLE, None, "no media ports")
    negotiation = MediaNegotiation(media, channel.media_host)
    transport = binding.transport
    invite = build_invite(
        channel,
        str(binding.uri),
        from_party=(
            f'"{caller.name or caller.number}" <sip:{caller.number or "anonymous"}@'
            f"{channel.host}>;tag={new_tag()}"
        ),
        to_party=f"<sip:{binding.extension}@{channel.host}>",
        transport=transport,
        body=negotiation.offer(),
        extra=[("X-Hotline-Call-ID", caller.call_id)],
    )
    leg = await channel.open_leg(
        invite=invite,
        transport=transport,
        peer=binding.target,
        media=media,
        negotiation=negotiation,
        seat=binding.extension,
    )
    dialed = await dial(channel, leg, ring_timeout_s, abandon)
    if not dialed.answered:
        fail(channel, leg)
        if dialed.final is None:
            if dialed.abandoned:
                return Attempt(Outcome.CALLER_GONE, None, "caller hung up while ringing")
            return Attempt(Outcome.NO_ANSWER, None, f"no answer within {ring_timeout_s:.0f}s")
        if dialed.final.status < 300:
            return Attempt(Outcome.REJECTED, None, dialed.detail)
        return Attempt(result_for(dialed.final.status), None, dialed.detail)
    if abandon.is_set():
        channel.spawn(channel.hang_up(leg), f"bye-{leg.leg_id}")
        fail(channel, leg)
        return Attempt(Outcome.CALLER_GONE, None, "caller hung up while connecting")
    return Attempt(Outcome.ANSWERED, leg, "")
