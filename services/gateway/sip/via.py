"""The Via header (RFC 3261 20.42, 18.2) with RFC 3581 rport: where responses go and which
transaction they belong to.

:meth:`Via.parse` and ``str(via)`` are the parser and serializer; :func:`parse_via` is the
same parser as a function. The transaction layer matches on the branch
(:data:`MAGIC_COOKIE`) and stamps ``received``/``rport`` comparing addresses with
:func:`same_ip`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from .syntax import TOKEN_CHARS, SipParseError, format_params, parse_hostport, parse_params

__all__ = ["MAGIC_COOKIE", "Via", "parse_via", "same_ip"]

MAGIC_COOKIE = "z9hG4bK"
"""RFC 3261 8.1.1.7: branch prefix marking RFC 3261-compliant transaction ids."""


@dataclass
class Via:
    """One Via value (RFC 3261 20.42) with RFC 3581 rport support."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def has_rport(self) -> bool:
        """True if the rport parameter is present, with or without a value."""
        return "rport" in self.params

    @property
    def rport(self) -> int | None:
        """Numeric rport value, or None when absent or still empty."""
        v = self.params.get("rport")
        if v and v.isascii() and v.isdigit():
            return int(v)
        return None

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return self.host, self.port

    @property
    def host_ip(self) -> str:
        return self.host[1:-1] if self.host.startswith("[") else self.host

    @classmethod
    def parse(cls, s: str) -> Via:
        """Parse one Via value, tolerating LWS around '/', ':' ';' and '='."""
        head, semi, ptxt = s.partition(";")
        parts = head.split("/", 2)
        if len(parts) != 3:
            raise SipParseError(f"bad Via sent-protocol in {s!r}")
        if parts[0].strip().upper() != "SIP" or parts[1].strip() != "2.0":
            raise SipParseError(f"unsupported Via protocol in {s!r}")
        tail = parts[2].split(None, 1)
        if len(tail) != 2:
            raise SipParseError(f"missing sent-by in Via {s!r}")
        transport = tail[0].upper()
        if not TOKEN_CHARS.issuperset(transport):
            raise SipParseError(f"bad Via transport {transport!r}")
        sent_by = tail[1].strip()
        if " " in sent_by or "\t" in sent_by:
            sent_by = "".join(sent_by.split())
        host, port = parse_hostport(sent_by, "Via")
        return cls(transport, host, port, parse_params(ptxt, "Via") if semi else {})

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"SIP/2.0/{self.transport} {self.host}{port}{format_params(self.params)}"


parse_via = Via.parse
"""Parse one Via value (:meth:`Via.parse`)."""


def same_ip(a: str, b: str) -> bool:
    """Compare two addresses as IPs (so '::1' equals '0:0::1'); False if not IPs."""
    a = a[1:-1] if a.startswith("[") else a
    b = b[1:-1] if b.startswith("[") else b
    if a == b:
        return True
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False
