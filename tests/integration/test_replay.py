"""Reading topics outside any consumer group (common.replay) against a real Kafka-protocol
broker (Tansu): the whole topic in order per key, only what is newer than a time (Tansu cannot
look offsets up by time, so the records are filtered), a missing topic, and topic sizes that
show a topic lost by a broker restart; a tail that follows a topic from a marked point and
goes on after the broker restarted empty."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from common.events import Envelope, ensure_topics, envelope, stop_quietly
from common.health import Readiness
from common.replay import ReplayError, TopicSizes, TopicTail, read_topic
from hotline.v1 import events_pb2 as ev
from tests.integration.conftest import free_port, tansu


async def produce(bootstrap: str, records: list[tuple[str, ev.AgentStateChanged, int]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for topic, payload, at_ms in records:
            env = envelope(payload, payload.agent_id, "it", "acd")
            await producer.send_and_wait(
                topic, env.SerializeToString(), key=payload.agent_id.encode(), timestamp_ms=at_ms
            )
        await producer.send_and_wait(topic, b"\xff not an envelope", key=b"junk")
    finally:
        await producer.stop()


async def test_read_topic_whole_and_since_a_time(broker: str) -> None:
    await ensure_topics(broker)
    now_ms = int(time.time() * 1000)
    records = [
        ("agents", ev.AgentStateChanged(agent_id=f"a{i % 4}", reason=f"r{i}"), now_ms - 60_000 + i)
        for i in range(20)
    ] + [("agents", ev.AgentStateChanged(agent_id="a1", reason="late"), now_ms)]
    await produce(broker, records)

    everything = await read_topic(broker, "agents")
    assert len(everything) == 21  # the undecodable record is skipped
    reasons_of_a1 = [e.agent_state_changed.reason for e in everything if e.key == "a1"]
    assert reasons_of_a1 == ["r1", "r5", "r9", "r13", "r17", "late"], "order per key holds"

    recent = await read_topic(broker, "agents", since_ms=now_ms - 1000)
    assert [e.agent_state_changed.reason for e in recent] == ["late"]
    assert await read_topic(broker, "agents", since_ms=now_ms + 60_000) == []


async def test_a_missing_topic_reads_empty(broker: str) -> None:
    assert await read_topic(broker, "no-such-topic") == []


async def test_topic_sizes_show_a_topic_lost_with_the_broker(tmp_path: Path) -> None:
    port = free_port()
    sizes = TopicSizes(f"127.0.0.1:{port}")

    async def ask(topics: list[str]) -> dict[str, int | None]:
        for _ in range(20):  # as the caller's loop does: the first ask after a restart fails
            try:
                return await sizes.sizes(topics)
            except KafkaError:
                await asyncio.sleep(0.2)
        raise AssertionError("the broker never answered")

    try:
        with tansu(port, tmp_path / "a.log") as bootstrap:
            await ensure_topics(bootstrap)
            assert (await ask(["agents"]))["agents"] == 0
            await produce(bootstrap, [("agents", ev.AgentStateChanged(agent_id="a1"), 0)] * 3)
            assert await ask(["agents", "nope"]) == {"agents": 4, "nope": None}
        with tansu(port, tmp_path / "b.log") as bootstrap:  # restarted: memory lost
            assert (await ask(["agents"]))["agents"] is None
            await ensure_topics(bootstrap)
            assert (await ask(["agents"]))["agents"] == 0
    finally:
        await sizes.stop()


async def publish_calls(bootstrap: str, call_ids: list[str]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for call_id in call_ids:
            env = envelope(ev.CallEnded(call_id=call_id), call_id, "it", "gateway")
            await producer.send_and_wait("calls", env.SerializeToString(), key=call_id.encode())
    finally:
        await producer.stop()


async def test_a_tail_follows_from_its_mark_and_survives_a_broker_restart(tmp_path: Path) -> None:
    port = free_port()
    seen: list[str] = []

    async def handle(env: Envelope) -> None:
        seen.append(env.call_ended.call_id)
        if env.call_ended.call_id == "boom":
            raise RuntimeError("handler failure")

    readiness = Readiness()
    tail = TopicTail(f"127.0.0.1:{port}", "calls", handle, readiness, "it-tail", fetch_wait_ms=20)
    try:
        with tansu(port, tmp_path / "a.log") as bootstrap:
            with pytest.raises(ReplayError, match="does not exist"):
                await tail.mark()
            # the service's fetch wait reaches the client (Tansu holds each fetch that long)
            assert tail._consumer is not None and tail._consumer._fetch_max_wait_ms == 20
            await ensure_topics(bootstrap)
            await publish_calls(bootstrap, ["before-1", "before-2"])
            await tail.mark()
            await publish_calls(bootstrap, ["after-1", "boom", "after-2"])
            tail.start()
            await until(lambda: len(seen) == 3, 10)
            assert sorted(seen) == ["after-1", "after-2", "boom"], "only what came after the mark"
            assert readiness.report()["kafka-tail-calls"]["ok"]
        with tansu(port, tmp_path / "b.log") as bootstrap:  # restarted empty
            await ensure_topics(bootstrap)
            # the tail notices the recreated partitions at its next fetch (a producer that
            # wrote past the old position before that look would have some records skipped)
            await until(lambda: tail.rewound >= 1, 20)
            await asyncio.sleep(1.0)  # every partition is looked at within a few fetches
            await publish_calls(bootstrap, ["new-1", "new-2", "new-3", "new-4"])
            await until(lambda: len(seen) == 7, 30)
            assert sorted(seen[3:]) == ["new-1", "new-2", "new-3", "new-4"]
    finally:
        await tail.stop()


async def test_a_tail_told_of_a_lost_broker_reads_the_new_topic_from_its_beginning(
    tmp_path: Path,
) -> None:
    """The new topic can grow past the tail's old position before the tail looks (the
    gateway restores its last events at once after a broker restart): the tail's own look
    then sees nothing wrong and the first records of each partition are skipped. Told by the
    ACD's topic watch, the tail reads the topic again from its beginning."""
    port = free_port()
    seen: list[str] = []

    async def handle(env: Envelope) -> None:
        seen.append(env.call_ended.call_id)

    tail = TopicTail(f"127.0.0.1:{port}", "calls", handle, Readiness(), "it-tail", fetch_wait_ms=20)
    try:
        with tansu(port, tmp_path / "a.log") as bootstrap:
            await ensure_topics(bootstrap)
            await tail.mark()
            tail.start()
            await publish_calls(bootstrap, ["a-1", "a-2", "a-3", "a-4", "a-5", "a-6"])
            await until(lambda: len(seen) == 6, 10)
            # a notice that was wrong: the topic is intact, nothing is read again
            assert await tail.rewind_if_recreated("the broker lost topics agents") == 0
            await asyncio.sleep(0.5)
            assert len(seen) == 6 and tail.rewound == 0
        with tansu(port, tmp_path / "b.log") as bootstrap:  # restarted empty
            await ensure_topics(bootstrap)
            new = [f"b-{i}" for i in range(60)]  # every partition past the old position
            await publish_calls(bootstrap, new)
            await tail.rewind_if_recreated("the broker lost topics agents, queues")
            await until(lambda: set(new) <= set(seen), 20)
            # read again from the beginning: by this notice, or by the tail's own look when it
            # came before the new partitions grew past its position (a loaded machine)
            assert tail.rewound >= 1
    finally:
        await tail.stop()


