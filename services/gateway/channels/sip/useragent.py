"""What the SIP channel's parts share: the methods and options we announce, and the
:class:`UserAgent` contract that placing calls (:mod:`.outbound`) and the carrier trunk
(:mod:`.carrier`) use of the channel, so they depend on this shape and not on the channel
module (which imports them)."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from gateway.core.contracts import CallSink, Leg
from gateway.media.endpoint import PortAllocator
from gateway.sip.message import SipRequest, SipResponse
from gateway.sip.registrar import Registrar
from gateway.sip.transaction_asyncio import ClientTransaction, TransactionLayer
from gateway.sip.transport import Addr, Transport

if TYPE_CHECKING:
    from gateway.channels.sip.leg import SipLeg
    from gateway.channels.sip.media import SipMedia
    from gateway.channels.sip.negotiation import MediaNegotiation

__all__ = ["ALLOW", "ALLOWED", "SUPPORTED", "SUPPORTED_TAGS", "USER_AGENT", "UserAgent"]

ALLOWED = (
    "INVITE",
    "ACK",
    "CANCEL",
    "BYE",
    "OPTIONS",
    "REGISTER",
    "UPDATE",
    "INFO",
    "PRACK",
    "REFER",
)
ALLOW = ", ".join(ALLOWED)
SUPPORTED_TAGS = frozenset({"100rel", "timer", "replaces"})
SUPPORTED = "100rel, timer, replaces"
USER_AGENT = "Hotline/0.1"


class UserAgent(Protocol):
    """The SIP channel as its outbound dialer and carrier trunks see it."""

    layer: TransactionLayer
    registrar: Registrar
    host: str
    port: int
    media_host: str
    allocator: PortAllocator

    @property
    def sink(self) -> CallSink | None: ...

    def spawn(
        self, coro: Coroutine[Any, Any, None], name: str, leg: SipLeg | None = None
    ) -> None: ...

    def via(self, transport: Transport) -> str: ...

    def contact_for(self, transport_name: str) -> str: ...

    async def transport_to(self, host: str, port: int, name: str) -> tuple[Transport, Addr]: ...

    async def request_in_dialog(
        self,
        leg: SipLeg,
        method: str,
        *,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> SipResponse: ...

    async def send_ack(self, leg: SipLeg, cseq: int, body: bytes = b"") -> None: ...

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
    ) -> SipLeg: ...

    async def start_client(self, leg: SipLeg) -> ClientTransaction: ...

    def start_session_timer(self, sip: SipLeg) -> None: ...

    def release_later(self, leg: SipLeg) -> None: ...

    async def hang_up(self, leg: Leg) -> None: ...

    def add_carrier(self, carrier: Any) -> None: ...
