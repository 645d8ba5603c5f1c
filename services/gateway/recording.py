"""Streams a bridged call's two directions to the recorder over gRPC (client streaming).

The media tap runs on the 20 ms clock and must never block, so frames go into a bounded
queue; a task batches them (100 ms per message) into the Ingest stream. A full queue or a
recorder that cannot be reached is logged and counted — a recording is never lost silently.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
import numpy as np
from prometheus_client import Counter

from gateway.media.audio import SAMPLE_RATE
from hotline.v1 import recorder_pb2 as rec
from hotline.v1 import recorder_pb2_grpc

log = logging.getLogger(__name__)

FAILURES = Counter(
    "hotline_gateway_recording_failures_total",
    "Recordings the gateway could not deliver",
    ["reason"],
)
FRAMES_PER_MESSAGE = 5
QUEUE_FRAMES = 1500  # 30 s of slack if the recorder is slow


class GrpcRecorder:
    """The core's Recorder: each bridged call streams to the recorder service."""

    def __init__(self, stub: recorder_pb2_grpc.RecorderAsyncStub) -> None:
        self.stub = stub

    def start(self, call_id: str, agent_id: str, queue: str) -> RecordingStream:
        return RecordingStream(self.stub, call_id, agent_id, queue)


class RecordingStream:
    def __init__(
        self,
        stub: recorder_pb2_grpc.RecorderAsyncStub,
        call_id: str,
        agent_id: str,
        queue: str,
        sample_rate: int = SAMPLE_RATE,
    ) -> None:
        self.stub = stub
        self.start_msg = rec.RecordingStart(
            call_id=call_id,
            sample_rate=sample_rate,
            agent_id=agent_id,
            queue=queue,
            left_label="caller",
            right_label="agent",
        )
        self.call_id = call_id
        self._queue: asyncio.Queue[tuple[bytes, bytes] | None] = asyncio.Queue(QUEUE_FRAMES)
        self.dropped = 0
        self.reply: rec.IngestReply | None = None
        self._task = asyncio.create_task(self._run(), name=f"record-{call_id}")

    def tap(self, left: np.ndarray, right: np.ndarray) -> None:
        """One 20 ms frame per side (called by the bridge on every clock tick)."""
        try:
            self._queue.put_nowait(
                (
                    np.asarray(left, "<i2").tobytes(),  # no copy when already
                    np.asarray(right, "<i2").tobytes(),
                )
            )  # little-endian int16
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped == 1:
                FAILURES.labels("backlog").inc()
                log.error(
                    "recording of %s is falling behind; frames are being dropped", self.call_id
                )

    async def _chunks(self) -> AsyncIterator[rec.IngestChunk]:
        yield rec.IngestChunk(start=self.start_msg)
        left: list[bytes] = []
        right: list[bytes] = []
        samples = 0
        while True:
            item = await self._queue.get()
            if item is not None:
                left.append(item[0])
                right.append(item[1])
                samples += len(item[0]) // 2
            if left and (item is None or len(left) >= FRAMES_PER_MESSAGE):
                yield rec.IngestChunk(
                    frames=rec.StereoFrames(left=b"".join(left), right=b"".join(right))
                )
                left.clear()
                right.clear()
            if item is None:
                if not self.dropped:  # whole: the call ended and every frame was sent
                    yield rec.IngestChunk(end=rec.RecordingEnd(samples=samples))
                return

    async def _run(self) -> None:
        try:
            self.reply = await self.stub.Ingest(self._chunks())
            log.info(
                "call %s recorded as %s (%d ms)",
                self.call_id,
                self.reply.recording_id,
                self.reply.duration_ms,
            )
        except grpc.aio.AioRpcError as exc:
            FAILURES.labels("recorder").inc()
            log.error("recording of %s failed: %s %s", self.call_id, exc.code().name, exc.details())

    async def finish(self, timeout_s: float = 30.0) -> None:
        """Close the stream and wait for the recorder's reply."""
        await self._queue.put(None)
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        except asyncio.TimeoutError:
            FAILURES.labels("timeout").inc()
            log.error(
                "recorder did not confirm the recording of %s within %.0fs", self.call_id, timeout_s
            )
