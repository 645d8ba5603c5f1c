"""One SIP dialog (RFC 3261 section 12) with its RTP endpoint: a leg of a call."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.media.endpoint import RtpEndpoint
from gateway.sip.message import SipRequest
from gateway.sip.transaction_asyncio import (
    ClientTransaction,
    InviteOkRetransmitter,
    ServerTransaction,
)
from gateway.sip.transport import Addr, Transport
from gateway.sip.uri import parse_name_addr

if TYPE_CHECKING:
    from gateway.core.contracts import Signalling

__all__ = ["SipLeg"]


@dataclass(eq=False)
class SipLeg:
    """A dialog and its media; implements the core's Leg contract."""

    sip_call_id: str
    local_party: str  # our From/To header value, with our tag
    remote_party: str  # theirs, with their tag once known
    remote_target: str  # their Contact URI: where in-dialog requests go
    transport: Transport
    peer: Addr  # where their requests came from / ours are sent
    media: RtpEndpoint
    signalling: Signalling
    inbound: bool  # True when they called us (we are the UAS)
    invite: SipRequest
    local_cseq: int = 1
    answered: bool = False  # 2xx sent/received (ACK pending or done)
    ended: bool = False
    leg_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    server_tx: ServerTransaction | None = None  # UAS INVITE transaction until final
    ok_retransmitter: InviteOkRetransmitter | None = None
    client_tx: ClientTransaction | None = None  # UAC INVITE transaction while ringing
    local_sdp: bytes = b""
    seat: str = ""  # the extension, for a leg to a registered phone

    def next_cseq(self) -> int:
        self.local_cseq += 1
        return self.local_cseq

    @property
    def local_tag(self) -> str:
        return parse_name_addr(self.local_party).tag or ""
