"""REFER from a phone (RFC 3515): the transfer it asks for, and the NOTIFY bodies that report
its progress (message/sipfrag, RFC 3420).

``Refer-To: <sip:8002@gw>`` is a blind transfer; ``Refer-To: <sip:8002@gw?Replaces=...>``
(RFC 3891) an attended one: the phone has a second call whose dialog the Replaces names, and
that call's far party takes the place of the phone in the referred call.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from gateway.core.contracts import Outcome
from gateway.sip.syntax import SipParseError
from gateway.sip.uri import NameAddr

__all__ = ["ReferTarget", "parse_refer_to", "sipfrag"]

SIPFRAG_STATUS: dict[Outcome, str] = {
    Outcome.ANSWERED: "200 OK",
    Outcome.BUSY: "486 Busy Here",
    Outcome.NO_ANSWER: "480 Temporarily Unavailable",
    Outcome.REJECTED: "603 Declined",
    Outcome.UNREACHABLE: "404 Not Found",
    Outcome.CALLER_GONE: "487 Request Terminated",
    Outcome.NO_LINE: "503 Service Unavailable",
    Outcome.NO_DIAL_TONE: "503 Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class ReferTarget:
    user: str  # the extension or number to transfer to
    replaces_call_id: str = ""  # attended: the SIP Call-ID of the dialog to replace
    to_tag: str = ""
    from_tag: str = ""


def parse_refer_to(value: str) -> ReferTarget:
    """The target of a Refer-To header; SipParseError when it names none we can reach."""
    addr = NameAddr.parse(value)
    uri = addr.uri
    if uri.scheme not in ("sip", "sips", "tel") or not uri.user:
        raise SipParseError(f"Refer-To {value!r} names no extension or number")
    user = uri.user
    if not user.removeprefix("+").replace("*", "").replace("#", "").isdigit():
        raise SipParseError(f"Refer-To user {user!r} is not an extension or number")
    raw = next((v for k, v in uri.headers.items() if k.lower() == "replaces"), None)
    if raw is None:
        return ReferTarget(user)
    call_id, *params = unquote(raw).split(";")
    if not call_id:
        raise SipParseError(f"Replaces {raw!r} has no Call-ID")
    tags = dict(p.strip().partition("=")[::2] for p in params)
    return ReferTarget(user, call_id.strip(), tags.get("to-tag", ""), tags.get("from-tag", ""))


def sipfrag(outcome: Outcome | None) -> bytes:
    """The NOTIFY body: ``100 Trying`` while it runs (None), then the final status."""
    status = "100 Trying" if outcome is None else SIPFRAG_STATUS[outcome]
    return f"SIP/2.0 {status}\r\n".encode()
