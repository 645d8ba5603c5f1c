"""Bringing the ACD back: its state rebuilt at start, then kept true to the gateway and the
broker while it runs.

- `Recovery.run` (once, after this replica took the lease and before it serves): marks where
  the `calls` topic ends (the ACD follows it from there, without a consumer group, so it reads
  at once after a takeover), asks the gateway for its live calls, reads the `agents` topic
  whole and the `queues` topic since the longest possible wait, has `acd.rebuild` reconcile
  them and the dispatcher restore the result. It retries until the gateway and the broker
  answer, saying why in /readyz.
- `Recovery.keep_reconciling` (a loop): every few seconds, the gateway's live calls again, so a
  call end the ACD never heard of (an event lost with a broker, a consumer group still joining
  after a takeover) cannot leave a caller queued or an agent on a call for ever.
- `TopicWatch` (a loop): notices that the broker lost the ACD's topics (an in-memory broker
  restarted) and has the dispatcher announce its state again, so the compacted `agents` topic
  and the `queues` topic are complete for the next rebuild.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

import grpc
from aiokafka.errors import KafkaError

from acd import rebuild
from acd.dispatcher import Dispatcher
from acd.notifier import AcdNotifier
from common.events import Envelope
from common.health import Readiness
from common.replay import ReplayError, TopicSizes, read_topic
from hotline.v1 import gateway_pb2 as gw
from hotline.v1 import gateway_pb2_grpc

log = logging.getLogger(__name__)

CHECK = "acd-rebuild"
RETRY_S = 1.0
LIST_CALLS_TIMEOUT_S = 5.0
#: records of calls that started this long before the oldest live call are still read
HORIZON_SLACK_S = 60.0


class Recovery:
    def __init__(
        self,
        bootstrap: str,
        gateway: gateway_pb2_grpc.CallControlAsyncStub,
        dispatcher: Dispatcher,
        readiness: Readiness,
        max_wait_s: float,
        reconcile_s: float,
        mark: Callable[[], Awaitable[None]],
        read: Callable[..., Awaitable[list[Envelope]]] = read_topic,
    ) -> None:
        self.bootstrap, self.gateway, self.dispatcher = bootstrap, gateway, dispatcher
        self.readiness, self.max_wait_s, self.reconcile_s = readiness, max_wait_s, reconcile_s
        #: notes where the `calls` topic ends (TopicTail.mark): what happens after that point
        #: is followed, what happened before it is in the gateway's live calls
        self.mark = mark
        self.read = read  # common.replay.read_topic (a stand-in in tests)

    async def _live_calls(self) -> dict[str, rebuild.LiveCall]:
        reply = await self.gateway.ListCalls(gw.ListCallsRequest(), timeout=LIST_CALLS_TIMEOUT_S)
        return {
            c.call_id: rebuild.LiveCall(
                c.call_id, c.state, c.bridged_to, c.started_at_ms, c.endpoint
            )
            for c in reply.calls
        }

    async def _until_done(self, what: str, step: Callable[[], Awaitable[None]]) -> None:
        """Run `step` until it succeeds; /readyz says what is awaited meanwhile."""
        logged = False
        while True:
            try:
                await step()
                return
            except (grpc.aio.AioRpcError, ReplayError) as exc:
                detail = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
                self.readiness.set(CHECK, False, f"{what}: {detail}")
                if not logged:
                    log.warning(
                        "rebuild waits for %s: %s (retrying every %.0fs)", what, detail, RETRY_S
                    )
                    logged = True
                await asyncio.sleep(RETRY_S)

    async def run(self) -> rebuild.Plan:
        """Rebuild the dispatcher's state (before it starts) and restore it; returns the plan."""
        started = time.monotonic()
        self.readiness.set(CHECK, False, "rebuilding from the broker and the gateway")
        live: dict[str, rebuild.LiveCall] = {}
        agents: list[Envelope] = []
        queues: list[Envelope] = []

        async def ask_gateway() -> None:
            live.update(await self._live_calls())

        async def read_topics() -> None:
            now_ms = int(time.time() * 1000)
            oldest = min(
                (c.started_at_ms for c in live.values() if c.started_at_ms), default=now_ms
            )
            since = min(now_ms - int(self.max_wait_s * 1000), oldest - int(HORIZON_SLACK_S * 1000))
            agents[:] = await self.read(self.bootstrap, "agents")
            queues[:] = await self.read(self.bootstrap, "queues", since_ms=since)

        await self._until_done("the broker (topic calls)", self.mark)
        await self._until_done("the gateway's live calls (ListCalls)", ask_gateway)
        await self._until_done("the broker (topics agents, queues)", read_topics)
        folded = rebuild.fold_queues(queues)
        plan = rebuild.plan(
            rebuild.fold_agents(agents),
            folded,
            live,
            self.dispatcher.queues,
            now_ms=int(time.time() * 1000),
            now_mono=time.monotonic(),
            wrap_up_s=self.dispatcher.wrap_up_s,
        )
        await self.dispatcher.restore(plan, folded.outcomes)
        self.readiness.set(
            CHECK,
            True,
            f"rebuilt in {time.monotonic() - started:.1f}s from {len(agents)} agent and "
            f"{len(queues)} queue records and {len(live)} live calls",
        )
        log.info(
            "state rebuilt in %.2fs from %d agent records, %d queue records, %d live calls",
            time.monotonic() - started,
            len(agents),
            len(queues),
            len(live),
        )
        return plan

    async def keep_reconciling(self) -> None:
        """Every `reconcile_s`, end what the gateway no longer holds."""
        failing = False
        while True:
            await asyncio.sleep(self.reconcile_s)
            asked_at = time.monotonic()
            try:
                live = await self._live_calls()
            except grpc.aio.AioRpcError as exc:
                if not failing:
                    log.warning("cannot reconcile with the gateway: %s", exc.details())
                    failing = True
                continue
            failing = False
            await self.dispatcher.reconcile(set(live), asked_at)


