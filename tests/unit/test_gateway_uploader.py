"""The uploader: spooled recordings go to the recorder as one Ingest stream each (start, 1 s
frames, end when complete), are deleted only after the reply, are retried with back-off while
the recorder is away (told once per outage), and what a crash left is uploaded without end.
And the switch's end-of-call cleanup never waits on the recorder."""

from __future__ import annotations

import asyncio
import builtins
import errno
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from prometheus_client import REGISTRY

from gateway.core.contracts import Outcome
from gateway.core.prompts import PromptLibrary
from gateway.core.switch import Switch
from gateway.recording import SpoolCollector, SpoolingRecorder
from gateway.spool import FLUSH_FRAMES, Spool, SpoolEntry, SpoolWriter
from gateway.uploader import Uploader
from tests.unit.gateway_rig import FakeChannel, FakeClock, FakeEvents, FakeLeg, write_prompt
from tests.unit.rpc_errors import rpc_error
from tests.unit.spool_rig import (
    FRAME,
    FakeRecorder,
    InlineDisk,
    SleepClock,
    Stream,
    Wall,
    already,
    fail,
    hang,
    stored,
)

SECOND = FLUSH_FRAMES * FRAME


def uploads(result: str) -> float:
    return (
        REGISTRY.get_sample_value("hotline_gateway_recording_uploads_total", {"result": result})
        or 0.0
    )


def failures(reason: str) -> float:
    return (
        REGISTRY.get_sample_value("hotline_gateway_recording_failures_total", {"reason": reason})
        or 0.0
    )


def tone(samples: int, hz: float, offset: int = 0) -> np.ndarray:
    t = (np.arange(samples) + offset) / 8000
    return (np.sin(2 * np.pi * hz * t) * 8000).astype(np.int16)


