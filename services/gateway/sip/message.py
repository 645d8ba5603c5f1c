"""SIP messages (RFC 3261 7): :class:`SipRequest`, :class:`SipResponse` and
:func:`parse_message`, their parser; ``to_bytes()`` is the serializer.

This is the gateway's hot path: every datagram goes through :func:`parse_message`, so the
common path uses ``bytes.find``/``str.partition`` and plain loops, never regular
expressions. Parsing is strict about what the RFC makes mandatory (start line, mandatory
headers, CSeq, Content-Length) and tolerant where RFC 3261 section 7.3.1 and RFC 4475 say
a robust parser must be (LWS around colons, header folding, compact forms, leading CRLFs).

Header values are kept as text; structured views (:class:`~gateway.sip.via.Via`,
:class:`~gateway.sip.uri.NameAddr`) are parsed on demand by properties so that messages
we only forward or drop never pay for them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .headers import LIST_HEADERS, Field, Headers, canonical_name, split_header_list
from .syntax import TOKEN_CHARS, SipParseError
from .uri import NameAddr, SipUri, parse_name_addr, parse_uri
from .via import Via, parse_via

__all__ = [
    "SipMessage",
    "SipMessageType",
    "SipRequest",
    "SipResponse",
    "parse_message",
]

_MANDATORY = (
    ("via", "Via"),
    ("from", "From"),
    ("to", "To"),
    ("call-id", "Call-ID"),
    ("cseq", "CSeq"),
)
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.")


class SipMessage:
    """Behaviour shared by requests and responses (header views, serialization)."""

    headers: Headers
    body: bytes

    def _start_line(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def require(self, name: str) -> str:
        """The first value of header ``name``; SipParseError if the message has none."""
        value = self.headers.get(name)
        if value is None:
            raise SipParseError(f"missing {name} header")
        return value

    @property
    def call_id(self) -> str:
        return self.require("Call-ID")

    @property
    def cseq(self) -> tuple[int, str]:
        return _parse_cseq(self.require("CSeq"))

    @property
    def via(self) -> list[Via]:
        return [parse_via(v) for v in self.headers.get_all("Via")]

    @property
    def top_via(self) -> Via:
        return parse_via(self.require("Via"))

    @property
    def from_(self) -> NameAddr:
        return parse_name_addr(self.require("From"))

    @property
    def to(self) -> NameAddr:
        return parse_name_addr(self.require("To"))

    def to_bytes(self) -> bytes:
        """Serialize; Content-Length always reflects the actual body length."""
        body = self.body
        head = self.headers.to_text(len(body), self._start_line())
        return head.encode("utf-8", "surrogateescape") + body

    def __bytes__(self) -> bytes:
        return self.to_bytes()


@dataclass(eq=True)
class SipRequest(SipMessage):
    """A SIP request. ``uri`` stays text: unknown schemes must still reach the TU (416)."""

    method: str
    uri: str
    headers: Headers
    body: bytes = b""

    def _start_line(self) -> str:
        return f"{self.method} {self.uri} SIP/2.0"

    @property
    def request_uri(self) -> SipUri:
        return parse_uri(self.uri)


@dataclass(eq=True)
class SipResponse(SipMessage):
    """A SIP response."""

    status: int
    reason: str
    headers: Headers
    body: bytes = b""

    def _start_line(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"


SipMessageType = SipRequest | SipResponse


def _parse_cseq(value: str) -> tuple[int, str]:
    parts = value.split()
    if len(parts) != 2:
        raise SipParseError(f"CSeq must be 'number METHOD', got {value!r}")
    num, method = parts
    if not num.isascii() or not num.isdigit() or len(num) > 10 or int(num) >= 2**31:
        raise SipParseError(f"bad CSeq number {num!r}")
    if not TOKEN_CHARS.issuperset(method):
        raise SipParseError(f"bad CSeq method {method!r}")
    return int(num), method


def _unfold(text: str) -> str:
    """Join continuation lines (RFC 3261 7.3.1): CRLF + SP/HT is LWS."""
    for nl in ("\r\n", "\n"):
        for ws in (" ", "\t"):
            text = text.replace(nl + ws, " ")
    return text


_K_PLAIN, _K_LIST, _K_LENGTH = 0, 1, 2
# Single-instance mandatory headers get one bit each so duplicates and absence
# are detected with integer ops in the hot loop.
_SINGLE_BITS = {"from": 16, "to": 32, "call-id": 64, "cseq": 128}
_K_CSEQ = _SINGLE_BITS["cseq"]
_K_ALL_SINGLES = 16 | 32 | 64 | 128
# Raw header name (as on the wire, before the colon) -> (key, name, kind).
# Bounded so hostile peers sending random names cannot grow it without limit.
_NAME_CACHE: dict[str, tuple[str, str, int]] = {}
_NAME_CACHE_MAX = 512


def _header_name_info(raw_name: str) -> tuple[str, str, int]:
    """Validate and classify a header name; memoized for the parser's hot loop."""
    key, name = canonical_name(raw_name)
    if key in LIST_HEADERS:
        kind = _K_LIST
    elif key in _SINGLE_BITS:
        kind = _SINGLE_BITS[key]
    elif key == "content-length":
        kind = _K_LENGTH
    else:
        kind = _K_PLAIN
    info = (key, name, kind)
    if len(_NAME_CACHE) < _NAME_CACHE_MAX:
        _NAME_CACHE[raw_name] = info
    return info


