"""Live queue KPIs as Prometheus metrics, computed from the ACD's own state at scrape time.

Counters and histograms move as events happen; gauges (waiting, oldest wait, agents by state,
the rolling service level, ASA and abandon rate) are computed when Prometheus scrapes, so they
are always fresh and never drift. Labels are queue/site/state/phase/outcome only, never call or
caller ids.

Formulas (docs/acd.md, "Live KPIs"), over the calls that left a queue in the rolling window:
  service level = answered within the threshold / (answered + abandoned)
  ASA           = total wait of the answered calls / answered calls
  abandon rate  = abandoned / (answered + abandoned)
  handle time   = talk + hold + after-call work, observed per phase for each agent's part of a call
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from acd.agents import AgentBook
from acd.queues import CallQueue

OFFERED = Counter("hotline_queue_offered_total", "Calls entering a queue", ["queue", "site"])
ANSWERED = Counter(
    "hotline_queue_answered_total", "Queued calls answered by an agent", ["queue", "site"]
)
ABANDONED = Counter(
    "hotline_queue_abandoned_total", "Callers who hung up while queued", ["queue", "site"]
)
NO_ANSWER = Counter(
    "hotline_agent_no_answer_total", "Offers an agent did not answer", ["queue", "site"]
)
CONTACTS = Counter(
    "hotline_queue_contacts_total",
    "Calls that left a queue, by outcome: answered, abandoned, short_abandoned (hung up "
    "within the short-abandon time)",
    ["queue", "site", "outcome"],
)
WAIT = Histogram(
    "hotline_queue_answer_wait_seconds",
    "Wait before an agent answered",
    ["queue", "site"],
    buckets=(2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300),
)
HANDLE_TIME = Histogram(
    "hotline_queue_handle_time_seconds",
    "Handle time of an agent's part of a call by phase: talk (on the call, not on hold), hold, "
    "wrap_up (after-call work); one observation per phase per handled call, AHT = sum / count "
    "of phase talk. queue is the call's queue, 'direct' for calls that came through none",
    ["queue", "site", "phase"],
    buckets=(5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 900, 1800, 3600),
)
PHASES = ("talk", "hold", "wrap_up")
#: the queue label of handle time for calls no queue offered (click-to-dial, direct transfers)
DIRECT = "direct"

OUTCOMES = ("answered", "abandoned", "short_abandoned")


def zero(queues: Iterable[str], site: str) -> None:
    """Export every queue's counters at 0 from the start, so the first call is an increase."""
    for queue in queues:
        for counter in (OFFERED, ANSWERED, ABANDONED, NO_ANSWER):
            counter.labels(queue, site)
        WAIT.labels(queue, site)
        for outcome in OUTCOMES:
            CONTACTS.labels(queue, site, outcome)
        for phase in PHASES:
            HANDLE_TIME.labels(queue, site, phase)


SERVICE_LEVEL_THRESHOLD_S = 20.0
SERVICE_LEVEL_WINDOW_S = 900.0


class Figures(NamedTuple):
    """One queue's outcomes in the window."""

    answered: int
    within: int  # answered within the service-level threshold
    abandoned: int
    wait_answered_s: float  # total wait of the answered calls

    @property
    def ended(self) -> int:
        return self.answered + self.abandoned

    @property
    def service_level(self) -> float:
        return self.within / self.ended if self.ended else 0.0

    @property
    def asa_s(self) -> float:
        return self.wait_answered_s / self.answered if self.answered else 0.0

    @property
    def abandon_rate(self) -> float:
        return self.abandoned / self.ended if self.ended else 0.0


@dataclass(frozen=True, slots=True)
class _Outcome:
    at: float
    answered: bool
    waited_s: float


