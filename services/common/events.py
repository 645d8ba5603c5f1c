"""Events on Kafka: the envelope, a publisher and an idempotent consumer (aiokafka).

Every record is a `hotline.v1.Envelope` keyed by call or agent id, so order holds per call.
Both sides keep retrying a broker they cannot reach, say so in the logs and in /readyz, and
never drop an event silently: a publish waits for the broker, a record that cannot be decoded
or handled is logged with its offset and counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import (
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import contextmanager
from contextvars import ContextVar
from functools import partial
from typing import Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CommitFailedError, KafkaError, TopicAlreadyExistsError
from aiokafka.structs import RecordMetadata
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import context as otel_context
from opentelemetry import trace
from prometheus_client import Counter, Gauge

from common import tracing
from common.health import Readiness
from common.recent_ids import RecentIds
from common.settings import Settings
from common.tasks import cancel_and_wait
from hotline.v1 import events_pb2

log = logging.getLogger(__name__)
TRACER = trace.get_tracer("hotline.events")

Envelope = events_pb2.Envelope

#: topic -> (partitions, config). `agents` is compacted: the latest state per agent survives.
#: The partitions are the chart's (values.yaml `kafka.topics`, a test keeps them equal): the
#: local broker (Tansu 0.6, memory) spends on each fetch that returns records time in
#: proportion to the record batches stored in that partition, and keeps every batch, so
#: shorter partitions slow its growth (docs/performance.md section 19).
TOPICS: dict[str, tuple[int, dict[str, str]]] = {
    "calls": (6, {}),
    "queues": (6, {}),
    "agents": (6, {"cleanup.policy": "compact"}),
    "recordings": (3, {}),
}

#: payload type -> topic it travels on.
TOPIC_OF: dict[str, str] = {
    "CallOffered": "calls",
    "CallAnswered": "calls",
    "CallBridged": "calls",
    "CallEnded": "calls",
    "TrunkStateChanged": "calls",
    # call control: keyed by call id, in order with the call's other facts
    "CallHeld": "calls",
    "CallResumed": "calls",
    "CallTransferred": "calls",
    "ConsultStarted": "calls",
    "ConsultEnded": "calls",
    "ConferenceJoined": "calls",
    "ConferenceLeft": "calls",
    "MonitorStarted": "calls",
    "MonitorStopped": "calls",
    "CallQueued": "queues",
    "CallAbandoned": "queues",
    "CallDequeued": "queues",
    # keyed by call id: on `agents` (compacted, keyed by agent) it would hide the agent's state
    "AgentOffered": "queues",
    "AgentStateChanged": "agents",
    "RecordingReady": "recordings",
}

#: payload type name -> Envelope oneof field name, from the descriptor (no hand-kept table).
_FIELD_OF: dict[str, str] = {
    f.message_type.name: f.name
    for f in Envelope.DESCRIPTOR.oneofs_by_name["payload"].fields
    if f.message_type is not None
}

PUBLISHED = Counter("hotline_events_published_total", "Events published", ["type"])
CONSUMED = Counter("hotline_events_consumed_total", "Events handled", ["type", "group"])
DUPLICATES = Counter(
    "hotline_events_duplicates_total", "Events skipped as already handled", ["group"]
)
FAILED = Counter(
    "hotline_events_failed_total", "Events that could not be decoded or handled", ["group", "stage"]
)

FAILED_PUBLISH = Counter(
    "hotline_events_publish_retries_total",
    "Publish attempts that failed and were retried (broker down, topics lost)",
    ["type"],
)
LAG = Gauge(
    "hotline_kafka_consumer_lag",
    "Events on the broker not yet handled, per consumer group and topic",
    ["site", "group", "topic"],
)
REPUBLISHED = Counter(
    "hotline_events_republished_total",
    "Events published again because the broker lost them after acknowledging them "
    "(a broker that keeps its log in memory restarted)",
    ["source"],
)
RECONNECTS = Counter(
    "hotline_kafka_reconnects_total", "Kafka clients rebuilt after a broker failure", ["client"]
)


class Children:
    """A counter's labelled children, each looked up once: a `labels()` call per event was a
    visible share of a publisher's and a consumer's CPU."""

    __slots__ = ("counter", "_of")

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self._of: dict[tuple[str, ...], Counter] = {}

    def __call__(self, *labels: str) -> Counter:
        child = self._of.get(labels)
        if child is None:
            child = self._of[labels] = self.counter.labels(*labels)
        return child


#: PUBLISHED by event type; CONSUMED by event type and consumer (group or tail)
PUBLISHED_OF = Children(PUBLISHED)
CONSUMED_OF = Children(CONSUMED)


RETRY_S = 2.0  # between connection attempts while the broker is unreachable
PROBE_S = 3.0  # how often a connected client asks the broker for its topics
PROBE_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 30.0  # a consumer joining a group waits for a dead member to time out
SEND_TIMEOUT_S = 10.0
COMMIT_TIMEOUT_S = 10.0
#: offsets of handled records are committed at most this often (and when a consumer stops),
#: not after every fetch: one OffsetCommit per fetch was a broker round trip per event at low
#: rates; a crash redelivers at most this much, which the event-id memory (and idempotent
#: handlers) absorb
COMMIT_EVERY_S = 0.5
STOP_TIMEOUT_S = 5.0
STALL_S = 20.0  # a consumer with no partitions assigned this long is rebuilt
HANDLER_ATTEMPTS = 4
#: a failing batch is tried this often before its events are handled one at a time (each
#: with HANDLER_ATTEMPTS): a poison event then costs one retry of its batch, not four
BATCH_ATTEMPTS = 2
#: envelopes a batch handler gets at most in one call (the fetch is capped at this)
BATCH_MAX = 500
#: acknowledged events a publisher that restores them keeps (`EventPublisher(keep=...)`): the
#: events a broker loses by restarting empty are those it acknowledged in the last moments
#: before, which no consumer had fetched yet; 2,048 is many seconds of a site's call facts
KEEP = 2048

#: an acknowledged record as it went to the broker: topic, value, key, headers
Sent = tuple[str, bytes, bytes, list[tuple[str, bytes]]]


def envelope(
    payload: Message,
    key: str,
    site: str,
    source: str,
    event_id: str | None = None,
    trace: Mapping[str, str] | None = None,
) -> Envelope:
    """Wrap a payload in an envelope with the current trace context (or `trace`, a carrier
    taken when the event was queued).

    A fresh event id unless `event_id` is given: a producer re-announcing the same fact (an
    outbox retry) passes the original id so consumers drop the repeat.
    """
    type_name = payload.DESCRIPTOR.name
    field = _FIELD_OF.get(type_name)
    if field is None:
        raise ValueError(f"{type_name} is not an event payload of hotline.v1.Envelope")
    now_ns = time.time_ns()  # Timestamp.GetCurrentTime goes through a datetime: 8x the cost
    env = Envelope(
        event_id=event_id or str(uuid.uuid4()),
        type=type_name,
        occurred_at=Timestamp(seconds=now_ns // 1_000_000_000, nanos=now_ns % 1_000_000_000),
        site=site,
        key=key,
        source=source,
        trace=tracing.inject() if trace is None else trace,
    )
    getattr(env, field).CopyFrom(payload)
    return env


def payload_of(env: Envelope) -> Message:
    """The payload message inside an envelope."""
    field = env.WhichOneof("payload")
    if field is None:
        raise ValueError(f"envelope {env.event_id} has no payload")
    payload: Message = getattr(env, field)
    return payload


async def ensure_topics(bootstrap: str) -> None:
    """Create Hotline's topics if they do not exist yet (idempotent).

    A topic that another client created meanwhile is not an error: a broker that comes back
    empty is repopulated by whichever service reconnects first.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, parts, 1, topic_configs=cfg)
            for name, (parts, cfg) in TOPICS.items()
            if name not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
            log.info("created topics %s", ", ".join(t.name for t in missing))
    finally:
        await admin.close()


