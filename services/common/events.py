"""Events on Kafka: the envelope, a publisher and an idempotent consumer (aiokafka).

Every record is a `hotline.v1.Envelope` keyed by call or agent id, so order holds per call.
Both sides keep retrying a broker they cannot reach, say so in the logs and in /readyz, and
never drop an event silently: a publish waits for the broker, a record that cannot be decoded
or handled is logged with its offset and counted.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import context as otel_context
from prometheus_client import Counter

from common import tracing
from common.health import Readiness
from common.settings import Settings
from common.tasks import cancel_and_wait
from hotline.v1 import events_pb2

log = logging.getLogger(__name__)

Envelope = events_pb2.Envelope

#: topic -> (partitions, config). `agents` is compacted: the latest state per agent survives.
TOPICS: dict[str, tuple[int, dict[str, str]]] = {
    "calls": (3, {}),
    "queues": (3, {}),
    "agents": (3, {"cleanup.policy": "compact"}),
    "recordings": (3, {}),
}

#: payload type -> topic it travels on.
TOPIC_OF: dict[str, str] = {
    "CallOffered": "calls",
    "CallAnswered": "calls",
    "CallBridged": "calls",
    "CallEnded": "calls",
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

RETRY_S = 2.0
HANDLER_ATTEMPTS = 4


def envelope(
    payload: Message, key: str, site: str, source: str, event_id: str | None = None
) -> Envelope:
    """Wrap a payload in an envelope with the current trace context.

    A fresh event id unless `event_id` is given: a producer re-announcing the same fact (an
    outbox retry) passes the original id so consumers drop the repeat.
    """
    type_name = payload.DESCRIPTOR.name
    if type_name not in _FIELD_OF:
        raise ValueError(f"{type_name} is not an event payload of hotline.v1.Envelope")
    ts = Timestamp()
    ts.GetCurrentTime()
    env = Envelope(
        event_id=event_id or str(uuid.uuid4()),
        type=type_name,
        occurred_at=ts,
        site=site,
        key=key,
        source=source,
        trace=tracing.inject(),
    )
    getattr(env, _FIELD_OF[type_name]).CopyFrom(payload)
    return env


def payload_of(env: Envelope) -> Message:
    """The payload message inside an envelope."""
    field = env.WhichOneof("payload")
    if field is None:
        raise ValueError(f"envelope {env.event_id} has no payload")
    payload: Message = getattr(env, field)
    return payload


async def ensure_topics(bootstrap: str) -> None:
    """Create Hotline's topics if they do not exist yet (idempotent)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
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
    finally:
        await admin.close()


Client = TypeVar("Client", AIOKafkaProducer, AIOKafkaConsumer)


async def connect_with_retry(
    make: Callable[[], Client],
    bootstrap: str,
    readiness: Readiness,
    check: str,
    ready_detail: str = "",
) -> Client:
    """Start a Kafka client, retrying every RETRY_S while the broker is unreachable.

    Each failed attempt is logged and shown in /readyz under `check`, with the reason.
    """
    attempt = 0
    while True:
        attempt += 1
        client = make()
        try:
            await ensure_topics(bootstrap)
            await client.start()
        except asyncio.CancelledError:
            await client.stop()
            raise
        except (KafkaError, OSError) as exc:
            await client.stop()
            detail = f"broker {bootstrap} unreachable: {exc!r}"
            readiness.set(check, False, detail)
            log.warning(
                "%s cannot reach Kafka, retrying in %.0fs (attempt %d): %s",
                check,
                RETRY_S,
                attempt,
                detail,
            )
            await asyncio.sleep(RETRY_S)
            continue
        readiness.set(check, True, ready_detail or bootstrap)
        log.info("%s connected to Kafka at %s", check, bootstrap)
        return client


class Publisher(Protocol):
    """What a service's notifier publishes through (`EventPublisher`, or a stand-in in tests)."""

    async def publish(
        self, payload: Message, key: str, event_id: str | None = None
    ) -> Envelope: ...


