"""DTMF carried in SIP INFO bodies, as phones and PBXs send it (RFC 6086 INFO, without the
Info-Package framework most of them ignore).

Two body types are in the field:

* ``application/dtmf-relay`` (Cisco style): ``Signal=5`` and ``Duration=160`` lines;
* ``application/dtmf``: the key alone, ``5``.

Both may name ``*`` and ``#`` as the RFC 4733 event codes 10 and 11. :func:`parse_info_dtmf`
returns the digit, or raises :class:`InfoDtmfError` saying what was wrong with the body.
"""

from __future__ import annotations

__all__ = [
    "DTMF_CONTENT_TYPES",
    "InfoDtmfError",
    "content_type_of",
    "dtmf_relay_body",
    "parse_info_dtmf",
]

DTMF_CONTENT_TYPES = ("application/dtmf-relay", "application/dtmf")
_KEYS = frozenset("0123456789*#ABCD")
_EVENT_CODES = {"10": "*", "11": "#", "12": "A", "13": "B", "14": "C", "15": "D"}


class InfoDtmfError(ValueError):
    """An INFO body of a DTMF type that does not name one key; the text says why."""


def _key(value: str, where: str) -> str:
    text = value.strip().upper()
    if text in _EVENT_CODES:
        return _EVENT_CODES[text]
    if len(text) == 1 and text in _KEYS:
        return text
    raise InfoDtmfError(f"{where}: {value.strip()[:20]!r} is not a DTMF key (0-9, *, #, A-D)")


def content_type_of(value: str | None) -> str:
    """The media type of a Content-Type value, lower case, without parameters."""
    return (value or "").split(";", 1)[0].strip().lower()


def parse_info_dtmf(content_type: str | None, body: bytes) -> str:
    """The key an INFO body carries; InfoDtmfError if the type is not a DTMF one or the body
    names no key."""
    kind = content_type_of(content_type)
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise InfoDtmfError(f"{kind} body is not ASCII") from None
    if kind == "application/dtmf":
        return _key(text, "application/dtmf")
    if kind == "application/dtmf-relay":
        for line in text.replace("\r\n", "\n").split("\n"):
            name, eq, value = line.partition("=")
            if eq and name.strip().lower() == "signal":
                return _key(value, "dtmf-relay Signal")
        raise InfoDtmfError("application/dtmf-relay body has no Signal= line")
    raise InfoDtmfError(f"Content-Type {kind or '(none)'} does not carry DTMF")


def dtmf_relay_body(digit: str, duration_ms: int = 160) -> bytes:
    """An ``application/dtmf-relay`` body for one key (tests and outbound INFO)."""
    return f"Signal={_key(digit, 'digit')}\r\nDuration={duration_ms}\r\n".encode("ascii")