class QueueWindow:
    """Rolling outcomes per queue: service level, ASA and abandon rate over the last window."""

    def __init__(
        self,
        threshold_s: float = SERVICE_LEVEL_THRESHOLD_S,
        window_s: float = SERVICE_LEVEL_WINDOW_S,
    ) -> None:
        self.threshold_s, self.window_s = threshold_s, window_s
        self._outcomes: dict[str, deque[_Outcome]] = {}

    def record(self, queue: str, answered: bool, waited_s: float, now: float | None = None) -> None:
        """A call left `queue` (answered or abandoned) after `waited_s`; `now` monotonic.

        What has aged out is dropped here too, not only when the figures are read: a window
        nobody scrapes (no Prometheus on a laptop) would otherwise keep every call for ever."""
        at = time.monotonic() if now is None else now
        outcomes = self._outcomes.setdefault(queue, deque())
        outcomes.append(_Outcome(at, answered, waited_s))
        self._age_out(outcomes, at)

    def figures(self, queue: str, now: float | None = None) -> Figures:
        now = time.monotonic() if now is None else now
        outcomes = self._outcomes.get(queue, deque())
        self._age_out(outcomes, now)
        answered = [o.waited_s for o in outcomes if o.answered]
        within = sum(1 for w in answered if w <= self.threshold_s)
        return Figures(len(answered), within, len(outcomes) - len(answered), sum(answered))

    def _age_out(self, outcomes: deque[_Outcome], now: float) -> None:
        while outcomes and outcomes[0].at < now - self.window_s:
            outcomes.popleft()

    def value(self, queue: str, now: float | None = None) -> float | None:
        """Service level in [0, 1], or None when nothing ended in the window."""
        figures = self.figures(queue, now)
        return figures.service_level if figures.ended else None


class KpiSource(Protocol):
    """What the gauges are computed from: the ACD's queues, agents and outcome window (the
    dispatcher has them; naming them here keeps kpis from importing the dispatcher)."""

    @property
    def queues(self) -> Mapping[str, CallQueue]: ...

    @property
    def book(self) -> AgentBook: ...

    @property
    def window(self) -> QueueWindow: ...


class QueueKpiCollector(Collector):
    """Scrape-time gauges over the dispatcher's queues and agents."""

    def __init__(self, dispatcher: KpiSource, site: str) -> None:
        self.dispatcher, self.site = dispatcher, site

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = time.monotonic()
        window = self.dispatcher.window
        span = f"calls that left the queue in the last {window.window_s:.0f}s"
        labels = ["queue", "site"]
        waiting = GaugeMetricFamily(
            "hotline_queue_calls_waiting", "Calls waiting in queue", labels=labels
        )
        oldest = GaugeMetricFamily(
            "hotline_queue_oldest_wait_seconds", "Wait of the longest-waiting call", labels=labels
        )
        level = GaugeMetricFamily(
            "hotline_queue_service_level",
            f"Answered within {window.threshold_s:.0f}s / (answered + abandoned), {span}",
            labels=labels,
        )
        asa = GaugeMetricFamily(
            "hotline_queue_asa_seconds",
            f"Average speed of answer: wait of answered calls / answered calls, {span}",
            labels=labels,
        )
        abandon = GaugeMetricFamily(
            "hotline_queue_abandon_rate",
            f"Abandoned / (answered + abandoned), {span}",
            labels=labels,
        )
        queue_agents = GaugeMetricFamily(
            "hotline_queue_agents",
            "Agents serving the queue, by state (an agent serving every queue counts in each)",
            labels=["queue", "site", "state"],
        )
        for name, queue in self.dispatcher.queues.items():
            waiting.add_metric([name, self.site], len(queue))
            oldest.add_metric([name, self.site], queue.oldest_wait(now))
            figures = window.figures(name, now)
            if figures.ended:  # no outcome in the window: no sample rather than a fake 0 or 100 %
                level.add_metric([name, self.site], figures.service_level)
                abandon.add_metric([name, self.site], figures.abandon_rate)
            if figures.answered:
                asa.add_metric([name, self.site], figures.asa_s)
            for state, count in self.dispatcher.book.count_by_state(name).items():
                queue_agents.add_metric([name, self.site, state], count)
        agents = GaugeMetricFamily("hotline_agents", "Agents by state", labels=["state", "site"])
        for state, count in self.dispatcher.book.count_by_state().items():
            agents.add_metric([state, self.site], count)
        yield from (waiting, oldest, level, asa, abandon, queue_agents, agents)
