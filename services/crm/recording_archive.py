"""The recorder as the CRM's archive of call audio: recordings streamed back for playback
(`Recorder.Fetch` over the CRM's mTLS channel), refusals as HTTP errors."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import grpc

from crm.peer_errors import PeerError
from hotline.v1 import recorder_pb2, recorder_pb2_grpc

#: a first chunk must come this fast; the rest streams as the browser reads it.
FIRST_CHUNK_S = 10.0
_HTTP_STATUS = {
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class RecorderError(PeerError):
    def __init__(self, code: grpc.StatusCode, detail: str) -> None:
        super().__init__("recorder", code, detail, _HTTP_STATUS, FIRST_CHUNK_S)


class RecordingArchive:
    """Typed front of the `hotline.v1.Recorder` stub: recordings back out, for playback."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = recorder_pb2_grpc.RecorderStub(channel)

    async def chunks(self, recording_id: str) -> AsyncGenerator[recorder_pb2.FetchChunk, None]:
        """The recording's WAV file in chunks; RecorderError when the recorder refuses."""
        call = self._stub.Fetch(recorder_pb2.FetchRequest(recording_id=recording_id))
        try:
            async for chunk in call:
                yield chunk
        except grpc.aio.AioRpcError as exc:
            raise RecorderError(exc.code(), exc.details() or "") from None
        finally:
            call.cancel()