class EventPublisher:
    """Publishes envelopes; connects in the background and keeps retrying until it can."""

    def __init__(self, settings: Settings, source: str, readiness: Readiness) -> None:
        self.settings = settings
        self.source = source
        self.readiness = readiness
        self._producer: AIOKafkaProducer | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        readiness.set("kafka-producer", False, "connecting")

    def start(self) -> None:
        self._task = asyncio.create_task(self._connect(), name="kafka-producer-connect")

    async def _connect(self) -> None:
        self._producer = await connect_with_retry(
            lambda: AIOKafkaProducer(
                bootstrap_servers=self.settings.kafka_bootstrap, acks="all", linger_ms=2
            ),
            self.settings.kafka_bootstrap,
            self.readiness,
            "kafka-producer",
        )
        self._connected.set()

    async def publish(self, payload: Message, key: str, event_id: str | None = None) -> Envelope:
        """Publish one event and wait until the broker has it (acks=all)."""
        env = envelope(payload, key, self.settings.site, self.source, event_id)
        await self._connected.wait()
        assert self._producer is not None
        topic = TOPIC_OF[env.type]
        headers = [(k, v.encode()) for k, v in env.trace.items()]  # for tools that read headers
        await self._producer.send_and_wait(
            topic, env.SerializeToString(), key=key.encode(), headers=headers
        )
        PUBLISHED.labels(env.type).inc()
        log.debug("published %s key=%s", env.type, key)
        return env

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        if self._producer is not None:
            await self._producer.stop()


Handler = Callable[[Envelope], Awaitable[None]]


class EventConsumer:
    """Consumes topics in a consumer group and hands each new envelope to `handler` once.

    Idempotent on `event_id` with a bounded memory of recent ids (redelivery after a crash
    happens within the uncommitted tail, so a bounded window is enough); offsets are committed
    after the batch is handled, so nothing is skipped by a crash.
    """

    def __init__(
        self,
        settings: Settings,
        group: str,
        topics: Iterable[str],
        handler: Handler,
        readiness: Readiness,
        remember: int = 100_000,
    ) -> None:
        self.settings = settings
        self.group = group
        self.topics = list(topics)
        self.handler = handler
        self.readiness = readiness
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._remember = remember
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self.assigned = asyncio.Event()
        readiness.set(f"kafka-consumer-{group}", False, "connecting")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"kafka-consumer-{self.group}")

    async def _connect(self) -> AIOKafkaConsumer:
        return await connect_with_retry(
            lambda: AIOKafkaConsumer(
                *self.topics,
                bootstrap_servers=self.settings.kafka_bootstrap,
                group_id=self.group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
            ),
            self.settings.kafka_bootstrap,
            self.readiness,
            f"kafka-consumer-{self.group}",
            ",".join(self.topics),
        )

    async def _run(self) -> None:
        self._consumer = consumer = await self._connect()
        while True:
            batches = await consumer.getmany(timeout_ms=500)
            if consumer.assignment():
                self.assigned.set()
            for records in batches.values():
                for record in records:
                    await self._handle_record(record)
            if batches:
                await consumer.commit()

    async def _handle_record(self, record: ConsumerRecord) -> None:
        try:
            if record.value is None:  # a tombstone: no envelope to decode
                raise DecodeError("record has no value")
            env = Envelope.FromString(record.value)
        except DecodeError as exc:
            FAILED.labels(self.group, "decode").inc()
            log.error(
                "undecodable record on %s[%d]@%d skipped: %s",
                record.topic,
                record.partition,
                record.offset,
                exc,
            )
            return
        if env.event_id in self._seen:
            DUPLICATES.labels(self.group).inc()
            return
        carrier = {k: v.decode(errors="replace") for k, v in (record.headers or ())}
        carrier.update(env.trace)
        token = otel_context.attach(tracing.extract(carrier))
        try:
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
                    CONSUMED.labels(env.type, self.group).inc()
                break
        finally:
            otel_context.detach(token)
        self._seen[env.event_id] = None
        if len(self._seen) > self._remember:
            self._seen.popitem(last=False)

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        if self._consumer is not None:
            await self._consumer.stop()
