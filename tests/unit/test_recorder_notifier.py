"""The recorder's notifier: RecordingReady lands in the envelope on `recordings`, keyed by the
call, with every field of the catalog row the consumers need."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.message import Message

from common.events import TOPIC_OF, Envelope, envelope, payload_of
from hotline.v1 import events_pb2, recorder_pb2
from recorder.catalog import PARTIAL, Recording
from recorder.notifier import RecorderNotifier


class EnvelopingPublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Envelope]] = []

    async def publish(self, payload: Message, key: str, event_id: str | None = None) -> Envelope:
        env = envelope(payload, key, "unit-site", "recorder", event_id)
        self.sent.append((TOPIC_OF[env.type], env))
        return env


async def test_recording_ready() -> None:
    rec = Recording(
        recording_id="r-1",
        call_id="c-9",
        path="2025/01/02/r-1.wav",
        duration_ms=61_020,
        sample_rate=8000,
        channels=2,
        agent_id="agent3",
        queue="support",
        started_at=datetime(2025, 1, 2, tzinfo=UTC),
        bytes=976_364,
        status=PARTIAL,
        holds=[{"start_ms": 1200, "end_ms": 9800, "leg_id": "leg-2", "held_by": "agent"}],
    )
    pub = EnvelopingPublisher()
    returned = await RecorderNotifier(pub).recording_ready(rec)
    [(topic, env)] = pub.sent
    assert returned is env
    assert (topic, env.type, env.key, env.source) == (
        "recordings",
        "RecordingReady",
        "c-9",
        "recorder",
    )
    assert payload_of(env) == events_pb2.RecordingReady(
        recording_id="r-1",
        call_id="c-9",
        path="2025/01/02/r-1.wav",
        duration_ms=61_020,
        channels=2,
        sample_rate=8000,
        agent_id="agent3",
        queue="support",
        status="partial",
        holds=[recorder_pb2.HoldMark(start_ms=1200, end_ms=9800, leg_id="leg-2", held_by="agent")],
    )
