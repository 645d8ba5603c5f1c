"""Admission of new SIP calls: limits per source address, per trunk and for the whole gateway,
checked before any media port is allocated.

A flood of INVITEs (never ACKed, or simply many) must neither take every media port nor
starve the other sources: each source address gets its own rate (calls per second, token
bucket) and its own ceiling of concurrent calls, both below the trunk's, so one source
reaching its limit leaves the rest of the trunk to the others. Above them the gateway's own
capacity (`gateway_cps`, `gateway_max_calls`, sized from the machine by the settings) sheds
load over every trunk at once, early and cheaply, rather than letting calls in that would
run out of media ports or CPU half-way (docs/performance.md). And whatever the caps, calls
are refused while the platform is behind: when the calls answered in the last 2 s waited
longer than `max_answer_delay_s` on average for the IVR's answer (a machine slower than the
caps assume, an IVR or broker catching up), new calls would only queue behind them. A refused
INVITE is answered 503 with Retry-After and a reason naming the limit; it costs a dictionary
lookup.

The SIP channel calls `admit(call_id, source_ip, trunk)` for a new INVITE once it knows the
call is for a trunk number from an allowed source, and `release(call_id)` when the call's leg
is released or its INVITE refused later on (unknown call ids are ignored, so both are safe to
call more than once).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter

from gateway.sip.ratelimit import TokenBucket

__all__ = ["Admission", "AdmissionLimits", "Refusal"]

log = logging.getLogger(__name__)

REFUSED = Counter(
    "hotline_sip_admission_refused_total", "New calls refused by admission limits", ["limit"]
)


@dataclass(frozen=True)
class AdmissionLimits:
    """New-call limits (docs/security.md); rates are calls per second with a burst."""

    source_cps: float = 10.0
    source_burst: int = 20
    source_max_calls: int = 50
    trunk_cps: float = 20.0
    trunk_burst: int = 40
    trunk_max_calls: int = 100
    gateway_cps: float = 0.0  # new calls per second over every trunk; 0: no limit
    gateway_burst: int = 1
    gateway_max_calls: int = 0  # concurrent calls over every trunk; 0: no limit
    #: the platform is behind: the calls answered in the last ANSWER_WINDOW_S waited longer
    #: than this on average for their answer (the IVR's); 0: no limit
    max_answer_delay_s: float = 2.0

    def __post_init__(self) -> None:
        for name in ("source_cps", "trunk_cps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        for name in ("source_burst", "source_max_calls", "trunk_burst", "trunk_max_calls"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.gateway_cps < 0 or self.gateway_max_calls < 0 or self.gateway_burst < 1:
            raise ValueError("gateway_cps and gateway_max_calls must be >= 0, gateway_burst >= 1")
        if self.max_answer_delay_s < 0:
            raise ValueError("max_answer_delay_s must be >= 0")


@dataclass(frozen=True)
class Refusal:
    """Why a new call is refused: the SIP answer to give."""

    status: int
    reason: str
    retry_after_s: int

    @property
    def headers(self) -> list[tuple[str, str]]:
        return [("Retry-After", str(self.retry_after_s))]


#: a source's flood of refused calls is over once it has had no refusal for this long
FLOOD_QUIET_S = 10.0
#: while a flood goes on, how often the log says so again (with the count)
FLOOD_REPORT_S = 60.0
#: sources whose floods are remembered for the log at most
MAX_FLOODS = 10_000
#: the answers the platform's delay is judged on: those of the last ANSWER_WINDOW_S, and only
#: with at least ANSWER_MIN_SAMPLES of them (one late answer after an outage is no overload;
#: with no answers at all the window empties and calls are admitted again)
ANSWER_WINDOW_S = 2.0
ANSWER_MIN_SAMPLES = 5


@dataclass
class _Flood:
    """One source's run of refused calls, as the log tells it."""

    started: float
    last: float  # the latest refusal
    reported: float  # the latest line logged
    refused: int = 1  # in all
    since_report: int = 0


