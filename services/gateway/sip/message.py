"""RFC 3261 SIP message model, parser and serializer.

This is the gateway's hot path: every datagram goes through
:func:`parse_message`, so the common path uses ``bytes.find``/``str.partition``
and plain loops, never regular expressions. Parsing is strict about what the
RFC makes mandatory (start line, mandatory headers, CSeq, Content-Length) and
tolerant where RFC 3261 section 7.3.1 and RFC 4475 say a robust parser must be
(LWS around colons, header folding, compact forms, leading CRLFs).

Header values are kept as text; structured views (:class:`Via`,
:class:`NameAddr`, :class:`SipUri`) are parsed on demand by properties so that
messages we only forward or drop never pay for them.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = [
    "COMPACT_FORMS",
    "MAGIC_COOKIE",
    "REASON_PHRASES",
    "Headers",
    "NameAddr",
    "SipMessage",
    "SipMessageType",
    "SipParseError",
    "SipRequest",
    "SipResponse",
    "SipUri",
    "StreamFramer",
    "Via",
    "make_response",
    "new_branch",
    "new_call_id",
    "new_tag",
    "parse_message",
    "parse_name_addr",
    "parse_uri",
    "parse_via",
    "same_ip",
    "split_header_list",
]

MAGIC_COOKIE = "z9hG4bK"
"""RFC 3261 8.1.1.7: branch prefix marking RFC 3261-compliant transaction ids."""


class SipParseError(ValueError):
    """A SIP message or header is malformed; the text says what was wrong.

    Subclasses ValueError so callers that only care about "bad input" can catch
    that, while the gateway can put ``str(exc)`` in a 400 reason phrase.
    """


# RFC 3261 7.3.3 compact forms, plus the event/refer extensions (RFC 6665, 3515, 3892).
COMPACT_FORMS: dict[str, str] = {
    "i": "Call-ID",
    "f": "From",
    "t": "To",
    "v": "Via",
    "m": "Contact",
    "l": "Content-Length",
    "c": "Content-Type",
    "k": "Supported",
    "s": "Subject",
    "e": "Content-Encoding",
    "o": "Event",
    "u": "Allow-Events",
    "r": "Refer-To",
    "b": "Referred-By",
}
_COMPACT_KEYS: dict[str, str] = {k: v.lower() for k, v in COMPACT_FORMS.items()}

# Headers whose comma-separated values on one line are split (RFC 3261 7.3.1).
_LIST_HEADERS = frozenset({"via", "contact", "route", "record-route"})
_MANDATORY = (("via", "Via"), ("from", "From"), ("to", "To"), ("call-id", "Call-ID"), ("cseq", "CSeq"))

# RFC 3261 25.1 token characters.
_TOKEN_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
)
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._")
_IPV6_CHARS = frozenset("0123456789abcdefABCDEF:.")
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.")
_WS = frozenset(" \t\r\n")

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
_CLASS_REASONS = {1: "Provisional", 2: "OK", 3: "Redirect", 4: "Client Error", 5: "Server Error", 6: "Global Failure"}


def _key(name: str) -> str:
    """Lookup key for a header name: lower case, compact form expanded."""
    k = name.lower()
    return _COMPACT_KEYS.get(k, k)


def _check_header_text(name: str, value: str) -> None:
    """Refuse CR/LF in programmatic header input: it would inject extra headers."""
    if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
        raise ValueError(f"illegal character in header {name!r}: {value!r}")
    if not name or not _TOKEN_CHARS.issuperset(name):
        raise ValueError(f"header name {name!r} is not a token")


def _read_quoted(s: str, start: int) -> tuple[str, int]:
    """Read a quoted-string beginning at ``s[start] == '"'``.

    Returns the unescaped content and the index just past the closing quote.
    """
    end = s.find('"', start + 1)
    if end >= 0 and "\\" not in s[start + 1 : end]:
        return s[start + 1 : end], end + 1  # common case: no escapes
    out: list[str] = []
    i = start + 1
    n = len(s)
    while i < n:
        ch = s[i]
        if ch == "\\":
            if i + 1 >= n:
                break
            out.append(s[i + 1])
            i += 2
            continue
        if ch == '"':
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise SipParseError(f"unterminated quoted string in {s!r}")


def _split_outside_quotes(value: str, sep: str) -> list[str]:
    """Split on ``sep`` ignoring separators inside quoted strings and <...>."""
    if '"' not in value and "<" not in value:
        return value.split(sep)
    out: list[str] = []
    start = 0
    in_quote = False
    depth = 0
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if in_quote:
            if ch == "\\":
                i += 2
                continue
            if ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            if depth:
                depth -= 1
        elif ch == sep and depth == 0:
            out.append(value[start:i])
            start = i + 1
        i += 1
    if in_quote:
        raise SipParseError(f"unterminated quoted string in {value!r}")
    out.append(value[start:])
    return out


def split_header_list(value: str) -> list[str]:
    """Split a comma-separated header list (RFC 3261 7.3.1), quote- and <>-aware.

    Empty elements are dropped, as the ``#rule`` of RFC 2616 allows them.
    """
    return [p for p in (x.strip() for x in _split_outside_quotes(value, ",")) if p]


def _parse_params(text: str, what: str) -> dict[str, str | None]:
    """Parse ``;k=v;flag`` parameters: lower-case keys, None for flags.

    ``text`` is what follows the first ';' (or is empty). Whitespace around
    names, '=' and values is LWS and removed (RFC 4475 3.1.1.1).
    """
    params: dict[str, str | None] = {}
    if not text:
        return params
    for item in _split_outside_quotes(text, ";"):
        name, eq, val = item.partition("=")
        name = name.strip()
        if not name:
            if not eq and not val.strip():
                continue  # tolerate ";;" / trailing ';'
            raise SipParseError(f"empty parameter name in {what} {text!r}")
        if not _TOKEN_CHARS.issuperset(name):
            raise SipParseError(f"bad parameter name {name!r} in {what}")
        params[name.lower()] = val.strip() if eq else None
    return params


def _format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def _parse_port(text: str, what: str) -> int:
    if not text or not text.isascii() or not text.isdigit():
        raise SipParseError(f"bad port {text!r} in {what}")
    port = int(text)
    if not 0 < port < 65536:
        raise SipParseError(f"port {port} out of range in {what}")
    return port


def _parse_hostport(text: str, what: str) -> tuple[str, int | None]:
    """Split ``host[:port]`` with IPv6 references kept in brackets."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"unterminated IPv6 reference in {what}")
        host = text[: end + 1]
        inner = host[1:-1]
        if not inner or not _IPV6_CHARS.issuperset(inner) or ":" not in inner:
            raise SipParseError(f"bad IPv6 address {host!r} in {what}")
        rest = text[end + 1 :]
        if not rest:
            return host, None
        if rest[0] != ":":
            raise SipParseError(f"junk after IPv6 address in {what}")
        return host, _parse_port(rest[1:], what)
    host, colon, port = text.partition(":")
    if not host or not _HOST_CHARS.issuperset(host):
        raise SipParseError(f"bad host {host!r} in {what}")
    return host, (_parse_port(port, what) if colon else None)


