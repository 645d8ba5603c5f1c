"""OPTIONS keepalive (RFC 3261 11) towards a peer, and whether the peer is up, sans I/O.

:class:`OptionsPinger` sends an OPTIONS every ``interval`` seconds; any final response the
peer itself sent (200, but also 404/405/481/...) proves it alive, while a transaction
timeout (408 synthesized by our transaction), a transport failure (503 synthesized) or a
503 from the peer counts as a miss. ``down_after`` misses in a row mark it down, one answer
marks it up again. ``receive_response`` returns the new state when it changed.
"""

from __future__ import annotations

from .builders import new_branch, new_call_id, new_tag
from .headers import Headers
from .message import SipRequest, SipResponse

__all__ = ["OptionsPinger"]


class OptionsPinger:
    """Keepalive state of one peer (up is None until the first answer or miss)."""

    def __init__(
        self,
        *,
        target_uri: str,
        from_uri: str,
        via_host: str,
        via_port: int,
        transport_name: str,
        interval: float = 30.0,
        down_after: int = 2,
    ) -> None:
        if interval <= 0 or down_after < 1:
            raise ValueError("interval must be > 0 and down_after >= 1")
        self.target_uri, self.from_uri = target_uri, from_uri
        self.via = f"SIP/2.0/{transport_name.upper()} {via_host}:{via_port}"
        self.interval, self.down_after = interval, down_after
        self.up: bool | None = None
        self.misses = 0
        self.reason = "not probed yet"
        self._host = via_host
        self._cseq = 0
        self._due: float | None = None
        self._in_flight = False

    def start(self, now: float) -> None:
        self._due = now

    def get_timer(self) -> float | None:
        return None if self._in_flight else self._due

    def handle_timer(self, now: float) -> SipRequest | None:
        if self._in_flight or self._due is None or now < self._due:
            return None
        self._due = None
        self._in_flight = True
        self._cseq += 1
        headers = Headers(
            [
                ("Via", f"{self.via};branch={new_branch()};rport"),
                ("Max-Forwards", "70"),
                ("From", f"<{self.from_uri}>;tag={new_tag()}"),
                ("To", f"<{self.target_uri}>"),
                ("Call-ID", new_call_id(self._host)),
                ("CSeq", f"{self._cseq} OPTIONS"),
                ("Accept", "application/sdp"),
            ]
        )
        return SipRequest("OPTIONS", self.target_uri, headers)

    def receive_response(
        self, resp: SipResponse, now: float, *, synthesized: bool = False
    ) -> bool | None:
        """The final response to the OPTIONS in flight; the new up/down state if it changed.
        ``synthesized``: the response is our transaction's (timeout, transport error)."""
        self._in_flight = False
        self._due = now + self.interval
        was = self.up
        if synthesized or resp.status == 503:
            self.misses += 1
            self.reason = f"{resp.status} {resp.reason}" + (" (no answer)" if synthesized else "")
            if self.misses >= self.down_after:
                self.up = False
        else:
            self.misses = 0
            self.reason = f"{resp.status} {resp.reason}"
            self.up = True
        return self.up if self.up is not was else None
