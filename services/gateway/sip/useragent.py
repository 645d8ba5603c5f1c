"""Answers for SIP the gateway cannot parse: a 400 built from whatever headers can be read raw.

The user agent proper (dialogs, INVITE handling) is the SIP channel, `gateway.channels.sip`.
"""
from __future__ import annotations

__all__ = ["USER_AGENT", "bad_request_for"]

USER_AGENT = "Hotline/0.1"


def bad_request_for(data: bytes, problem: str) -> bytes | None:
    """A 400 for an unparseable request, built from whatever headers can be read raw.

    Only requests are answered (never responses), and only when Via, From, To, Call-ID and
    CSeq can be found, since a response needs them to be routed and matched.
    """
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    lines = head.replace("\r\n", "\n").split("\n")
    if not lines or lines[0].startswith("SIP/") or len(lines[0].split(" ")) < 3:
        return None
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
    out += [f"Server: {USER_AGENT}", "Content-Length: 0", "", ""]
    return "\r\n".join(out).encode()

