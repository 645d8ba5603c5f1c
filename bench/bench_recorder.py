"""The recorder's ingest path: CPU per stored, catalogued and announced recording.

Run: .venv/bin/python bench/bench_recorder.py [--recordings 200] [--seconds 2] [--parallel 3]
     [--ack-ms 2] [--rounds 3] [--chunk-ms 1000]

N short recordings (default 2 s of call each, in the gateway uploader's `frames` chunks) go
through the real servicer (`RecorderService.Ingest`), `Ingest`, the local store (fsync, rename,
hash) and a migrated SQLite catalog in a temporary directory, `parallel` uploads at a time (the
gateway's spool uploader runs three). The real announcer publishes `RecordingReady` through the
real notifier into an in-process list that answers after `ack_ms` (the broker's acks=all; its
own cost is not the recorder's), and every recording must end up announced exactly once.

Prints process CPU (every thread: the event loop, aiosqlite's, the catalog's, the store's) and
wall time per recording, with SQL statements and commits per recording, for the path as it is
("one-hop": each catalog write one hand-off to the catalog's thread and its synchronous SQLite
connection) and, in the same run, for the paths it replaced: "async" (the same statements
through the async engine and aiosqlite, several thread hops per statement) and "per-step" (an
ORM session per step, a lookup before each insert, and per recording a read, a publish and a
marking commit), then the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.message import Message
from sqlalchemy import event, update
from sqlalchemy.ext.asyncio import AsyncEngine

from common.events import TOPIC_OF, Envelope, envelope
from gateway.uploader import CHUNK_SAMPLES
from hotline.v1 import recorder_pb2 as rec
from recorder.announcer import Announcer
from recorder.catalog import RECORDING, Catalog, Recording, migrate, open_engine
from recorder.ingest import Ingest, Start
from recorder.notifier import RecorderNotifier, recording_ready
from recorder.servicer import RecorderService
from recorder.storage import LocalRecordingStore

RATE = 8000


class RecordingList:
    """The simplest publisher: keeps every envelope (a bench, not a test; no broker). A
    publish returns after `ack_s`, the broker's acknowledgement (acks=all) it stands for."""

    def __init__(self, ack_s: float) -> None:
        self.ack_s = ack_s
        self.sent: list[Envelope] = []
        self.batches = 0

    async def publish(self, payload: Message, key: str, event_id: str | None = None) -> Envelope:
        env = envelope(payload, key, "bench", "recorder", event_id)
        assert TOPIC_OF[env.type] == "recordings"
        self.sent.append(env)
        self.batches += 1
        await asyncio.sleep(self.ack_s)
        return env

    async def publish_batch(self, items: Sequence[tuple[Message, str, str, Any]]) -> list[Envelope]:
        envs = [envelope(p, key, "bench", "recorder", eid) for p, key, eid, _ in items]
        self.sent.extend(envs)
        self.batches += 1
        await asyncio.sleep(self.ack_s)
        return envs


# ---- the baseline: the per-recording catalog and outbox this path replaced -----------------
class PerStepCatalog(Catalog):
    """Each step in an ORM session of its own, as the catalog wrote before."""

    async def begin(self, recording: Recording) -> None:
        async with self._session.begin() as session:
            session.add(recording)

    async def finish(self, recording_id: str, **values: Any) -> bool:
        async with self._session.begin() as session:
            result = await session.execute(
                update(Recording)
                .where(Recording.recording_id == recording_id, Recording.status == RECORDING)
                .values(bytes=values.pop("size_bytes"), **values)
            )
            return bool(getattr(result, "rowcount", 0) == 1)

    async def mark_one(self, recording_id: str, at: datetime, status: str) -> None:
        async with self._session.begin() as session:
            await session.execute(
                update(Recording)
                .where(Recording.recording_id == recording_id, Recording.status == status)
                .values(announced_at=at)
            )


class AsyncWritesCatalog(Catalog):
    """The same statements through the async engine (aiosqlite), as the catalog wrote before."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self.write_engine = None


class LookupFirstIngest(Ingest):
    """Looks the gateway's recording id up before registering it, as ingest did before."""

    async def _register(
        self, start: rec.RecordingStart, checked: Start, recording_id: str
    ) -> Recording | None:
        assert await self.catalog.get(recording_id) is None
        return await super()._register(start, checked, recording_id)


class OneByOneAnnouncer(Announcer):
    """Reads, publishes and marks one recording at a time, as the announcer did before."""

    catalog: PerStepCatalog

    async def _announce(self, batch: list[str]) -> None:
        for recording_id in dict.fromkeys(batch):
            row = await self.catalog.get(recording_id)
            assert row is not None and row.announced_at is None
            publisher = self.notifier.publisher
            await publisher.publish_batch(
                [(recording_ready(row), row.call_id, str(uuid.uuid4()), {})]
            )
            await self.catalog.mark_one(recording_id, datetime.now(UTC), row.status)
            self._traces.pop(recording_id, None)
            for fut in self._waiters.pop(recording_id, []):
                fut.set_result(None)


class Context:
    """What the servicer asks of its gRPC context on the ingest path."""

    def cancelled(self) -> bool:
        return False

    async def abort(self, code: Any, details: str) -> None:
        raise RuntimeError(f"{code}: {details}")


@dataclass
class Result:
    recordings: int
    cpu_s: float
    wall_s: float
    statements: int
    commits: int
    batches: int

    def line(self, name: str) -> str:
        n = self.recordings
        return (
            f"{name:9s} {self.cpu_s / n * 1e3:6.2f} ms CPU/recording, "
            f"{self.wall_s / n * 1e3:6.2f} ms wall/recording, "
            f"{self.statements / n:4.1f} SQL statements and {self.commits / n:4.1f} commits "
            f"per recording, {n / self.batches:5.1f} recordings per publish"
        )


