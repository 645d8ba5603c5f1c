"""Every event the recorder publishes, built here and nowhere else: `RecordingReady` on the
`recordings` topic, keyed by call id so it stays in order with the call's other events."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Protocol

from google.protobuf.message import Message

from common.events import Envelope
from hotline.v1 import events_pb2, recorder_pb2
from recorder.catalog import Recording

#: names the event ids of RecordingReady (uuid5 of the payload, see `ready_event_id`)
READY_NAMESPACE = uuid.UUID("0b5c1f7e-5d1e-4c55-9a43-8f2f6c1d7a21")


class Publisher(Protocol):
    """Where the events go (common.events.EventPublisher in the service)."""

    async def publish_batch(
        self, items: Sequence[tuple[Message, str, str, Mapping[str, str]]]
    ) -> Sequence[Envelope]:
        """Publish (payload, key, event id, trace context) in order; return the envelopes once
        all are on the broker."""
        ...


def recording_ready(rec: Recording) -> events_pb2.RecordingReady:
    """The RecordingReady payload of a stored recording (complete or partial: `status`)."""
    return events_pb2.RecordingReady(
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
    )


def ready_event_id(payload: events_pb2.RecordingReady) -> str:
    """The event id of a RecordingReady: derived from what it says, so every announcement of
    the same stored recording carries the same id — a retry, or the re-announcement after a
    crash between publishing and marking the row — and consumers drop the repeat. A recording
    stored again with other content (a re-upload replacing a cut one) says something else and
    gets another id."""
    return str(uuid.uuid5(READY_NAMESPACE, payload.SerializeToString(deterministic=True).hex()))


class RecorderNotifier:
    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher

    async def recordings_ready(
        self, rows: Sequence[Recording], traces: Mapping[str, Mapping[str, str]] | None = None
    ) -> Sequence[Envelope]:
        """Announce stored recordings, in order, in one pipelined batch; returns once the
        broker has every one (their envelopes, in the same order). `traces` holds the trace
        context (a carrier) of the stream that stored a recording, by recording id."""
        traces = traces or {}
        items = []
        for rec in rows:
            payload = recording_ready(rec)
            items.append(
                (payload, rec.call_id, ready_event_id(payload), traces.get(rec.recording_id, {}))
            )
        return await self.publisher.publish_batch(items)
