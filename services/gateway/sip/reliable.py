"""Reliable provisional responses (RFC 3262, 100rel and PRACK), sans I/O.

UAS side, :class:`ReliableProvisional`: a 1xx (other than 100) sent reliably carries
``Require: 100rel`` and an ``RSeq``; it is retransmitted at T1, 2*T1, ... until the PRACK
whose ``RAck`` names it arrives, and after 64*T1 without one the UAS gives up (the INVITE is
then rejected, RFC 3262 3). Only one reliable 1xx is outstanding at a time, and the final
response waits for it.

UAC side: :func:`needs_prack` tells whether a 1xx must be acknowledged, :func:`rack_for`
builds the ``RAck`` value of its PRACK, and :class:`RseqTracker` drops retransmissions
(a 1xx whose RSeq is not the next one, RFC 3262 4).

Times are seconds on the caller's clock; ``get_timer``/``handle_timer`` as in
:mod:`gateway.sip.transaction`.
"""

from __future__ import annotations

import secrets

from .message import SipRequest, SipResponse
from .syntax import SipParseError

__all__ = [
    "PrackError",
    "ReliableProvisional",
    "RseqTracker",
    "needs_prack",
    "option_tags",
    "parse_rack",
    "rack_for",
    "supports",
]


class PrackError(SipParseError):
    """A PRACK/RAck or RSeq that does not parse; the text says which."""


def option_tags(msg: SipRequest | SipResponse, header: str) -> set[str]:
    """The option tags of a Supported/Require header (all its values), lower case."""
    tags: set[str] = set()
    for value in msg.headers.get_all(header):
        tags.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tags


def supports(msg: SipRequest | SipResponse, tag: str) -> bool:
    """True when ``tag`` is in Supported or Require (k is Supported's compact form)."""
    return tag in option_tags(msg, "Supported") or tag in option_tags(msg, "Require")


def _rseq(resp: SipResponse) -> int:
    raw = resp.headers.get("RSeq")
    if raw is None:
        raise PrackError("reliable provisional response without RSeq")
    text = raw.strip()
    if not text.isdigit() or not 1 <= int(text) < 2**32:
        raise PrackError(f"bad RSeq {raw!r}")
    return int(text)


def needs_prack(resp: SipResponse) -> bool:
    """A 101-199 response that requires 100rel must be PRACKed (RFC 3262 4)."""
    return 100 < resp.status < 200 and "100rel" in option_tags(resp, "Require")


def rack_for(resp: SipResponse) -> str:
    """The RAck value acknowledging ``resp``: ``RSeq CSeq-number CSeq-method`` (7.2)."""
    number, method = resp.cseq
    return f"{_rseq(resp)} {number} {method}"


def parse_rack(value: str) -> tuple[int, int, str]:
    """(rseq, cseq number, method) of an RAck value."""
    parts = value.split()
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        raise PrackError(f"bad RAck {value!r}: expected 'rseq cseq METHOD'")
    return int(parts[0]), int(parts[1]), parts[2].upper()


class RseqTracker:
    """UAC: which reliable 1xx are new (to PRACK) and which are retransmissions."""

    def __init__(self) -> None:
        self.last: int | None = None

    def is_new(self, resp: SipResponse) -> bool:
        rseq = _rseq(resp)
        if self.last is not None and rseq <= self.last:
            return False
        self.last = rseq
        return True


class ReliableProvisional:
    """UAS: one reliable 1xx at a time, retransmitted until PRACKed or 64*T1 passed."""

    def __init__(self, t1: float = 0.5, first_rseq: int | None = None) -> None:
        self.t1 = t1
        self.rseq = first_rseq if first_rseq is not None else secrets.randbelow(2**31 - 1) + 1
        self.pending: SipResponse | None = None  # the unacknowledged reliable 1xx
        self.timed_out = False
        self._interval = t1
        self._next: float | None = None
        self._give_up: float | None = None
        self.retransmissions = 0

    def make_reliable(self, resp: SipResponse, now: float) -> SipResponse:
        """Mark ``resp`` (a 101-199) reliable and start its retransmission clock; the caller
        sends it. RuntimeError if another reliable 1xx still awaits its PRACK."""
        if not 100 < resp.status < 200:
            raise ValueError(f"only 101-199 responses are sent reliably, not {resp.status}")
        if self.pending is not None:
            raise RuntimeError("a reliable provisional response is still unacknowledged")
        self.rseq += 1
        resp.headers.add("Require", "100rel")
        resp.headers.add("RSeq", str(self.rseq))
        self.pending = resp
        self._interval = self.t1
        self._next = now + self.t1
        self._give_up = now + 64 * self.t1
        return resp

    def get_timer(self) -> float | None:
        if self.pending is None:
            return None
        assert self._next is not None and self._give_up is not None
        return min(self._next, self._give_up)

    def handle_timer(self, now: float) -> SipResponse | None:
        """The 1xx to send again now, if any; sets ``timed_out`` after 64*T1."""
        if self.pending is None or self._next is None or self._give_up is None:
            return None
        if now >= self._give_up:
            self.timed_out = True
            self.pending = None
            return None
        if now < self._next:
            return None
        self.retransmissions += 1
        self._interval *= 2  # RFC 3262 3: doubling from T1, no T2 cap
        self._next = now + self._interval
        return self.pending

    def prack(self, request: SipRequest) -> bool:
        """A PRACK: True when its RAck acknowledges the pending 1xx (then it stops)."""
        pending = self.pending
        raw = request.headers.get("RAck")
        if pending is None or raw is None:
            return False
        rseq, number, method = parse_rack(raw)
        cseq_number, cseq_method = pending.cseq
        if rseq != self.rseq or number != cseq_number or method != cseq_method:
            return False
        self.pending = None
        return True