def record(writer: SpoolWriter, seconds: float, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Tap `seconds` of a 440 Hz caller and a 300 Hz agent, frame by frame."""
    n = round(seconds * 8000)
    left, right = tone(n, 440, offset), tone(n, 300, offset)
    for i in range(0, n, FRAME):
        writer.tap(left[i : i + FRAME], right[i : i + FRAME])
    return left, right


class Rig:
    def __init__(self, root: Path) -> None:
        self.wall = Wall()
        self.clock = SleepClock()
        self.recorder = FakeRecorder()
        self.spool = Spool(root, InlineDisk(), clock=self.wall)
        self.uploader = Uploader(
            self.spool,
            self.recorder.connect,
            workers=3,
            clock=self.clock,
            sleep=self.clock.sleep,
        )

    def open(self, call_id: str = "call-1") -> SpoolWriter:
        return SpoolingRecorder(self.spool, self.uploader).start(call_id, "agent1", "sales")

    def idle(self) -> bool:
        """Nothing being recorded, sealed or uploaded."""
        return not self.spool.live and not self.uploader.waiting

    def files(self) -> list[str]:
        return sorted(p.name for p in self.spool.root.iterdir() if p.is_file())

    async def until(self, predicate: Callable[[], object], what: str) -> None:
        """Let the uploader run (its file reads go through threads) until `predicate`; at most
        2000 short rounds."""
        for _ in range(2000):
            if predicate():
                return
            await asyncio.sleep(0.005)
        raise AssertionError(f"never: {what}")


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    made = Rig(tmp_path / "spool")
    await made.uploader.start()
    yield made
    made.recorder.release.set()
    await made.uploader.stop(grace_s=0)


async def test_a_recording_is_uploaded_whole_and_deleted_after_the_reply(rig: Rig) -> None:
    stored_before = uploads("stored")
    writer = rig.open()
    left, right = record(writer, 2.05)  # not a whole number of chunks
    await writer.finish()
    await rig.until(rig.idle, "the upload finished")

    [stream] = rig.recorder.streams
    start = stream.start
    assert (start.call_id, start.agent_id, start.queue, start.sample_rate) == (
        "call-1",
        "agent1",
        "sales",
        8000,
    )
    assert (start.left_label, start.right_label) == ("caller", "agent")
    assert start.recording_id == writer.recording_id
    assert start.started_at.ToNanoseconds() == round(rig.wall.now * 1e9)
    assert [len(f.left) // 2 for f in stream.frames] == [8000, 8000, 400]  # 1 s chunks
    got_left, got_right = stream.audio()
    assert np.array_equal(got_left, left) and np.array_equal(got_right, right)
    assert stream.end is not None and stream.end.samples == len(left)
    assert rig.files() == [] and rig.spool.size_bytes == 0
    assert uploads("stored") == stored_before + 1


async def test_the_spool_stays_until_the_recorder_replies(rig: Rig) -> None:
    rig.recorder.answers = [hang]
    writer = rig.open()
    record(writer, 1.0)
    await writer.finish()
    await rig.until(lambda: rig.recorder.streams and rig.recorder.streams[0].end, "streamed")
    for _ in range(50):
        await asyncio.sleep(0)
    assert rig.files() == sorted(f"{writer.recording_id}{s}" for s in (".end", ".json", ".pcm"))
    assert list(rig.uploader.waiting) == [writer.recording_id]
    rig.recorder.release.set()
    await rig.until(rig.idle, "uploaded")
    assert rig.files() == []


async def test_an_unreachable_recorder_is_retried_with_backoff_and_told_once(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    down = fail(grpc.StatusCode.UNAVAILABLE, "connection refused")
    rig.recorder.answers = [down] * 6
    retries_before = uploads("retry")
    writer = rig.open()
    record(writer, 0.5)
    with caplog.at_level(logging.DEBUG, logger="gateway.uploader"):
        await writer.finish()
        await rig.until(rig.idle, "uploaded once the recorder is back")

    assert rig.clock.slept == [1.0, 2.0, 4.0, 8.0, 15.0, 15.0]
    assert len(rig.recorder.streams) == 7 and uploads("retry") == retries_before + 6
    # each retry after UNAVAILABLE goes over a fresh channel, never one in gRPC's back-off
    assert rig.recorder.connects == 7
    ids = {s.start.recording_id for s in rig.recorder.streams}
    assert ids == {writer.recording_id}
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "cannot take recordings (UNAVAILABLE" in warnings[0].message
    assert sum("takes recordings again" in r.message for r in caplog.records) == 1
    assert rig.files() == []


async def test_uploads_failing_together_do_not_lengthen_the_backoff(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    before = Rig(root)  # three recordings wait in the spool when the gateway starts
    for n in range(3):
        writer = before.spool.open(f"call-{n}", "agent1", "sales", lambda entry: None)
        record(writer, 0.2)
        await writer.finish()
    rig = Rig(root)

    async def together(stream: Stream) -> BaseException:
        # every upload has started before the first fails: one round, as on a real clock
        # (the rig's sleeps move time for all workers at once, so a worker that only started
        # after the first failure's back-off would look like a new round)
        while len(rig.recorder.streams) < 3:
            await asyncio.sleep(0)
        return rpc_error(grpc.StatusCode.UNAVAILABLE)

    rig.recorder.answers = [together] * 3
    await rig.uploader.start()  # three workers, three failures in the same round
    try:
        await rig.until(rig.idle, "uploaded after one back-off")
        assert rig.clock.slept == [1.0]
        assert len(rig.recorder.streams) == 6
    finally:
        await rig.uploader.stop(grace_s=0)


async def test_a_failure_begun_before_a_success_is_no_new_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An upload that was already under way when another one succeeded, and then fails, says
    nothing new about the recorder (it was up meanwhile): retried at once, with no new
    back-off and no second "cannot take recordings" warning. Before, it started a new outage
    whenever its failure came in after the success (a matter of scheduling)."""
    root = tmp_path / "spool"
    before = Rig(root)
    for n in range(2):
        writer = before.spool.open(f"call-{n}", "agent1", "sales", lambda entry: None)
        record(writer, 0.2)
        await writer.finish()
    rig = Rig(root)

    async def together(stream: Stream) -> BaseException:
        while len(rig.recorder.streams) < 2:
            await asyncio.sleep(0)
        return rpc_error(grpc.StatusCode.UNAVAILABLE)

    async def after_the_success(stream: Stream) -> BaseException:
        # fails only once the other upload of its round was stored and the uploader recovered
        while len(rig.recorder.streams) < 4 or rig.uploader.failing is not None:
            await asyncio.sleep(0)
        return rpc_error(grpc.StatusCode.UNAVAILABLE)

    rig.recorder.answers = [together, together, after_the_success, stored]
    with caplog.at_level(logging.DEBUG, logger="gateway.uploader"):
        await rig.uploader.start()
        try:
            await rig.until(rig.idle, "both uploaded")
        finally:
            await rig.uploader.stop(grace_s=0)
    assert rig.clock.slept == [1.0]  # the first round's back-off only
    assert len(rig.recorder.streams) == 5  # 2 failed together, 1 stored, 1 failed late, 1 stored
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "cannot take recordings (UNAVAILABLE" in warnings[0].message
    assert rig.uploader.failing is None and rig.files() == []


async def test_leftovers_of_a_crash_are_uploaded_at_start_without_end(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    before = Rig(root)  # the previous run: no uploader ever ran
    sealed: list[SpoolEntry] = []
    whole = before.spool.open("call-whole", "agent1", "sales", sealed.append)
    record(whole, 1.0)
    await whole.finish()
    cut = before.spool.open("call-cut", "agent2", "support", sealed.append)
    left, right = record(cut, 2.5)  # half a second never left memory: the gateway dies here

    after = Rig(root)
    await after.uploader.start()
    try:
        await after.until(after.idle, "leftovers uploaded")
        streams = {s.start.call_id: s for s in after.recorder.streams}
        assert set(streams) == {"call-whole", "call-cut"}
        assert streams["call-whole"].end is not None
        assert streams["call-whole"].end.samples == 8000
        assert streams["call-cut"].end is None, "a cut recording never claims to be whole"
        got_left, got_right = streams["call-cut"].audio()
        assert np.array_equal(got_left, left[: 2 * SECOND])
        assert np.array_equal(got_right, right[: 2 * SECOND])
        assert streams["call-cut"].start.recording_id == cut.recording_id
        assert (streams["call-cut"].start.agent_id, streams["call-cut"].start.queue) == (
            "agent2",
            "support",
        )
        assert after.files() == []
    finally:
        await after.uploader.stop(grace_s=0)


async def test_a_lost_reply_is_followed_by_the_same_upload(rig: Rig) -> None:
    """The recorder stored it but the reply never came: the retry carries the same id and the
    recorder's `already_stored` answer ends it."""
    rig.recorder.answers = [fail(grpc.StatusCode.DEADLINE_EXCEEDED, "no reply"), already]
    again_before = uploads("already_stored")
    writer = rig.open()
    record(writer, 0.3)
    await writer.finish()
    await rig.until(rig.idle, "done")
    first, second = rig.recorder.streams
    assert first.chunks == second.chunks  # the same recording, from its first frame
    assert second.start.recording_id == writer.recording_id
    assert uploads("already_stored") == again_before + 1
    assert rig.files() == []


async def test_a_recording_the_recorder_refuses_is_set_aside(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    rig.recorder.answers = [fail(grpc.StatusCode.INVALID_ARGUMENT, "chunk 3: odd byte count")]
    rejected_before, failed_before = uploads("rejected"), failures("rejected")
    writer = rig.open()
    record(writer, 0.3)
    await writer.finish()
    await rig.until(rig.idle, "given up")
    for _ in range(50):
        await asyncio.sleep(0)
    assert len(rig.recorder.streams) == 1, "never retried"
    assert rig.files() == []
    kept = sorted(p.name for p in (rig.spool.root / "rejected").iterdir())
    assert kept == sorted(f"{writer.recording_id}{s}" for s in (".end", ".json", ".pcm"))
    assert uploads("rejected") == rejected_before + 1 and failures("rejected") == failed_before + 1
    assert "odd byte count" in caplog.text and rig.clock.slept == []


async def test_a_spool_shorter_than_its_seal_is_uploaded_as_partial(rig: Rig) -> None:
    rig.recorder.answers = [hang]
    writer = rig.open()
    left, _ = record(writer, 2.0)
    sealed: list[SpoolEntry] = []
    writer.on_sealed = sealed.append  # hold it back from the uploader for a moment
    await writer.finish()
    await rig.until(lambda: sealed, "sealed")
    with open(rig.spool.pcm_path(writer.recording_id), "r+b") as f:
        f.truncate(SECOND * 4 + 2)  # the disk lost the second half (and tore a sample)
    rig.recorder.answers = []
    rig.uploader.submit(sealed[0])
    await rig.until(rig.idle, "uploaded")
    [stream] = rig.recorder.streams
    assert stream.end is None
    assert np.array_equal(stream.audio()[0], left[:SECOND])


async def test_a_read_error_cuts_the_upload_instead_of_ending_it(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream closed normally is a whole upload to the recorder; one whose file cannot be
    read must be cancelled instead, so the recorder never keeps it as final."""
    writer = rig.open()
    record(writer, 12.0)  # more than one read
    real_open = builtins.open

    class Failing:
        def __init__(self, f: Any) -> None:
            self.f, self.name, self.reads = f, f.name, 0

        def read(self, n: int) -> bytes:
            self.reads += 1
            if self.reads == 2:
                raise OSError(errno.EIO, "Input/output error")
            return self.f.read(n)

        def close(self) -> None:
            self.f.close()

    def opener(path: Any, mode: str = "r", *a: Any, **kw: Any) -> Any:
        f = real_open(path, mode, *a, **kw)
        return Failing(f) if str(path).endswith(".pcm") and mode == "rb" else f

    monkeypatch.setattr(builtins, "open", opener)
    io_before = failures("io_error")
    await writer.finish()
    await rig.until(rig.idle, "given up")
    monkeypatch.setattr(builtins, "open", real_open)
    [stream] = rig.recorder.streams
    assert stream.cancelled and stream.end is None
    assert len(stream.frames) == 10  # the first ten seconds went, then the read failed
    assert failures("io_error") == io_before + 1
    assert (rig.spool.root / "rejected" / f"{writer.recording_id}.pcm").exists()


async def test_metrics_say_what_waits_and_for_how_long(rig: Rig) -> None:
    collector = SpoolCollector(rig.spool, rig.uploader, wall=rig.wall)

    def samples() -> dict[tuple[str, str], float]:
        return {
            (s.name, s.labels.get("state", "")): s.value
            for family in collector.collect()
            for s in family.samples
        }

    rig.recorder.answers = [hang]  # the recorder takes the upload but does not answer
    live = rig.open("call-live")
    record(live, 1.0)
    done = rig.open("call-done")
    record(done, 1.0)
    await done.finish()
    await rig.until(lambda: rig.recorder.streams, "the upload waits for its reply")
    rig.wall.now += 42
    got = samples()
    assert got[("hotline_gateway_recordings_spooled", "recording")] == 1
    assert got[("hotline_gateway_recordings_spooled", "waiting")] == 1
    assert got[("hotline_gateway_recording_spool_oldest_seconds", "")] == 42
    assert got[("hotline_gateway_recording_spool_bytes", "")] == sum(
        p.stat().st_size for p in rig.spool.root.iterdir()
    )
    rig.recorder.release.set()
    await rig.until(lambda: not rig.uploader.waiting, "uploaded")
    await live.finish()
    await rig.until(rig.idle, "all uploaded")
    assert rig.files() == []
    got = samples()
    assert got[("hotline_gateway_recordings_spooled", "waiting")] == 0
    assert got[("hotline_gateway_recording_spool_oldest_seconds", "")] == 0
    assert got[("hotline_gateway_recording_spool_bytes", "")] == 0


async def test_the_end_of_a_call_never_waits_on_the_recorder(tmp_path: Path) -> None:
    """The recorder never answers: the call still ends, its legs (and media ports) are
    released, and the recording waits in the spool."""
    rig = Rig(tmp_path / "spool")
    rig.recorder.answers = [hang]
    await rig.uploader.start()
    write_prompt(tmp_path, "welcome", frames=3, level=1000)
    channel, clock = FakeChannel(), FakeClock()
    switch = Switch(
        site="unit-site",
        events=FakeEvents(),
        clock=clock,  # type: ignore[arg-type]
        prompts=PromptLibrary(tmp_path),
        endpoints=channel,
        trunks={"fake": channel},
        recorder=SpoolingRecorder(rig.spool, rig.uploader),
        answer_timeout_s=0.2,
    )
    channel.sink = switch
    try:
        caller, call = channel.new_call()
        switch.answer(call.call_id)
        attempt = await switch.connect(call.call_id, "8001", 4.0, "agent1", "sales")
        assert attempt.outcome is Outcome.ANSWERED and isinstance(attempt.leg, FakeLeg)
        agent = attempt.leg
        clock.tick(3 * FLUSH_FRAMES)
        channel.far_end_hangs_up(agent)
        await rig.until(lambda: set(channel.did("release")) == {caller, agent}, "legs released")
        assert caller.media.closed and agent.media.closed
        assert call.call_id not in switch.registry.calls
        await rig.until(lambda: rig.recorder.streams, "upload started")
        assert rig.uploader.waiting and not rig.recorder.release.is_set()
        [stream] = rig.recorder.streams
        assert stream.start.call_id == call.call_id
        # and structurally: finishing a recording completes without awaiting anything
        other = SpoolingRecorder(rig.spool, rig.uploader).start("call-2", "agent2", "sales")
        record(other, 0.5)
        with pytest.raises(StopIteration):
            other.finish().send(None)
    finally:
        rig.recorder.release.set()
        await switch.stop()
        await rig.uploader.stop(grace_s=0)


async def test_an_upload_cancelled_under_the_uploader_is_retried(rig: Rig) -> None:
    """gRPC may cancel a call on its own (a channel closed under it): that is a failed
    attempt, not the uploader stopping."""
    rig.recorder.answers = [lambda stream: asyncio.CancelledError()]
    writer = rig.open()
    record(writer, 0.3)
    await writer.finish()
    await rig.until(rig.idle, "uploaded by the retry")
    assert len(rig.recorder.streams) == 2 and rig.files() == []
    assert rig.uploader.failing is None and rig.clock.slept == [1.0]


async def test_the_holds_of_the_call_go_with_the_upload(rig: Rig) -> None:
    writer = rig.open()
    record(writer, 1.0)
    writer.hold_started("leg-agent", "agent")
    record(writer, 2.0, offset=SECOND)
    writer.hold_ended()
    record(writer, 0.5, offset=3 * SECOND)
    writer.hold_started("leg-caller", "caller")  # still on when the call ends
    record(writer, 0.25, offset=7 * SECOND // 2)
    await writer.finish()
    await rig.until(rig.idle, "the upload finished")

    [stream] = rig.recorder.streams
    assert [(h.start_ms, h.end_ms, h.leg_id, h.held_by) for h in stream.start.holds] == [
        (1000, 3000, "leg-agent", "agent"),
        (3500, 3750, "leg-caller", "caller"),
    ]
