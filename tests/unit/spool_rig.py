"""Fakes for the recording spool and its uploader: disks that run jobs inline or hold them, a
wall clock and a sleeping clock stepped by the test, and a recorder link that records every
stream and answers as the test says."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from hotline.v1 import recorder_pb2 as rec
from tests.unit.rpc_errors import rpc_error

FRAME = 160
RID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


class InlineDisk:
    """Runs disk work at once, on the caller's thread."""

    def __init__(self) -> None:
        self.closed = False

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        if self.closed:
            raise RuntimeError("shut down")
        fut: Future[Any] = Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - a Future carries any error
            fut.set_exception(exc)
        return fut

    def shutdown(self, wait: bool = True) -> None:
        self.closed = True


class HeldDisk(InlineDisk):
    """A stalled disk: work waits until the test runs it."""

    def __init__(self) -> None:
        super().__init__()
        self.jobs: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        self.jobs.append((fn, args))
        return Future()

    def run(self) -> None:
        jobs, self.jobs = self.jobs, []
        for fn, args in jobs:
            fn(*args)


class Wall:
    """time.time for the spool."""

    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class SleepClock:
    """time.monotonic and asyncio.sleep for the uploader: a sleep moves time on at once."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@dataclass
class Stream:
    """One Ingest stream as the fake recorder saw it."""

    chunks: list[rec.IngestChunk] = field(default_factory=list)
    cancelled: bool = False

    @property
    def start(self) -> rec.RecordingStart:
        assert self.chunks[0].WhichOneof("chunk") == "start"
        return self.chunks[0].start

    @property
    def frames(self) -> list[rec.StereoFrames]:
        return [c.frames for c in self.chunks if c.WhichOneof("chunk") == "frames"]

    @property
    def end(self) -> rec.RecordingEnd | None:
        ends = [c.end for c in self.chunks if c.WhichOneof("chunk") == "end"]
        assert len(ends) <= 1 and (not ends or self.chunks[-1].WhichOneof("chunk") == "end")
        return ends[0] if ends else None

    def audio(self) -> tuple[np.ndarray, np.ndarray]:
        left = b"".join(f.left for f in self.frames)
        right = b"".join(f.right for f in self.frames)
        return np.frombuffer(left, "<i2"), np.frombuffer(right, "<i2")


Answer = Callable[
    [Stream],
    rec.IngestReply | BaseException | None | Awaitable[rec.IngestReply | BaseException | None],
]


def stored(stream: Stream) -> rec.IngestReply:
    samples = sum(len(f.left) // 2 for f in stream.frames)
    return rec.IngestReply(
        recording_id=stream.start.recording_id,
        path=f"2025/06/15/{stream.start.recording_id}.wav",
        duration_ms=samples // 8,
        status="complete" if stream.end is not None else "partial",
    )


class FakeRecorder:
    """Recorder links: every `connect()` makes one; `answers` say what each stream gets (a
    reply, an error to raise, or None: hang until released); default: stored."""

    def __init__(self) -> None:
        self.streams: list[Stream] = []
        self.answers: list[Answer] = []
        self.connects = 0
        self.closed = 0
        self.release = asyncio.Event()

    def connect(self) -> FakeLink:
        self.connects += 1
        return FakeLink(self)


class FakeLink:
    def __init__(self, recorder: FakeRecorder) -> None:
        self.recorder = recorder

    async def ingest(
        self, chunks: AsyncIterator[rec.IngestChunk], timeout_s: float
    ) -> rec.IngestReply:
        assert timeout_s > 0
        stream = Stream()
        self.recorder.streams.append(stream)
        answer = self.recorder.answers.pop(0) if self.recorder.answers else stored
        try:
            async for chunk in chunks:
                stream.chunks.append(chunk)
            outcome = answer(stream)
            if inspect.isawaitable(outcome):  # an answer that waits for something first
                outcome = await outcome
            while outcome is None:
                await self.recorder.release.wait()
                outcome = stored(stream)
        except asyncio.CancelledError:
            stream.cancelled = True
            raise
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def close(self, grace_s: float | None = None) -> None:
        self.recorder.closed += 1


def fail(code: grpc.StatusCode, details: str = "") -> Answer:
    return lambda stream: rpc_error(code, details)


def already(stream: Stream) -> rec.IngestReply:
    reply = stored(stream)
    reply.already_stored = True
    return reply


def hang(stream: Stream) -> None:
    return None