async def missing_topics(
    topics: Callable[[], Awaitable[set[str]]], wanted: Iterable[str]
) -> set[str]:
    """Which of `wanted` the broker does not have; `topics` asks the broker for its topics
    (raises KafkaError when the broker is unreachable)."""
    return set(wanted) - await asyncio.wait_for(topics(), PROBE_TIMEOUT_S)


async def _producer_topics(producer: AIOKafkaProducer) -> set[str]:
    cluster = await producer.client.fetch_all_metadata()
    return set(cluster.topics())


Client = TypeVar("Client", AIOKafkaProducer, AIOKafkaConsumer)


async def connect_with_retry(
    make: Callable[[], Client],
    bootstrap: str,
    readiness: Readiness,
    check: str,
    ready_detail: str = "",
) -> Client:
    """Start a Kafka client, retrying every RETRY_S while the broker is unreachable.

    /readyz shows `check` red with the reason until it connects; the state change is logged
    (by Readiness), not every attempt.
    """
    attempt = 0
    while True:
        attempt += 1
        client = make()
        try:
            await asyncio.wait_for(ensure_topics(bootstrap), CONNECT_TIMEOUT_S)
            await asyncio.wait_for(client.start(), CONNECT_TIMEOUT_S)
        except asyncio.CancelledError:
            await stop_quietly(client)
            raise
        except (KafkaError, OSError, asyncio.TimeoutError) as exc:
            await stop_quietly(client)
            detail = f"broker {bootstrap} unreachable: {exc!r}"
            readiness.set(check, False, detail)
            if attempt == 1:  # once per outage; readiness shows it until it ends
                log.warning(
                    "%s cannot reach Kafka, retrying every %.0fs: %s", check, RETRY_S, detail
                )
            await asyncio.sleep(RETRY_S)
            continue
        readiness.set(check, True, ready_detail or bootstrap)
        if attempt > 1:
            log.info("%s connected to Kafka at %s after %d attempts", check, bootstrap, attempt)
        return client


