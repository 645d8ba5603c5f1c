"""Reading a topic outside any consumer group: the whole of it, or its records since a time.

A service that rebuilds its state at start (the ACD from its compacted `agents` topic and its
`queues` topic) reads what is on a topic *now*, from the beginning or from a point in time,
without joining a consumer group (which would take partitions from the group's members and
wait for a rebalance) and without committing anything. `read_topic` stops at the end offsets it
saw when it started, so it returns a consistent prefix even while producers keep writing.

`TopicSizes` asks the broker how many records each topic holds (the sum of its partitions'
end offsets), which is how a producer notices that a broker restart lost a topic.

Both take a partition's end from its stored records, not from the end offset alone: the local
broker (Tansu) reports the start of its last record batch as the end (`_stored_ends`).

`TopicTail` follows a topic from a marked point, also without a group: what a service that
rebuilt its state as of a moment needs next.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError, KafkaTimeoutError
from google.protobuf.message import DecodeError

from common.events import CONSUMED_OF, FAILED, Envelope, Handler, stop_quietly
from common.health import Readiness
from common.tasks import cancel_and_wait

log = logging.getLogger(__name__)


class ReplayError(Exception):
    """The topic could not be read to its end (broker unreachable or too slow)."""


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The topic's partitions from fresh metadata ([] when the topic does not exist).

    `consumer.partitions_for_topic` answers from the client's cached metadata, which still
    shows a topic the broker lost; the fresh cluster metadata (what `consumer.topics()` reads)
    is asked instead.
    """
    cluster = await consumer._client.fetch_all_metadata()
    return [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or ())]


#: how long the look at the partitions' last batches may take before it fails
LAST_BATCH_BUDGET_S = 5.0


async def _stored_ends(
    consumer: AIOKafkaConsumer,
    ends: dict[TopicPartition, int],
    budget_s: float = LAST_BATCH_BUDGET_S,
) -> dict[TopicPartition, int]:
    """Each partition's end as the offset after its last stored record, from its end offset.

    On Apache Kafka the end offset (high-water mark) is exactly that. The local broker (Tansu
    0.6) answers the base offset of the partition's last record batch + 1, so the rest of that
    batch lies past it — and the records of one produce request share a batch (the ACD's outbox
    publishes many at once). The last batch is fetched to see where it really ends (on Kafka
    that reads the last record and changes nothing). A batch that cannot be read within
    `budget_s` fails the look (KafkaTimeoutError) rather than answer the short end: on a
    saturated machine three fetches of 200 ms were not always enough, and the ACD took the
    short count for a lost topic. Leaves the consumer without an assignment."""
    parts = [tp for tp, end in ends.items() if end > 0]
    out = dict(ends)
    if not parts:
        return out
    consumer.assign(parts)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget_s
    try:
        for tp in parts:
            consumer.seek(tp, ends[tp] - 1)
        pending = set(parts)
        while pending:
            left = deadline - loop.time()
            if left <= 0:
                names = ", ".join(sorted(f"{tp.topic}[{tp.partition}]" for tp in pending))
                raise KafkaTimeoutError(
                    f"the last record batch of {names} not read in {budget_s:g} s"
                )
            batches = await consumer.getmany(*pending, timeout_ms=int(min(left, 0.2) * 1000) + 1)
            for tp, records in batches.items():
                if records:
                    out[tp] = max(out[tp], records[-1].offset + 1)
                    pending.discard(tp)
    finally:
        consumer.unsubscribe()
    return out


