"""The recorder's notifier: RecordingReady lands in the envelope on `recordings`, keyed by the
call, with every field of the catalog row the consumers need, and an event id that names what
it says (the same on every announcement of the same stored recording)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from google.protobuf.message import Message

from common.events import TOPIC_OF, Envelope, envelope, payload_of
from hotline.v1 import events_pb2, recorder_pb2
from recorder.catalog import PARTIAL, Recording
from recorder.notifier import RecorderNotifier, ready_event_id, recording_ready


class EnvelopingPublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Envelope, Mapping[str, str]]] = []

    async def publish_batch(
        self, items: Sequence[tuple[Message, str, str, Mapping[str, str]]]
    ) -> list[Envelope]:
        envs = []
        for payload, key, event_id, carrier in items:
            env = envelope(payload, key, "unit-site", "recorder", event_id)
            self.sent.append((TOPIC_OF[env.type], env, carrier))
            envs.append(env)
        return envs


def a_recording(**fields: object) -> Recording:
    values: dict[str, object] = dict(
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
    values.update(fields)
    return Recording(**values)


async def test_recording_ready() -> None:
    rec = a_recording()
    pub = EnvelopingPublisher()
    trace = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    [returned] = await RecorderNotifier(pub).recordings_ready([rec], {"r-1": trace})
    [(topic, env, carrier)] = pub.sent
    assert returned is env and carrier == trace
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


async def test_a_batch_goes_out_in_order_with_one_publish() -> None:
    rows = [a_recording(recording_id=f"r-{i}", call_id=f"c-{i}") for i in range(3)]
    pub = EnvelopingPublisher()
    envs = await RecorderNotifier(pub).recordings_ready(rows)
    assert [env.recording_ready.recording_id for env in envs] == ["r-0", "r-1", "r-2"]
    assert [env.key for _, env, _ in pub.sent] == ["c-0", "c-1", "c-2"]
    assert [carrier for _, _, carrier in pub.sent] == [{}, {}, {}]


async def test_the_event_id_names_what_the_announcement_says() -> None:
    """Announcing the same stored recording again (a retry, a restart after a crash) repeats
    its event id, so consumers drop the repeat; a recording stored again with other content
    is a new event."""
    rec = a_recording()
    pub = EnvelopingPublisher()
    first = (await RecorderNotifier(pub).recordings_ready([rec]))[0]
    again = (await RecorderNotifier(pub).recordings_ready([a_recording()]))[0]
    uuid.UUID(first.event_id)
    assert again.event_id == first.event_id == ready_event_id(recording_ready(rec))

    replaced = [
        a_recording(status="complete"),
        a_recording(duration_ms=61_040),
        a_recording(holds=[]),
        a_recording(recording_id="r-2"),
    ]
    ids = {ready_event_id(recording_ready(r)) for r in replaced}
    assert len(ids) == len(replaced) and first.event_id not in ids