_stopping: set[asyncio.Task[None]] = set()


async def stop_quietly(client: AIOKafkaProducer | AIOKafkaConsumer | None) -> None:
    """Stop a client that may be half-started or talking to a dead broker, without hanging:
    aiokafka's stop tries to leave the group and commit, and does not give up on a dead
    coordinator, so after STOP_TIMEOUT_S it is left to finish in the background."""
    if client is None:
        return
    task = asyncio.create_task(_stop(client), name="kafka-client-stop")
    done, _ = await asyncio.wait({task}, timeout=STOP_TIMEOUT_S)
    if not done:
        _stopping.add(task)
        task.add_done_callback(_stopping.discard)


async def _stop(client: AIOKafkaProducer | AIOKafkaConsumer) -> None:
    try:
        await client.stop()
    except (KafkaError, OSError, asyncio.TimeoutError) as exc:
        log.debug("stopping a Kafka client failed: %r", exc)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # our own cancellation
        # aiokafka's consumer stop cancels a fetch that sits in its retry back-off (the broker
        # gone) and lets that CancelledError out before it closes its connections
        # (aio-libs/aiokafka#647): close them here so none is left open.
        log.debug("stopping a Kafka client was cut short by its own cancelled fetch")
        await client._client.close()


#: an event to publish: (payload, key, event id, trace context carrier)
Outgoing = tuple[Message, str, str, Mapping[str, str]]


class Publisher(Protocol):
    """What a service's notifier publishes through (`EventPublisher`, or a stand-in in tests)."""

    async def publish(
        self, payload: Message, key: str, event_id: str | None = None
    ) -> Envelope: ...


