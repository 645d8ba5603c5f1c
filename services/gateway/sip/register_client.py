"""A REGISTER client (RFC 3261 10.2) for registering the gateway at a carrier, sans I/O.

:class:`RegisterClient` builds each REGISTER and reads each final response; whoever drives
it sends the requests (one client transaction each) and keeps one timer at ``get_timer()``:

* ``start(now)`` - register at once; ``handle_timer(now)`` returns the REGISTER due now;
* ``receive_response(resp, now)`` returns the request to send at once, if any (the digest
  answer to a 401/407, or a retry with Min-Expires after 423), else None;
* a 2xx schedules the refresh before the granted expiry (half of it, at most 60 s early
  for long ones); any failure (wrong password, 403, 408/503 from the transaction, ...)
  schedules a retry after a back-off that doubles from ``retry_min`` to ``retry_max``
  (a Retry-After from the registrar wins), and the state says why;
* ``unregister()`` gives the REGISTER with ``Expires: 0`` to send on shutdown.
"""

from __future__ import annotations

from dataclasses import dataclass

from .builders import new_branch, new_call_id, new_tag
from .digest import DigestError
from .digest_client import Credentials, DigestClient
from .headers import Headers
from .message import SipRequest, SipResponse
from .syntax import SipParseError
from .uri import parse_name_addr

__all__ = ["RegisterClient", "RegistrationState"]

USER_AGENT = "Hotline/0.1"


@dataclass(frozen=True, slots=True)
class RegistrationState:
    """Where the registration stands: ``registered`` and, when not, ``reason``."""

    registered: bool
    reason: str
    expires_at: float | None = None


class RegisterClient:
    """One binding of ``contact`` for ``aor`` at ``registrar_uri``."""

    def __init__(
        self,
        *,
        registrar_uri: str,
        aor: str,
        contact: str,
        via_host: str,
        via_port: int,
        transport_name: str,
        credentials: Credentials | None = None,
        expires: int = 3600,
        retry_min: float = 5.0,
        retry_max: float = 300.0,
    ) -> None:
        if expires < 1:
            raise ValueError("expires must be at least 1 second")
        self.registrar_uri, self.aor, self.contact = registrar_uri, aor, contact
        self.via = f"SIP/2.0/{transport_name.upper()} {via_host}:{via_port}"
        self.expires = expires
        self.retry_min, self.retry_max = retry_min, retry_max
        self.digest = DigestClient(credentials) if credentials is not None else None
        self.call_id = new_call_id(via_host)  # one Call-ID for all refreshes (10.2.4)
        self.from_tag = new_tag()
        self.cseq = 0
        self.state = RegistrationState(False, "not started")
        self._last: SipRequest | None = None
        self.failures = 0
        self._due: float | None = None
        self._in_flight = False

    # ---- time ----------------------------------------------------------------------------
    def start(self, now: float) -> None:
        self._due = now

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must be called next (None while a request is out)."""
        return None if self._in_flight else self._due

    def handle_timer(self, now: float) -> SipRequest | None:
        if self._in_flight or self._due is None or now < self._due:
            return None
        self._due = None
        return self._send(self._register(self.expires))

    # ---- responses -----------------------------------------------------------------------
    def receive_response(self, resp: SipResponse, now: float) -> SipRequest | None:
        """The final response to the REGISTER in flight."""
        request = self._last
        self._in_flight = False
        if request is None:
            return None  # nothing of ours is out: a stray final
        if resp.status in (401, 407) and self.digest is not None:
            try:
                return self._send(self.digest.authorize(request, resp))
            except DigestError as exc:
                self.digest.forget()
                self._fail(now, str(exc), resp)
                return None
        if resp.status == 423:
            raw = resp.headers.get("Min-Expires", "")
            if raw and raw.strip().isdigit() and int(raw) > self.expires:
                self.expires = int(raw)
                return self._send(self._register(self.expires))
            self._fail(now, "423 without a usable Min-Expires", resp)
            return None
        if 200 <= resp.status < 300:
            granted = self._granted(resp)
            self.failures = 0
            if granted <= 0:
                self._fail(now, "registrar granted no binding", resp)
                return None
            self.state = RegistrationState(True, f"{resp.status} {resp.reason}", now + granted)
            self._due = now + max(granted / 2, granted - 60)
            return None
        self._fail(now, f"{resp.status} {resp.reason}", resp)
        return None

    def unregister(self) -> SipRequest:
        """The REGISTER removing our binding (Expires: 0), credentials added if known."""
        self._due = None
        request = self._register(0)
        self.state = RegistrationState(False, "unregistered")
        return self._send(request)

    # ---- building ------------------------------------------------------------------------
    def _register(self, expires: int) -> SipRequest:
        self.cseq += 1
        headers = Headers(
            [
                ("Via", f"{self.via};branch={new_branch()};rport"),
                ("Max-Forwards", "70"),
                ("From", f"<{self.aor}>;tag={self.from_tag}"),
                ("To", f"<{self.aor}>"),
                ("Call-ID", self.call_id),
                ("CSeq", f"{self.cseq} REGISTER"),
                ("Contact", self.contact),
                ("Expires", str(expires)),
                ("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, PRACK"),
                ("User-Agent", USER_AGENT),
            ]
        )
        request = SipRequest("REGISTER", self.registrar_uri, headers)
        if self.digest is not None:
            self.digest.preauthorize(request)
        return request

    def _send(self, request: SipRequest) -> SipRequest:
        self._in_flight = True
        self._last = request
        self.cseq = max(self.cseq, request.cseq[0])
        return request

    def _granted(self, resp: SipResponse) -> int:
        """The expiry granted to our Contact (its expires param, else Expires, else ours)."""
        ours = parse_name_addr(self.contact).uri
        for value in resp.headers.get_all("Contact"):
            try:
                contact = parse_name_addr(value)
            except SipParseError:
                continue
            if contact.uri.host == ours.host and contact.uri.port == ours.port:
                raw = contact.params.get("expires")
                if raw is not None and raw.isdigit():
                    return int(raw)
        header = resp.headers.get("Expires")
        if header is not None and header.strip().isdigit():
            return int(header)
        return self.expires

    def _fail(self, now: float, reason: str, resp: SipResponse) -> None:
        self.failures += 1
        delay = min(self.retry_max, self.retry_min * 2 ** (self.failures - 1))
        retry_after = resp.headers.get("Retry-After")
        if retry_after is not None:
            head = retry_after.split(";")[0].split("(")[0].strip()
            if head.isdigit():
                delay = max(delay, float(head))
        self.state = RegistrationState(False, reason)
        self._due = now + delay