# ---------------------------------------------------------------------------
# Headers


class Headers:
    """Ordered, case-insensitive multi-map of header fields.

    Stores ``(key, name, value)`` triples in arrival order so serialization
    preserves order (Via order is semantically significant) while lookups use
    the lower-case key with compact forms expanded (``get("i")`` finds Call-ID).
    """

    __slots__ = ("_items",)

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        self._items: list[tuple[str, str, str]] = []
        if items:
            for name, value in items:
                self.add(name, value)

    @classmethod
    def _from_triples(cls, triples: list[tuple[str, str, str]]) -> Headers:
        """Adopt already-normalized triples (parser fast path, no validation)."""
        h = cls.__new__(cls)
        h._items = triples
        return h

    def get(self, name: str, default: str | None = None) -> str | None:
        """First value of ``name`` or ``default``."""
        key = _key(name)
        for k, _, v in self._items:
            if k == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """All values of ``name`` in order (list headers already split)."""
        key = _key(name)
        return [v for k, _, v in self._items if k == key]

    def add(self, name: str, value: str) -> None:
        """Append a value; list headers given as "a, b" become separate values."""
        _check_header_text(name, value)
        key = name.lower()
        canon = COMPACT_FORMS.get(key)
        if canon is not None:
            name, key = canon, canon.lower()
        value = value.strip()
        if key in _LIST_HEADERS and ("," in value):
            for part in split_header_list(value):
                self._items.append((key, name, part))
        else:
            self._items.append((key, name, value))

    def set(self, name: str, value: str) -> None:
        """Replace all values of ``name`` with one, at the first one's position."""
        _check_header_text(name, value)
        key = _key(name)
        canon = COMPACT_FORMS.get(name.lower())
        if canon is not None:
            name = canon
        value = value.strip()
        for i, (k, _, _) in enumerate(self._items):
            if k == key:
                self._items[i] = (key, name, value)
                self._items[i + 1 :] = [t for t in self._items[i + 1 :] if t[0] != key]
                return
        self._items.append((key, name, value))

    def set_first(self, name: str, value: str) -> None:
        """Replace only the first value (e.g. the top Via), keeping the others."""
        _check_header_text(name, value)
        key = _key(name)
        for i, (k, n, _) in enumerate(self._items):
            if k == key:
                self._items[i] = (k, n, value.strip())
                return
        raise KeyError(name)

    def remove(self, name: str) -> None:
        """Remove every value of ``name`` (no error when absent)."""
        key = _key(name)
        self._items = [t for t in self._items if t[0] != key]

    def remove_first(self, name: str) -> str | None:
        """Remove and return the first value of ``name`` (e.g. popping a Route)."""
        key = _key(name)
        for i, (k, _, v) in enumerate(self._items):
            if k == key:
                del self._items[i]
                return v
        return None

    def copy(self) -> Headers:
        return Headers._from_triples(list(self._items))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = _key(name)
        return any(k == key for k, _, _ in self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((n, v) for _, n, v in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self._items] == [(k, v) for k, _, v in other._items]

    def __repr__(self) -> str:
        return f"Headers({[(n, v) for _, n, v in self._items]!r})"


# ---------------------------------------------------------------------------
# URIs, name-addr, Via


@dataclass
class SipUri:
    """A sip:, sips: or tel: URI (RFC 3261 19.1, RFC 3966).

    For tel: URIs ``user`` holds the telephone number and ``host`` is empty.
    Parameter keys are lower-cased; flag parameters (``;lr``) map to None.
    """

    scheme: str
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        if self.scheme == "tel":
            return f"tel:{self.user}{_format_params(self.params)}"
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":")
                out.append(self.password)
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        out.append(_format_params(self.params))
        if self.headers:
            out.append("?" + "&".join(f"{k}={v}" for k, v in self.headers.items()))
        return "".join(out)

    @property
    def host_ip(self) -> str:
        """Host without IPv6 brackets, suitable for socket calls."""
        return self.host[1:-1] if self.host.startswith("[") else self.host