class TopicWatch:
    """Notices that the broker lost one of the ACD's topics and has the state that belongs on
    it announced again: a topic that is missing (created again here), or that holds fewer
    records than the ACD put there since it last looked, at two looks in a row (recreated
    empty by someone else)."""

    def __init__(
        self,
        sizes: TopicSizes,
        notifier: AcdNotifier,
        restate: Mapping[str, Callable[[], Awaitable[None]]],
        create: Callable[[], Awaitable[None]],
        period_s: float = 2.0,
        after_loss: Callable[[str], Awaitable[object]] | None = None,
    ) -> None:
        self.sizes, self.notifier, self.restate, self.period_s = sizes, notifier, restate, period_s
        #: told (with why) when a look found topics lost: the broker lost its other topics
        #: too, so the ACD's tail of `calls` reads that one again from its beginning
        self.after_loss = after_loss
        #: creates the topics that are missing (common.events.ensure_topics)
        self.create = create
        #: topic -> (its size, records we had published by the time that size was read)
        self._baseline: dict[str, tuple[int, int]] = {}
        #: topics found short at the last look (lost if still short at the next)
        self._short: set[str] = set()

    async def check(self) -> list[str]:
        """One look; returns the topics found lost (and restated)."""
        topics = list(self.restate)
        before = {t: self.notifier.published[t] for t in topics}
        sizes = await self.sizes.sizes(topics)
        after = {t: self.notifier.published[t] for t in topics}
        lost = []
        missing = [t for t in topics if sizes[t] is None]
        if missing:
            # gone with the broker: create them, so the state can go back on them
            await self.create()
            sizes = await self.sizes.sizes(topics)
        for topic in topics:
            size = sizes[topic]
            if size is None:
                continue  # still not there: judged at the next look
            held = self._baseline.get(topic)
            # without loss a topic grew by at least what we published since the last look
            # (records acknowledged while the size was being read may or may not be in it)
            if topic in missing:
                why = "it was missing"
            elif held is not None and size - held[0] < before[topic] - held[1]:
                expected = held[0] + before[topic] - held[1]
                why = f"it holds {size} records, expected at least {expected}"
                if topic not in self._short:
                    # a lost topic stays short; a count read while the broker was storing
                    # a batch does not (the local broker, overloaded at 40 calls/s on a slow
                    # machine, answered 2 records short for one look): judged at the next
                    self._short.add(topic)
                    log.info("topic %s looks short (%s); looking again", topic, why)
                    continue
            else:
                self._short.discard(topic)
                self._baseline[topic] = (size, after[topic])
                continue
            self._short.discard(topic)
            log.warning(
                "the broker lost topic %s (%s): announcing the state that belongs on it again",
                topic,
                why,
            )
            lost.append(topic)
            await self.restate[topic]()
            self._baseline.pop(topic, None)  # the next look sets it again
        if lost and self.after_loss is not None:
            await self.after_loss(f"the broker lost topics {', '.join(lost)}")
        return lost

    async def run(self) -> None:
        failing = False
        while True:
            try:
                await self.check()  # at once: the first look sets the baseline
                failing = False
            except (KafkaError, OSError) as exc:
                if not failing:
                    log.warning("cannot check the ACD's topics on the broker: %r", exc)
                    failing = True
            await asyncio.sleep(self.period_s)
