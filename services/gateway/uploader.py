"""Uploads sealed recordings from the spool to the recorder (`Recorder.Ingest`).

Each spooled recording is one client stream: `start` (with the recording id the gateway chose
and the time the recording began), its audio in 1 s `frames` chunks, and `end` when the
spool is complete (the call ended normally); a spool cut by a gateway crash goes without
`end` and is stored as partial. A few uploads run at a time. The spool is deleted only after
the recorder replied, so a lost reply means a second upload, which the recorder recognises
by the recording id (it answers with what it stored, or replaces a cut upload).

While the recorder cannot take uploads, every attempt is retried with back-off (1 s doubling
to 15 s) over a fresh channel, so a recorder that comes back is used within seconds instead of
after gRPC's own reconnect back-off (up to two minutes); the outage is logged when it starts
and when it ends, not per retry. A recording the recorder refuses outright (a protocol
violation: a retry cannot fix it) is moved to the spool's `rejected/` directory and counted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import IO, Any, Protocol

import grpc
import numpy as np
from prometheus_client import Counter

from common import rpc, tracing
from common.tasks import cancel_and_wait
from gateway.spool import FAILURES, SAMPLE_BYTES, Spool, SpoolEntry, failure_reason
from hotline.v1 import recorder_pb2 as rec
from hotline.v1 import recorder_pb2_grpc

__all__ = ["UPLOADS", "GrpcRecorderLink", "RecorderLink", "Uploader"]

log = logging.getLogger(__name__)
TRACER = tracing.tracer(__name__)

UPLOADS = Counter(
    "hotline_gateway_recording_uploads",
    "Uploads of spooled recordings to the recorder, by result: stored, already_stored (a "
    "retry after a lost reply), retry (failed, will be tried again), rejected (refused for "
    "good, kept in the spool's rejected/ directory)",
    ["result"],
)
WORKERS = 3
#: samples per side in one frames chunk: 1 s (32 KB a message). Every message costs both
#: sides gRPC's per-message work, whatever its size: 1 s chunks instead of 100 ms took a third
#: off the CPU of an upload, gateway and recorder together (bench/bench_upload.py); the
#: recorder takes any length.
CHUNK_SAMPLES = 8000
#: chunks read from the spool file at a time (10 s of audio, 320 KB): each read is a hop to a
#: thread and back, so a 5-minute call takes 30 of them instead of 150 in 2 s blocks
READ_CHUNKS = 10
BACKOFF_S = (1.0, 15.0)
#: an upload slower than this (bytes of audio per second) is given up and tried again
MIN_RATE_BPS = 1_000_000
TIMEOUT_BASE_S = 30.0
#: refusals a retry of the same recording cannot fix
PERMANENT = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)


class RecorderLink(Protocol):
    """A connection to the recorder's Ingest (a gRPC channel; a fake in tests)."""

    async def ingest(
        self, chunks: AsyncIterator[rec.IngestChunk], timeout_s: float
    ) -> rec.IngestReply: ...

    async def close(self, grace_s: float | None = None) -> None: ...


