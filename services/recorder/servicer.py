"""The recorder's gRPC servicer: `Recorder.Ingest`, the gateway's client stream of a call's audio.

Reads the stream into `Ingest` and says what went wrong in the status: a protocol violation is
INVALID_ARGUMENT (what arrived before it is kept as a `failed` recording, and the message says
so), a catalog or disk the recorder cannot use now is UNAVAILABLE, a full disk
RESOURCE_EXHAUSTED, a file that could not be finalised INTERNAL, a recording_id another stream
is storing ABORTED (retry later), one refused before FAILED_PRECONDITION. A recording_id stored
whole before is answered at once with `already_stored`, without reading the rest.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc

from common.rpc import Context, callers
from hotline.v1 import recorder_pb2, recorder_pb2_grpc
from recorder import metrics
from recorder.catalog import FAILED, Recording
from recorder.ingest import (
    AlreadyStored,
    Ingest,
    IngestBusy,
    IngestRefused,
    IngestUnavailable,
    StartError,
    Stream,
    check_start,
)
from recorder.playback import NotPlayable, NotStored, open_playback
from recorder.wav import FrameError


class RecorderService(recorder_pb2_grpc.RecorderServicer):
    #: who may call what (enforced by common.rpc): only the gateway streams call audio.
    CALLERS = callers("hotline.v1.Recorder", {"Ingest": {"gateway"}, "Fetch": {"crm"}})

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest

    async def Ingest(
        self,
        request_iterator: AsyncIterator[recorder_pb2.IngestChunk],  # noqa: N802
        context: Context,
    ) -> recorder_pb2.IngestReply:
        ingest = self.ingest
        chunks = aiter(request_iterator)
        first = await anext(chunks, None)
        if first is None or first.WhichOneof("chunk") != "start":
            metrics.FAILURES.labels("no_start").inc()
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "first chunk must be RecordingStart"
            )
        try:
            start = check_start(first.start)
        except StartError as exc:
            metrics.FAILURES.labels("bad_start").inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        # Registering must not be cut in half by a cancel: a row without its file would stay
        # `recording` for ever. If the peer leaves meanwhile, the stream is finished as partial.
        opening = asyncio.ensure_future(ingest.open(first.start, start))
        try:
            stream = await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(ingest.abandon_opening)
            raise
        except AlreadyStored as exc:  # a retried upload whose first reply was lost
            return self._reply(exc.row, already_stored=True)
        except IngestBusy as exc:
            await context.abort(grpc.StatusCode.ABORTED, str(exc))
        except IngestRefused as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except IngestUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))

        metrics.ACTIVE_STREAMS.inc()
        try:
            try:
                async for chunk in chunks:
                    ingest.write(stream, chunk)
            except (FrameError, OSError) as exc:
                stream.failure = exc
            except asyncio.CancelledError:
                # Server shutdown (or the peer vanished mid-read): keep what arrived.
                stream.aborted = True
                ingest.finish(stream)
                raise
            stream.ended_at = datetime.now(UTC)
            try:
                row = await ingest.await_finish(stream, context.cancelled)
            except Exception as exc:  # catalog write failed; salvage reconciles the row later
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    f"recording {stream.recording_id} is on disk but the "
                    f"catalog could not be updated: {exc}",
                )
        finally:
            metrics.ACTIVE_STREAMS.dec()

        if stream.failure is not None:
            await self._refuse(stream, context)
        if row.status == FAILED:  # the file could not be finalised (disk error)
            await context.abort(
                grpc.StatusCode.INTERNAL,
                f"recording {row.recording_id} could not be stored: {row.failure}",
            )
        return self._reply(row)

    async def Fetch(
        self,
        request: recorder_pb2.FetchRequest,  # noqa: N802
        context: Context,
    ) -> AsyncIterator[recorder_pb2.FetchChunk]:
        """A stored recording's WAV file in chunks (playback for the CRM)."""
        try:
            playback = await open_playback(
                self.ingest.store, self.ingest.catalog, request.recording_id
            )
        except NotStored as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except NotPlayable as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        async for data in playback.chunks:
            yield recorder_pb2.FetchChunk(
                data=data, total_bytes=playback.size_bytes, status=playback.status
            )

    @staticmethod
    def _reply(row: Recording, already_stored: bool = False) -> recorder_pb2.IngestReply:
        return recorder_pb2.IngestReply(
            recording_id=row.recording_id,
            path=row.path,
            duration_ms=row.duration_ms,
            status=row.status,
            already_stored=already_stored,
        )

    @staticmethod
    async def _refuse(stream: Stream, context: Context) -> None:
        exc = stream.failure
        if isinstance(exc, FrameError):
            code = grpc.StatusCode.INVALID_ARGUMENT
            detail = str(exc)
        elif isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            code, detail = grpc.StatusCode.RESOURCE_EXHAUSTED, f"recording disk full: {exc}"
        else:
            code, detail = grpc.StatusCode.INTERNAL, f"cannot write recording: {exc}"
        await context.abort(
            code,
            f"{detail} (the {stream.row.duration_ms} ms received before "
            f"it are kept as failed recording {stream.recording_id})",
        )