def parse_uri(s: str) -> SipUri:
    """Parse a sip/sips/tel URI; SipParseError on anything else or garbage."""
    text = s.strip()
    scheme, colon, rest = text.partition(":")
    if not colon or not rest or not scheme:
        raise SipParseError(f"not a URI: {s!r}")
    if not _WS.isdisjoint(rest):
        raise SipParseError(f"whitespace inside URI {s!r}")
    scheme_l = scheme.lower()
    if scheme_l == "tel":
        number, _, ptxt = rest.partition(";")
        if not number or "@" in number or "?" in number:
            raise SipParseError(f"bad telephone number in {s!r}")
        return SipUri("tel", number, None, "", None, _parse_params(ptxt, "tel URI"))
    if scheme_l not in ("sip", "sips"):
        raise SipParseError(f"unsupported URI scheme {scheme!r}")
    body, q, hdr_text = rest.partition("?")
    userinfo, at, hostpart = body.rpartition("@")
    user: str | None = None
    password: str | None = None
    if at:
        user, pcolon, pw = userinfo.partition(":")
        if not user:
            raise SipParseError(f"empty user part in {s!r}")
        password = pw if pcolon else None
    hostport, _, ptxt = hostpart.partition(";")
    host, port = _parse_hostport(hostport, f"URI {s!r}")
    params = _parse_params(ptxt, "URI")
    headers: dict[str, str] = {}
    if q:
        for item in hdr_text.split("&"):
            hk, eq, hv = item.partition("=")
            if not hk or not eq:
                raise SipParseError(f"bad URI header {item!r} in {s!r}")
            headers[hk] = hv
    return SipUri(scheme_l, user, password, host, port, params, headers)


