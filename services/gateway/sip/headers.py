"""SIP header fields: the ordered :class:`Headers` collection, header-name canonicalisation
(compact forms, RFC 3261 7.3.3) and comma-list splitting (RFC 3261 7.3.1).

Headers keep their values as text; structured views (Via, name-addr, URI) are parsed on
demand elsewhere, so messages we only forward or drop never pay for them. A field is held
as a ``(key, name, value)`` triple: ``key`` is the lower-case lookup key with compact forms
expanded, ``name`` the spelling written back on the wire.
"""

from __future__ import annotations

from collections.abc import Iterator

from .syntax import TOKEN_CHARS, SipParseError, split_outside_quotes

__all__ = [
    "COMPACT_FORMS",
    "LIST_HEADERS",
    "Field",
    "Headers",
    "canonical_name",
    "header_key",
    "split_header_list",
]

Field = tuple[str, str, str]
"""One header field: (lookup key, name as written, value)."""

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

LIST_HEADERS = frozenset({"via", "contact", "route", "record-route"})
"""Keys of headers whose comma-separated values on one line are split into fields."""


def header_key(name: str) -> str:
    """Lookup key for a header name: lower case, compact form expanded."""
    k = name.lower()
    return _COMPACT_KEYS.get(k, k)


def canonical_name(raw_name: str) -> tuple[str, str]:
    """Validate a header name as received (before the colon): its (key, name).

    Trailing LWS is dropped; a compact form becomes its full name. SipParseError
    if the name is not a token.
    """
    name = raw_name.rstrip(" \t")
    if not name or not TOKEN_CHARS.issuperset(name):
        raise SipParseError(f"bad header name {name!r}")
    key = name.lower()
    canon_key = _COMPACT_KEYS.get(key)
    if canon_key is not None:
        return canon_key, COMPACT_FORMS[key]
    return key, name


def split_header_list(value: str) -> list[str]:
    """Split a comma-separated header list (RFC 3261 7.3.1), quote- and <>-aware.

    Empty elements are dropped, as the ``#rule`` of RFC 2616 allows them.
    """
    return [p for p in (x.strip() for x in split_outside_quotes(value, ",")) if p]


def _check_header_text(name: str, value: str) -> None:
    """Refuse CR/LF in programmatic header input: it would inject extra headers."""
    if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
        raise ValueError(f"illegal character in header {name!r}: {value!r}")
    if not name or not TOKEN_CHARS.issuperset(name):
        raise ValueError(f"header name {name!r} is not a token")


class Headers:
    """Ordered, case-insensitive multi-map of header fields.

    Stores fields in arrival order so serialization preserves order (Via order
    is semantically significant) while lookups use the lower-case key with
    compact forms expanded (``get("i")`` finds Call-ID).
    """

    __slots__ = ("_items",)

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        self._items: list[Field] = []
        if items:
            for name, value in items:
                self.add(name, value)

    @classmethod
    def from_fields(cls, fields: list[Field]) -> Headers:
        """Adopt already-normalized fields without validation (parsers, message builders).

        The list is taken over, not copied; keys must be what :func:`header_key` gives.
        """
        h = cls.__new__(cls)
        h._items = fields
        return h

    def fields(self, name: str | None = None) -> list[Field]:
        """A new list of the fields (all, or those of ``name``) as (key, name, value)."""
        if name is None:
            return list(self._items)
        key = header_key(name)
        return [f for f in self._items if f[0] == key]

    def get(self, name: str, default: str | None = None) -> str | None:
        """First value of ``name`` or ``default``."""
        key = header_key(name)
        for k, _, v in self._items:
            if k == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """All values of ``name`` in order (list headers already split)."""
        key = header_key(name)
        return [v for k, _, v in self._items if k == key]

    def add(self, name: str, value: str) -> None:
        """Append a value; list headers given as "a, b" become separate values."""
        _check_header_text(name, value)
        key = name.lower()
        canon = COMPACT_FORMS.get(key)
        if canon is not None:
            name, key = canon, canon.lower()
        value = value.strip()
        if key in LIST_HEADERS and ("," in value):
            for part in split_header_list(value):
                self._items.append((key, name, part))
        else:
            self._items.append((key, name, value))

    def set(self, name: str, value: str) -> None:
        """Replace all values of ``name`` with one, at the first one's position."""
        _check_header_text(name, value)
        key = header_key(name)
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
        key = header_key(name)
        for i, (k, n, _) in enumerate(self._items):
            if k == key:
                self._items[i] = (k, n, value.strip())
                return
        raise KeyError(name)

    def remove(self, name: str) -> None:
        """Remove every value of ``name`` (no error when absent)."""
        key = header_key(name)
        self._items = [t for t in self._items if t[0] != key]

    def remove_first(self, name: str) -> str | None:
        """Remove and return the first value of ``name`` (e.g. popping a Route)."""
        key = header_key(name)
        for i, (k, _, v) in enumerate(self._items):
            if k == key:
                del self._items[i]
                return v
        return None

    def copy(self) -> Headers:
        return Headers.from_fields(list(self._items))

    def to_text(self, content_length: int, start_line: str | None = None) -> str:
        """The header section as sent: ``Name: value`` CRLF per field, then the empty line.

        The first Content-Length field carries ``content_length`` (later ones are
        dropped); one is appended if there is none, so it always matches the body.
        Given a message's ``start_line``, the result is the whole message head, built
        with a single join (this is the serializer's hot path).
        """
        lines = [] if start_line is None else [start_line]
        cl_done = False
        for key, name, value in self._items:
            if key == "content-length":
                if cl_done:
                    continue
                value = str(content_length)
                cl_done = True
            lines.append(f"{name}: {value}")
        if not cl_done:
            lines.append(f"Content-Length: {content_length}")
        lines.append("\r\n")
        return "\r\n".join(lines)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = header_key(name)
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
