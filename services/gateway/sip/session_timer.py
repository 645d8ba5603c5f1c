"""Session timers (RFC 4028), sans I/O: negotiation and the refresh/expiry clock.

A session timer keeps a call alive only while someone refreshes it: the *refresher*
(the UAC or the UAS, named in ``Session-Expires: N;refresher=uac|uas``) sends a re-INVITE or
UPDATE every N/2 seconds; if no refresh arrives, the other side ends the call with BYE
before N runs out (N - min(32, N/3), RFC 4028 10).

* :func:`uas_negotiate` answers a request's Session-Expires/Min-SE as the UAS: the timer to
  run and the headers of our 2xx, or :class:`IntervalTooSmall` (answer 422 with Min-SE).
* :func:`uac_headers` are what our INVITE offers; :func:`uac_from_response` reads the
  answer's Session-Expires; :func:`min_se_of` reads a 422's Min-SE for the retry.
* :class:`SessionTimer` is the clock: ``start(now)``, ``get_timer()``, ``handle_timer(now)``
  returning ``"refresh"`` (send a refresh now) or ``"expire"`` (send BYE), and
  ``refreshed(now, ...)`` after each successful refresh in either direction.
"""

from __future__ import annotations

from dataclasses import dataclass

from .message import SipRequest, SipResponse
from .reliable import supports
from .syntax import SipParseError

__all__ = [
    "DEFAULT_INTERVAL",
    "MIN_SE",
    "IntervalTooSmall",
    "SessionTimer",
    "min_se_of",
    "parse_session_expires",
    "uac_from_response",
    "uac_headers",
    "uas_negotiate",
]

MIN_SE = 90  # RFC 4028 4: the smallest Min-SE anyone may use
DEFAULT_INTERVAL = 1800  # RFC 4028 4: recommended Session-Expires


class IntervalTooSmall(Exception):
    """The request's Session-Expires is below our Min-SE: answer 422 with ``min_se``."""

    def __init__(self, min_se: int) -> None:
        super().__init__(f"Session-Expires below Min-SE {min_se}")
        self.min_se = min_se


def _delta(text: str, what: str) -> int:
    value = text.strip()
    if not value.isdigit() or len(value) > 10:
        raise SipParseError(f"bad {what} {text!r}: expected delta-seconds")
    return int(value)


def parse_session_expires(value: str) -> tuple[int, str | None]:
    """(seconds, refresher "uac"/"uas" or None) of a Session-Expires value (x is compact)."""
    head, *params = value.split(";")
    seconds = _delta(head, "Session-Expires")
    refresher = None
    for param in params:
        name, _, val = param.partition("=")
        if name.strip().lower() == "refresher":
            refresher = val.strip().lower()
            if refresher not in ("uac", "uas"):
                raise SipParseError(f"bad refresher {val.strip()!r} in Session-Expires")
    return seconds, refresher


def _session_expires(msg: SipRequest | SipResponse) -> str | None:
    return msg.headers.get("Session-Expires") or msg.headers.get("x")


def min_se_of(resp: SipResponse) -> int:
    """The Min-SE of a 422 (at least :data:`MIN_SE`)."""
    raw = resp.headers.get("Min-SE")
    if raw is None:
        raise SipParseError("422 response without Min-SE")
    return max(MIN_SE, _delta(raw.split(";")[0], "Min-SE"))


@dataclass
class SessionTimer:
    """The clock of one session's timer; ``we_refresh`` says which side refreshes."""

    interval: int
    we_refresh: bool
    refresher: str  # "uac" or "uas" as said in the headers
    _deadline: float | None = None

    def start(self, now: float) -> None:
        self._deadline = now + self._wait()

    def _wait(self) -> float:
        if self.we_refresh:
            return self.interval / 2
        return self.interval - min(32.0, self.interval / 3)

    def get_timer(self) -> float | None:
        return self._deadline

    def handle_timer(self, now: float) -> str | None:
        """ "refresh" (we are the refresher and half the interval passed), "expire" (the
        other side did not refresh in time: end the session) or None (not due)."""
        if self._deadline is None or now < self._deadline:
            return None
        if self.we_refresh:
            self._deadline = None  # re-armed by refreshed() once the refresh succeeds
            return "refresh"
        self._deadline = None
        return "expire"

    def refreshed(
        self, now: float, interval: int | None = None, we_refresh: bool | None = None
    ) -> None:
        """A refresh succeeded (ours got its 2xx, or theirs was answered 2xx)."""
        if interval is not None:
            self.interval = interval
        if we_refresh is not None:
            self.we_refresh = we_refresh
        self.start(now)

    def stop(self) -> None:
        self._deadline = None


def uas_negotiate(
    request: SipRequest, min_se: int = MIN_SE
) -> tuple[SessionTimer | None, list[tuple[str, str]]]:
    """As the UAS of ``request``: the session timer and the headers for our 2xx.

    No Session-Expires: no timer (we do not impose one). Below our ``min_se``:
    :class:`IntervalTooSmall`. The refresher the UAC chose is kept; unchosen, the UAC
    refreshes when it supports timers, else we do (RFC 4028 9).
    """
    raw = _session_expires(request)
    if raw is None:
        return None, []
    interval, refresher = parse_session_expires(raw)
    if interval < min_se:
        raise IntervalTooSmall(min_se)
    uac_supports = supports(request, "timer")
    if refresher is None:
        refresher = "uac" if uac_supports else "uas"
    headers = [("Session-Expires", f"{interval};refresher={refresher}")]
    if uac_supports:
        headers.append(("Require", "timer"))
    return SessionTimer(interval, we_refresh=refresher == "uas", refresher=refresher), headers


def uac_headers(interval: int = DEFAULT_INTERVAL, min_se: int = MIN_SE) -> list[tuple[str, str]]:
    """What our INVITE carries: Session-Expires (no refresher: the UAS may pick) and Min-SE."""
    return [("Session-Expires", str(interval)), ("Min-SE", str(min_se))]


def uac_from_response(resp: SipResponse) -> SessionTimer | None:
    """As the UAC: the timer a 2xx sets, None when it has no Session-Expires (no timer).
    The refresher is the UAS only when the 2xx says so (RFC 4028 7.2)."""
    raw = _session_expires(resp)
    if raw is None:
        return None
    interval, refresher = parse_session_expires(raw)
    refresher = refresher or "uac"
    return SessionTimer(interval, we_refresh=refresher == "uac", refresher=refresher)