def _quote_display(display: str) -> str:
    return '"' + display.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class NameAddr:
    """``[display] <uri> *(;param)`` as in From/To/Contact/Route (RFC 3261 20.10)."""

    display: str | None
    uri: SipUri
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        # Always use the <uri> form: it is valid for every URI, while addr-spec
        # form would make URI parameters read as header parameters.
        disp = f"{_quote_display(self.display)} " if self.display else ""
        return f"{disp}<{self.uri}>{_format_params(self.params)}"


def _is_utf8_word(word: str) -> bool:
    return not word.isascii() and all(c in _TOKEN_CHARS or ord(c) > 127 for c in word)


def parse_name_addr(s: str) -> NameAddr:
    """Parse name-addr or bare addr-spec with header parameters.

    In the addr-spec form everything after the first ';' is a header
    parameter, not a URI parameter (RFC 3261 20.10).
    """
    text = s.strip()
    if not text:
        raise SipParseError("empty address")
    display: str | None = None
    if text[0] == '"':
        display, end = _read_quoted(text, 0)
        lt = end
        while lt < len(text) and text[lt] in " \t":
            lt += 1
        if lt >= len(text) or text[lt] != "<":
            raise SipParseError(f"quoted display name not followed by <URI> in {s!r}")
    else:
        lt = text.find("<")
        if lt >= 0:
            disp = text[:lt].strip()
            if disp:
                # RFC 3261 allows only tokens here; we also let UTF-8 letters
                # through (phones send them) but still refuse separators such
                # as ',', '@' or '"' that make the header ambiguous.
                if not all(_TOKEN_CHARS.issuperset(w) or _is_utf8_word(w) for w in disp.split()):
                    raise SipParseError(f"bad unquoted display name {disp!r}")
                display = " ".join(disp.split())
    if lt >= 0:
        gt = text.find(">", lt)
        if gt < 0:
            raise SipParseError(f"missing '>' in {s!r}")
        uri = parse_uri(text[lt + 1 : gt])
        tail = text[gt + 1 :].strip()
        if tail and tail[0] != ";":
            raise SipParseError(f"junk after '>' in {s!r}")
        return NameAddr(display, uri, _parse_params(tail[1:], "address"))
    uri_text, _, ptxt = text.partition(";")
    return NameAddr(None, parse_uri(uri_text), _parse_params(ptxt, "address"))


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

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"SIP/2.0/{self.transport} {self.host}{port}{_format_params(self.params)}"


def parse_via(s: str) -> Via:
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
    if not _TOKEN_CHARS.issuperset(transport):
        raise SipParseError(f"bad Via transport {transport!r}")
    sent_by = tail[1].strip()
    if " " in sent_by or "\t" in sent_by:
        sent_by = "".join(sent_by.split())
    host, port = _parse_hostport(sent_by, "Via")
    return Via(transport, host, port, _parse_params(ptxt, "Via") if semi else {})


