"""Every event the recorder publishes, built here and nowhere else: `RecordingReady` on the
`recordings` topic, keyed by call id so it stays in order with the call's other events."""

from __future__ import annotations

from common.events import Envelope, Publisher
from hotline.v1 import events_pb2, recorder_pb2
from recorder.catalog import Recording


class RecorderNotifier:
    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher

    async def recording_ready(self, rec: Recording) -> Envelope:
        """A recording is stored and catalogued (complete or partial, said in `status`); returns
        the envelope."""
        return await self.publisher.publish(
            events_pb2.RecordingReady(
                recording_id=rec.recording_id,
                call_id=rec.call_id,
                path=rec.path,
                duration_ms=rec.duration_ms,
                channels=rec.channels,
                sample_rate=rec.sample_rate,
                agent_id=rec.agent_id,
                queue=rec.queue,
                status=rec.status,
                holds=[recorder_pb2.HoldMark(**mark) for mark in rec.holds or []],
            ),
            key=rec.call_id,
        )