class EventPublisher:
    """Publishes envelopes; connects in the background and keeps delivering through broker
    restarts.

    `publish` returns when the broker has the event (acks=all). While the broker is down or
    has lost its topics, a publish waits and retries with the same event id (consumers drop a
    repeat), the producer is rebuilt and the topics re-created; /readyz's `kafka-producer`
    check is red meanwhile. A probe asks the broker for its topics every PROBE_S, so readiness
    turns red even when nothing is being published, and lost topics are re-created before the
    next event (a broker that auto-creates them would give them the wrong partitions and no
    compaction).

    With `keep`, the last `keep` acknowledged events are kept and published again, in their
    order and with their event ids, when the broker shows it lost records it had acknowledged:
    a partition answers an offset below one it gave before (a broker that keeps its log in
    memory restarted empty; an event it acknowledged that no consumer had fetched yet was
    lost with it: a CDR never ended in a fault soak). Consumers drop the repeats by event id;
    the restored events arrive after the few published since the broker came back, which
    order-independent consumers (the CRM's CDR fold) and idempotent ones (the IVR, the ACD's
    tail) accept. Only for topics whose readers do not take the last record of a key as the
    state (not the compacted `agents`; the ACD restates its own topics instead). A publisher
    that publishes nothing after the loss restores at its next event.
    """

    CHECK = "kafka-producer"

    def __init__(
        self, settings: Settings, source: str, readiness: Readiness, *, keep: int = 0
    ) -> None:
        self.settings = settings
        self.source = source
        self.readiness = readiness
        #: the last acknowledged records, restored after a loss (keep=0: none kept)
        self._kept: deque[Sent] = deque(maxlen=keep)
        #: partition -> the offset after the last record the broker acknowledged to us
        self._acked: dict[tuple[str, int], int] = {}
        self._lost = False  # an acknowledgement showed the broker lost records
        self._restore_lock = asyncio.Lock()
        self.restores = 0
        self._producer: AIOKafkaProducer | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._reconnect_lock = asyncio.Lock()
        self._generation = 0
        self.reconnects = 0
        readiness.set(self.CHECK, False, "connecting")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="kafka-producer")

    def _make(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            acks="all",
            linger_ms=2,
            request_timeout_ms=int(SEND_TIMEOUT_S * 1000),
        )

    async def _run(self) -> None:
        self._producer = await connect_with_retry(
            self._make, self.settings.kafka_bootstrap, self.readiness, self.CHECK
        )
        self._connected.set()
        while True:  # the probe
            await asyncio.sleep(PROBE_S)
            producer = self._producer
            assert producer is not None
            try:
                missing = await missing_topics(partial(_producer_topics, producer), TOPICS)
            except (KafkaError, OSError, asyncio.TimeoutError) as exc:
                self.readiness.set(self.CHECK, False, f"broker unreachable: {exc!r}")
                await self._reconnect(self._generation)
                continue
            if missing:
                self.readiness.set(self.CHECK, False, f"broker lost topics {sorted(missing)}")
                await self._reconnect(self._generation)
                continue
            self.readiness.set(self.CHECK, True, self.settings.kafka_bootstrap)

    async def _reconnect(self, generation: int) -> None:
        """Replace the producer (once per failure, however many publishers noticed it)."""
        async with self._reconnect_lock:
            if generation != self._generation:
                return  # someone else already did
            self._connected.clear()
            old, self._producer = self._producer, None
            await stop_quietly(old)
            self._producer = await connect_with_retry(
                self._make, self.settings.kafka_bootstrap, self.readiness, self.CHECK
            )
            self._generation += 1
            self.reconnects += 1
            self._connected.set()

    async def publish(self, payload: Message, key: str, event_id: str | None = None) -> Envelope:
        """Publish one event and wait until the broker has it (acks=all), however long that
        takes; the envelope (and its event id) is the same on every attempt."""
        env = envelope(payload, key, self.settings.site, self.source, event_id)
        topic = TOPIC_OF[env.type]
        value = env.SerializeToString()
        headers = [(k, v.encode()) for k, v in env.trace.items()]  # for tools that read headers
        while True:
            await self._connected.wait()
            producer, generation = self._producer, self._generation
            assert producer is not None
            # the offsets the broker must give beyond (unless it lost records since)
            floor = dict(self._acked) if self._kept.maxlen else self._acked
            try:
                meta = await asyncio.wait_for(
                    producer.send_and_wait(topic, value, key=key.encode(), headers=headers),
                    SEND_TIMEOUT_S,
                )
            except (KafkaError, OSError, asyncio.TimeoutError) as exc:
                FAILED_PUBLISH.labels(env.type).inc()
                self.readiness.set(self.CHECK, False, f"cannot deliver {env.type}: {exc!r}")
                await self._reconnect(generation)
                continue
            PUBLISHED_OF(env.type).inc()
            log.debug("published %s key=%s", env.type, key)
            if self._kept.maxlen:
                await self._acknowledged([(topic, value, key.encode(), headers)], [meta], floor)
            return env

    async def publish_batch(self, items: Sequence[Outgoing]) -> list[Envelope]:
        """Publish `(payload, key, event_id, trace carrier)` items in their order, pipelined:
        every record is handed to the producer before the first acknowledgement is awaited,
        so a burst shares produce requests instead of paying a broker round trip per event
        (one at a time, a publisher carries at most 1/ack-latency events a second). Returns
        when the broker has all of them (acks=all). Any failure rebuilds the producer and
        publishes the whole batch again in order, same event ids (consumers drop repeats)."""
        site, source = self.settings.site, self.source
        envs = [
            envelope(payload, key, site, source, event_id, carrier)
            for payload, key, event_id, carrier in items
        ]
        sent: list[Sent] = [
            (
                TOPIC_OF[env.type],
                env.SerializeToString(),
                env.key.encode(),
                [(k, v.encode()) for k, v in env.trace.items()],
            )
            for env in envs
        ]
        while True:
            await self._connected.wait()
            producer, generation = self._producer, self._generation
            assert producer is not None
            # the offsets the broker must give beyond (unless it lost records since)
            floor = dict(self._acked) if self._kept.maxlen else self._acked
            try:
                metas = await _send_all(producer, sent)
            except (KafkaError, OSError, asyncio.TimeoutError) as exc:
                for env in envs:
                    FAILED_PUBLISH.labels(env.type).inc()
                self.readiness.set(self.CHECK, False, f"cannot deliver a batch: {exc!r}")
                await self._reconnect(generation)
                continue
            for env in envs:
                PUBLISHED_OF(env.type).inc()
            if self._kept.maxlen:
                await self._acknowledged(sent, metas, floor)
            return envs

    async def _acknowledged(
        self,
        sent: Sequence[Sent],
        metas: Sequence[RecordMetadata],
        floor: Mapping[tuple[str, int], int],
    ) -> None:
        """Keep what the broker acknowledged. A record sent after the broker had acknowledged
        offset n of its partition gets an offset above n, unless the broker lost its records
        since: then the kept ones are published again (once, whoever noticed). `floor` is
        what had been acknowledged when these were sent (acks of concurrent sends may be
        handled here in any order, so the latest acknowledged offset would not do)."""
        for record, meta in zip(sent, metas, strict=True):
            tp = (meta.topic, meta.partition)
            if meta.offset < floor.get(tp, 0):
                self._lost = True
            self._acked[tp] = max(self._acked.get(tp, 0), meta.offset + 1)
            self._kept.append(record)
        if self._lost:
            await self._restore()

    async def _restore(self) -> None:
        """Publish the kept records again, in their order, until the broker has them all."""
        async with self._restore_lock:
            if not self._lost:
                return  # another publisher restored them meanwhile
            records = list(self._kept)
            # what the broker holds now: offsets only grow from here
            self._acked.clear()
            log.warning(
                "the broker lost events it had acknowledged (restarted empty?): publishing "
                "the last %d again, same event ids",
                len(records),
            )
            while True:
                await self._connected.wait()
                producer, generation = self._producer, self._generation
                assert producer is not None
                try:
                    metas = await _send_all(producer, records)
                except (KafkaError, OSError, asyncio.TimeoutError) as exc:
                    self.readiness.set(self.CHECK, False, f"cannot restore lost events: {exc!r}")
                    await self._reconnect(generation)
                    continue
                break
            for meta in metas:
                tp = (meta.topic, meta.partition)
                self._acked[tp] = max(self._acked.get(tp, 0), meta.offset + 1)
            self._lost = False
            self.restores += 1
            REPUBLISHED.labels(self.source).inc(len(records))

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        await stop_quietly(self._producer)