async def _start_offsets(
    consumer: AIOKafkaConsumer,
    parts: list[TopicPartition],
    ends: dict[TopicPartition, int],
    since_ms: int | None,
) -> tuple[dict[TopicPartition, int], bool]:
    """Where to start per partition, and whether records must still be filtered by time.

    With `since_ms` the broker is asked for the first offset at or after that time
    (ListOffsets by timestamp). A broker that cannot answer it (the local Tansu answers offset 0
    with timestamp -1 whatever the time) is read from the beginning and filtered here.
    """
    begin = await consumer.beginning_offsets(parts)
    if since_ms is None:
        return begin, False
    found = await consumer.offsets_for_times(dict.fromkeys(parts, since_ms))
    starts: dict[TopicPartition, int] = {}
    for tp in parts:
        hit = found.get(tp)
        if hit is not None and hit.timestamp is not None and hit.timestamp < 0:
            log.info("broker cannot find %s by time: reading it from the beginning", tp.topic)
            return begin, True
        starts[tp] = ends[tp] if hit is None else max(begin[tp], hit.offset)
    return starts, False


async def read_topic(
    bootstrap: str, topic: str, since_ms: int | None = None, timeout_s: float = 30.0
) -> list[Envelope]:
    """Every envelope on `topic` (since `since_ms`, Unix ms, when given), in order per partition
    (so in order per key); stops at the end offsets seen when it started. A missing topic reads
    as empty; an undecodable record is logged and skipped. Raises ReplayError."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
    )
    try:
        async with asyncio.timeout(timeout_s):  # a broker that went away makes calls hang
            return await _read(consumer, topic, since_ms)
    except TimeoutError as exc:
        raise ReplayError(f"{topic}: not read to its end within {timeout_s:.0f}s") from exc
    except (KafkaError, OSError) as exc:
        raise ReplayError(f"{topic}: {exc!r}") from exc
    finally:
        await stop_quietly(consumer)


async def _read(consumer: AIOKafkaConsumer, topic: str, since_ms: int | None) -> list[Envelope]:
    await consumer.start()
    parts = await _partitions(consumer, topic)
    if not parts:
        return []
    # offsets first: once partitions are assigned, each lookup waits behind a fetch
    ends = await consumer.end_offsets(parts)
    starts, filtering = await _start_offsets(consumer, parts, ends, since_ms)
    ends = await _stored_ends(consumer, ends)
    consumer.assign(parts)
    for tp, offset in starts.items():
        consumer.seek(tp, offset)
    out: dict[TopicPartition, list[Envelope]] = {tp: [] for tp in parts}
    pending = {tp for tp in parts if starts[tp] < ends[tp]}
    while pending:
        batches = await consumer.getmany(*pending, timeout_ms=200)
        for tp, records in batches.items():
            for record in records:
                if record.offset >= ends[tp]:
                    break
                if filtering and since_ms is not None and record.timestamp < since_ms:
                    continue
                try:
                    out[tp].append(Envelope.FromString(record.value or b""))
                except DecodeError as exc:
                    log.error("undecodable record %s@%d skipped: %s", tp, record.offset, exc)
        pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
    return [env for tp in parts for env in out[tp] if env.WhichOneof("payload")]


async def _holds(
    probe: AIOKafkaConsumer, tp: TopicPartition, offset: int, event_id: str, budget_s: float
) -> bool:
    """Whether partition `tp` still holds, at `offset`, the record of event `event_id` (or
    has deleted it by retention: its log starts after it, where a recreated one starts at 0)."""
    probe.assign([tp])
    if (await probe.beginning_offsets([tp]))[tp] > offset:
        return True
    probe.seek(tp, offset)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget_s
    while loop.time() < deadline:
        for record in (await probe.getmany(tp, timeout_ms=200)).get(tp, []):
            if record.offset == offset:
                try:
                    return Envelope.FromString(record.value or b"").event_id == event_id
                except DecodeError:
                    return False
            if record.offset > offset:
                return False
    return False  # nothing there (the new partition ends before it)


class TopicSizes:
    """How many records each topic holds, asked of the broker (no consumer group)."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._consumer: AIOKafkaConsumer | None = None

    async def sizes(self, topics: list[str], timeout_s: float = 5.0) -> dict[str, int | None]:
        """topic -> sum of its partitions' end offsets, or None when the topic is missing.
        Raises KafkaError/OSError (TimeoutError among them) when the broker cannot be asked."""
        try:
            async with asyncio.timeout(timeout_s):  # a broker that went away makes calls hang
                return await self._sizes(topics)
        except TimeoutError:
            await self.stop()  # a fresh client next time
            raise

    async def _sizes(self, topics: list[str]) -> dict[str, int | None]:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                enable_auto_commit=False,
                fetch_max_wait_ms=20,  # the look at each partition's last batch (Tansu waits)
            )
            try:
                await consumer.start()
            except BaseException:
                await stop_quietly(consumer)
                raise
            self._consumer = consumer
        consumer = self._consumer
        try:
            parts = {topic: await _partitions(consumer, topic) for topic in topics}
            every = [tp for tps in parts.values() for tp in tps]
            # one look at the last batches of all the topics' partitions together
            ends = await _stored_ends(consumer, await consumer.end_offsets(every)) if every else {}
        except (KafkaError, OSError):
            await self.stop()  # a fresh client next time: the broker may have restarted
            raise
        return {t: sum(ends[tp] for tp in tps) if tps else None for t, tps in parts.items()}

    async def stop(self) -> None:
        if self._consumer is not None:
            await stop_quietly(self._consumer)
            self._consumer = None


