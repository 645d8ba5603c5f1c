"""`check_start`: what a RecordingStart must say, and which of its times the recorder believes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hotline.v1 import recorder_pb2
from recorder.ingest import StartError, check_start

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
RID = "3f0c2a4e-9b1d-4c7e-8f00-0123456789ab"


def start(**fields: object) -> recorder_pb2.RecordingStart:
    msg = recorder_pb2.RecordingStart(call_id="c-1", sample_rate=8000)
    for name, value in fields.items():
        if name == "started_at":
            msg.started_at.FromDatetime(value)  # type: ignore[arg-type]
        else:
            setattr(msg, name, value)
    return msg


def test_a_live_stream_gets_its_id_and_time_from_the_recorder() -> None:
    checked = check_start(start(sample_rate=0), NOW)
    assert (checked.call_id, checked.sample_rate) == ("c-1", 8000)
    assert checked.recording_id is None and checked.started_at is None


def test_an_upload_keeps_the_gateways_id_and_start() -> None:
    then = NOW - timedelta(hours=5)
    checked = check_start(start(recording_id=RID, started_at=then), NOW)
    assert (checked.recording_id, checked.started_at) == (RID, then)


def test_a_start_far_in_the_future_is_filed_under_the_recorders_clock() -> None:
    assert check_start(start(started_at=NOW + timedelta(hours=2)), NOW).started_at == NOW
    near = NOW + timedelta(seconds=30)  # ordinary skew between two hosts is believed
    assert check_start(start(started_at=near), NOW).started_at == near


@pytest.mark.parametrize(
    "bad", [RID.upper(), RID[:-1], "not-a-uuid", RID + "0", "2025/06/01/" + RID], ids=repr
)
def test_recording_id_must_be_a_lowercase_uuid(bad: str) -> None:
    with pytest.raises(StartError, match="recording_id .* is not a lowercase UUID"):
        check_start(start(recording_id=bad), NOW)


def test_call_id_and_rate_are_checked() -> None:
    with pytest.raises(StartError, match="call_id is required"):
        check_start(start(call_id=""), NOW)
    with pytest.raises(StartError, match="sample_rate 16000 is not supported"):
        check_start(start(sample_rate=16000), NOW)
