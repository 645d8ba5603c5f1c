"""SIP dialogs (RFC 3261 12): the state both ends keep, and the requests built inside one.

A :class:`Dialog` is created from the request and response that establish it, as the UAS
(:meth:`Dialog.as_uas`, 12.1.1) or the UAC (:meth:`Dialog.as_uac`, 12.1.2). Its route set
comes from Record-Route - in order for the UAS, reversed for the UAC - and every request we
send inside it (BYE, re-INVITE, UPDATE, INFO, PRACK, the ACK of a 2xx) is built by
:meth:`Dialog.request` following 12.2.1.1: with a loose-routing first hop (``;lr``) the
Request-URI is the remote target and the route set goes in Route headers; with a strict
router the first route becomes the Request-URI and the remote target the last Route.
:meth:`Dialog.next_hop` says where the request goes on the wire (the first Route, else the
remote target). Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .headers import Headers
from .message import SipRequest, SipResponse
from .syntax import SipParseError
from .uri import NameAddr, SipUri, parse_name_addr

__all__ = ["Dialog", "DialogError", "contact_for", "transport_param"]

DEFAULT_PORTS = {"sips": 5061}


class DialogError(SipParseError):
    """The messages cannot form a dialog (missing tag or Contact); the text says which."""


def transport_param(transport_name: str) -> str:
    """The URI ``transport`` parameter for a transport name ("" for UDP, the default)."""
    name = transport_name.lower()
    return "" if name == "udp" else f";transport={name}"


def contact_for(user: str, host: str, port: int, transport_name: str) -> str:
    """Our Contact for a transport (RFC 3261 8.1.1.8, 19.1.1): a TCP-only peer sends its
    ACK and BYE to this URI, so it must say ``;transport=tcp`` when the dialog runs on TCP."""
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"<sip:{user}@{shown}:{port}{transport_param(transport_name)}>"


def _contact_uri(msg: SipRequest | SipResponse) -> str:
    raw = msg.headers.get("Contact")
    if raw is None:
        raise DialogError("missing Contact header")
    return str(parse_name_addr(raw).uri)


@dataclass(slots=True)
class Dialog:
    """One dialog's identifiers, route set, remote target and CSeq counters (RFC 3261 12).

    Slots: a finished dialog's record keeps its Dialog for 64*T1 after the call."""

    call_id: str
    local_party: str  # our From (UAC) or To (UAS) header value, with our tag
    remote_party: str  # theirs, with their tag
    remote_target: str  # the peer's Contact URI (12.1.1, refreshed by target refreshes)
    route_set: list[str] = field(default_factory=list)  # Route values, first hop first
    local_cseq: int = 0
    remote_cseq: int | None = None

    @property
    def local_tag(self) -> str:
        return parse_name_addr(self.local_party).tag or ""

    @property
    def remote_tag(self) -> str:
        return parse_name_addr(self.remote_party).tag or ""

    # ---- creation ------------------------------------------------------------------------
    @classmethod
    def as_uas(cls, request: SipRequest, local_tag: str) -> Dialog:
        """The dialog a 2xx/1xx of ours to ``request`` establishes (12.1.1): route set = its
        Record-Route in order, remote target = its Contact, remote CSeq = its CSeq."""
        to = request.require("To")
        if NameAddr.parse(to).tag is None:
            to = f"{to};tag={local_tag}"
        return cls(
            call_id=request.call_id,
            local_party=to,
            remote_party=request.require("From"),
            remote_target=_contact_uri(request),
            route_set=list(request.headers.get_all("Record-Route")),
            local_cseq=0,
            remote_cseq=request.cseq[0],
        )

    @classmethod
    def as_uac(cls, request: SipRequest, response: SipResponse) -> Dialog:
        """The dialog ``response`` (1xx with a To tag, or 2xx) to our ``request`` establishes
        (12.1.2): route set = its Record-Route reversed, remote target = its Contact."""
        to = response.require("To")
        if NameAddr.parse(to).tag is None:
            raise DialogError(f"{response.status} response without a To tag")
        return cls(
            call_id=request.call_id,
            local_party=request.require("From"),
            remote_party=to,
            remote_target=_contact_uri(response),
            route_set=list(reversed(response.headers.get_all("Record-Route"))),
            local_cseq=request.cseq[0],
        )

    # ---- inside the dialog ---------------------------------------------------------------
    def next_cseq(self) -> int:
        self.local_cseq += 1
        return self.local_cseq

    def refresh_target(self, msg: SipRequest | SipResponse) -> None:
        """A target refresh (re-INVITE, UPDATE or their 2xx) may move the remote target."""
        if msg.headers.get("Contact") is not None:
            self.remote_target = _contact_uri(msg)

    def accept_remote_cseq(self, request: SipRequest) -> bool:
        """12.2.2: a request whose CSeq is lower than the last one is out of order (500).
        ACK and CANCEL carry the CSeq of the request they belong to, so they are not counted."""
        if request.method in ("ACK", "CANCEL"):
            return True
        number = request.cseq[0]
        if self.remote_cseq is not None and number < self.remote_cseq:
            return False
        self.remote_cseq = number
        return True

    def request(
        self,
        method: str,
        via: str,
        *,
        cseq: int | None = None,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> SipRequest:
        """A request inside the dialog (12.2.1.1), with Route headers from the route set.

        ``cseq`` defaults to the next local number; the ACK of a 2xx passes the INVITE's.
        """
        number = self.next_cseq() if cseq is None else cseq
        uri, routes = self._request_uri_and_routes()
        h = Headers([("Via", via), ("Max-Forwards", "70")])
        for route in routes:
            h.add("Route", route)
        h.add("From", self.local_party)
        h.add("To", self.remote_party)
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{number} {method}")
        for name, value in headers or ():
            h.add(name, value)
        return SipRequest(method, uri, h, body)

    def _request_uri_and_routes(self) -> tuple[str, list[str]]:
        if not self.route_set:
            return self.remote_target, []
        first = parse_name_addr(self.route_set[0]).uri
        if "lr" in first.params:
            return self.remote_target, list(self.route_set)
        # Strict router (RFC 2543): it takes the Request-URI as the next hop.
        return str(replace(first, headers={})), [*self.route_set[1:], f"<{self.remote_target}>"]

    def next_hop(self) -> tuple[str, int, str | None]:
        """Where a request of this dialog is sent: (host, port, transport param or None),
        from the first Route if there is a route set, else from the remote target."""
        uri = parse_name_addr(self.route_set[0]).uri if self.route_set else self.remote_uri
        port = uri.port or DEFAULT_PORTS.get(uri.scheme, 5060)
        transport = uri.params.get("transport")
        maddr = uri.params.get("maddr")
        return (maddr or uri.host_ip), port, (transport.lower() if transport else None)

    @property
    def remote_uri(self) -> SipUri:
        return SipUri.parse(self.remote_target)
