"""Live queue KPIs as Prometheus metrics, computed from the ACD's own state at scrape time.

Counters move as events happen; gauges (waiting, oldest wait, agents by state, service level)
are computed when Prometheus scrapes, so they are always fresh and never drift.
Labels are queue/site/state only, never call or caller ids.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Protocol

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
WAIT = Histogram(
    "hotline_queue_answer_wait_seconds",
    "Wait before an agent answered",
    ["queue", "site"],
    buckets=(2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300),
)

SERVICE_LEVEL_THRESHOLD_S = 20.0
SERVICE_LEVEL_WINDOW_S = 900.0


class ServiceLevel:
    """Rolling service level: answered within threshold / (answered + abandoned) in a window."""

    def __init__(
        self,
        threshold_s: float = SERVICE_LEVEL_THRESHOLD_S,
        window_s: float = SERVICE_LEVEL_WINDOW_S,
    ) -> None:
        self.threshold_s, self.window_s = threshold_s, window_s
        self._outcomes: dict[str, deque[tuple[float, bool]]] = {}

    def record(self, queue: str, within: bool, now: float | None = None) -> None:
        self._outcomes.setdefault(queue, deque()).append(
            (time.monotonic() if now is None else now, within)
        )

    def value(self, queue: str, now: float | None = None) -> float | None:
        """Fraction in [0, 1], or None when nothing ended in the window."""
        now = time.monotonic() if now is None else now
        outcomes = self._outcomes.get(queue)
        if not outcomes:
            return None
        while outcomes and outcomes[0][0] < now - self.window_s:
            outcomes.popleft()
        if not outcomes:
            return None
        return sum(1 for _, ok in outcomes if ok) / len(outcomes)


class KpiSource(Protocol):
    """What the gauges are computed from: the ACD's queues, agents and service level (the
    dispatcher has them; naming them here keeps kpis from importing the dispatcher)."""

    @property
    def queues(self) -> Mapping[str, CallQueue]: ...

    @property
    def book(self) -> AgentBook: ...

    @property
    def service_level(self) -> ServiceLevel: ...


class QueueKpiCollector(Collector):
    """Scrape-time gauges over the dispatcher's queues and agents."""

    def __init__(self, dispatcher: KpiSource, site: str) -> None:
        self.dispatcher, self.site = dispatcher, site

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = time.monotonic()
        waiting = GaugeMetricFamily(
            "hotline_queue_calls_waiting", "Calls waiting in queue", labels=["queue", "site"]
        )
        oldest = GaugeMetricFamily(
            "hotline_queue_oldest_wait_seconds",
            "Wait of the longest-waiting call",
            labels=["queue", "site"],
        )
        level = GaugeMetricFamily(
            "hotline_queue_service_level",
            f"Answered within {SERVICE_LEVEL_THRESHOLD_S:.0f}s / ended, last "
            f"{SERVICE_LEVEL_WINDOW_S:.0f}s",
            labels=["queue", "site"],
        )
        for name, queue in self.dispatcher.queues.items():
            waiting.add_metric([name, self.site], len(queue))
            oldest.add_metric([name, self.site], queue.oldest_wait(now))
            sl = self.dispatcher.service_level.value(name, now)
            if sl is not None:
                level.add_metric([name, self.site], sl)
        agents = GaugeMetricFamily("hotline_agents", "Agents by state", labels=["state", "site"])
        for state, count in self.dispatcher.book.count_by_state().items():
            agents.add_metric([state, self.site], count)
        yield from (waiting, oldest, level, agents)
