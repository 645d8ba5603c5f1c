"""One SIP leg's offer/answer state (RFC 3264) and what it does to the leg's media.

:class:`MediaNegotiation` keeps the session's o= id and version, our last SDP and what was
negotiated, and applies every new agreement to the leg's :class:`SipMedia` (address,
codec, telephone-event or in-band DTMF, hold direction). It answers offers - the first
INVITE, re-INVITEs and UPDATEs - with codec locking (the codec in use wins while it is
offered, and the answer lists only it, RFC 6337), makes our offers (late offer in a 2xx,
outbound INVITEs, offerless re-INVITEs) and takes the answers to them.
"""

from __future__ import annotations

from gateway.channels.sip.media import SipMedia
from gateway.sip import sdp
from gateway.sip.sdp import Negotiated, SessionDescription

__all__ = ["MediaNegotiation"]


class MediaNegotiation:
    """Offer/answer for one leg; ``codecs`` are the ones we accept, in our preference."""

    def __init__(self, media: SipMedia, host: str, codecs: tuple[str, ...] = ("PCMU", "PCMA")):
        self.media, self.host, self.codecs = media, host, codecs
        self.session_id = sdp.offer(host, 0).session_id
        self.version = int(self.session_id)
        self.local_sdp = b""
        self.negotiated: Negotiated | None = None
        self.pending_offer: SessionDescription | None = None  # our offer awaiting its answer
        self.remote_version: str | None = None

    @property
    def offer_pending(self) -> bool:
        return self.pending_offer is not None

    def _body(self, description: SessionDescription) -> bytes:
        """Our SDP, the o= version bumped only when its content changed (RFC 3264 8)."""
        description.session_id = self.session_id
        description.session_version = str(self.version)
        body = description.to_bytes()
        if self.local_sdp and _without_origin(body) == _without_origin(self.local_sdp):
            return self.local_sdp
        if self.local_sdp:
            self.version += 1
            description.session_version = str(self.version)
            body = description.to_bytes()
        self.local_sdp = body
        return body

    def answer(self, offer_body: bytes) -> bytes:
        """Answer an offer; the media follow it. SdpError (SdpRejected for 488) otherwise,
        and then nothing changed."""
        offer = sdp.parse_sdp(offer_body)
        current = self.negotiated.codec if self.negotiated is not None else None
        negotiated, description = sdp.answer(
            offer, self.host, self.media.local_port, self.codecs, prefer=current
        )
        body = self._body(description)
        self._apply(negotiated)
        self.remote_version = offer.session_version
        return body

    def offer(self, direction: str = "sendrecv") -> bytes:
        """Our offer (all our codecs, or the one in use on a re-offer, RFC 6337 5.3);
        ``direction`` sendonly holds the far end (RFC 3264 8.4), sendrecv resumes it."""
        codecs = (self.negotiated.codec,) if self.negotiated is not None else self.codecs
        description = sdp.offer(self.host, self.media.local_port, codecs, direction=direction)
        self.pending_offer = description
        return self._body(description)

    def accept_answer(self, answer_body: bytes) -> Negotiated:
        """The answer to our pending offer; SdpError if it is unusable (media unchanged)."""
        if self.pending_offer is None:
            raise sdp.SdpError("no offer of ours is waiting for an answer")
        answer = sdp.parse_sdp(answer_body)
        negotiated = sdp.negotiate_answer(self.pending_offer, answer)
        self.pending_offer = None
        self._apply(negotiated)
        self.remote_version = answer.session_version
        return negotiated

    def cancel_offer(self) -> None:
        """Our offer was refused (488/491 to a re-INVITE): the old session stays."""
        self.pending_offer = None

    def _apply(self, negotiated: Negotiated) -> None:
        self.negotiated = negotiated
        self.media.configure(
            (negotiated.remote_addr, negotiated.remote_port),
            negotiated.codec,
            negotiated.payload_type,
            negotiated.dtmf_payload_type,
        )
        self.media.set_direction(negotiated.direction)
        self.media.use_inband(negotiated.dtmf_payload_type is None)


def _without_origin(body: bytes) -> bytes:
    return b"\r\n".join(line for line in body.split(b"\r\n") if not line.startswith(b"o="))
