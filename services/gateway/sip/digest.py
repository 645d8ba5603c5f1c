"""HTTP Digest authentication for SIP (RFC 2617, RFC 7616 MD5, RFC 3261 22.4).

Server side: we store only HA1 = MD5(user:realm:password), issue stateless
HMAC-signed nonces bound to the client's address, verify responses in constant
time and reject nonce-count replays. Having offered qop=auth, the server accepts
nothing else: an RFC 2069 answer (no qop, so no nonce count) could be replayed.
The caller also checks the digest ``uri`` against the Request-URI
(:func:`uri_matches`). Client side: :func:`authorization` answers carrier
challenges (RFC 2069 mode only when the carrier offers no qop).

MD5 is what every SIP endpoint in the field supports; SHA-256 (RFC 8760) is
not offered because deployed phones and trunks rarely implement it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Literal

from .syntax import SipParseError
from .uri import parse_uri

__all__ = [
    "DigestError",
    "NonceManager",
    "authorization",
    "challenge",
    "ha1",
    "parse_auth_header",
    "uri_matches",
    "verify",
]


class DigestError(SipParseError):
    """Malformed Authorization/WWW-Authenticate value (a SipParseError, so 400-able)."""


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def ha1(user: str, realm: str, password: str) -> str:
    """HA1 = hex MD5(user:realm:password); stored instead of the password."""
    return _md5(f"{user}:{realm}:{password}")


NonceStatus = Literal["ok", "stale", "invalid"]


class NonceManager:
    """Issue and validate stateless nonces; track nonce-counts against replay.

    A nonce is ``<hex timestamp>.<random>.<hmac>``: any gateway replica sharing
    ``secret`` can validate it without shared state. With ``bound_to`` (the
    client's address) the HMAC covers it too, so a nonce answered from another
    address is "invalid": captured credentials cannot be replayed elsewhere. Replay protection needs
    state (the last nc seen per nonce); it is kept in a bounded LRU. When an
    entry has to be evicted, every nonce issued at or before the evicted one
    is afterwards answered "stale", so eviction can force a re-challenge but
    can never re-open a replay window.
    """

    def __init__(
        self,
        secret: bytes,
        ttl: float = 300,
        max_tracked: int = 10000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not secret:
            raise ValueError("nonce secret must not be empty")
        self._secret = secret
        self.ttl = ttl
        self.max_tracked = max_tracked
        self._clock = clock
        self._nc: OrderedDict[str, tuple[int, int]] = OrderedDict()  # nonce -> (nc, issued ms)
        self._evicted_upto = -1  # issue time (ms) of the newest evicted nonce

    def _sign(self, payload: str, bound_to: str = "") -> str:
        data = f"{payload}|{bound_to}".encode() if bound_to else payload.encode("ascii")
        return hmac.new(self._secret, data, hashlib.sha256).hexdigest()[:32]

    def issue(self, bound_to: str = "") -> str:
        """A fresh nonce bound to the current time (and to ``bound_to``, if given)."""
        payload = f"{int(self._clock() * 1000):x}.{secrets.token_hex(8)}"
        return f"{payload}.{self._sign(payload, bound_to)}"

    def _issued_ms(self, nonce: str, bound_to: str = "") -> int | None:
        parts = nonce.split(".")
        if len(parts) != 3:
            return None
        ts_hex, rand, mac = parts
        if not hmac.compare_digest(mac, self._sign(f"{ts_hex}.{rand}", bound_to)):
            return None
        try:
            return int(ts_hex, 16)
        except ValueError:
            return None

    def check(self, nonce: str, nc: str | int | None = None, bound_to: str = "") -> NonceStatus:
        """Validate a nonce (and, with ``nc``, that it is not a replayed count).

        "invalid": not ours / forged / issued to another address / nc replay;
        "stale": ours but expired, which tells the client to retry with a new
        nonce without re-prompting.
        """
        issued = self._issued_ms(nonce, bound_to)
        if issued is None:
            return "invalid"
        now_ms = self._clock() * 1000
        if issued > now_ms + 5000:  # from the future beyond clock skew
            return "invalid"
        if now_ms - issued > self.ttl * 1000:
            self._nc.pop(nonce, None)
            return "stale"
        if nc is None:
            return "ok"
        count = _parse_nc(nc)
        if count is None or count < 1:
            return "invalid"
        seen = self._nc.get(nonce)
        if seen is None and issued <= self._evicted_upto:
            return "stale"  # our replay record for it is gone: force a new nonce
        if seen is not None and count <= seen[0]:
            return "invalid"
        return "ok"

    def commit_nc(self, nonce: str, nc: str | int, bound_to: str = "") -> bool:
        """Record ``nc`` as used once the response verified; False on replay.

        Separate from :meth:`check` so a forged response cannot burn the
        legitimate client's counter.
        """
        count = _parse_nc(nc)
        if count is None:
            return False
        issued = self._issued_ms(nonce, bound_to)
        if issued is None:
            return False
        seen = self._nc.get(nonce)
        if seen is not None and count <= seen[0]:
            return False
        if seen is None and issued <= self._evicted_upto:
            return False
        self._nc[nonce] = (count, issued)
        self._nc.move_to_end(nonce)
        self._prune()
        return True

    def _prune(self) -> None:
        cutoff_ms = (self._clock() - self.ttl) * 1000
        while self._nc:
            oldest, (_, issued) = next(iter(self._nc.items()))
            if len(self._nc) > self.max_tracked:
                self._evicted_upto = max(self._evicted_upto, issued)
            elif issued >= cutoff_ms:
                break
            del self._nc[oldest]

    def __len__(self) -> int:
        return len(self._nc)


def _parse_nc(nc: str | int) -> int | None:
    if isinstance(nc, int):
        return nc
    if len(nc) != 8:
        return None
    try:
        return int(nc, 16)
    except ValueError:
        return None


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def challenge(realm: str, nonce: str, stale: bool = False, opaque: str | None = None) -> str:
    """WWW-Authenticate / Proxy-Authenticate value offering MD5 with qop=auth."""
    parts = [f"Digest realm={_quote(realm)}", f"nonce={_quote(nonce)}"]
    if opaque is not None:
        parts.append(f"opaque={_quote(opaque)}")
    parts.append("algorithm=MD5")
    parts.append('qop="auth"')
    if stale:
        parts.append("stale=true")
    return ", ".join(parts)


def parse_auth_header(value: str) -> dict[str, str]:
    """Parse ``Digest k=v, k="v"`` into a dict with lower-case keys.

    Handles quoted strings with backslash escapes and commas inside quotes.
    Raises DigestError on anything that is not a Digest credential/challenge.
    """
    text = value.strip()
    scheme, _, rest = text.partition(" ")
    if scheme.lower() != "digest":
        raise DigestError(f"not a Digest header: {value[:40]!r}")
    params: dict[str, str] = {}
    i = 0
    n = len(rest)
    while True:
        while i < n and rest[i] in " \t\r\n,":
            i += 1
        if i >= n:
            break
        eq = rest.find("=", i)
        if eq < 0:
            raise DigestError(f"parameter without '=' in {value!r}")
        name = rest[i:eq].strip().lower()
        if not name or any(c in name for c in ' \t",'):
            raise DigestError(f"bad parameter name {name!r}")
        i = eq + 1
        while i < n and rest[i] in " \t":
            i += 1
        if i < n and rest[i] == '"':
            out: list[str] = []
            i += 1
            while i < n and rest[i] != '"':
                if rest[i] == "\\" and i + 1 < n:
                    i += 1
                out.append(rest[i])
                i += 1
            if i >= n:
                raise DigestError(f"unterminated quoted value for {name!r}")
            i += 1
            val = "".join(out)
        else:
            end = rest.find(",", i)
            end = n if end < 0 else end
            val = rest[i:end].strip()
            if not val or " " in val or '"' in val:
                raise DigestError(f"bad value for {name!r}")
            i = end
        while i < n and rest[i] in " \t":
            i += 1
        if i < n and rest[i] != ",":
            raise DigestError(f"junk after parameter {name!r}")
        if name in params:
            raise DigestError(f"duplicate parameter {name!r}")
        params[name] = val
    if not params:
        raise DigestError("Digest header without parameters")
    return params


def _response(
    ha1_hex: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None,
    nc: str | None,
    cnonce: str | None,
) -> str:
    ha2 = _md5(f"{method}:{uri}")
    if qop:
        return _md5(f"{ha1_hex}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _md5(f"{ha1_hex}:{nonce}:{ha2}")


def verify(
    params: dict[str, str], method: str, stored_ha1: str, *, require_qop: bool = True
) -> bool:
    """Check a parsed Authorization against the stored HA1 (constant time).

    Requires qop=auth with nc and cnonce (we always offer it: an answer
    without qop carries no nonce count and could be replayed); RFC 2069
    no-qop answers only with ``require_qop=False``. Anything else (auth-int,
    non-MD5 algorithms, missing fields) is rejected. The caller must also
    check the nonce with NonceManager and that ``uri`` matches the
    Request-URI (:func:`uri_matches`, RFC 2617 3.2.2.5).
    """
    try:
        nonce = params["nonce"]
        uri = params["uri"]
        given = params["response"]
    except KeyError:
        return False
    if params.get("algorithm", "MD5").upper() != "MD5":
        return False
    qop = params.get("qop")
    nc = cnonce = None
    if qop is None and require_qop:
        return False
    if qop is not None:
        if qop.lower() != "auth":
            return False
        nc, cnonce = params.get("nc"), params.get("cnonce")
        if not nc or not cnonce or _parse_nc(nc) is None:
            return False
    expected = _response(stored_ha1.lower(), nonce, method, uri, qop, nc, cnonce)
    return hmac.compare_digest(expected, given.lower())


def uri_matches(digest_uri: str, request_uri: str) -> bool:
    """The digest ``uri`` names the Request-URI (RFC 2617 3.2.2.5): equal as
    written, or as SIP URIs (scheme, user, host without case, port) - phones
    differ in how they write the same target."""
    if digest_uri.strip() == request_uri.strip():
        return True
    try:
        a, b = parse_uri(digest_uri.strip()), parse_uri(request_uri.strip())
    except SipParseError:
        return False
    return (a.scheme, a.user, a.host.lower(), a.port) == (b.scheme, b.user, b.host.lower(), b.port)


def authorization(
    user: str,
    password: str,
    realm: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None = None,
    nc: int = 1,
    cnonce: str | None = None,
    opaque: str | None = None,
    algorithm: str = "MD5",
) -> str:
    """Client Authorization value answering a challenge.

    ``qop`` may be the server's offered list ("auth,auth-int"); we pick auth
    when offered, and fall back to RFC 2069 mode when qop is absent.
    """
    if algorithm.upper() != "MD5":
        raise DigestError(f"unsupported digest algorithm {algorithm!r}")
    chosen: str | None = None
    if qop is not None:
        offered = [q.strip().lower() for q in qop.split(",")]
        if "auth" not in offered:
            raise DigestError(f"server offers no supported qop in {qop!r}")
        chosen = "auth"
    nc_hex = f"{nc:08x}"
    if chosen and cnonce is None:
        cnonce = secrets.token_hex(8)
    resp = _response(ha1(user, realm, password), nonce, method, uri, chosen, nc_hex, cnonce)
    parts = [
        f"Digest username={_quote(user)}",
        f"realm={_quote(realm)}",
        f"nonce={_quote(nonce)}",
        f"uri={_quote(uri)}",
        f"response={_quote(resp)}",
        f"algorithm={algorithm}",
    ]
    if chosen:
        parts += [f"qop={chosen}", f"nc={nc_hex}", f"cnonce={_quote(cnonce or '')}"]
    if opaque is not None:
        parts.append(f"opaque={_quote(opaque)}")
    return ", ".join(parts)
