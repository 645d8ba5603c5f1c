"""Building messages: responses to a request (RFC 3261 8.2.6), the CANCEL and non-2xx ACK
that share an INVITE's transaction (9.1, 17.1.1.3), a best-effort 400 for a request that
does not parse, and fresh identifiers (branch, tag, Call-ID)."""

from __future__ import annotations

import secrets

from .headers import Headers
from .message import SipRequest, SipResponse
from .uri import NameAddr
from .via import MAGIC_COOKIE

__all__ = [
    "REASON_PHRASES",
    "bad_request_for",
    "build_ack",
    "build_cancel",
    "make_response",
    "new_branch",
    "new_call_id",
    "new_tag",
]

REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}
_CLASS_REASONS = {
    1: "Provisional",
    2: "OK",
    3: "Redirect",
    4: "Client Error",
    5: "Server Error",
    6: "Global Failure",
}


def make_response(
    req: SipRequest,
    status: int,
    reason: str | None = None,
    to_tag: str | None = None,
    body: bytes = b"",
    extra: list[tuple[str, str]] | None = None,
) -> SipResponse:
    """Build a response per RFC 3261 8.2.6.

    Copies all Vias in order, From, To (adding ``to_tag`` unless a tag is
    already there), Call-ID and CSeq; Timestamp for 100 (8.2.6.1); and the
    Record-Route set for dialog-establishing 1xx/2xx to INVITE/SUBSCRIBE
    (RFC 3261 12.1.1), without which proxied dialogs would lose their route.
    """
    if not 100 <= status <= 699:
        raise ValueError(f"status {status} out of range")
    items = req.headers.fields("Via")
    items.append(("from", "From", req.require("From")))
    to = req.require("To")
    if to_tag is not None and NameAddr.parse(to).tag is None:
        to = f"{to};tag={to_tag}"
    items.append(("to", "To", to))
    items.append(("call-id", "Call-ID", req.require("Call-ID")))
    items.append(("cseq", "CSeq", req.require("CSeq")))
    if 100 < status < 300 and req.method in ("INVITE", "SUBSCRIBE"):
        for v in req.headers.get_all("Record-Route"):
            items.append(("record-route", "Record-Route", v))
    if status == 100:
        ts = req.headers.get("Timestamp")
        if ts is not None:
            items.append(("timestamp", "Timestamp", ts))
    h = Headers.from_fields(items)
    if extra:
        for name, value in extra:
            h.add(name, value)
    if reason is None:
        reason = REASON_PHRASES.get(status) or _CLASS_REASONS[status // 100]
    return SipResponse(status, reason, h, body)


def _same_transaction(invite: SipRequest, to: str, method: str) -> SipRequest:
    """A request in the INVITE's own transaction (same Via branch, URI, Route, IDs, CSeq
    number): what CANCEL (9.1) and the ACK of a non-2xx (17.1.1.3) both are."""
    h = Headers()
    h.add("Via", invite.require("Via"))
    for route in invite.headers.get_all("Route"):
        h.add("Route", route)
    h.add("Max-Forwards", "70")
    h.add("From", invite.require("From"))
    h.add("To", to)
    h.add("Call-ID", invite.call_id)
    h.add("CSeq", f"{invite.cseq[0]} {method}")
    return SipRequest(method, invite.uri, h)


def build_cancel(invite: SipRequest) -> SipRequest:
    """CANCEL for a pending INVITE (RFC 3261 9.1)."""
    return _same_transaction(invite, invite.require("To"), "CANCEL")


def build_ack(invite: SipRequest, response: SipResponse) -> SipRequest:
    """ACK for a non-2xx final response (RFC 3261 17.1.1.3): To (with tag) from the response."""
    return _same_transaction(invite, response.require("To"), "ACK")


def bad_request_for(data: bytes, problem: str, server: str | None = None) -> bytes | None:
    """A 400 for an unparseable request, built from whatever headers can be read raw.

    Only requests other than ACK are answered (never responses, never an ACK, which gets
    no response at all), and only when Via, From, To, Call-ID and
    CSeq can be found, since a response needs them to be routed and matched. ``server``
    becomes the Server header when given.
    """
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    lines = head.lstrip("\r\n").replace("\r\n", "\n").split("\n")
    if not lines or lines[0].startswith("SIP/") or len(lines[0].split(" ")) < 3:
        return None
    if lines[0].split(" ", 1)[0].upper() == "ACK":
        return None  # an ACK is never answered (RFC 3261 17.2.3, 17.1.1.3)
    compact = {"v": "via", "f": "from", "t": "to", "i": "call-id"}
    wanted = ("via", "from", "to", "call-id", "cseq")
    found: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        key = compact.get(name.strip().lower(), name.strip().lower())
        if sep and key in wanted:
            found.append((key, value.strip()))
    if not all(any(k == w for k, _ in found) for w in wanted):
        return None
    reason = "Bad Request - " + "".join(c for c in problem if c.isprintable())[:100]
    canonical = {"via": "Via", "from": "From", "to": "To", "call-id": "Call-ID", "cseq": "CSeq"}
    out = [f"SIP/2.0 400 {reason}"]
    out += [f"{canonical[k]}: {v}" for k, v in found]
    if server is not None:
        out.append(f"Server: {server}")
    out += ["Content-Length: 0", "", ""]
    return "\r\n".join(out).encode()


def new_branch() -> str:
    """A fresh RFC 3261 branch: magic cookie + 80 random bits."""
    return MAGIC_COOKIE + secrets.token_hex(10)


def new_tag() -> str:
    """A From/To tag with 48 random bits (RFC 3261 19.3 asks for >= 32)."""
    return secrets.token_hex(6)


def new_call_id(host: str) -> str:
    """A globally unique Call-ID (RFC 3261 8.1.1.4): 96 random bits @ host."""
    return f"{secrets.token_hex(12)}@{host}"