async def until(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_a_consumer_stopped_while_its_fetch_waits_out_a_dead_broker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """aiokafka's stop cancels a fetch sleeping in its retry back-off and lets that
    CancelledError out before closing its connections (aio-libs/aiokafka#647): stopping must
    neither raise it nor leave the client's tasks running."""
    port = free_port()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=f"127.0.0.1:{port}", enable_auto_commit=False, retry_backoff_ms=30_000
    )
    with tansu(port, tmp_path / "a.log") as bootstrap:
        await ensure_topics(bootstrap)
        await consumer.start()
        consumer.assign([TopicPartition("calls", 0)])
        await consumer.seek_to_end(TopicPartition("calls", 0))
        await consumer.getmany(timeout_ms=100)
    # the broker is gone: the next fetch fails and sleeps out its 30 s back-off
    with caplog.at_level(logging.ERROR, logger="aiokafka.consumer.fetcher"):
        await until(lambda: "Failed fetch messages" in caplog.text, 20)
    before = asyncio.all_tasks()
    await stop_quietly(consumer)  # raised CancelledError through consumer.stop() before
    await asyncio.sleep(0)
    left = [t for t in before if not t.done() and t is not asyncio.current_task()]
    assert left == [], f"the client's tasks still run: {left}"


async def send_as_one_batch(broker: str, topic: str, key: str, envs: list[Envelope]) -> list[int]:
    """`envs` under one key, sent together as a busy producer (the ACD's outbox) sends them:
    one record batch on the wire. Returns their offsets."""
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all", linger_ms=200)
    await producer.start()
    try:
        sent = [
            await producer.send(topic, env.SerializeToString(), key=key.encode()) for env in envs
        ]
        return [(await f).offset for f in sent]
    finally:
        await producer.stop()


