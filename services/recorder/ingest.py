"""Ingest: a recording stream from its start chunk to a stored, catalogued, announced file.

The gateway uploads both sides of a call (`Recorder.Ingest`, served by `servicer.py`): the
first chunk is `start` (call and agent metadata, the recording's id and start time), then
`frames` chunks with equal runs of int16 LE samples for the caller (left) and the agent
(right), then `end` when the recording is whole. A stream closed after `end` is `complete`;
closed without it, `partial` (its source stopped mid-call: the gateway died). A stream that
breaks off (gateway or network gone, server shutting down) still keeps every frame that
arrived and is stored as `partial`. A chunk that violates the protocol fails the stream; what
was written before it is kept as a `failed` recording for inspection, never dropped.

Uploads are idempotent by `recording_id` (chosen by the gateway): a recording already stored
whole under that id is answered with and not stored again; one whose *upload* broke (cut
stream, recorder crash, disk error) is replaced by the new upload, which starts over.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError

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
#: the recording ids the gateway may choose: lowercase UUIDs, as recording keys require
RECORDING_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
#: a RecordingStart.started_at further ahead of the recorder's clock is not believed
FUTURE_SKEW_S = 300.0
#: an unfinished recording no stream of this process writes is taken over by a new upload of
#: its id once its file has not grown for this long (a live upload writes continuously)
TAKEOVER_IDLE_S = 10.0
#: failure reasons that say the *upload* broke, not the recording: a later upload of the same
#: recording_id replaces such a recording
SUPERSEDABLE = frozenset({"stream_aborted", "recorder_restart", "io_error"})


class StartError(ValueError):
    """A RecordingStart the recorder cannot accept."""


class IngestUnavailable(RuntimeError):
    """A recording cannot be opened now (catalog unreachable, no file can be created)."""


class IngestBusy(RuntimeError):
    """Another stream is storing this recording_id now; the upload may be retried later."""


class IngestRefused(RuntimeError):
    """An earlier upload of this recording_id was refused for a reason a retry cannot fix."""


class AlreadyStored(Exception):
    """This recording_id was stored whole by an earlier upload: `row` is the answer."""

    def __init__(self, row: Recording) -> None:
        super().__init__(f"recording {row.recording_id} is already stored ({row.status})")
        self.row = row


@dataclass(frozen=True)
class Start:
    """A checked RecordingStart."""

    call_id: str
    sample_rate: int
    #: chosen by the gateway (the upload is idempotent), or None: the recorder picks one
    recording_id: str | None
    #: when the recording began at its source, or None: when the stream started
    started_at: datetime | None
    #: the call's holds (catalog form), checked: in order, each within itself
    holds: tuple[dict[str, Any], ...] = ()


def check_start(start: recorder_pb2.RecordingStart, now: datetime | None = None) -> Start:
    """Validate the start message (a sample rate of 0 means the default 8000)."""
    if not start.call_id:
        raise StartError("RecordingStart.call_id is required")
    rate = start.sample_rate or SAMPLE_RATE
    if rate != SAMPLE_RATE:
        raise StartError(
            f"RecordingStart.sample_rate {start.sample_rate} is not supported: "
            f"recordings are {SAMPLE_RATE} Hz (G.711 narrowband)"
        )
    if start.recording_id and not RECORDING_ID.match(start.recording_id):
        raise StartError(
            f"RecordingStart.recording_id {start.recording_id!r} is not a lowercase UUID "
            "(8-4-4-4-12 hex digits)"
        )
    started_at = None
    if start.HasField("started_at"):
        started_at = start.started_at.ToDatetime(tzinfo=UTC)
        now = now or datetime.now(UTC)
        if started_at > now + timedelta(seconds=FUTURE_SKEW_S):
            # A clock that is off must not cost the recording: file it under the recorder's time.
            log.warning(
                "recording of call %s claims to start at %s, ahead of the recorder's clock; "
                "using %s",
                start.call_id,
                started_at.isoformat(),
                now.isoformat(),
            )
            started_at = now
    return Start(
        start.call_id, rate, start.recording_id or None, started_at, check_holds(start.holds)
    )


def check_holds(holds: Iterable[recorder_pb2.HoldMark]) -> tuple[dict[str, Any], ...]:
    """The hold marks of a start, as the catalog keeps them; StartError names a bad one."""
    out: list[dict[str, Any]] = []
    last_end = 0
    for i, mark in enumerate(holds):
        if mark.start_ms < last_end or mark.end_ms < mark.start_ms:
            raise StartError(
                f"RecordingStart.holds[{i}] spans {mark.start_ms}..{mark.end_ms} ms: holds must "
                "be in order, not overlap and not end before they start"
            )
        last_end = mark.end_ms
        out.append(
            {
                "start_ms": mark.start_ms,
                "end_ms": mark.end_ms,
                "leg_id": mark.leg_id,
                "held_by": mark.held_by,
            }
        )
    return tuple(out)


@dataclass
class Stream:
    """One ingest in progress: its catalog row, its file writer and how it ended."""

    row: Recording
    writer: StereoWavWriter
    chunks: int = 1  # received so far, counting the start, as error messages number them
    ended_at: datetime | None = None
    failure: FrameError | OSError | None = None
    aborted: bool = False
    #: the RecordingEnd chunk, once it arrived: the recording is whole
    end: recorder_pb2.RecordingEnd | None = None
    #: the source said when the recording began: its end is that plus its duration
    timed_by_source: bool = False
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
        takeover_idle_s: float = TAKEOVER_IDLE_S,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.announcer = announcer
        self.announce_wait_s = announce_wait_s
        self.takeover_idle_s = takeover_idle_s
        self.active: dict[str, Stream] = {}
        #: recording ids a stream of this process is opening, writing or finishing
        self._owned: set[str] = set()
        self._finishing: set[asyncio.Task[Recording]] = set()

    def owns(self, recording_id: str) -> bool:
        """Whether a stream of this process holds the recording (salvage must leave it)."""
        return recording_id in self._owned

    async def open(self, start: recorder_pb2.RecordingStart, checked: Start) -> Stream:
        """Register the recording in the catalog, then create its file (in that order, so a
        file on disk always has a row that salvage can complete).

        Raises AlreadyStored (answer with its row), IngestBusy, IngestRefused, or
        IngestUnavailable when the catalog or the disk cannot be used.
        """
        recording_id = checked.recording_id or str(uuid.uuid4())
        if recording_id in self._owned:
            metrics.REUPLOADS.labels("busy").inc()
            raise IngestBusy(f"recording {recording_id} is being stored by another stream")
        self._owned.add(recording_id)
        try:
            return await self._open(start, checked, recording_id)
        except BaseException:
            self._owned.discard(recording_id)
            raise

    async def _open(
        self, start: recorder_pb2.RecordingStart, checked: Start, recording_id: str
    ) -> Stream:
        # Register first: almost every upload is a new recording, and the primary key tells
        # the rare retry apart in the same round trip (no lookup before each insert).
        row = await self._register(start, checked, recording_id)
        replace = row is None
        if row is None:
            try:
                existing = await self.catalog.get(recording_id)
            except Exception as exc:
                metrics.FAILURES.labels("catalog_error").inc()
                log.exception("cannot look up recording %s", recording_id)
                raise IngestUnavailable(f"recorder catalog unavailable: {exc}") from exc
            if existing is None:  # registered and gone again meanwhile: not ours to decide
                metrics.REUPLOADS.labels("busy").inc()
                raise IngestBusy(f"recording {recording_id} changed meanwhile; retry later")
            row = await self._reclaim(existing, checked)
        try:
            writer = self.store.create(row.path, row.sample_rate, replace=replace)
        except OSError as exc:
            metrics.FAILURES.labels("io_error").inc()
            metrics.RECORDINGS.labels(FAILED).inc()
            log.exception("cannot create recording file %s for call %s", row.path, row.call_id)
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
        stream = Stream(row=row, writer=writer, timed_by_source=checked.started_at is not None)
        self.active[recording_id] = stream
        log.info(
            "recording %s %s for call %s (agent %s, queue %s)",
            recording_id,
            "started over" if replace else "started",
            row.call_id,
            row.agent_id or "-",
            row.queue or "-",
            extra=stream.log_extra,
        )
        return stream

    async def _register(
        self, start: recorder_pb2.RecordingStart, checked: Start, recording_id: str
    ) -> Recording | None:
        """The new catalog row of the recording; None if the catalog has its id already (an
        upload of that recording before, or another stream's now)."""
        started_at = checked.started_at or datetime.now(UTC)
        row = Recording(
            recording_id=recording_id,
            call_id=start.call_id,
            path=recording_key(recording_id, started_at),
            duration_ms=0,
            sample_rate=checked.sample_rate,
            channels=CHANNELS,
            agent_id=start.agent_id,
            queue=start.queue,
            started_at=started_at,
            bytes=0,
            status=RECORDING,
            holds=list(checked.holds),
        )
        try:
            await self.catalog.begin(row)
        except IntegrityError:
            if checked.recording_id is None:  # an id of our own choosing: a UUID never repeats
                raise IngestUnavailable(f"recording id {recording_id} is taken") from None
            return None
        except Exception as exc:  # database unreachable or refusing writes
            metrics.FAILURES.labels("catalog_error").inc()
            log.exception("cannot register a recording for call %s", start.call_id)
            raise IngestUnavailable(f"recorder catalog unavailable: {exc}") from exc
        return row

    async def _reclaim(self, row: Recording, checked: Start) -> Recording:
        """An upload of a recording_id the catalog already has: answer with it, refuse, or
        start it over (see SUPERSEDABLE)."""
        reason = (row.failure or "").split(":", 1)[0]
        if row.status == RECORDING:
            idle = self.store.idle_s(row.path)
            if idle is not None and idle < self.takeover_idle_s:
                metrics.REUPLOADS.labels("busy").inc()
                raise IngestBusy(
                    f"recording {row.recording_id} is being stored by another stream "
                    f"(written {idle:.1f}s ago); retry later"
                )
        elif row.status == COMPLETE or (row.status == PARTIAL and reason not in SUPERSEDABLE):
            metrics.REUPLOADS.labels("already_stored").inc()
            raise AlreadyStored(row)
        elif reason not in SUPERSEDABLE:
            raise IngestRefused(f"recording {row.recording_id} was refused before: {row.failure}")
        try:
            restarted = await self.catalog.restart(
                row.recording_id, from_status=row.status, holds=list(checked.holds)
            )
        except Exception as exc:
            metrics.FAILURES.labels("catalog_error").inc()
            log.exception("cannot restart recording %s", row.recording_id)
            raise IngestUnavailable(f"recorder catalog unavailable: {exc}") from exc
        if not restarted:
            metrics.REUPLOADS.labels("busy").inc()
            raise IngestBusy(f"recording {row.recording_id} changed meanwhile; retry later")
        metrics.REUPLOADS.labels("superseded").inc()
        log.warning(
            "recording %s of call %s (%s%s) is stored again from a new upload",
            row.recording_id,
            row.call_id,
            row.status,
            f": {row.failure}" if row.failure else "",
            extra={"recording_id": row.recording_id, "call_id": row.call_id},
        )
        row.status, row.failure, row.ended_at, row.announced_at = RECORDING, None, None, None
        row.duration_ms, row.bytes, row.sha256 = 0, 0, None
        row.holds = list(checked.holds)
        return row

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
        if stream.end is not None:
            raise FrameError("after_end", f"chunk {stream.chunks}: nothing may follow RecordingEnd")
        if kind == "end":
            if chunk.end.samples != stream.writer.frames:
                raise FrameError(
                    "sample_count",
                    f"chunk {stream.chunks}: RecordingEnd says {chunk.end.samples} samples per "
                    f"side were sent, but {stream.writer.frames} arrived",
                )
            stream.end = chunk.end
            return
        if kind == "start":
            raise FrameError(
                "duplicate_start",
                f"chunk {stream.chunks}: RecordingStart may only be the first chunk",
            )
        if kind != "frames":
            raise FrameError(
                "empty_chunk", f"chunk {stream.chunks} carries neither start, frames nor end"
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
            self._owned.discard(row.recording_id)
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
        elif stream.end is None:
            status, reason, failure = (
                PARTIAL,
                "no_end",
                "no_end: the stream closed without RecordingEnd: its source stopped before "
                "the call ended (gateway restart); it holds all the audio that was sent",
            )
        else:
            status, reason, failure = COMPLETE, None, None

        row.status, row.failure = status, failure
        if stored is not None:
            row.duration_ms, row.bytes, row.sha256 = (
                stored.duration_ms,
                stored.size_bytes,
                stored.sha256,
            )
        else:
            row.duration_ms = stream.writer.duration_ms
        row.ended_at = (
            row.started_at + timedelta(milliseconds=row.duration_ms)
            if stream.timed_by_source
            else stream.ended_at
        )
        try:
            finished = await self.catalog.finish(
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
            # The row as committed, unless someone else finished it meanwhile (then the
            # announcer reads what they stored).
            await self.announcer.announce(
                row.recording_id, wait_s=wait, row=row if finished else None
            )
        return row

    async def drain(self) -> None:
        """Wait for recordings still being finalised (at shutdown, after the server stopped)."""
        while self._finishing:
            await asyncio.gather(*list(self._finishing), return_exceptions=True)
