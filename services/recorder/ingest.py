"""Ingest: a recording stream from its start chunk to a stored, catalogued, announced file.

The gateway streams both sides of a call (`Recorder.Ingest`, served by `servicer.py`): the
first chunk is `start` (call and agent metadata), then `frames` chunks with equal runs of int16
LE samples for the caller (left) and the agent (right). The gateway closing the stream
normally means the call ended: the recording is `complete`. A stream that breaks off (gateway
died, connection lost, server shutting down) still keeps every frame that arrived and is
stored as `partial`. A chunk that violates the protocol fails the stream; what was written
before it is kept as a `failed` recording for inspection, never dropped.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from hotline.v1 import recorder_pb2
from recorder import metrics
from recorder.announcer import Announcer
from recorder.catalog import COMPLETE, FAILED, PARTIAL, RECORDING, Catalog, Recording
from recorder.storage import RecordingStore, StoredRecording, recording_key
from recorder.wav import CHANNELS, FrameError, StereoWavWriter

log = logging.getLogger(__name__)

SAMPLE_RATE = 8000
#: how long a reply waits for RecordingReady to reach the broker before replying anyway
ANNOUNCE_WAIT_S = 2.0


class StartError(ValueError):
    """A RecordingStart the recorder cannot accept."""


class IngestUnavailable(RuntimeError):
    """A recording cannot be opened now (catalog unreachable, no file can be created)."""


def check_start(start: recorder_pb2.RecordingStart) -> int:
    """Validate the start message; returns the sample rate (0 means the default 8000)."""
    if not start.call_id:
        raise StartError("RecordingStart.call_id is required")
    rate = start.sample_rate or SAMPLE_RATE
    if rate != SAMPLE_RATE:
        raise StartError(
            f"RecordingStart.sample_rate {start.sample_rate} is not supported: "
            f"recordings are {SAMPLE_RATE} Hz (G.711 narrowband)"
        )
    return rate


@dataclass
class Stream:
    """One ingest in progress: its catalog row, its file writer and how it ended."""

    row: Recording
    writer: StereoWavWriter
    chunks: int = 1  # received so far, counting the start, as error messages number them
    ended_at: datetime | None = None
    failure: FrameError | OSError | None = None
    aborted: bool = False
    finishing: asyncio.Task[Recording] | None = field(default=None, repr=False)

    @property
    def recording_id(self) -> str:
        return self.row.recording_id

    @property
    def log_extra(self) -> dict[str, str]:
        return {"recording_id": self.row.recording_id, "call_id": self.row.call_id}


class Ingest:
    """The live recording streams: opens, writes and finishes them, so salvage and shutdown
    know what is in flight."""

    def __init__(
        self,
        store: RecordingStore,
        catalog: Catalog,
        announcer: Announcer,
        announce_wait_s: float = ANNOUNCE_WAIT_S,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.announcer = announcer
        self.announce_wait_s = announce_wait_s
        self.active: dict[str, Stream] = {}
        self._finishing: set[asyncio.Task[Recording]] = set()

    async def open(self, start: recorder_pb2.RecordingStart, sample_rate: int) -> Stream:
        """Register the recording in the catalog, then create its file (in that order, so a
        file on disk always has a row that salvage can complete). IngestUnavailable when
        either cannot be done."""
        started_at = datetime.now(UTC)
        recording_id = str(uuid.uuid4())
        key = recording_key(recording_id, started_at)
        row = Recording(
            recording_id=recording_id,
            call_id=start.call_id,
            path=key,
            duration_ms=0,
            sample_rate=sample_rate,
            channels=CHANNELS,
            agent_id=start.agent_id,
            queue=start.queue,
            started_at=started_at,
            bytes=0,
            status=RECORDING,
        )
        try:
            await self.catalog.begin(row)
        except Exception as exc:  # database unreachable or refusing writes
            metrics.FAILURES.labels("catalog_error").inc()
            log.exception("cannot register a recording for call %s", start.call_id)
            raise IngestUnavailable(f"recorder catalog unavailable: {exc}") from exc
        try:
            writer = self.store.create(key, sample_rate)
        except OSError as exc:
            metrics.FAILURES.labels("io_error").inc()
            metrics.RECORDINGS.labels(FAILED).inc()
            log.exception("cannot create recording file %s for call %s", key, start.call_id)
            await self.catalog.finish(
                recording_id,
                status=FAILED,
                ended_at=datetime.now(UTC),
                duration_ms=0,
                size_bytes=0,
                sha256=None,
                failure=f"io_error: {exc}",
            )
            raise IngestUnavailable(f"recorder cannot create a recording file: {exc}") from exc
        stream = Stream(row=row, writer=writer)
        self.active[recording_id] = stream
        log.info(
            "recording %s started for call %s (agent %s, queue %s)",
            recording_id,
            start.call_id,
            start.agent_id or "-",
            start.queue or "-",
            extra=stream.log_extra,
        )
        return stream

    def abandon_opening(self, opening: asyncio.Future[Stream]) -> None:
        """Done-callback for an `open` whose caller went away: finish its stream as partial."""
        if opening.cancelled() or opening.exception() is not None:
            return
        stream = opening.result()
        stream.aborted = True
        self.finish(stream)

    def write(self, stream: Stream, chunk: recorder_pb2.IngestChunk) -> None:
        """Append one `frames` chunk; FrameError (or OSError from the disk) fails the stream."""
        stream.chunks += 1
        kind = chunk.WhichOneof("chunk")
        if kind == "start":
            raise FrameError(
                "duplicate_start",
                f"chunk {stream.chunks}: RecordingStart may only be the first chunk",
            )
        if kind != "frames":
            raise FrameError(
                "empty_chunk", f"chunk {stream.chunks} carries neither start nor frames"
            )
        try:
            written = stream.writer.write(chunk.frames.left, chunk.frames.right)
        except FrameError as exc:
            raise FrameError(exc.reason, f"chunk {stream.chunks}: {exc}") from None
        metrics.BYTES_WRITTEN.inc(written)

    async def await_finish(
        self, stream: Stream, cancelled: Callable[[], bool] | None = None
    ) -> Recording:
        """Finish a stream that ended and wait for its stored row (the finishing itself goes on
        if this wait is cancelled). `cancelled` tells whether the peer cancelled the stream."""
        task = self.finish(stream, cancelled)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            # The peer went away right after its last chunk: the stream did not end, it broke.
            stream.aborted = True
            raise

    def finish(
        self, stream: Stream, cancelled: Callable[[], bool] | None = None
    ) -> asyncio.Task[Recording]:
        """Finalise in a task of its own, so a cancelled RPC cannot cut it short."""
        if stream.finishing is None:
            stream.ended_at = stream.ended_at or datetime.now(UTC)
            task = asyncio.create_task(
                self._store(stream, cancelled), name=f"recording-finish-{stream.recording_id}"
            )
            self._finishing.add(task)
            task.add_done_callback(self._finished)
            stream.finishing = task
        return stream.finishing

    def _finished(self, task: asyncio.Task[Recording]) -> None:
        self._finishing.discard(task)
        if not task.cancelled():
            task.exception()  # already logged in _store; retrieved so asyncio does not warn

    async def _store(self, stream: Stream, cancelled: Callable[[], bool] | None) -> Recording:
        """Commit the file, complete the catalog row, count it, and announce it."""
        row = stream.row
        stored: StoredRecording | None = None
        io_failure: str | None = None
        try:
            stored = await self.store.commit(row.path, stream.writer)
        except OSError as exc:
            io_failure = f"io_error: {exc}"
            log.exception(
                "recording %s could not be finalised; its .part file is kept",
                row.recording_id,
                extra=stream.log_extra,
            )
        finally:
            self.active.pop(row.recording_id, None)
        # A client cancel reaches us a few loop turns after its stream "ended"; the commit
        # above spans those turns, so by now we know whether the end was real.
        if cancelled is not None and cancelled():
            stream.aborted = True

        if io_failure is not None:
            status, reason, failure = FAILED, "io_error", io_failure
        elif stream.failure is not None:
            reason = getattr(stream.failure, "reason", "io_error")
            status, failure = FAILED, f"{reason}: {stream.failure}"
        elif stream.aborted:
            status, reason, failure = (
                PARTIAL,
                "stream_aborted",
                "stream_aborted: the stream broke off before the gateway closed it",
            )
        else:
            status, reason, failure = COMPLETE, None, None

        row.status, row.failure, row.ended_at = status, failure, stream.ended_at
        if stored is not None:
            row.duration_ms, row.bytes, row.sha256 = (
                stored.duration_ms,
                stored.size_bytes,
                stored.sha256,
            )
        else:
            row.duration_ms = stream.writer.duration_ms
        try:
            await self.catalog.finish(
                row.recording_id,
                status=status,
                ended_at=row.ended_at or datetime.now(UTC),
                duration_ms=row.duration_ms,
                size_bytes=row.bytes,
                sha256=row.sha256,
                failure=failure,
            )
        except Exception:
            metrics.FAILURES.labels("catalog_error").inc()
            log.exception(
                "recording %s stored but its catalog row could not be completed",
                row.recording_id,
                extra=stream.log_extra,
            )
            raise
        metrics.RECORDINGS.labels(status).inc()
        if reason is not None:
            metrics.FAILURES.labels(reason).inc()
        level = logging.INFO if status == COMPLETE else logging.WARNING
        log.log(
            level,
            "recording %s of call %s stored: %s, %d ms, %d bytes%s",
            row.recording_id,
            row.call_id,
            status,
            row.duration_ms,
            row.bytes,
            f" ({failure})" if failure else "",
            extra=stream.log_extra,
        )
        if status != FAILED:
            wait = self.announce_wait_s if status == COMPLETE else 0.0
            await self.announcer.announce(row.recording_id, wait_s=wait)
        return row

    async def drain(self) -> None:
        """Wait for recordings still being finalised (at shutdown, after the server stopped)."""
        while self._finishing:
            await asyncio.gather(*list(self._finishing), return_exceptions=True)
