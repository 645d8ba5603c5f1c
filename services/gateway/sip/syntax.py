"""The lexical rules every SIP header grammar shares (RFC 3261 section 25), and the error
raised for input that breaks them.

Tokens, quoted strings, ``;name=value`` parameters and ``host[:port]`` appear in URIs,
name-addrs, Via and most other headers alike, so they live here rather than with any one
of those structures. Everything here is on the parser's hot path: plain string methods and
loops, no regular expressions.
"""

from __future__ import annotations

__all__ = [
    "TOKEN_CHARS",
    "SipParseError",
    "format_params",
    "parse_hostport",
    "parse_params",
    "read_quoted",
    "split_outside_quotes",
]


class SipParseError(ValueError):
    """A SIP message or header is malformed; the text says what was wrong.

    Subclasses ValueError so callers that only care about "bad input" can catch
    that, while the gateway can put ``str(exc)`` in a 400 reason phrase.
    """


TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
"""RFC 3261 25.1 ``token`` characters: ``TOKEN_CHARS.issuperset(s)`` tests a token."""

_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._")
_IPV6_CHARS = frozenset("0123456789abcdefABCDEF:.")


def read_quoted(s: str, start: int) -> tuple[str, int]:
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


def split_outside_quotes(value: str, sep: str) -> list[str]:
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


def parse_params(text: str, what: str) -> dict[str, str | None]:
    """Parse ``;k=v;flag`` parameters: lower-case keys, None for flags.

    ``text`` is what follows the first ';' (or is empty). Whitespace around
    names, '=' and values is LWS and removed (RFC 4475 3.1.1.1). ``what`` names
    the structure in error messages.
    """
    params: dict[str, str | None] = {}
    if not text:
        return params
    for item in split_outside_quotes(text, ";"):
        name, eq, val = item.partition("=")
        name = name.strip()
        if not name:
            if not eq and not val.strip():
                continue  # tolerate ";;" / trailing ';'
            raise SipParseError(f"empty parameter name in {what} {text!r}")
        if not TOKEN_CHARS.issuperset(name):
            raise SipParseError(f"bad parameter name {name!r} in {what}")
        params[name.lower()] = val.strip() if eq else None
    return params


def format_params(params: dict[str, str | None]) -> str:
    """The wire form of parameters: ``;k=v`` or ``;flag`` each, in order."""
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def _parse_port(text: str, what: str) -> int:
    if not text or not text.isascii() or not text.isdigit():
        raise SipParseError(f"bad port {text!r} in {what}")
    port = int(text)
    if not 0 < port < 65536:
        raise SipParseError(f"port {port} out of range in {what}")
    return port


def parse_hostport(text: str, what: str) -> tuple[str, int | None]:
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