class GrpcRecorderLink:
    """`Recorder.Ingest` over one gRPC channel."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.stub = recorder_pb2_grpc.RecorderStub(channel)

    @classmethod
    def connect(cls, target: str, tls: rpc.Tls | None) -> GrpcRecorderLink:
        """A fresh channel to the recorder (gRPC's own reconnect back-off can keep an old one
        unusable for minutes after an outage), as the gateway with its certificate."""
        return cls(rpc.channel(target, tls, "recorder"))

    async def ingest(
        self, chunks: AsyncIterator[rec.IngestChunk], timeout_s: float
    ) -> rec.IngestReply:
        reply: rec.IngestReply = await self.stub.Ingest(chunks, timeout=timeout_s)
        return reply

    async def close(self, grace_s: float | None = None) -> None:
        await self.channel.close(grace_s)


class _ReadFailed(Exception):
    def __init__(self, exc: OSError) -> None:
        super().__init__(str(exc))
        self.error = exc


class Uploader:
    """Sends sealed spools to the recorder, a few at a time, and deletes each once the
    recorder replied; retries with back-off while the recorder cannot take them."""

    def __init__(
        self,
        spool: Spool,
        connect: Callable[[], RecorderLink],
        *,
        workers: int = WORKERS,
        chunk_samples: int = CHUNK_SAMPLES,
        backoff_s: tuple[float, float] = BACKOFF_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.spool = spool
        self.connect = connect
        self.workers = workers
        self.chunk_samples = chunk_samples
        self.backoff_s = backoff_s
        self.clock = clock
        self.sleep = sleep
        #: recordings sealed and not yet stored by the recorder (queued or being uploaded)
        self.waiting: dict[str, SpoolEntry] = {}
        #: what the last failure was ("UNAVAILABLE", ...), None while uploads succeed
        self.failing: str | None = None
        self._failing_since = 0.0
        self._delay = backoff_s[0]
        self._resume_at = float("-inf")
        #: attempts begun so far; a failure is judged by what happened since its attempt began
        self._attempts = 0
        #: attempts begun by the time the current back-off began (they do not lengthen it)
        self._backoff_upto = 0
        #: attempts begun by the time an upload last succeeded (their failures are old news)
        self._recovered_upto = 0
        self._queue: asyncio.Queue[SpoolEntry] = asyncio.Queue()
        self._link: RecorderLink | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closing: set[asyncio.Task[None]] = set()
        self._stopped = False

    # ---- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Queue what a previous run left in the spool, then start uploading. Must complete
        before the first recording of this run is opened (a live spool has no end mark)."""
        try:
            leftovers = await asyncio.to_thread(self.spool.scan)
        except OSError as exc:
            FAILURES.labels(failure_reason(exc)).inc()
            log.error("cannot read the recording spool %s: %s", self.spool.root, exc)
            leftovers = []
        for entry in leftovers:
            self.submit(entry)
        self._tasks = [
            asyncio.create_task(self._work(), name=f"recording-upload-{i}")
            for i in range(self.workers)
        ]

    def submit(self, entry: SpoolEntry) -> None:
        """A sealed recording to upload (the spool calls it on the event loop)."""
        if self._stopped:  # sealed during shutdown: it stays on disk for the next start
            return
        self.waiting[entry.recording_id] = entry
        self._queue.put_nowait(entry)

    async def drain(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for every waiting recording to be uploaded."""
        deadline = self.clock() + timeout_s
        while self.waiting and self.failing is None and self.clock() < deadline:
            await self.sleep(0.1)
        return not self.waiting

    async def stop(self, grace_s: float = 5.0) -> None:
        """Give uploads in progress `grace_s`, then stop; what is left stays in the spool."""
        if self.waiting and self.failing is None:
            await self.drain(grace_s)
        self._stopped = True
        for task in self._tasks:
            await cancel_and_wait(task)
        if self.waiting:
            log.info(
                "%d recordings stay in the spool %s for the next start",
                len(self.waiting),
                self.spool.root,
            )
        link, self._link = self._link, None
        if link is not None:
            await link.close(None)
        for task in list(self._closing):
            await cancel_and_wait(task)

    # ---- one upload ----------------------------------------------------------------------------
    async def _work(self) -> None:
        while True:
            entry = await self._queue.get()
            await self._gate()
            started = self._attempt()
            try:
                await self._upload(entry)
            except Exception as exc:  # a bug must not stop the uploads: retry it later
                log.exception("upload of recording %s failed", entry.recording_id)
                self._failed(type(exc).__name__, str(exc), started)
                self._queue.put_nowait(entry)

    async def _gate(self) -> None:
        """Wait out the back-off after a failure."""
        while (wait := self._resume_at - self.clock()) > 0:
            await self.sleep(wait)

    def _current_link(self) -> RecorderLink:
        if self._link is None:
            self._link = self.connect()
        return self._link

    def _drop_link(self, link: RecorderLink) -> None:
        """Next attempts use a fresh channel (a channel in gRPC's reconnect back-off would
        refuse them for up to two minutes after the recorder is back)."""
        if self._link is not link:
            return
        self._link = None
        task = asyncio.create_task(link.close(TIMEOUT_BASE_S), name="recorder-link-close")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _timeout_s(self, entry: SpoolEntry) -> float:
        return TIMEOUT_BASE_S + entry.samples * SAMPLE_BYTES / MIN_RATE_BPS

    async def _upload(self, sealed: SpoolEntry) -> None:
        """Uploads one recording inside a span of its call's trace (the gRPC client passes the
        context on, so the recorder's Ingest joins that trace too)."""
        with TRACER.start_as_current_span(
            "gateway.recording.upload",
            context=tracing.extract(sealed.meta.trace),
            attributes={"hotline.recording_id": sealed.meta.recording_id},
        ):
            await self._upload_entry(sealed)

    async def _upload_entry(self, sealed: SpoolEntry) -> None:
        entry = await self._checked(sealed)
        if entry is None:
            return
        link = self._current_link()
        started = self._attempt()
        read_failed: asyncio.Future[OSError] = asyncio.get_running_loop().create_future()
        call = asyncio.ensure_future(
            link.ingest(self._chunks(entry, read_failed), self._timeout_s(entry))
        )
        try:
            either: set[asyncio.Future[Any]] = {call, read_failed}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if not call.done():  # the spool could not be read: cut the stream, never end it
                call.cancel()
                await asyncio.gather(call, return_exceptions=True)
                raise _ReadFailed(read_failed.result())
            if call.cancelled():  # the call itself was cancelled (not this task): retry
                await self._refused(
                    entry, link, grpc.StatusCode.CANCELLED, "upload cancelled", started
                )
                return
            reply = call.result()
        except asyncio.CancelledError:
            call.cancel()
            raise
        except grpc.aio.AioRpcError as exc:
            await self._refused(entry, link, exc.code(), exc.details() or "", started)
            return
        except _ReadFailed as exc:
            FAILURES.labels(failure_reason(exc.error)).inc()
            UPLOADS.labels("rejected").inc()
            log.error(
                "spooled recording %s of call %s cannot be read (%s); moved to rejected/",
                entry.recording_id,
                entry.meta.call_id,
                exc.error,
            )
            await self._forget(entry, self.spool.reject)
            return
        finally:
            read_failed.cancel()
        self._recovered()
        UPLOADS.labels("already_stored" if reply.already_stored else "stored").inc()
        log.info(
            "recording %s of call %s %s by the recorder: %s, %d ms",
            entry.recording_id,
            entry.meta.call_id,
            "was already stored" if reply.already_stored else "stored",
            reply.status,
            reply.duration_ms,
            extra={"call_id": entry.meta.call_id, "recording_id": entry.recording_id},
        )
        await self._forget(entry, self.spool.delete)

    async def _checked(self, entry: SpoolEntry) -> SpoolEntry | None:
        """The entry as its files allow: a .pcm shorter than the seal said is uploaded as
        partial, with what it holds."""
        path = self.spool.pcm_path(entry.recording_id)
        try:
            size = (await asyncio.to_thread(path.stat)).st_size
        except FileNotFoundError:
            size = 0
        except OSError as exc:
            FAILURES.labels(failure_reason(exc)).inc()
            log.error("spooled recording %s cannot be read: %s", entry.recording_id, exc)
            await self._forget(entry, self.spool.reject)
            return None
        if size // SAMPLE_BYTES >= entry.samples:
            return entry
        log.warning(
            "spooled recording %s holds %d samples, not %d; uploading it as partial",
            entry.recording_id,
            size // SAMPLE_BYTES,
            entry.samples,
        )
        return dataclasses.replace(entry, complete=False, samples=size // SAMPLE_BYTES)

    async def _chunks(
        self, entry: SpoolEntry, read_failed: asyncio.Future[OSError]
    ) -> AsyncIterator[rec.IngestChunk]:
        """The Ingest stream of one spooled recording. A read error must not end the stream
        (a closed stream is a whole upload to the recorder): it is reported through
        `read_failed` and the stream waits to be cancelled."""
        meta = entry.meta
        start = rec.RecordingStart(
            call_id=meta.call_id,
            sample_rate=meta.sample_rate,
            agent_id=meta.agent_id,
            queue=meta.queue,
            left_label="caller",
            right_label="agent",
            recording_id=meta.recording_id,
            holds=[
                rec.HoldMark(
                    start_ms=h.start_ms,
                    end_ms=h.end_ms if h.end_ms is not None else h.start_ms,
                    leg_id=h.leg_id,
                    held_by=h.held_by,
                )
                for h in meta.holds_closed(entry.samples * 1000 // meta.sample_rate).holds
            ],
        )
        start.started_at.FromNanoseconds(round(meta.started_at * 1e9))
        yield rec.IngestChunk(start=start)
        f: IO[bytes] | None = None
        try:
            remaining = entry.samples
            if remaining:
                f = await asyncio.to_thread(open, self.spool.pcm_path(meta.recording_id), "rb")
            while remaining and f is not None:
                want = min(remaining, self.chunk_samples * READ_CHUNKS)
                raw = await asyncio.to_thread(f.read, want * SAMPLE_BYTES)
                got = len(raw) // SAMPLE_BYTES
                if got == 0:
                    raise OSError(f"{f.name} ends {remaining} samples early")
                pcm = np.frombuffer(raw, dtype="<i2", count=got * 2).reshape(-1, 2)
                for i in range(0, got, self.chunk_samples):
                    part = pcm[i : i + self.chunk_samples]
                    yield rec.IngestChunk(
                        frames=rec.StereoFrames(
                            left=part[:, 0].tobytes(), right=part[:, 1].tobytes()
                        )
                    )
                remaining -= got
        except OSError as exc:
            if not read_failed.done():
                read_failed.set_result(exc)
            await asyncio.Event().wait()  # cancelled by _upload
        finally:
            if f is not None:
                f.close()
        if entry.complete:
            yield rec.IngestChunk(end=rec.RecordingEnd(samples=entry.samples))

    async def _refused(
        self,
        entry: SpoolEntry,
        link: RecorderLink,
        code: grpc.StatusCode,
        details: str,
        started: int,
    ) -> None:
        if code in PERMANENT:
            self._recovered()  # the recorder answered: it is up, this recording is the problem
            UPLOADS.labels("rejected").inc()
            FAILURES.labels("rejected").inc()
            log.error(
                "recorder refused recording %s of call %s (%s: %s); moved to rejected/",
                entry.recording_id,
                entry.meta.call_id,
                code.name,
                details,
                extra={"call_id": entry.meta.call_id, "recording_id": entry.recording_id},
            )
            await self._forget(entry, self.spool.reject)
            return
        UPLOADS.labels("retry").inc()
        if code == grpc.StatusCode.UNAVAILABLE:
            self._drop_link(link)
        self._failed(code.name, details, started)
        self._queue.put_nowait(entry)

    def _attempt(self) -> int:
        """Number the attempt beginning now (failures compare it with when things happened)."""
        self._attempts += 1
        return self._attempts

    def _failed(self, state: str, details: str, started: int) -> None:
        if started <= self._recovered_upto:
            # Begun before an upload succeeded: the recorder was up meanwhile, so this is no
            # news of an outage (it is retried at once; a new attempt that fails is).
            log.debug("upload begun before the last success failed (%s: %s)", state, details)
            return
        now = self.clock()
        if state != self.failing:
            log.warning(
                "recorder cannot take recordings (%s: %s); %d wait in the spool %s, retried "
                "with back-off up to %.0fs",
                state,
                details,
                len(self.waiting),
                self.spool.root,
                self.backoff_s[1],
            )
            if self.failing is None:
                self._failing_since = now
            self.failing = state
        else:
            log.debug("upload failed again (%s: %s)", state, details)
        # Attempts that were already running when this back-off began do not lengthen it.
        if started > self._backoff_upto:
            self._backoff_upto = self._attempts
            self._resume_at = now + self._delay
            self._delay = min(self._delay * 2, self.backoff_s[1])

    def _recovered(self) -> None:
        if self.failing is not None:
            log.info(
                "recorder takes recordings again after %.0fs (%s); %d to upload",
                self.clock() - self._failing_since,
                self.failing,
                len(self.waiting),
            )
        self.failing = None
        self._delay = self.backoff_s[0]
        self._resume_at = float("-inf")
        self._recovered_upto = self._attempts

    async def _forget(self, entry: SpoolEntry, how: Callable[[SpoolEntry], None]) -> None:
        try:
            await asyncio.to_thread(how, entry)
        except OSError as exc:
            FAILURES.labels(failure_reason(exc)).inc()
            log.error(
                "spooled recording %s could not be removed from the spool: %s (a later start "
                "uploads it again; the recorder answers with what it has)",
                entry.recording_id,
                exc,
            )
        self.waiting.pop(entry.recording_id, None)
