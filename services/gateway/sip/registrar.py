"""The registrar (RFC 3261 section 10): digest-authenticated REGISTER and the location service.

A phone proves its password with MD5 digest (HA1 stored, never the password); wrong
credentials get 401 again and are never bound; a source that floods or keeps failing is
answered 503/403 before any digest work. Bindings expire; `lookup` gives the freshest one.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass

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
        lockout: FailureLockout | None = None,
        bindings: dict[str, Binding] | None = None,
    ) -> None:
        self.directory, self.realm = directory, realm
        self.nonces = digest.NonceManager(secrets.token_bytes(32))
        self.bucket = TokenBucket(rate, burst)
        self.lockout = lockout or FailureLockout()
        # the location service; the gateway passes a table that writes through to its state
        self.bindings: dict[str, Binding] = bindings if bindings is not None else {}

    def lookup(self, extension: str) -> Binding | None:
        binding = self.bindings.get(extension)
        if binding is not None and binding.expires_at <= time.monotonic():
            del self.bindings[extension]
            REGISTRATIONS.set(len(self.bindings))
            return None
        return binding

    def _challenge(self, req: SipRequest, stale: bool = False) -> SipResponse:
        return make_response(
            req,
            401,
            extra=[
                ("WWW-Authenticate", digest.challenge(self.realm, self.nonces.issue(), stale=stale))
            ],
        )

    def handle(self, req: SipRequest, source: tuple[str, int], transport: Transport) -> SipResponse:
        """Answer one REGISTER."""
        ip = source[0]
        if not self.bucket.allow(ip):
            REGISTER_RESULTS.labels("rate_limited").inc()
            return make_response(req, 503, "Rate Limited", extra=[("Retry-After", "5")])
        if self.lockout.locked(ip):
            REGISTER_RESULTS.labels("locked_out").inc()
            return make_response(req, 403, "Too Many Failed Attempts")
        try:
            aor = req.to.uri
        except SipParseError as exc:
            return make_response(req, 400, f"Bad To: {exc}"[:120])
        extension = aor.user or ""
        stored = self.directory.get(extension)
        auth = req.headers.get("Authorization")
        if auth is None:
            REGISTER_RESULTS.labels("challenged").inc()
            return self._challenge(req)
        try:
            params = digest.parse_auth_header(auth)
        except ValueError as exc:
            return make_response(req, 400, f"Bad Authorization: {exc}"[:120])
        nonce, nc = params.get("nonce", ""), params.get("nc")
        nonce_state = self.nonces.check(nonce, nc)
        if nonce_state == "stale":
            return self._challenge(req, stale=True)
        ok = (
            stored is not None
            and nonce_state == "ok"
            and params.get("username") == extension
            and params.get("realm") == self.realm
            and digest.verify(params, "REGISTER", stored)
            and (nc is None or self.nonces.commit_nc(nonce, nc))
        )
        if not ok:
            REGISTER_RESULTS.labels("auth_failed").inc()
            locked = self.lockout.failed(ip)
            log.warning(
                "REGISTER for %s from %s:%d failed authentication%s",
                extension,
                *source,
                "; source locked out" if locked else "",
            )
            return self._challenge(req)
        self.lockout.succeeded(ip)
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