def parse_message(data: bytes) -> SipRequest | SipResponse:
    """Parse one complete SIP message (a UDP datagram or a framed TCP message).

    Raises SipParseError saying what is wrong. A body longer than
    Content-Length is truncated (trailing datagram junk, RFC 3261 18.3).
    """
    if data[:1] in (b"\r", b"\n"):
        data = data.lstrip(b"\r\n")  # RFC 3261 7.5: ignore CRLFs before start line
    if not data:
        raise SipParseError("empty message")
    idx = data.find(b"\r\n\r\n")
    lf_idx = data.find(b"\n\n", 0, idx if idx >= 0 else len(data))
    if lf_idx >= 0:
        head, body, nl = data[:lf_idx], data[lf_idx + 2 :], "\n"
    elif idx >= 0:
        head, body, nl = data[:idx], data[idx + 4 :], "\r\n"
    else:
        raise SipParseError("no empty line terminating the header section")
    text = head.decode("utf-8", "surrogateescape")
    if "\n " in text or "\n\t" in text:
        text = _unfold(text)
    lines = text.split(nl)
    if nl == "\n":
        lines = [ln.removesuffix("\r") for ln in lines]

    first = lines[0]
    method: str | None = None
    uri = ""
    if first.startswith("SIP/"):
        version, _, rest = first.partition(" ")
        if version != "SIP/2.0":
            raise SipParseError(f"unsupported SIP version {version!r}")
        code, _, reason = rest.partition(" ")
        if (
            len(code) != 3
            or not code.isascii()
            or not code.isdigit()
            or not 100 <= int(code) <= 699
        ):
            raise SipParseError(f"bad status code {code!r}")
    else:
        parts = first.split(" ")
        if len(parts) != 3:
            raise SipParseError(f"bad request line {first!r}")
        method, uri, version = parts
        if not method or not TOKEN_CHARS.issuperset(method):
            raise SipParseError(f"bad method {method!r}")
        if version.upper() != "SIP/2.0":
            if version.upper().startswith("SIP/"):
                raise SipParseError(f"unsupported SIP version {version!r}")
            raise SipParseError(f"bad request line {first!r}")
        scheme, colon, _ = uri.partition(":")
        if (
            not colon
            or not scheme
            or not scheme[0].isalpha()
            or not _SCHEME_CHARS.issuperset(scheme)
        ):
            raise SipParseError(f"bad Request-URI {uri!r}")

    items: list[Field] = []
    seen = 0  # bitmask of the single-instance mandatory headers
    top_via: str | None = None
    cseq_value = ""
    content_length: int | None = None
    cache = _NAME_CACHE
    for line in lines[1:]:
        raw_name, colon, value = line.partition(":")
        if not colon:
            raise SipParseError(f"header line without colon: {line!r}")
        info = cache.get(raw_name)
        if info is None:
            info = _header_name_info(raw_name)
        key, name, kind = info
        value = value.strip(" \t")
        if kind == _K_PLAIN:
            items.append((key, name, value))
        elif kind == _K_LIST:
            if "," in value:
                parts = split_header_list(value)
                for part in parts:
                    items.append((key, name, part))
                if top_via is None and key == "via" and parts:
                    top_via = parts[0]
            else:
                items.append((key, name, value))
                if top_via is None and key == "via":
                    top_via = value
        elif kind == _K_LENGTH:
            if not value.isascii() or not value.isdigit():
                raise SipParseError(f"non-numeric Content-Length {value!r}")
            n = int(value)
            if content_length is not None and n != content_length:
                raise SipParseError("conflicting Content-Length headers")
            content_length = n
            items.append((key, name, value))
        else:  # From / To / Call-ID / CSeq: exactly once
            if seen & kind:
                raise SipParseError(f"duplicate {name} header")
            seen |= kind
            if kind == _K_CSEQ:
                cseq_value = value
            items.append((key, name, value))

    if seen != _K_ALL_SINGLES or top_via is None:
        present = {k for k, _, _ in items}
        for key, label in _MANDATORY:
            if key not in present:
                raise SipParseError(f"missing mandatory {label} header")

    _, cseq_method = _parse_cseq(cseq_value)
    if method is not None and cseq_method != method:
        raise SipParseError(f"CSeq method {cseq_method!r} does not match request method {method!r}")
    if top_via is not None:
        parse_via(top_via)  # responses are routed by it: reject garbage up front

    if content_length is not None:
        if content_length > len(body):
            raise SipParseError(
                f"Content-Length {content_length} exceeds the {len(body)} body bytes received"
            )
        if content_length < len(body):
            body = body[:content_length]
    headers = Headers.from_fields(items)
    if method is None:
        return SipResponse(int(code), reason, headers, bytes(body))
    return SipRequest(method, uri, headers, bytes(body))