async def _send_all(producer: AIOKafkaProducer, records: Sequence[Sent]) -> list[RecordMetadata]:
    """Hand every record to the producer before awaiting the first acknowledgement (a burst
    shares produce requests), then wait until the broker has them all (acks=all)."""
    acks = [
        await producer.send(topic, value, key=key, headers=headers)
        for topic, value, key, headers in records
    ]
    return list(await asyncio.wait_for(asyncio.gather(*acks), SEND_TIMEOUT_S))


class BatchPublisher(Protocol):
    """Where a service's outbox publishes (`EventPublisher`, or a stand-in in tests)."""

    async def publish_batch(self, items: Sequence[Outgoing]) -> object:
        """Publish (payload, key, event id, trace context) in order; return once all are on
        the broker."""
        ...


async def publish_until_taken(
    publisher: BatchPublisher,
    items: Sequence[Outgoing],
    first_s: float,
    max_s: float,
    before_attempt: Callable[[], None] | None = None,
) -> None:
    """Publish `items` as one ordered batch until the broker has all of them: a failed attempt
    is logged and made again, whole and with the same event ids, after a back-off doubling
    from `first_s` to `max_s` (the broker's own troubles are retried inside the publisher;
    this is for anything else). `before_attempt` runs before every attempt and may raise to
    give up (the ACD's lease fence)."""
    delay = first_s
    while True:
        if before_attempt is not None:
            before_attempt()
        try:
            await publisher.publish_batch(items)
            return
        except Exception:
            log.exception(
                "could not publish %d events (first %s for %s); retrying in %.1fs",
                len(items),
                items[0][0].DESCRIPTOR.name,
                items[0][1],
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_s)


Handler = Callable[[Envelope], Awaitable[None]]
#: handles the new envelopes of one fetch in one call (in fetch order; per partition in order)
BatchHandler = Callable[[Sequence[Envelope]], Awaitable[None]]

#: the consumer spans of the batch being handled, by event id (see `handling`)
_BATCH_SPANS: ContextVar[Mapping[str, trace.Span] | None] = ContextVar(
    "hotline_batch_spans", default=None
)


@contextmanager
def handling(env: Envelope) -> Iterator[None]:
    """Inside a batch handler: make `env`'s consumer span the current span, so what is done
    for that one envelope (a log line, a child span) belongs to its call's trace. Outside a
    batch, the envelope's own trace context."""
    span = (_BATCH_SPANS.get() or {}).get(env.event_id)
    ctx = trace.set_span_in_context(span) if span is not None else tracing.extract(env.trace)
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