class Admission:
    """Counts calls per source and per trunk; refuses what would pass a limit."""

    def __init__(
        self,
        limits: AdmissionLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits or AdmissionLimits()
        self._clock = clock
        lim = self.limits
        self._source_rate = TokenBucket(lim.source_cps, lim.source_burst)
        self._trunk_rate = TokenBucket(lim.trunk_cps, lim.trunk_burst)
        self._gateway_rate = (
            TokenBucket(lim.gateway_cps, lim.gateway_burst) if lim.gateway_cps else None
        )
        self._calls: dict[str, tuple[str, str]] = {}  # call id -> (source, trunk)
        self._per_source: dict[str, int] = {}
        self._per_trunk: dict[str, int] = {}
        self._floods: dict[str, _Flood] = {}  # sources being refused, for the log
        self._answers: deque[tuple[float, float]] = deque()  # (when, how long it waited)
        self._answers_total = 0.0  # of the waits in `_answers`: no sum per INVITE

    def admit(self, call_id: str, source: str, trunk: str) -> Refusal | None:
        """Admit a new call, or say why not. Source limits are checked first, so a source
        over its own limit never uses up the trunk's rate or calls."""
        if call_id in self._calls:
            return None  # the same INVITE again: already counted
        lim, now = self.limits, self._clock()
        refusal: Refusal | None = None
        limit = ""
        if self._per_source.get(source, 0) >= lim.source_max_calls:
            limit, refusal = "source_calls", Refusal(503, "Too Many Calls From Source", 5)
        elif not self._source_rate.allow(source, now):
            limit, refusal = "source_rate", Refusal(503, "Call Rate Exceeded For Source", 1)
        elif self._per_trunk.get(trunk, 0) >= lim.trunk_max_calls:
            limit, refusal = "trunk_calls", Refusal(503, "Trunk Busy", 5)
        elif not self._trunk_rate.allow(trunk, now):
            limit, refusal = "trunk_rate", Refusal(503, "Call Rate Exceeded For Trunk", 1)
        elif lim.gateway_max_calls and len(self._calls) >= lim.gateway_max_calls:
            limit, refusal = "gateway_calls", Refusal(503, "Gateway At Capacity", 5)
        elif self._gateway_rate is not None and not self._gateway_rate.allow("", now):
            limit, refusal = "gateway_rate", Refusal(503, "Call Rate Exceeded For Gateway", 1)
        elif lim.max_answer_delay_s and self.answer_delay(now) > lim.max_answer_delay_s:
            limit, refusal = "answer_delay", Refusal(503, "Platform Overloaded", 2)
        if refusal is not None:
            REFUSED.labels(limit).inc()
            self._log_refusal(source, trunk, refusal.reason, now)
            return refusal
        flood = self._floods.get(source)
        if flood is not None and now - flood.last >= FLOOD_QUIET_S:
            del self._floods[source]
            log.info(
                "new calls from %s on %s admitted again: %d refused over %.0f s",
                source,
                trunk,
                flood.refused,
                flood.last - flood.started,
            )
        self._calls[call_id] = (source, trunk)
        self._per_source[source] = self._per_source.get(source, 0) + 1
        self._per_trunk[trunk] = self._per_trunk.get(trunk, 0) + 1
        return None

    def _log_refusal(self, source: str, trunk: str, reason: str, now: float) -> None:
        """A line when a source's refusals start, one a minute with the count while they go on,
        one when the source is admitted again after `FLOOD_QUIET_S` without a refusal. Under a
        rate limit refusals and admissions alternate all along, so a flood is over only once
        its refusals stop, not at the next call let through."""
        flood = self._floods.get(source)
        if flood is None or now - flood.last >= FLOOD_QUIET_S:
            if flood is None and len(self._floods) >= MAX_FLOODS:
                self._floods = {
                    k: f for k, f in self._floods.items() if now - f.last < FLOOD_QUIET_S
                }
                if len(self._floods) >= MAX_FLOODS:  # a spray of sources: start over
                    self._floods.clear()
            self._floods[source] = _Flood(now, now, now)
            log.warning(
                "new calls from %s on %s refused: %s (counted here once a minute while it goes on)",
                source,
                trunk,
                reason,
            )
            return
        flood.last = now
        flood.refused += 1
        flood.since_report += 1
        if now - flood.reported >= FLOOD_REPORT_S:
            log.warning(
                "new calls from %s on %s still refused: %s; %d refused in the last %.0f s",
                source,
                trunk,
                reason,
                flood.since_report,
                now - flood.reported,
            )
            flood.reported, flood.since_report = now, 0

    def answered(self, call_id: str, waited_s: float) -> None:
        """An admitted call was answered after `waited_s` (from its INVITE)."""
        if call_id in self._calls:
            self._answers.append((self._clock(), waited_s))
            self._answers_total += waited_s

    def answer_delay(self, now: float) -> float:
        """How long the calls answered lately waited on average (0: too few to say)."""
        answers = self._answers
        while answers and now - answers[0][0] > ANSWER_WINDOW_S:
            self._answers_total -= answers.popleft()[1]
        if not answers:
            self._answers_total = 0.0  # no rounding left over from what was subtracted
        if len(answers) < ANSWER_MIN_SAMPLES:
            return 0.0
        return self._answers_total / len(answers)

    def release(self, call_id: str) -> None:
        """The call ended (or was refused after admission): its places are free."""
        held = self._calls.pop(call_id, None)
        if held is None:
            return
        source, trunk = held
        for table, key in ((self._per_source, source), (self._per_trunk, trunk)):
            left = table.get(key, 0) - 1
            if left > 0:
                table[key] = left
            else:
                table.pop(key, None)

    def headroom(self) -> int | None:
        """New calls the gateway-wide ceiling still admits (None: no ceiling)."""
        ceiling = self.limits.gateway_max_calls
        return max(0, ceiling - len(self._calls)) if ceiling else None

    def calls(self, source: str | None = None, trunk: str | None = None) -> int:
        """Admitted calls in progress, from `source` or on `trunk` (or all)."""
        if source is not None:
            return self._per_source.get(source, 0)
        if trunk is not None:
            return self._per_trunk.get(trunk, 0)
        return len(self._calls)