class TopicTail:
    """Follows a topic from a marked point without a consumer group, handing each envelope to
    `handler`, in order per partition.

    For a service that rebuilt its state as of a moment and needs exactly what happened after
    it: `mark()` notes the topic's end offsets (before the service looks at the world), `start()`
    follows from there. Nothing is committed and nothing waits for a group to rebalance, so it
    reads at once after a restart or a takeover. A handler error is logged and counted, and the
    next record goes on. After a broker restart that lost the topic, reading resumes at the
    beginning of the recreated topic (see `_rewind_recreated` for the limit).
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        handler: Handler,
        readiness: Readiness,
        name: str,
        fetch_wait_ms: int = 500,
    ) -> None:
        self.bootstrap, self.topic, self.handler = bootstrap, topic, handler
        self.readiness, self.name = readiness, name
        #: how long a fetch waits for records (Tansu answers only when this runs out, so it is
        #: also how late an event can reach the handler; docs/performance.md, section 3)
        self.fetch_wait_ms = fetch_wait_ms
        self.check = f"kafka-tail-{topic}"
        self.rewound = 0  # partitions found recreated and read again from the beginning
        #: (topic, partition) -> offset and event id of the first record handled from it (since
        #: the start or the last rewind): a partition that no longer holds it was recreated
        self._first: dict[tuple[str, int], tuple[int, str]] = {}
        self._marks: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        readiness.set(self.check, False, "not following yet")

    async def mark(self, timeout_s: float = 10.0) -> None:
        """Note where the topic ends now; `start` follows from here. Raises ReplayError."""
        try:
            async with asyncio.timeout(timeout_s):  # a broker that went away makes calls hang
                await self._mark()
        except TimeoutError as exc:
            await self.stop()
            raise ReplayError(
                f"{self.topic}: the broker did not answer in {timeout_s:.0f}s"
            ) from exc

    async def _mark(self) -> None:
        if self._consumer is None:
            self._consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=self.fetch_wait_ms,
            )
            try:
                await self._consumer.start()
            except (KafkaError, OSError) as exc:
                await self.stop()
                raise ReplayError(f"{self.topic}: {exc!r}") from exc
        try:
            parts = await _partitions(self._consumer, self.topic)
            if not parts:
                raise ReplayError(f"topic {self.topic} does not exist yet")
            self._marks = await _stored_ends(
                self._consumer, await self._consumer.end_offsets(parts)
            )
        except (KafkaError, OSError) as exc:
            raise ReplayError(f"{self.topic}: {exc!r}") from exc

    def start(self) -> None:
        if self._consumer is None or not self._marks:
            raise RuntimeError("TopicTail.start before a successful mark()")
        self._task = asyncio.create_task(self._run(), name=f"tail-{self.topic}")

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        consumer.assign(list(self._marks))
        for tp, offset in self._marks.items():
            consumer.seek(tp, offset)
        self.readiness.set(self.check, True, f"following {self.topic}")
        failing = False
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=500)
            except KafkaError as exc:
                if not failing:
                    log.warning("reading %s failed, retrying: %r", self.topic, exc)
                    self.readiness.set(self.check, False, f"{self.topic}: {exc!r}")
                    failing = True
                await asyncio.sleep(1.0)
                continue
            if failing:
                self.readiness.set(self.check, True, f"following {self.topic}")
                failing = False
            for records in batches.values():
                for record in records:
                    await self._handle(record)
            await self._rewind_recreated(consumer)

    async def _rewind_recreated(self, consumer: AIOKafkaConsumer) -> None:
        """A partition that now ends before our position was recreated empty (a broker that
        keeps topics in memory restarted; it answers such a fetch with nothing, not with an
        out-of-range error): read it again from its beginning. Records the new partition got
        before this look, beyond our old position, are not missed; those below it are."""
        for tp in consumer.assignment():
            end = consumer.highwater(tp)
            position = await consumer.position(tp)
            if end is not None and end < position:
                log.warning(
                    "%s[%d] ends at %d, before our position %d: the topic was recreated; "
                    "reading it from its beginning",
                    tp.topic,
                    tp.partition,
                    end,
                    position,
                )
                self.rewound += 1
                consumer.seek(tp, 0)
                self._first.pop((tp.topic, tp.partition), None)  # its anchor went with it

    async def rewind_if_recreated(self, why: str, budget_s: float = 5.0) -> int:
        """Told that the broker lost topics (`why`): read again from its beginning every
        partition that no longer holds, at its offset, the first record handled from it. A new
        partition can grow past our position before `_rewind_recreated` looks (the gateway
        restores its last events at once after a broker restart), which would skip its first
        records; a notice that was wrong (the topic is intact) costs one look per partition,
        not a re-read of the topic's whole retention. Partitions read again are seen again by
        the handler, which must be idempotent. Returns how many were rewound."""
        consumer = self._consumer
        if consumer is None or self._task is None or not self._first:
            return 0
        probe = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20
        )
        try:
            await probe.start()
            recreated = [
                tp
                for tp in consumer.assignment()
                if (tp.topic, tp.partition) in self._first
                and not await _holds(probe, tp, *self._first[tp.topic, tp.partition], budget_s)
            ]
        except (KafkaError, OSError) as exc:
            log.warning("%s; cannot look at %s (%r): reading it again", why, self.topic, exc)
            recreated = list(consumer.assignment())
        finally:
            await stop_quietly(probe)
        if recreated:
            log.warning(
                "%s; %s: reading again from the beginning",
                why,
                ", ".join(f"{tp.topic}[{tp.partition}]" for tp in recreated)
                + (" no longer holds" if len(recreated) == 1 else " no longer hold")
                + " what was read from it",
            )
        for tp in recreated:
            consumer.seek(tp, 0)
            self._first.pop((tp.topic, tp.partition), None)
        self.rewound += len(recreated)
        return len(recreated)

    async def _handle(self, record: ConsumerRecord) -> None:
        try:
            env = Envelope.FromString(record.value or b"")
            key = (record.topic, record.partition)
            if key not in self._first:
                self._first[key] = (record.offset, env.event_id)
        except DecodeError as exc:
            FAILED.labels(self.name, "decode").inc()
            log.error("undecodable record on %s@%d skipped: %s", self.topic, record.offset, exc)
            return
        try:
            await self.handler(env)
        except Exception:
            FAILED.labels(self.name, "handle").inc()
            log.exception(
                "handler failed for %s %s at %s@%d",
                env.type,
                env.event_id,
                self.topic,
                record.offset,
            )
            return
        CONSUMED_OF(env.type, self.name).inc()

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await stop_quietly(consumer)