# ---------------------------------------------------------------------------
# Messages


class SipMessage:
    """Behaviour shared by requests and responses (header views, serialization)."""

    headers: Headers
    body: bytes

    def _start_line(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def _required(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise SipParseError(f"missing {name} header")
        return value

    @property
    def call_id(self) -> str:
        return self._required("Call-ID")

    @property
    def cseq(self) -> tuple[int, str]:
        return _parse_cseq(self._required("CSeq"))

    @property
    def via(self) -> list[Via]:
        return [parse_via(v) for v in self.headers.get_all("Via")]

    @property
    def top_via(self) -> Via:
        return parse_via(self._required("Via"))

    @property
    def from_(self) -> NameAddr:
        return parse_name_addr(self._required("From"))

    @property
    def to(self) -> NameAddr:
        return parse_name_addr(self._required("To"))

    def to_bytes(self) -> bytes:
        """Serialize; Content-Length always reflects the actual body length."""
        body = self.body
        lines = [self._start_line()]
        cl_done = False
        for key, name, value in self.headers._items:
            if key == "content-length":
                if cl_done:
                    continue
                value = str(len(body))
                cl_done = True
            lines.append(f"{name}: {value}")
        if not cl_done:
            lines.append(f"Content-Length: {len(body)}")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + body

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


def _parse_cseq(value: str) -> tuple[int, str]:
    parts = value.split()
    if len(parts) != 2:
        raise SipParseError(f"CSeq must be 'number METHOD', got {value!r}")
    num, method = parts
    if not num.isascii() or not num.isdigit() or len(num) > 10 or int(num) >= 2**31:
        raise SipParseError(f"bad CSeq number {num!r}")
    if not _TOKEN_CHARS.issuperset(method):
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
    name = raw_name.rstrip(" \t")
    if not name or not _TOKEN_CHARS.issuperset(name):
        raise SipParseError(f"bad header name {name!r}")
    key = name.lower()
    canon_key = _COMPACT_KEYS.get(key)
    if canon_key is not None:
        name = COMPACT_FORMS[key]
        key = canon_key
    if key in _LIST_HEADERS:
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
    msg: SipRequest | SipResponse
    if first.startswith("SIP/"):
        version, _, rest = first.partition(" ")
        if version != "SIP/2.0":
            raise SipParseError(f"unsupported SIP version {version!r}")
        code, _, reason = rest.partition(" ")
        if len(code) != 3 or not code.isascii() or not code.isdigit() or not 100 <= int(code) <= 699:
            raise SipParseError(f"bad status code {code!r}")
        msg = SipResponse(int(code), reason, Headers._from_triples([]))
        method = None
    else:
        parts = first.split(" ")
        if len(parts) != 3:
            raise SipParseError(f"bad request line {first!r}")
        method, uri, version = parts
        if not method or not _TOKEN_CHARS.issuperset(method):
            raise SipParseError(f"bad method {method!r}")
        if version.upper() != "SIP/2.0":
            if version.upper().startswith("SIP/"):
                raise SipParseError(f"unsupported SIP version {version!r}")
            raise SipParseError(f"bad request line {first!r}")
        scheme, colon, _ = uri.partition(":")
        if not colon or not scheme or not scheme[0].isalpha() or not _SCHEME_CHARS.issuperset(scheme):
            raise SipParseError(f"bad Request-URI {uri!r}")
        msg = SipRequest(method, uri, Headers._from_triples([]))

    items: list[tuple[str, str, str]] = []
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
    msg.headers._items = items

    _, cseq_method = _parse_cseq(cseq_value)
    if method is not None and cseq_method != method:
        raise SipParseError(f"CSeq method {cseq_method!r} does not match request method {method!r}")
    parse_via(top_via)  # responses are routed by it: reject garbage up front

    if content_length is not None:
        if content_length > len(body):
            raise SipParseError(
                f"Content-Length {content_length} exceeds the {len(body)} body bytes received"
            )
        if content_length < len(body):
            body = body[:content_length]
    msg.body = bytes(body)
    return msg


class StreamFramer:
    """Frame SIP messages out of a byte stream (TCP/TLS, RFC 3261 18.3).

    Content-Length is mandatory on streams. CRLF keepalives (RFC 5626 3.5.1)
    between messages are skipped. After a SipParseError the stream is out of
    sync and the connection must be closed.
    """

    def __init__(self, max_header: int = 65536, max_body: int = 1 << 20) -> None:
        self._buf = bytearray()
        self.max_header = max_header
        self.max_body = max_body
        self.keepalives = 0

    def feed(self, data: bytes) -> list[SipRequest | SipResponse]:
        """Add bytes; return every complete message now available."""
        self._buf += data
        out: list[SipRequest | SipResponse] = []
        buf = self._buf
        while True:
            skip = 0
            while skip < len(buf) and buf[skip] in (13, 10):
                skip += 1
            if skip:
                self.keepalives += 1
                del buf[:skip]
            if not buf:
                break
            first_nl = buf.find(b"\n")
            if first_nl >= 0:
                first = bytes(buf[:first_nl]).rstrip(b"\r")
                if not (first.startswith(b"SIP/2.0 ") or first.endswith(b" SIP/2.0")):
                    raise SipParseError(f"garbage on stream: {first[:80]!r}")
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self.max_header:
                    raise SipParseError("header section too large")
                break
            length = self._content_length(bytes(buf[:end]))
            total = end + 4 + length
            if len(buf) < total:
                break
            out.append(parse_message(bytes(buf[:total])))
            del buf[:total]
        return out

    def _content_length(self, head: bytes) -> int:
        for line in head.split(b"\r\n")[1:]:
            name, colon, value = line.partition(b":")
            if colon and name.strip().lower() in (b"content-length", b"l"):
                value = value.strip()
                if not value.isdigit():
                    raise SipParseError(f"non-numeric Content-Length {value!r}")
                length = int(value)
                if length > self.max_body:
                    raise SipParseError(f"Content-Length {length} exceeds limit {self.max_body}")
                return length
        raise SipParseError("Content-Length is mandatory on stream transports")


# ---------------------------------------------------------------------------
# Construction helpers


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
    h = Headers._from_triples([])
    items = h._items
    for k, n, v in req.headers._items:
        if k == "via":
            items.append((k, n, v))
    items.append(("from", "From", req._required("From")))
    to = req._required("To")
    if to_tag is not None and parse_name_addr(to).tag is None:
        to = f"{to};tag={to_tag}"
    items.append(("to", "To", to))
    items.append(("call-id", "Call-ID", req._required("Call-ID")))
    items.append(("cseq", "CSeq", req._required("CSeq")))
    if 100 < status < 300 and req.method in ("INVITE", "SUBSCRIBE"):
        for v in req.headers.get_all("Record-Route"):
            items.append(("record-route", "Record-Route", v))
    if status == 100:
        ts = req.headers.get("Timestamp")
        if ts is not None:
            items.append(("timestamp", "Timestamp", ts))
    if extra:
        for name, value in extra:
            h.add(name, value)
    if reason is None:
        reason = REASON_PHRASES.get(status) or _CLASS_REASONS[status // 100]
    return SipResponse(status, reason, h, body)


def new_branch() -> str:
    """A fresh RFC 3261 branch: magic cookie + 80 random bits."""
    return MAGIC_COOKIE + secrets.token_hex(10)


def new_tag() -> str:
    """A From/To tag with 48 random bits (RFC 3261 19.3 asks for >= 32)."""
    return secrets.token_hex(6)


def new_call_id(host: str) -> str:
    """A globally unique Call-ID (RFC 3261 8.1.1.4): 96 random bits @ host."""
    return f"{secrets.token_hex(12)}@{host}"


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


SipMessageType = SipRequest | SipResponse
