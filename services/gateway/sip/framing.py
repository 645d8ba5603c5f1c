"""Framing SIP messages out of a byte stream (TCP/TLS, RFC 3261 18.3)."""

from __future__ import annotations

from .message import SipRequest, SipResponse, parse_message
from .syntax import SipParseError

__all__ = ["StreamFramer"]


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
            if end < 0 or end + 4 > self.max_header:  # however the bytes arrived
                if len(buf) > self.max_header:
                    raise SipParseError(f"header section too large (over {self.max_header} bytes)")
                break
            length = self._content_length(bytes(buf[:end]))
            total = end + 4 + length
            if len(buf) < total:
                break
            out.append(parse_message(bytes(buf[:total])))
            del buf[:total]
        return out

    def pending_message(self) -> bool:
        """Whether bytes of an incomplete message are buffered (keepalive CRLFs are not)."""
        return bool(self._buf.strip(b"\r\n"))

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
