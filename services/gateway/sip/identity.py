"""Caller identity headers carriers use: P-Asserted-Identity (RFC 3325) and Diversion
(RFC 5806).

P-Asserted-Identity is the network's word for who is calling; it is only believed from a
trusted peer (RFC 3325 "spec(T)"), which the caller of :func:`asserted_identity` decides.
Privacy: id (RFC 3325 9.3) asks that the identity not be passed on to untrusted parties.
Diversion lists, newest first, who forwarded the call and why.
"""

from __future__ import annotations

from dataclasses import dataclass

from .headers import split_header_list
from .message import SipRequest
from .syntax import SipParseError
from .uri import NameAddr, parse_name_addr

__all__ = [
    "Diversion",
    "asserted_identity",
    "diversion_header",
    "diversions",
    "number_of",
    "pai_header",
    "privacy_id",
]


@dataclass(frozen=True, slots=True)
class Diversion:
    """One Diversion entry: the diverting number and why (RFC 5806 4.1)."""

    number: str
    reason: str = "unknown"
    counter: int = 1


def number_of(addr: NameAddr) -> str:
    """The telephone number of an address: a tel: URI's number, else the user part."""
    return addr.uri.user or ""


def asserted_identity(request: SipRequest) -> NameAddr | None:
    """The first usable P-Asserted-Identity (a sip:/sips:/tel: URI with a user), or None.
    A malformed value is skipped, not fatal: identity is a hint, the call still goes."""
    for raw in request.headers.get_all("P-Asserted-Identity"):
        for value in split_header_list(raw):
            try:
                addr = parse_name_addr(value)
            except SipParseError:
                continue
            if addr.uri.user:
                return addr
    return None


def privacy_id(request: SipRequest) -> bool:
    """True when the caller asked that its identity be withheld (Privacy: id or user)."""
    values = ";".join(request.headers.get_all("Privacy")).lower()
    return any(p.strip() in ("id", "user") for p in values.replace(",", ";").split(";"))


def diversions(request: SipRequest) -> list[Diversion]:
    """The Diversion entries, most recent diversion first; malformed ones are skipped."""
    out: list[Diversion] = []
    for raw in request.headers.get_all("Diversion"):
        for value in split_header_list(raw):
            try:
                addr = parse_name_addr(value)
            except SipParseError:
                continue
            counter_text = addr.params.get("counter") or "1"
            out.append(
                Diversion(
                    number=number_of(addr),
                    reason=(addr.params.get("reason") or "unknown").strip('"'),
                    counter=int(counter_text) if counter_text.isdigit() else 1,
                )
            )
    return out


def pai_header(number: str, host: str, display: str = "") -> str:
    """A P-Asserted-Identity value for ``number`` at ``host``."""
    shown = f'"{display}" ' if display and '"' not in display else ""
    return f"{shown}<sip:{number}@{host}>"


def diversion_header(number: str, host: str, reason: str = "unconditional") -> str:
    """A Diversion value (RFC 5806) for a call we forward on behalf of ``number``."""
    return f"<sip:{number}@{host}>;reason={reason};counter=1"
