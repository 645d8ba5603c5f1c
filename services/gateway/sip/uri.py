"""SIP URIs and addresses: :class:`SipUri` (sip:, sips:, tel:, RFC 3261 19.1, RFC 3966) and
:class:`NameAddr` (``[display] <uri> ;params`` of From/To/Contact/Route, RFC 3261 20.10).

Each class parses with ``parse`` and serializes with ``str()``, side by side; the
functions :func:`parse_uri` and :func:`parse_name_addr` are the same parsers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .syntax import (
    TOKEN_CHARS,
    SipParseError,
    format_params,
    parse_hostport,
    parse_params,
    read_quoted,
)

__all__ = ["NameAddr", "SipUri", "parse_name_addr", "parse_uri"]

_WS = frozenset(" \t\r\n")


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

    @classmethod
    def parse(cls, s: str) -> SipUri:
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
            return cls("tel", number, None, "", None, parse_params(ptxt, "tel URI"))
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
        host, port = parse_hostport(hostport, f"URI {s!r}")
        params = parse_params(ptxt, "URI")
        headers: dict[str, str] = {}
        if q:
            for item in hdr_text.split("&"):
                hk, eq, hv = item.partition("=")
                if not hk or not eq:
                    raise SipParseError(f"bad URI header {item!r} in {s!r}")
                headers[hk] = hv
        return cls(scheme_l, user, password, host, port, params, headers)

    def __str__(self) -> str:
        if self.scheme == "tel":
            return f"tel:{self.user}{format_params(self.params)}"
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
        out.append(format_params(self.params))
        if self.headers:
            out.append("?" + "&".join(f"{k}={v}" for k, v in self.headers.items()))
        return "".join(out)

    @property
    def host_ip(self) -> str:
        """Host without IPv6 brackets, suitable for socket calls."""
        return self.host[1:-1] if self.host.startswith("[") else self.host


def _quote_display(display: str) -> str:
    return '"' + display.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _is_utf8_word(word: str) -> bool:
    return not word.isascii() and all(c in TOKEN_CHARS or ord(c) > 127 for c in word)


@dataclass
class NameAddr:
    """``[display] <uri> *(;param)`` as in From/To/Contact/Route (RFC 3261 20.10)."""

    display: str | None
    uri: SipUri
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @classmethod
    def parse(cls, s: str) -> NameAddr:
        """Parse name-addr or bare addr-spec with header parameters.

        In the addr-spec form everything after the first ';' is a header
        parameter, not a URI parameter (RFC 3261 20.10).
        """
        text = s.strip()
        if not text:
            raise SipParseError("empty address")
        display: str | None = None
        if text[0] == '"':
            display, end = read_quoted(text, 0)
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
                    if not all(TOKEN_CHARS.issuperset(w) or _is_utf8_word(w) for w in disp.split()):
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
            return cls(display, uri, parse_params(tail[1:], "address"))
        uri_text, _, ptxt = text.partition(";")
        return cls(None, parse_uri(uri_text), parse_params(ptxt, "address"))

    def __str__(self) -> str:
        # Always use the <uri> form: it is valid for every URI, while addr-spec
        # form would make URI parameters read as header parameters.
        disp = f"{_quote_display(self.display)} " if self.display else ""
        return f"{disp}<{self.uri}>{format_params(self.params)}"


parse_uri = SipUri.parse
"""Parse a sip/sips/tel URI (:meth:`SipUri.parse`)."""

parse_name_addr = NameAddr.parse
"""Parse a name-addr or addr-spec with parameters (:meth:`NameAddr.parse`)."""
