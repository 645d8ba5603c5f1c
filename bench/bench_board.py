"""What the live queue KPIs and the supervisor board cost the ACD, at 16, 192 and 1000 seats.

Two things run on the ACD's event loop for them: the Prometheus scrape (`QueueKpiCollector`:
per queue waiting, oldest wait, the rolling service level / ASA / abandon rate over the
15-minute window, agents by state per queue and for the site) and the board's snapshot
(`Acd.ListQueues` + `Acd.ListAgents`, built by `acd.snapshots`). Each is timed against a
baseline run in the same command: the scrape as it was before the rolling KPIs and per-queue
agents (waiting, oldest wait, agents by state for the site only). The window holds a busy
quarter hour: every agent ends a call every 3 minutes (5 outcomes per agent), one call in eight
abandoned; 4 callers wait per queue.
Run: .venv/bin/python bench/bench_board.py
"""

from __future__ import annotations

import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from acd.agents import NOT_READY, ON_CALL, READY, WRAP_UP, Agent, AgentBook  # noqa: E402
from acd.kpis import QueueKpiCollector, QueueWindow  # noqa: E402
from acd.queues import CallQueue, WaitingCall  # noqa: E402
from acd.snapshots import agent_reply, queue_status  # noqa: E402
from hotline.v1 import acd_pb2  # noqa: E402

QUEUES = ("sales", "support", "billing", "vip")
STATES = (READY, ON_CALL, ON_CALL, WRAP_UP, NOT_READY)


class Site:
    """The state the collector and the snapshots read (the dispatcher's KpiSource)."""

    def __init__(self, seats: int, now: float) -> None:
        self.book = AgentBook()
        for i in range(seats):
            a = Agent(f"agent{i}", str(8000 + i), queues=frozenset({QUEUES[i % len(QUEUES)]}))
            a.state = STATES[i % len(STATES)]
            self.book.agents[a.agent_id] = a
        self.queues = {q: CallQueue(q) for q in QUEUES}
        for q in QUEUES:
            for n in range(4):
                self.queues[q].add(WaitingCall(f"{q}-{n}", q, 0, "139", "10000", enqueued=now - n))
        self.window = QueueWindow()
        for n in range(seats * 5):  # a busy quarter hour, in time order
            at = now - 890 + 890 * n / (seats * 5)
            self.window.record(QUEUES[n % len(QUEUES)], n % 8 != 0, (n * 7) % 40, at)


def old_scrape(site: Site, now: float) -> None:
    """The collector before this change: waiting, oldest wait, agents by state (site)."""
    for queue in site.queues.values():
        len(queue)
        queue.oldest_wait(now)
    site.book.count_by_state()


def snapshot(site: Site, now: float) -> None:
    acd_pb2.ListAgentsReply(agents=[agent_reply(a) for a in site.book.agents.values()])
    acd_pb2.ListQueuesReply(
        queues=[queue_status(q, site.book, site.window, 0, 0, now) for q in site.queues.values()]
    )


def per_second(fn, seconds: float = 0.4) -> float:  # noqa: ANN001
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        fn()
        count += 1
    return count / elapsed


def main() -> None:
    print(
        f"{'seats':>6} {'scrape ms':>10} {'baseline ms':>12} {'x baseline':>11} "
        f"{'snapshot ms':>12} {'x baseline':>11}"
    )
    for seats in (16, 192, 1000):
        now = time.monotonic()
        site = Site(seats, now)
        collector = QueueKpiCollector(site, "bench")
        scrape = per_second(lambda c=collector: list(c.collect()))
        base = per_second(lambda s=site: old_scrape(s, time.monotonic()))
        board = per_second(lambda s=site: snapshot(s, time.monotonic()))
        print(
            f"{seats:>6} {1000 / scrape:>10.3f} {1000 / base:>12.3f} {base / scrape:>11.1f} "
            f"{1000 / board:>12.3f} {base / board:>11.1f}"
        )


if __name__ == "__main__":
    main()