async def test_records_produced_as_one_batch_are_all_read_and_counted(broker: str) -> None:
    """The ACD's outbox publishes many records in one produce request. Tansu reports the end
    of a partition as the start of its last batch + 1, so reading to that end lost the rest of
    the batch (an agent's latest state at a rebuild) and the sizes fell short of what was
    published (the ACD then took its topics for lost and restated everything)."""
    await ensure_topics(broker)
    key = f"ag-{time.monotonic_ns()}"
    sizes = TopicSizes(broker)
    try:
        before = (await sizes.sizes(["agents"]))["agents"] or 0
        offsets = await send_as_one_batch(
            broker,
            "agents",
            key,
            [
                envelope(ev.AgentStateChanged(agent_id=key, reason=str(i)), key, "it", "acd")
                for i in range(20)
            ],
        )
        assert offsets == list(range(offsets[0], offsets[0] + 20))
        got = [
            e.agent_state_changed.reason
            for e in await read_topic(broker, "agents")
            if e.agent_state_changed.agent_id == key
        ]
        assert got == [str(i) for i in range(20)], "the whole batch, in order"
        assert (await sizes.sizes(["agents"]))["agents"] == before + 20
    finally:
        await sizes.stop()


async def test_a_tail_marked_after_a_batch_follows_only_what_comes_next(broker: str) -> None:
    """The mark is where the stored records end: with Tansu's end offset (the start of the last
    batch + 1) the tail began inside the batch and handled what was there before the mark."""
    await ensure_topics(broker)
    call_id = f"tail-{time.monotonic_ns()}"
    await send_as_one_batch(
        broker,
        "calls",
        call_id,
        [
            envelope(ev.CallEnded(call_id=f"{call_id}-{i}"), call_id, "it", "gateway")
            for i in range(10)
        ],
    )
    seen: list[str] = []

    async def handle(env: Envelope) -> None:
        seen.append(env.call_ended.call_id)

    tail = TopicTail(broker, "calls", handle, Readiness(), "it-tail-batch", fetch_wait_ms=20)
    try:
        await tail.mark()
        tail.start()
        await publish_calls(broker, [f"{call_id}-after"])
        await until(lambda: f"{call_id}-after" in seen, 10)
        await asyncio.sleep(0.5)  # anything else that would come
        assert [c for c in seen if c.startswith(call_id)] == [f"{call_id}-after"]
    finally:
        await tail.stop()
