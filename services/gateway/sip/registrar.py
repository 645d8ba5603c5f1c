"""The registrar (RFC 3261 section 10): digest-authenticated REGISTER and the location service.

A phone proves its password with MD5 digest (HA1 stored, never the password): qop=auth only,
a nonce bound to the phone's address with strictly increasing nonce counts, the digest `uri`
equal to the Request-URI. Wrong credentials get 401 again and are never bound.

Abuse is answered before any digest work: REGISTERs are rate limited per source address and
per extension (503 + Retry-After); failed authentications lock out (403 + Retry-After, with a
back-off) the pair (source, extension) first, so a phone guessing behind a NAT does not lock
out its neighbours; an extension guessed at from many addresses, and an address guessing at
many extensions, are locked too, but never for a phone that is registered from that same
address already (its binding proves it knew the password). Bindings expire; `lookup` gives
the freshest one.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from math import ceil

from prometheus_client import Counter, Gauge

from gateway.sip import digest
from gateway.sip.builders import make_response
from gateway.sip.message import SipRequest, SipResponse
from gateway.sip.ratelimit import FailureLockout, TokenBucket
from gateway.sip.syntax import SipParseError
from gateway.sip.transport import Transport
from gateway.sip.uri import NameAddr, SipUri, parse_name_addr

__all__ = ["DEFAULT_EXPIRES", "MAX_EXPIRES", "MIN_EXPIRES", "Binding", "Registrar"]

log = logging.getLogger(__name__)

REGISTRATIONS = Gauge("hotline_sip_registrations", "Extensions with a live registration")
REGISTER_RESULTS = Counter("hotline_sip_register_total", "REGISTER outcomes", ["result"])

MIN_EXPIRES, MAX_EXPIRES, DEFAULT_EXPIRES = 60, 3600, 3600


@dataclass
class Binding:
    """Where an extension can be reached: its Contact and the address/transport it used."""

    extension: str
    contact: NameAddr
    source: tuple[str, int]
    transport: Transport
    expires_at: float

    @property
    def uri(self) -> SipUri:
        return self.contact.uri

    @property
    def target(self) -> tuple[str, int]:
        """Where requests to this phone go: its Contact, unless it sits behind NAT.

        NAT is detected the way SIP proxies usually do it: the Contact's IP is not the IP the
        REGISTER came from. Then the source address (kept open by the phone's re-registers)
        is the only one that reaches it.
        """
        if self.uri.host_ip == self.source[0]:
            return self.source[0], self.uri.port or 5060
        return self.source


class Registrar:
    def __init__(
        self,
        directory: dict[str, str],
        realm: str,
        *,
        rate: float = 20.0,
        burst: int = 40,
        extension_rate: float = 2.0,
        extension_burst: int = 10,
        lockout: FailureLockout | None = None,
        extension_lockout: FailureLockout | None = None,
        bindings: dict[str, Binding] | None = None,
        source_lockout: FailureLockout | None = None,
    ) -> None:
        self.directory, self.realm = directory, realm
        self.nonces = digest.NonceManager(secrets.token_bytes(32))
        self.bucket = TokenBucket(rate, burst)  # per source address
        self.extension_bucket = TokenBucket(extension_rate, extension_burst)
        #: per (source address, extension): the phone that keeps failing
        self.lockout = lockout or FailureLockout(5, 60.0, 60.0, max_lock_s=900.0)
        #: per extension, from every address: a distributed guess at one extension
        self.extension_lockout = extension_lockout or FailureLockout(
            10, 60.0, 60.0, max_lock_s=900.0
        )
        #: per source address, every extension: one address guessing at many extensions
        self.source_lockout = source_lockout or FailureLockout(30, 60.0, 60.0, max_lock_s=900.0)
        # the location service; the gateway passes a table that writes through to its state
        self.bindings: dict[str, Binding] = bindings if bindings is not None else {}

    def lookup(self, extension: str) -> Binding | None:
        binding = self.bindings.get(extension)
        if binding is not None and binding.expires_at <= time.monotonic():
            del self.bindings[extension]
            REGISTRATIONS.set(len(self.bindings))
            return None
        return binding

    def _challenge(
        self, req: SipRequest, ip: str, stale: bool = False, reason: str | None = None
    ) -> SipResponse:
        nonce = self.nonces.issue(bound_to=ip)
        return make_response(
            req,
            401,
            reason,
            extra=[("WWW-Authenticate", digest.challenge(self.realm, nonce, stale=stale))],
        )

    def _locked_for(self, ip: str, extension: str) -> float:
        """Seconds this source must wait before trying `extension` again (0: it may try)."""
        pair = self.lockout.retry_after(f"{ip}|{extension}")
        if pair:
            return pair
        current = self.bindings.get(extension)
        if current is not None and current.source[0] == ip:
            return 0.0  # the registered phone itself: never locked out by others' guesses
        return max(
            self.extension_lockout.retry_after(extension), self.source_lockout.retry_after(ip)
        )

    def _failed(self, ip: str, extension: str) -> bool:
        """Count a failed authentication on every key; True when one of them locked now."""
        locked = self.lockout.failed(f"{ip}|{extension}")
        locked = self.extension_lockout.failed(extension) or locked
        return self.source_lockout.failed(ip) or locked

    def handle(self, req: SipRequest, source: tuple[str, int], transport: Transport) -> SipResponse:
        """Answer one REGISTER."""
        ip = source[0]
        if not self.bucket.allow(ip):
            REGISTER_RESULTS.labels("rate_limited").inc()
            return make_response(req, 503, "Rate Limited", extra=[("Retry-After", "5")])
        try:
            aor = req.to.uri
        except SipParseError as exc:
            return make_response(req, 400, f"Bad To: {exc}"[:120])
        extension = aor.user or ""
        if not self.extension_bucket.allow(extension):
            REGISTER_RESULTS.labels("rate_limited").inc()
            return make_response(
                req, 503, "Rate Limited For Extension", extra=[("Retry-After", "5")]
            )
        wait = self._locked_for(ip, extension)
        if wait:
            REGISTER_RESULTS.labels("locked_out").inc()
            return make_response(
                req, 403, "Too Many Failed Attempts", extra=[("Retry-After", str(ceil(wait)))]
            )
        stored = self.directory.get(extension)
        auth = req.headers.get("Authorization")
        if auth is None:
            REGISTER_RESULTS.labels("challenged").inc()
            return self._challenge(req, ip)
        try:
            params = digest.parse_auth_header(auth)
        except ValueError as exc:
            return make_response(req, 400, f"Bad Authorization: {exc}"[:120])
        digest_uri = params.get("uri", "")
        if not digest.uri_matches(digest_uri, str(req.request_uri)):
            REGISTER_RESULTS.labels("auth_failed").inc()
            self._failed(ip, extension)
            log.warning(
                "REGISTER for %s from %s:%d: digest uri %r is not the Request-URI %s",
                extension,
                *source,
                digest_uri,
                req.request_uri,
            )
            return make_response(req, 400, "Digest uri Does Not Match Request-URI")
        nonce, nc = params.get("nonce", ""), params.get("nc")
        problem: str | None = None
        nonce_state: digest.NonceStatus = "invalid"
        if params.get("qop") is None or nc is None:
            problem = "qop=auth Required"  # an RFC 2069 answer has no count: replayable
        else:
            nonce_state = self.nonces.check(nonce, nc, bound_to=ip)
        if nonce_state == "stale":
            return self._challenge(req, ip, stale=True)
        ok = (
            stored is not None
            and nonce_state == "ok"
            and nc is not None
            and params.get("username") == extension
            and params.get("realm") == self.realm
            and digest.verify(params, "REGISTER", stored)
            and self.nonces.commit_nc(nonce, nc, bound_to=ip)
        )
        if not ok:
            REGISTER_RESULTS.labels("auth_failed").inc()
            locked = self._failed(ip, extension)
            log.warning(
                "REGISTER for %s from %s:%d failed authentication%s%s",
                extension,
                *source,
                f" ({problem})" if problem else "",
                "; locked out" if locked else "",
            )
            return self._challenge(req, ip, reason=problem)
        self.lockout.succeeded(f"{ip}|{extension}")
        self.extension_lockout.succeeded(extension)
        return self._bind(req, extension, source, transport)

    def _bind(
        self, req: SipRequest, extension: str, source: tuple[str, int], transport: Transport
    ) -> SipResponse:
        contacts = req.headers.get_all("Contact")
        header_expires = req.headers.get("Expires")
        try:
            default = int(header_expires) if header_expires is not None else DEFAULT_EXPIRES
        except ValueError:
            return make_response(req, 400, "Bad Expires")
        if contacts == ["*"]:
            if default != 0:
                return make_response(req, 400, "Contact * requires Expires: 0")
            self.bindings.pop(extension, None)
            REGISTRATIONS.set(len(self.bindings))
            REGISTER_RESULTS.labels("unregistered").inc()
            return make_response(req, 200)
        current = self.lookup(extension)
        if not contacts:  # a query: list bindings
            extra = (
                [
                    (
                        "Contact",
                        f"{current.contact};expires="
                        f"{max(0, int(current.expires_at - time.monotonic()))}",
                    )
                ]
                if current
                else []
            )
            return make_response(req, 200, extra=extra)
        try:
            contact = parse_name_addr(contacts[0])
            expires = int(contact.params.get("expires") or default)
        except (SipParseError, ValueError) as exc:
            return make_response(req, 400, f"Bad Contact: {exc}"[:120])
        if expires == 0:
            self.bindings.pop(extension, None)
            REGISTRATIONS.set(len(self.bindings))
            REGISTER_RESULTS.labels("unregistered").inc()
            return make_response(req, 200)
        if expires < MIN_EXPIRES:
            return make_response(
                req, 423, "Interval Too Brief", extra=[("Min-Expires", str(MIN_EXPIRES))]
            )
        expires = min(expires, MAX_EXPIRES)
        contact.params.pop("expires", None)
        self.bindings[extension] = Binding(
            extension, contact, source, transport, time.monotonic() + expires
        )
        REGISTRATIONS.set(len(self.bindings))
        REGISTER_RESULTS.labels("registered").inc()
        log.info(
            "extension %s registered at %s (from %s:%d, %ds)",
            extension,
            contact.uri,
            *source,
            expires,
        )
        return make_response(
            req, 200, extra=[("Contact", f"{contact};expires={expires}"), ("Expires", str(expires))]
        )
