"""One SIP dialog (RFC 3261 section 12) with its media: a leg of a call."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.channels.sip.media import SipMedia
from gateway.channels.sip.negotiation import MediaNegotiation
from gateway.sip.dialog import Dialog
from gateway.sip.message import SipRequest
from gateway.sip.reliable import ReliableProvisional
from gateway.sip.session_timer import SessionTimer
from gateway.sip.transaction_asyncio import (
    ClientTransaction,
    InviteOkRetransmitter,
    ServerTransaction,
)
from gateway.sip.transport import Addr, Transport

if TYPE_CHECKING:
    from gateway.core.contracts import Signalling

__all__ = ["FinishedDialog", "SipLeg"]


@dataclass(eq=False)
class SipLeg:
    """A dialog and its media; implements the core's Leg contract.

    ``dialog`` exists from the moment the dialog does: at once for a call to us (we choose
    our tag), from the first response with a To tag for a call we place.
    """

    sip_call_id: str
    transport: Transport  # the transport the dialog runs on (a TCP connection, or UDP)
    peer: Addr  # where their requests came from (UDP) / our first hop
    media: SipMedia
    negotiation: MediaNegotiation
    signalling: Signalling
    inbound: bool  # True when they called us (we are the UAS)
    invite: SipRequest
    contact: str  # our Contact on this leg's transport
    dialog: Dialog | None = None
    trunk: str = ""  # the carrier trunk the leg belongs to ("" for phones)
    answered: bool = False  # 2xx sent/received (ACK pending or done)
    ended: bool = False
    leg_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    server_tx: ServerTransaction | None = None  # UAS INVITE transaction until final
    ok_retransmitter: InviteOkRetransmitter | None = None
    client_tx: ClientTransaction | None = None  # UAC INVITE transaction while ringing
    local_sdp: bytes = b""
    seat: str = ""  # the extension, for a leg to a registered phone
    late_offer: bool = False  # UAS: the INVITE had no SDP, our 2xx offers, the ACK answers
    reliable: ReliableProvisional | None = None  # UAS: 100rel required by the caller
    prack_done: asyncio.Event = field(default_factory=asyncio.Event)
    session_timer: SessionTimer | None = None
    timer_headers: list[tuple[str, str]] = field(default_factory=list)  # for our 2xx
    peer_allow: str = ""  # the peer's Allow (UPDATE there: refresh with UPDATE)
    timer_changed: asyncio.Event = field(default_factory=asyncio.Event)
    reinvite_pending: bool = False  # an INVITE of ours inside the dialog awaits its final
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    created_at: float = field(default_factory=time.monotonic)  # its INVITE, for answer delays

    @property
    def local_tag(self) -> str:
        return self.dialog.local_tag if self.dialog is not None else ""


@dataclass(eq=False, slots=True)
class FinishedDialog:
    """What the channel keeps of a leg once the core released it: its dialog's identifiers
    and where its requests go, for 64*T1 (RFC 3261 13.3.1.4, RFC 6026 Timer L), and nothing
    of its call - no media, SDP, transactions, recording or call objects.

    That is enough to answer the other side's late messages: a retransmitted 2xx to our
    INVITE (our ACK was lost) is ACKed again along the dialog's route, and a BYE that comes
    after we forgot the call is answered 200 (the dialog is over). Retransmitted requests
    whose transactions still live (a BYE in Timer J, an INVITE in Timer L) never get here:
    the transaction layer answers them from the response bytes it kept.
    """

    sip_call_id: str
    leg_id: str
    transport: Transport
    peer: Addr
    inbound: bool
    answered: bool
    dialog: Dialog | None

    @classmethod
    def of(cls, leg: SipLeg) -> FinishedDialog:
        return cls(
            leg.sip_call_id,
            leg.leg_id,
            leg.transport,
            leg.peer,
            leg.inbound,
            leg.answered,
            leg.dialog,
        )
