"""The ACD's recovery around the pure rebuild: the sources gathered (ListCalls, the topics
since the right time, retried until they answer), the topic watch that notices a topic lost
with the broker, and the replica's reaction to losing its lease."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc

from acd.agents import ON_CALL, WRAP_UP
from acd.dispatcher import Dispatcher
from acd.notifier import AcdNotifier
from acd.recovery import CHECK, Recovery, TopicWatch
from acd.replica import EXIT_LEASE_LOST, Replica
from common.events import Envelope, envelope
from common.health import Readiness
from common.lease import FileLease
from hotline.v1 import events_pb2 as ev
from hotline.v1 import gateway_pb2 as gw
from tests.unit.test_acd_dispatcher import SITE, FakeGateway, FakePublisher


class ListingGateway(FakeGateway):
    def __init__(self, calls: list[gw.CallInfo], failures: int = 0) -> None:
        super().__init__()
        self.calls, self.failures = calls, failures

    async def ListCalls(
        self, request: gw.ListCallsRequest, timeout: float = 0
    ) -> gw.ListCallsReply:  # noqa: N802
        if self.failures:
            self.failures -= 1
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down"
            )
        return gw.ListCallsReply(calls=self.calls)


class Topics:
    """read_topic stand-in: records per topic; remembers what it was asked."""

    def __init__(self, records: dict[str, list[Envelope]]) -> None:
        self.records, self.asked = records, []  # type: ignore[var-annotated]

    async def __call__(self, bootstrap: str, topic: str, since_ms: int | None = None) -> Any:
        self.asked.append((topic, since_ms))
        return self.records.get(topic, [])


def dispatcher(gateway: FakeGateway, pub: FakePublisher) -> Dispatcher:
    return Dispatcher(AcdNotifier(pub), gateway, ["sales"], SITE, 3.0, 60.0)


async def test_recovery_asks_the_gateway_then_reads_from_before_the_oldest_live_call() -> None:
    now_ms = int(time.time() * 1000)
    started = now_ms - 7_200_000  # a call live for 2 hours: older than the longest wait
    gateway = ListingGateway(
        [
            gw.CallInfo(call_id="c1", state="bridged", bridged_to="a1", started_at_ms=started),
            gw.CallInfo(call_id="c2", state="answered", started_at_ms=now_ms - 1000),
        ],
        failures=2,
    )
    topics = Topics(
        {
            "agents": [
                envelope(
                    ev.AgentStateChanged(
                        agent_id="a1", extension="8001", state=ON_CALL, call_id="c1"
                    ),
                    "a1",
                    SITE,
                    "acd",
                ),
                envelope(
                    ev.AgentStateChanged(
                        agent_id="a2", extension="8002", state=ON_CALL, call_id="c0"
                    ),
                    "a2",
                    SITE,
                    "acd",
                ),
            ],
            "queues": [
                envelope(ev.CallQueued(call_id="c2", queue="sales", priority=4), "c2", SITE, "acd")
            ],
        }
    )
    pub, readiness = FakePublisher(), Readiness()
    d = dispatcher(gateway, pub)
    marks: list[float] = []

    async def mark() -> None:
        marks.append(time.monotonic())

    recovery = Recovery("kafka", gateway, d, readiness, 3600, 1, mark, read=topics)
    task = asyncio.create_task(recovery.run())
    await asyncio.sleep(0.3)
    assert not task.done(), "the gateway was down: recovery waits for it"
    report = readiness.report()[CHECK]
    assert not report["ok"] and "ListCalls" in str(report["detail"])
    plan = await asyncio.wait_for(task, 5)
    assert readiness.report()[CHECK]["ok"]
    assert len(marks) == 1, "where `calls` ends is noted before the gateway is asked"
    ((_, whole), (_, since)) = topics.asked
    assert whole is None, "the compacted agents topic is read whole"
    assert since is not None and since <= started - 60_000, "reads back to the oldest live call"
    assert d.book.get("a1").state == ON_CALL and d.book.get("a2").state == WRAP_UP
    assert [(c.call_id, c.priority) for c in d.queues["sales"].calls] == [("c2", 4)]
    assert plan.on_call == {"c1": "a1"}
    await d.stop()


async def test_recovery_reads_back_at_most_the_longest_wait_when_no_call_is_older() -> None:
    gateway, topics = ListingGateway([]), Topics({})
    d = dispatcher(gateway, FakePublisher())
    before = int(time.time() * 1000)
    await Recovery("k", gateway, d, Readiness(), 600, 1, nothing, read=topics).run()
    since = topics.asked[1][1]
    assert since is not None and before - 600_000 - 1000 <= since <= before - 600_000 + 1000


async def nothing() -> None:
    return None


class Sizes:
    def __init__(self) -> None:
        self.now: dict[str, int | None] = {"agents": 0, "queues": 0}
        self.recreate = True

    async def sizes(self, topics: list[str]) -> dict[str, int | None]:
        return {t: self.now[t] for t in topics}


class CountingNotifier:
    def __init__(self) -> None:
        self.published: Counter[str] = Counter()


async def test_topic_watch_restates_a_topic_the_broker_lost_and_only_then() -> None:
    sizes, notifier = Sizes(), CountingNotifier()
    restated: list[str] = []

    async def restate_agents() -> None:
        restated.append("agents")

    async def restate_queues() -> None:
        restated.append("queues")

    created: list[bool] = []

    async def create() -> None:
        created.append(sizes.recreate)
        if sizes.recreate:
            sizes.now = {"agents": 0, "queues": 0}

    told: list[str] = []

    async def tell(why: str) -> None:
        told.append(why)

    watch = TopicWatch(
        sizes,  # type: ignore[arg-type]
        notifier,  # type: ignore[arg-type]
        {"agents": restate_agents, "queues": restate_queues},
        create,
        after_loss=tell,
    )
    sizes.now = {"agents": 40, "queues": 100}
    assert await watch.check() == []  # the first look sets the baseline
    notifier.published.update({"agents": 5, "queues": 3})
    sizes.now = {"agents": 45, "queues": 103}
    assert await watch.check() == []  # grew by what we published: nothing lost
    sizes.now = {"agents": None, "queues": None}  # the broker restarted: topics gone
    sizes.recreate = False  # and they cannot be created yet
    assert await watch.check() == []
    assert created == [False] and restated == []
    sizes.recreate = True  # now they can: created, then restated
    assert await watch.check() == ["agents", "queues"]
    assert restated == ["agents", "queues"] and created == [False, True]
    assert told == ["the broker lost topics agents, queues"]  # the calls tail reads again
    sizes.now = {"agents": 8, "queues": 2}  # the restatements are in: new baseline
    assert await watch.check() == []
    notifier.published.update({"agents": 2})
    sizes.now = {"agents": 1, "queues": 2}  # recreated empty by someone else: fewer records
    assert await watch.check() == []  # short once: looked at again
    assert await watch.check() == ["agents"]  # still short: lost
    assert restated == ["agents", "queues", "agents"] and len(told) == 2
    sizes.now = {"agents": 10, "queues": 3}  # the restatements are in: new baseline
    assert await watch.check() == []
    assert await watch.check() == []
    assert restated == ["agents", "queues", "agents"] and len(told) == 2


async def test_a_replica_that_loses_its_lease_goes_unready_and_exits(tmp_path: Path) -> None:
    lease, readiness, exits = FileLease(tmp_path / "l", "me"), Readiness(), []
    replica = Replica(lease, readiness, exit=exits.append)
    await replica.become_active()
    assert "rebuilding" in str(readiness.report()["acd-role"]["detail"])
    watching = asyncio.create_task(replica.watch())
    await asyncio.sleep(0.05)
    assert exits == []
    lease.lost.set()
    await asyncio.wait_for(watching, 1)
    assert exits == [EXIT_LEASE_LOST]
    assert readiness.report()["acd-role"] == {"ok": False, "detail": "lease lost: stopping"}
    await lease.release()


async def test_a_standby_says_so_in_readiness(tmp_path: Path) -> None:
    holder = FileLease(tmp_path / "l", "active")
    await holder.acquire()
    readiness = Readiness()
    standby = asyncio.create_task(
        Replica(FileLease(tmp_path / "l", "b"), readiness).become_active()
    )
    await asyncio.sleep(0.2)
    assert not readiness.ready
    assert readiness.report()["acd-role"]["detail"].startswith("standby")  # type: ignore[union-attr]
    await holder.release()
    await asyncio.wait_for(standby, 2)


async def test_a_topic_short_for_one_look_only_is_not_restated() -> None:
    # the bench at 40/s on a slow machine: the local broker answered the agents topic 2
    # records short while it stored a batch, and the ACD restated every agent
    sizes, notifier = Sizes(), CountingNotifier()
    restated: list[str] = []

    async def restate() -> None:
        restated.append("agents")

    watch = TopicWatch(sizes, notifier, {"agents": restate}, nothing)  # type: ignore[arg-type]
    sizes.now = {"agents": 1970}
    assert await watch.check() == []
    notifier.published.update({"agents": 4})
    sizes.now = {"agents": 1972}  # 2 of the 4 not yet counted by the broker
    assert await watch.check() == []
    notifier.published.update({"agents": 1})
    sizes.now = {"agents": 1975}  # all there at the next look
    assert await watch.check() == []
    notifier.published.update({"agents": 1})
    sizes.now = {"agents": 1975}  # short again, once
    assert await watch.check() == []
    sizes.now = {"agents": 1976}
    assert await watch.check() == []
    assert restated == []