def upload(call_id: str, pcm: np.ndarray, chunk: int) -> list[rec.IngestChunk]:
    start = rec.IngestChunk(
        start=rec.RecordingStart(
            call_id=call_id,
            sample_rate=RATE,
            agent_id="agent7",
            queue="sales",
            recording_id=str(uuid.uuid4()),
        )
    )
    side = pcm.tobytes()
    frames = [
        rec.IngestChunk(
            frames=rec.StereoFrames(left=side[i : i + 2 * chunk], right=side[i : i + 2 * chunk])
        )
        for i in range(0, len(side), 2 * chunk)
    ]
    end = rec.IngestChunk(end=rec.RecordingEnd(samples=len(pcm)))
    return [start, *frames, end]


async def stream(items: list[rec.IngestChunk]) -> AsyncIterator[rec.IngestChunk]:
    for item in items:
        yield item
        await asyncio.sleep(0)  # chunks arrive one by one, as from the network


async def run_one(
    root: Path,
    n: int,
    seconds: float,
    parallel: int,
    ack_s: float,
    baseline: bool,
    catalog_class: type[Catalog] = Catalog,
    chunk: int = CHUNK_SAMPLES,
) -> Result:
    engine = open_engine(f"sqlite+aiosqlite:///{root / 'recorder.db'}")
    await migrate(engine)
    counts = {"statements": 0, "commits": 0}

    def statement(*_: Any) -> None:
        counts["statements"] += 1

    def commit(*_: Any) -> None:
        counts["commits"] += 1

    catalog = catalog_class(engine)
    for sync in {engine.sync_engine, catalog.write_engine or engine.sync_engine}:
        event.listen(sync, "before_cursor_execute", statement)
        event.listen(sync, "commit", commit)
    publisher = RecordingList(ack_s)
    notifier = RecorderNotifier(publisher)
    announcer = OneByOneAnnouncer(catalog, notifier) if baseline else Announcer(catalog, notifier)
    announcer.start()
    store = LocalRecordingStore(root / "recordings")
    ingest = (LookupFirstIngest if baseline else Ingest)(store, catalog, announcer)
    service = RecorderService(ingest)
    rng = np.random.default_rng(7)
    pcm = rng.integers(-8000, 8000, size=round(seconds * RATE), dtype="<i2")
    uploads = [upload(f"call-{i}", pcm, chunk) for i in range(n + parallel)]
    context: Any = Context()

    async def worker(mine: list[list[rec.IngestChunk]]) -> None:
        for items in mine:
            reply = await service.Ingest(stream(items), context)
            assert reply.status == "complete", reply

    await worker(uploads[:parallel])  # warm up: connections, statement caches
    uploads = uploads[parallel:]
    for key in counts:
        counts[key] = 0
    publisher.batches = 0
    sent_before = len(publisher.sent)
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(uploads[i::parallel]) for i in range(parallel)))
    while len(publisher.sent) - sent_before < len(uploads):  # the last announcements
        await asyncio.sleep(0.001)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await asyncio.sleep(0.05)
    await announcer.stop()
    await catalog.close()
    assert not await catalog.unannounced(), "every recording is announced"
    ids = [env.recording_ready.recording_id for env in publisher.sent]
    assert len(ids) == len(set(ids)) == n + parallel, "each recording announced once"
    await engine.dispose()
    return Result(
        len(uploads), cpu, wall, counts["statements"], counts["commits"], max(1, publisher.batches)
    )


async def run(n: int, seconds: float, parallel: int, ack_s: float, rounds: int, chunk: int) -> None:
    best: dict[str, Result] = {}
    cases: tuple[tuple[str, bool, type[Catalog]], ...] = (
        ("per-step", True, PerStepCatalog),
        ("async", False, AsyncWritesCatalog),
        ("one-hop", False, Catalog),
    )
    for _ in range(rounds):  # interleaved rounds, best of each: a busy host hits all alike
        for name, baseline, catalog_class in cases:
            with tempfile.TemporaryDirectory() as tmp:
                result = await run_one(
                    Path(tmp), n, seconds, parallel, ack_s, baseline, catalog_class, chunk
                )
            if name not in best or result.cpu_s < best[name].cpu_s:
                best[name] = result
    print(
        f"recorder ingest: {n} recordings of {seconds:g} s, {parallel} uploads at a time, "
        f"{chunk * 1000 // RATE} ms chunks, broker ack {ack_s * 1e3:g} ms, best of {rounds}"
    )
    for name, result in best.items():
        print("  " + result.line(name))
    ours = best["one-hop"].cpu_s
    print(
        f"  ratio CPU one-hop / async = {ours / best['async'].cpu_s:.2f}, "
        f"one-hop / per-step = {ours / best['per-step'].cpu_s:.2f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recordings", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=2.0, help="length of each recording")
    ap.add_argument("--parallel", type=int, default=3, help="uploads at a time")
    ap.add_argument("--ack-ms", type=float, default=2.0, help="the broker's ack latency")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--chunk-ms", type=int, default=CHUNK_SAMPLES * 1000 // RATE, help="frames per chunk"
    )
    args = ap.parse_args()
    chunk = args.chunk_ms * RATE // 1000
    asyncio.run(
        run(args.recordings, args.seconds, args.parallel, args.ack_ms / 1e3, args.rounds, chunk)
    )


if __name__ == "__main__":
    main()
