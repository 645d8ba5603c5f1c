"""Reading a topic outside any consumer group: the whole of it, or its records since a time.

A service that rebuilds its state at start (the ACD from its compacted `agents` topic and its
`queues` topic) reads what is on a topic *now*, from the beginning or from a point in time,
without joining a consumer group (which would take partitions from the group's members and
wait for a rebalance) and without committing anything. `read_topic` stops at the end offsets it
saw when it started, so it returns a consistent prefix even while producers keep writing.

`TopicSizes` asks the broker how many records each topic holds (the sum of its partitions'
end offsets), which is how a producer notices that a broker restart lost a topic.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from google.protobuf.message import DecodeError

from common.events import Envelope

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


async def _start_offsets(
    consumer: AIOKafkaConsumer, parts: list[TopicPartition], since_ms: int | None
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
    end = await consumer.end_offsets(parts)
    starts: dict[TopicPartition, int] = {}
    for tp in parts:
        hit = found.get(tp)
        if hit is not None and hit.timestamp is not None and hit.timestamp < 0:
            log.info("broker cannot find %s by time: reading it from the beginning", tp.topic)
            return begin, True
        starts[tp] = end[tp] if hit is None else max(begin[tp], hit.offset)
    return starts, False


async def read_topic(
    bootstrap: str, topic: str, since_ms: int | None = None, timeout_s: float = 30.0
) -> list[Envelope]:
    """Every envelope on `topic` (since `since_ms`, Unix ms, when given), in order per partition
    (so in order per key); stops at the end offsets seen when it started. A missing topic reads
    as empty; an undecodable record is logged and skipped. Raises ReplayError."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    deadline = time.monotonic() + timeout_s
    try:
        await asyncio.wait_for(consumer.start(), timeout_s)
        parts = await _partitions(consumer, topic)
        if not parts:
            return []
        consumer.assign(parts)
        starts, filtering = await _start_offsets(consumer, parts, since_ms)
        ends = await consumer.end_offsets(parts)
        for tp, offset in starts.items():
            consumer.seek(tp, offset)
        out: dict[TopicPartition, list[Envelope]] = {tp: [] for tp in parts}
        pending = {tp for tp in parts if starts[tp] < ends[tp]}
        while pending:
            if time.monotonic() > deadline:
                raise ReplayError(f"{topic}: not read to its end within {timeout_s:.0f}s")
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
    except (KafkaError, OSError, TimeoutError) as exc:
        raise ReplayError(f"{topic}: {exc!r}") from exc
    finally:
        await consumer.stop()


class TopicSizes:
    """How many records each topic holds, asked of the broker (no consumer group)."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._consumer: AIOKafkaConsumer | None = None

    async def sizes(self, topics: list[str]) -> dict[str, int | None]:
        """topic -> sum of its partitions' end offsets, or None when the topic is missing.
        Raises KafkaError/OSError when the broker cannot be asked."""
        if self._consumer is None:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
            await consumer.start()
            self._consumer = consumer
        consumer = self._consumer
        out: dict[str, int | None] = {}
        try:
            for topic in topics:
                parts = await _partitions(consumer, topic)
                out[topic] = sum((await consumer.end_offsets(parts)).values()) if parts else None
        except (KafkaError, OSError):
            await self.stop()  # a fresh client next time: the broker may have restarted
            raise
        return out

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