class EventConsumer:
    """Consumes topics in a consumer group and hands each new envelope to `handler` once.

    Idempotent on `event_id` with a bounded memory of recent ids (redelivery after a crash
    happens within the uncommitted tail, so a bounded window is enough); offsets are committed
    after the batch is handled, so nothing is skipped by a crash.

    With a `batch_handler`, the new envelopes of one fetch (at most `batch_max`) go to it in
    one call instead, in fetch order (each partition's in order), after the same decoding and
    deduplication, each with its own consumer span. A batch that still fails after
    BATCH_ATTEMPTS is handled again one envelope at a time by `handler` (with its retries), so
    one bad event costs only itself; a handler must therefore tolerate seeing an envelope of a
    failed batch again (the event-id contract every handler already has).

    `fetch_wait_ms` overrides the service-wide HOTLINE_KAFKA_FETCH_WAIT_MS for this consumer:
    a longer wait gathers more events per fetch (fewer, larger batches) at the cost of that
    much more latency on each event hop where the broker answers only when the wait runs out.

    `kinds`, when given, names the payloads (Envelope oneof fields, e.g. `call_offered`) the
    handlers act on: an envelope of another kind is deduplicated, counted consumed and marked
    handled like any other, without a consumer span or a handler call. For a service that
    needs one kind out of a busy topic (the IVR reads CallOffered out of `calls`, a quarter
    of its records), a span per record it would ignore was most of its consuming cost.
    """

    def __init__(
        self,
        settings: Settings,
        group: str,
        topics: Iterable[str],
        handler: Handler,
        readiness: Readiness,
        remember: int = 100_000,
        *,
        batch_handler: BatchHandler | None = None,
        batch_max: int = BATCH_MAX,
        fetch_wait_ms: int | None = None,
        kinds: Collection[str] | None = None,
    ) -> None:
        self.settings = settings
        #: how long a fetch waits at the broker for data (None: HOTLINE_KAFKA_FETCH_WAIT_MS)
        self.fetch_wait_ms = (
            settings.kafka_fetch_wait_ms if fetch_wait_ms is None else fetch_wait_ms
        )
        self.group = group
        self.topics = list(topics)
        self.handler = handler
        self.batch_handler = batch_handler
        self.batch_max = batch_max
        #: payload kinds the handlers see (None: all)
        self.kinds = None if kinds is None else frozenset(kinds)
        self.readiness = readiness
        self._seen = RecentIds(remember)
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._progress_at = 0.0
        self._handled: dict[TopicPartition, int] = {}  # next offset per partition, uncommitted
        self.assigned = asyncio.Event()
        readiness.set(f"kafka-consumer-{group}", False, "connecting")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"kafka-consumer-{self.group}")
        self._watchdog = asyncio.create_task(self._watch(), name=f"kafka-watch-{self.group}")

    async def _watch(self) -> None:
        """Readiness turns red while the fetch loop is stuck (a handler that does not return):
        an orchestrator then routes around or restarts this replica."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(STALL_S / 4)
            stuck = loop.time() - self._progress_at
            if self._consumer is not None and stuck > STALL_S:
                self.readiness.set(
                    self.check, False, f"no progress for {stuck:.0f}s (a handler is stuck)"
                )

    @property
    def check(self) -> str:
        return f"kafka-consumer-{self.group}"

    def _make(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=6_000,
            heartbeat_interval_ms=1_000,
            fetch_max_wait_ms=self.fetch_wait_ms,
        )

    async def _run(self) -> None:
        """Consume until stopped; a broker failure rebuilds the consumer (the group is
        re-joined, offsets resume from the last commit or, for topics the broker lost, from
        the beginning of the new ones); records redelivered meanwhile are dropped by event id."""
        while True:
            self._consumer = await connect_with_retry(
                self._make,
                self.settings.kafka_bootstrap,
                self.readiness,
                self.check,
                ",".join(self.topics),
            )
            try:
                problem = await self._consume(self._consumer)
            except (KafkaError, OSError, asyncio.TimeoutError) as exc:
                problem = f"consumer failed: {exc!r}"
            self.readiness.set(self.check, False, problem)
            RECONNECTS.labels(self.check).inc()
            consumer, self._consumer = self._consumer, None
            await stop_quietly(consumer)
            await asyncio.sleep(RETRY_S)

    async def _consume(self, consumer: AIOKafkaConsumer) -> str:
        """Fetch, handle, commit; returns why the consumer must be rebuilt."""
        loop = asyncio.get_running_loop()
        last_probe = unassigned_since = last_commit = loop.time()
        self._handled.clear()
        max_records = self.batch_max if self.batch_handler is not None else None
        while True:
            self._progress_at = loop.time()
            batches = await consumer.getmany(timeout_ms=500, max_records=max_records)
            now = loop.time()
            if consumer.assignment():
                self.assigned.set()
                unassigned_since = now
            elif now - unassigned_since > STALL_S:
                return f"no partitions assigned for {STALL_S:.0f}s"
            if self.batch_handler is not None:
                await self._handle_fetch(batches, self.batch_handler)
            else:
                for tp, records in batches.items():
                    for record in records:
                        await self._handle_record(record)
                        self._handled[tp] = record.offset + 1
                        self._progress_at = loop.time()
            if self._handled and now - last_commit >= COMMIT_EVERY_S:
                await self._commit(consumer)
                last_commit = now
                self.readiness.set(self.check, True, ",".join(self.topics))
            if now - last_probe >= PROBE_S:
                last_probe = now
                missing = await missing_topics(consumer.topics, self.topics)
                if missing:
                    return f"broker lost topics {sorted(missing)}"
                await self._measure_lag(consumer)
                self.readiness.set(self.check, True, ",".join(self.topics))

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        """Commit the offsets of the records handled so far (only those: a consumer stopped
        in the middle of a fetch must not commit what it fetched but did not handle)."""
        assigned = consumer.assignment()  # a partition given away meanwhile is not ours to commit
        offsets = {tp: n for tp, n in self._handled.items() if tp in assigned}
        self._handled = {}
        if not offsets:
            return
        try:
            await asyncio.wait_for(consumer.commit(offsets), COMMIT_TIMEOUT_S)
        except CommitFailedError as exc:
            # The group rebalanced under this member (a broker that came back empty forgot
            # it): aiokafka joins again by itself and resumes at the group's offsets. The
            # offsets are dropped, not kept (the partitions may be another member's now; their
            # records come again and are dropped by event id). Rebuilding the consumer instead
            # left a stale member in the group for the new one to wait out: 16 s without
            # consuming after a broker restart, against ~3 s now.
            log.info("%s: offsets not committed, the group rebalanced: %s", self.group, exc)
        except BaseException:
            for tp, offset in offsets.items():  # not committed: keep them for the next try
                self._handled[tp] = max(offset, self._handled.get(tp, 0))
            raise

    async def _measure_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Lag per topic: the partitions' high-water marks (from the last fetch) minus this
        group's positions."""
        lag = dict.fromkeys(self.topics, 0)
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            position = await consumer.position(tp)
            lag[tp.topic] = lag.get(tp.topic, 0) + max(0, highwater - position)
        for topic, n in lag.items():
            LAG.labels(self.settings.site, self.group, topic).set(n)

    def _decode(self, record: ConsumerRecord) -> Envelope | None:
        """The record's envelope; None (logged and counted) when it has none."""
        try:
            if record.value is None:  # a tombstone: no envelope to decode
                raise DecodeError("record has no value")
            return Envelope.FromString(record.value)
        except DecodeError as exc:
            FAILED.labels(self.group, "decode").inc()
            log.error(
                "undecodable record on %s[%d]@%d skipped: %s",
                record.topic,
                record.partition,
                record.offset,
                exc,
            )
            return None

    def _start_span(self, record: ConsumerRecord, env: Envelope) -> trace.Span:
        """The record's consumer span, a child of the span that published the event."""
        carrier = {k: v.decode(errors="replace") for k, v in (record.headers or ())}
        carrier.update(env.trace)
        return TRACER.start_span(
            f"{self.group} {env.type}",
            context=tracing.extract(carrier),
            kind=trace.SpanKind.CONSUMER,
            attributes={"messaging.destination.name": record.topic, "hotline.event": env.type},
        )

    def _wanted(self, env: Envelope) -> bool:
        return self.kinds is None or env.WhichOneof("payload") in self.kinds

    def _count(self, event_type: str) -> None:
        """One more `event_type` handled (CONSUMED)."""
        CONSUMED_OF(event_type, self.group).inc()

    async def _handle_record(self, record: ConsumerRecord) -> None:
        env = self._decode(record)
        if env is None:
            return
        if env.event_id in self._seen:
            DUPLICATES.labels(self.group).inc()
            return
        if not self._wanted(env):
            self._count(env.type)
            self._seen.add(env.event_id)
            return
        span = self._start_span(record, env)
        try:
            with trace.use_span(span, end_on_exit=False):
                await self._handle_one(env, record)
        finally:
            span.end()
        self._seen.add(env.event_id)

    async def _handle_one(self, env: Envelope, record: ConsumerRecord) -> None:
        """`handler(env)`, retried with back-off; given up after HANDLER_ATTEMPTS, logged
        with the record's place so it can be replayed."""
        for attempt in range(1, HANDLER_ATTEMPTS + 1):
            try:
                await self.handler(env)
            except Exception:
                if attempt < HANDLER_ATTEMPTS:
                    log.warning(
                        "handler failed for %s %s (attempt %d), retrying",
                        env.type,
                        env.event_id,
                        attempt,
                        exc_info=True,
                    )
                    await asyncio.sleep(0.2 * 2**attempt)
                    continue
                # Given up: say exactly which record so it can be replayed from the topic.
                FAILED.labels(self.group, "handle").inc()
                log.exception(
                    "handler failed for %s %s after %d attempts; skipped at %s[%d]@%d",
                    env.type,
                    env.event_id,
                    attempt,
                    record.topic,
                    record.partition,
                    record.offset,
                )
            else:
                self._count(env.type)
            return

    async def _handle_fetch(
        self, batches: Mapping[TopicPartition, Sequence[ConsumerRecord]], handle: BatchHandler
    ) -> None:
        """The batch path: decode and deduplicate the whole fetch, hand the new envelopes to
        `handle` at once, then mark every fetched record handled."""
        new: list[tuple[ConsumerRecord, Envelope]] = []
        in_batch: set[str] = set()
        for records in batches.values():
            for record in records:
                env = self._decode(record)
                if env is None:
                    continue
                if env.event_id in self._seen or env.event_id in in_batch:
                    DUPLICATES.labels(self.group).inc()
                    continue
                if not self._wanted(env):
                    self._count(env.type)
                    self._seen.add(env.event_id)
                    continue
                in_batch.add(env.event_id)
                new.append((record, env))
        if new:
            spans = [self._start_span(record, env) for record, env in new]
            try:
                await self._handle_batch(new, spans, handle)
            finally:
                for span in spans:
                    span.end()
            for _, env in new:
                self._seen.add(env.event_id)
        for tp, records in batches.items():
            if records:
                self._handled[tp] = records[-1].offset + 1
        self._progress_at = asyncio.get_running_loop().time()

    async def _handle_batch(
        self,
        new: Sequence[tuple[ConsumerRecord, Envelope]],
        spans: Sequence[trace.Span],
        handle: BatchHandler,
    ) -> None:
        envs = [env for _, env in new]
        of_event = {env.event_id: span for env, span in zip(envs, spans, strict=True)}
        token = _BATCH_SPANS.set(of_event)
        try:
            with TRACER.start_as_current_span(
                f"{self.group} batch",
                context=otel_context.Context(),  # its own trace, linked to each event's span
                links=[trace.Link(span.get_span_context()) for span in spans],
                attributes={"messaging.batch.message_count": len(envs)},
            ):
                for attempt in range(1, BATCH_ATTEMPTS + 1):
                    try:
                        await handle(envs)
                    except Exception:
                        if attempt < BATCH_ATTEMPTS:
                            log.warning(
                                "batch handler failed for %d events (attempt %d), retrying",
                                len(envs),
                                attempt,
                                exc_info=True,
                            )
                            await asyncio.sleep(0.2 * 2**attempt)
                            continue
                        log.warning(
                            "batch handler failed for %d events after %d attempts; "
                            "handling them one at a time",
                            len(envs),
                            attempt,
                            exc_info=True,
                        )
                        break
                    for env in envs:
                        self._count(env.type)
                    return
        finally:
            _BATCH_SPANS.reset(token)
        loop = asyncio.get_running_loop()
        for (record, env), span in zip(new, spans, strict=True):
            with trace.use_span(span, end_on_exit=False):
                await self._handle_one(env, record)
            self._progress_at = loop.time()

    async def stop(self) -> None:
        """Stop consuming, commit what was handled and leave the group; a second call (a drain
        stopped the consumer before the service's stop) does nothing more."""
        await cancel_and_wait(self._watchdog)
        await cancel_and_wait(self._task)
        consumer, self._consumer = self._consumer, None
        if consumer is not None and self._handled:
            try:  # what was handled since the last commit is not redelivered after a restart
                await self._commit(consumer)
            except (KafkaError, OSError, asyncio.TimeoutError) as exc:
                log.warning("%s: last offsets not committed at stop: %r", self.group, exc)
        await stop_quietly(consumer)
