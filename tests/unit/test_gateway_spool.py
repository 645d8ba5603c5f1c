"""The recording spool: the tap buffers and never waits on the disk, audio reaches the file
about once a second, finish seals (complete or not), disk trouble is counted and logged, and
what a crashed run left is found again."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from gateway import spool as spool_module
from gateway.spool import FLUSH_FRAMES, HoldMark, Spool, SpoolEntry, SpoolMeta, SpoolWriter
from tests.unit.spool_rig import FRAME, RID_PATTERN, HeldDisk, InlineDisk, Wall


def failures(reason: str) -> float:
    return (
        REGISTRY.get_sample_value("hotline_gateway_recording_failures_total", {"reason": reason})
        or 0.0
    )


def frame(n: int, side: int) -> np.ndarray:
    """Frame n of one side: distinct values, so order and side can be checked."""
    return (np.arange(FRAME, dtype=np.int16) + n * 7 + side * 10_000).astype(np.int16)


def pcm_of(spool: Spool, writer: SpoolWriter) -> np.ndarray:
    raw = spool.pcm_path(writer.recording_id).read_bytes()
    return np.frombuffer(raw, "<i2").reshape(-1, 2)


class Sealed:
    def __init__(self) -> None:
        self.entries: list[SpoolEntry] = []

    def __call__(self, entry: SpoolEntry) -> None:
        self.entries.append(entry)


async def settle() -> None:
    import asyncio

    for _ in range(3):
        await asyncio.sleep(0)


@pytest.fixture
def wall() -> Wall:
    return Wall()


async def test_audio_reaches_the_file_about_once_a_second(tmp_path: Path, wall: Wall) -> None:
    spool = Spool(tmp_path, InlineDisk(), clock=wall)
    parent = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    writer = spool.open("call-1", "agent1", "sales", Sealed(), trace=parent)
    assert re.match(RID_PATTERN, writer.recording_id)
    meta = json.loads(spool.meta_path(writer.recording_id).read_bytes())
    assert meta == {
        "recording_id": writer.recording_id,
        "call_id": "call-1",
        "agent_id": "agent1",
        "queue": "sales",
        "sample_rate": 8000,
        "started_at": wall.now,
        "holds": [],
        "trace": parent,  # a restarted gateway's upload still joins the call's trace
    }
    assert SpoolMeta.from_json(spool.meta_path(writer.recording_id).read_bytes()).trace == parent
    for n in range(FLUSH_FRAMES - 1):
        writer.tap(frame(n, 0), frame(n, 1))
    assert spool.pcm_path(writer.recording_id).stat().st_size == 0, "not yet a second"
    writer.tap(frame(FLUSH_FRAMES - 1, 0), frame(FLUSH_FRAMES - 1, 1))
    pcm = pcm_of(spool, writer)
    assert len(pcm) == FLUSH_FRAMES * FRAME  # one second, in one write
    assert np.array_equal(pcm[:, 0], np.concatenate([frame(n, 0) for n in range(FLUSH_FRAMES)]))
    assert np.array_equal(pcm[:, 1], np.concatenate([frame(n, 1) for n in range(FLUSH_FRAMES)]))
    for n in range(FLUSH_FRAMES + 10):
        writer.tap(frame(n, 0), frame(n, 1))
    assert len(pcm_of(spool, writer)) == 2 * FLUSH_FRAMES * FRAME
    assert spool.size_bytes == len(spool.meta_path(writer.recording_id).read_bytes()) + (
        2 * FLUSH_FRAMES * FRAME * 4
    )


async def test_the_tap_never_waits_on_a_stalled_disk(tmp_path: Path) -> None:
    disk = HeldDisk()
    spool = Spool(tmp_path, disk)
    sealed = Sealed()
    writer = spool.open("call-1", "agent1", "sales", sealed)
    for n in range(10 * FLUSH_FRAMES):  # ten seconds of call while the disk does nothing
        writer.tap(frame(n, 0), frame(n, 1))
    finish = writer.finish()
    with pytest.raises(StopIteration):  # finish completes without awaiting anything
        finish.send(None)
    assert not list(tmp_path.iterdir()) and len(disk.jobs) == 1 + 10 + 1
    disk.run()
    await settle()
    [entry] = sealed.entries
    assert entry.complete and entry.samples == 10 * FLUSH_FRAMES * FRAME
    assert len(pcm_of(spool, writer)) == entry.samples


async def test_a_disk_stalled_beyond_the_limit_cuts_the_recording(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    disk = HeldDisk()
    second = FLUSH_FRAMES * FRAME * 4
    spool = Spool(tmp_path, disk, max_pending_bytes=3 * second)  # three seconds may wait
    sealed = Sealed()
    writer = spool.open("call-1", "agent1", "sales", sealed)
    before = failures("backlog")
    for n in range(5 * FLUSH_FRAMES):
        writer.tap(frame(n, 0), frame(n, 1))
    assert writer.damaged == "backlog" and failures("backlog") == before + 1
    assert "it is kept up to here and uploaded as partial" in caplog.text
    disk.run()
    for n in range(FLUSH_FRAMES):  # the disk is back, but the recording has a hole: stays cut
        writer.tap(frame(n, 0), frame(n, 1))
    await writer.finish()
    disk.run()
    await settle()
    [entry] = sealed.entries
    assert not entry.complete and entry.samples == 3 * FLUSH_FRAMES * FRAME
    assert not spool.end_path(writer.recording_id).exists()
    assert failures("backlog") == before + 1  # counted once per recording


async def test_finish_seals_once_with_the_end_mark(tmp_path: Path, wall: Wall) -> None:
    spool = Spool(tmp_path, InlineDisk(), clock=wall)
    sealed = Sealed()
    writer = spool.open("call-1", "agent1", "sales", sealed)
    assert spool.live == {writer.recording_id: writer}
    for n in range(FLUSH_FRAMES + 7):  # a partly filled buffer at the end of the call
        writer.tap(frame(n, 0), frame(n, 1))
    wall.now += 5
    await writer.finish()
    await writer.finish()
    writer.tap(frame(0, 0), frame(0, 1))  # a late tick after the end is ignored
    await settle()
    [entry] = sealed.entries
    samples = (FLUSH_FRAMES + 7) * FRAME
    assert (entry.complete, entry.samples, entry.waiting_since) == (True, samples, wall.now)
    assert entry.meta.call_id == "call-1" and entry.recording_id == writer.recording_id
    assert json.loads(spool.end_path(writer.recording_id).read_bytes())["samples"] == samples
    assert len(pcm_of(spool, writer)) == samples
    assert spool.live == {}
    assert entry.size_bytes == spool.size_bytes == sum(p.stat().st_size for p in tmp_path.iterdir())


async def test_sides_of_different_lengths_stay_aligned(tmp_path: Path) -> None:
    spool = Spool(tmp_path, InlineDisk())
    sealed = Sealed()
    writer = spool.open("call-1", "", "", sealed)
    writer.tap(frame(0, 0), frame(0, 1)[:100])
    writer.tap(frame(1, 0), frame(1, 1))
    await writer.finish()
    await settle()
    pcm = pcm_of(spool, writer)
    assert len(pcm) == 2 * FRAME
    assert np.array_equal(pcm[FRAME:, 1], frame(1, 1)), "the next frame is not shifted"
    assert not pcm[100:FRAME, 1].any()


async def test_a_full_disk_is_counted_logged_and_the_recording_kept_as_partial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path, InlineDisk())
    sealed = Sealed()
    writer = spool.open("call-9", "agent1", "sales", sealed)
    for n in range(2 * FLUSH_FRAMES):
        writer.tap(frame(n, 0), frame(n, 1))
    real_write = os.write
    calls: list[int] = []

    def half_then_full(fd: int, data: bytes) -> int:
        calls.append(len(data))
        if len(calls) == 1:  # part of a write lands, mid-sample, then the disk is full
            return real_write(fd, bytes(data)[:6])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool_module.os, "write", half_then_full)
    before = failures("disk_full")
    with caplog.at_level(logging.ERROR, logger="gateway.spool"):
        for n in range(FLUSH_FRAMES):
            writer.tap(frame(n, 0), frame(n, 1))
    monkeypatch.setattr(spool_module.os, "write", real_write)
    assert failures("disk_full") == before + 1
    assert writer.damaged == "disk_full"
    assert "No space left on device" in caplog.text and "call-9" in caplog.text
    await writer.finish()
    await settle()
    [entry] = sealed.entries
    # the two seconds before the failure are kept; the torn sample is trimmed
    assert (entry.complete, entry.samples) == (False, 2 * FLUSH_FRAMES * FRAME + 1)
    assert spool.pcm_path(writer.recording_id).stat().st_size == entry.samples * 4


async def test_a_disk_full_at_the_start_loses_the_recording_loudly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def full(self: Spool, path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Spool, "write_atomic", full)
    spool = Spool(tmp_path, InlineDisk())
    sealed = Sealed()
    before = failures("disk_full")
    writer = spool.open("call-1", "agent1", "sales", sealed)
    for n in range(2 * FLUSH_FRAMES):
        writer.tap(frame(n, 0), frame(n, 1))
    await writer.finish()
    await settle()
    assert failures("disk_full") == before + 1
    assert "this recording is lost" in caplog.text
    assert sealed.entries == [] and spool.live == {} and spool.size_bytes == 0
    assert list(tmp_path.iterdir()) == []


async def test_what_a_crashed_run_left_is_found_again(tmp_path: Path, wall: Wall) -> None:
    old = Spool(tmp_path, InlineDisk(), clock=wall)
    done = old.open("call-done", "agent1", "sales", Sealed())
    for n in range(FLUSH_FRAMES):
        done.tap(frame(n, 0), frame(n, 1))
    await done.finish()
    cut = old.open("call-cut", "agent2", "support", Sealed())
    for n in range(2 * FLUSH_FRAMES + 20):  # the last 20 frames were only in memory
        cut.tap(frame(n, 0), frame(n, 1))
    with open(old.pcm_path(cut.recording_id), "ab") as f:
        f.write(b"\x01\x02")  # torn by the crash mid-sample
    (tmp_path / "junk.json").write_text("{not json")
    (tmp_path / "0000.pcm").write_bytes(b"\x00" * 64)  # audio whose metadata never made it
    (tmp_path / f"{cut.recording_id}.end.tmp").write_text("{")
    before = failures("corrupt_spool")
    # the gateway is killed here; a new run opens the same spool

    new = Spool(tmp_path, InlineDisk(), clock=wall)
    entries = {e.meta.call_id: e for e in new.scan()}

    assert set(entries) == {"call-done", "call-cut"}
    assert entries["call-done"].complete and entries["call-done"].samples == FLUSH_FRAMES * FRAME
    assert not entries["call-cut"].complete
    assert entries["call-cut"].samples == 2 * FLUSH_FRAMES * FRAME
    assert (entries["call-cut"].meta.agent_id, entries["call-cut"].meta.queue) == (
        "agent2",
        "support",
    )
    assert failures("corrupt_spool") == before + 2
    assert sorted(p.name for p in (tmp_path / "rejected").iterdir()) == ["0000.pcm", "junk.json"]
    assert not list(tmp_path.glob("*.tmp"))
    assert new.size_bytes == sum(e.size_bytes for e in entries.values())

    new.delete(entries["call-done"])
    new.reject(entries["call-cut"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rejected"]
    assert new.size_bytes == 0
    assert {p.suffix for p in (tmp_path / "rejected").iterdir()} == {".json", ".pcm"}


async def test_hold_marks_are_kept_in_the_metadata_and_survive_a_crash(
    tmp_path: Path, wall: Wall
) -> None:
    spool = Spool(tmp_path, InlineDisk(), clock=wall)
    sealed = Sealed()
    writer = spool.open("call-1", "agent1", "sales", sealed)
    for n in range(50):  # 1 s of talk
        writer.tap(frame(n, 0), frame(n, 1))
    writer.hold_started("leg-agent", "agent")
    writer.hold_started("leg-caller", "caller")  # already held: not a second hold
    for n in range(25):  # 0.5 s on hold
        writer.tap(frame(n, 0), frame(n, 1))
    writer.hold_ended()
    writer.hold_ended()  # no hold on: nothing
    for n in range(10):
        writer.tap(frame(n, 0), frame(n, 1))
    writer.hold_started("leg-caller", "caller")  # still on when the gateway dies
    for n in range(35):  # 15 frames to the second flush, 20 only in memory
        writer.tap(frame(n, 0), frame(n, 1))

    on_disk = SpoolMeta.from_json(spool.meta_path(writer.recording_id).read_bytes())
    assert on_disk.holds == (
        HoldMark(1000, 1500, "leg-agent", "agent"),
        HoldMark(1700, None, "leg-caller", "caller"),
    )
    assert SpoolMeta.from_json(on_disk.to_json()) == on_disk
    assert spool.size_bytes == sum(p.stat().st_size for p in tmp_path.iterdir())
    # the crash: 120 frames tapped, the last 20 only in memory; the open hold ends where
    # the .pcm ends (2 s), never beyond
    [entry] = Spool(tmp_path, InlineDisk(), clock=wall).scan()
    assert entry.samples == 2 * FLUSH_FRAMES * FRAME
    assert entry.meta.holds == (
        HoldMark(1000, 1500, "leg-agent", "agent"),
        HoldMark(1700, 2000, "leg-caller", "caller"),
    )
    assert entry.meta.holds_closed(1600).holds == (HoldMark(1000, 1500, "leg-agent", "agent"),)


async def test_a_hold_still_on_at_the_end_is_closed_at_the_end(tmp_path: Path) -> None:
    spool = Spool(tmp_path, InlineDisk())
    sealed = Sealed()
    writer = spool.open("call-1", "", "", sealed)
    for n in range(20):
        writer.tap(frame(n, 0), frame(n, 1))
    writer.hold_started("leg-a", "agent")
    for n in range(30):
        writer.tap(frame(n, 0), frame(n, 1))
    await writer.finish()
    writer.hold_started("leg-a", "agent")  # after the end: ignored
    await settle()
    [entry] = sealed.entries
    assert entry.meta.holds == (HoldMark(400, 1000, "leg-a", "agent"),)
    stored = SpoolMeta.from_json(spool.meta_path(writer.recording_id).read_bytes())
    assert stored.holds == entry.meta.holds


@pytest.mark.parametrize(
    "holds",
    [[{"start_ms": -1, "end_ms": 5}], [{"start_ms": 10, "end_ms": 5}], [{"end_ms": 5}]],
)
def test_bad_hold_marks_make_the_metadata_unreadable(holds: list[dict[str, int]]) -> None:
    meta = SpoolMeta("0" * 8 + "-0000-0000-0000-" + "0" * 12, "call-1", "", "", 8000, 1.0)
    data = json.loads(meta.to_json())
    data["holds"] = holds
    with pytest.raises(ValueError, match="not a spool metadata file"):
        SpoolMeta.from_json(json.dumps(data).encode())


def per_frame_pcm(pairs: list[tuple[object, object]]) -> bytes:
    """The spool's stereo file the way the tap converted every frame pair as it came (the
    reference for the tap that converts a second of frames at once)."""
    out = bytearray()
    for left, right in pairs:
        a = np.asarray(left, dtype="<i2").reshape(-1)
        b = np.asarray(right, dtype="<i2").reshape(-1)
        if len(a) != len(b):
            n = max(len(a), len(b))
            a, b = np.pad(a, (0, n - len(a))), np.pad(b, (0, n - len(b)))
        stereo = np.empty(2 * len(a), dtype="<i2")
        stereo[0::2], stereo[1::2] = a, b
        out += stereo.tobytes()
    return bytes(out)


def odd_frames(n: int) -> tuple[object, object]:
    """Frame pair n of a stream with every kind of frame the tap accepts."""
    rng = np.random.default_rng(n)
    full = rng.integers(-32768, 32767, FRAME).astype(np.int16)
    kind = n % 9
    if kind == 1:
        return full, full[: 40 + n % 100]  # a short side
    if kind == 2:
        return full[::-1], np.zeros(FRAME, np.int16)[::2]  # strided, short
    if kind == 3:
        return full.astype(">i2"), full  # byte-swapped
    if kind == 4:
        return full.astype(np.uint8), full  # another integer type
    if kind == 5:
        return (full / 3).astype(np.float64), full  # float samples: cast, not scaled
    if kind == 6:
        return full.reshape(8, 20), full.tolist()  # 2-D, a plain list
    return full, frame(n, 1)


@pytest.mark.parametrize("kinds", ["int16", "mixed"])
async def test_batched_tap_writes_what_per_frame_conversion_wrote(
    tmp_path: Path, kinds: str
) -> None:
    spool = Spool(tmp_path, InlineDisk())
    sealed = Sealed()
    writer = spool.open("call-1", "", "", sealed)
    pairs: list[tuple[object, object]] = []
    for n in range(3 * FLUSH_FRAMES + 11):
        pair = odd_frames(n) if kinds == "mixed" else (frame(n, 0), frame(n, 1))
        pairs.append(pair)
        writer.tap(*pair)  # type: ignore[arg-type]
    await writer.finish()
    await settle()
    raw = spool.pcm_path(writer.recording_id).read_bytes()
    assert raw == per_frame_pcm(pairs)
    [entry] = sealed.entries
    assert entry.complete and entry.samples * 4 == len(raw)


async def test_a_frame_that_is_not_audio_cuts_the_recording_at_its_second(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path, InlineDisk())
    sealed = Sealed()
    writer = spool.open("call-1", "", "", sealed)
    before = failures("tap_error")
    for n in range(FLUSH_FRAMES + 5):
        writer.tap(frame(n, 0), frame(n, 1))
    writer.tap(object(), frame(0, 1))  # type: ignore[arg-type]
    for n in range(2 * FLUSH_FRAMES):
        writer.tap(frame(n, 0), frame(n, 1))
    assert writer.damaged == "tap_error" and failures("tap_error") == before + 1
    await writer.finish()
    await settle()
    [entry] = sealed.entries
    assert not entry.complete and entry.samples == FLUSH_FRAMES * FRAME  # the whole seconds
    expected = per_frame_pcm([(frame(n, 0), frame(n, 1)) for n in range(FLUSH_FRAMES)])
    assert spool.pcm_path(writer.recording_id).read_bytes() == expected


async def test_hold_marks_count_the_frames_not_yet_flushed(tmp_path: Path) -> None:
    spool = Spool(tmp_path, InlineDisk())
    writer = spool.open("call-1", "", "", Sealed())
    for n in range(FLUSH_FRAMES + 10):
        writer.tap(frame(n, 0), frame(n, 1)[:80])
    writer.hold_started("leg-a", "agent")
    assert writer.meta.holds == (HoldMark(1200, None, "leg-a", "agent"),)


# ---- durability: what reaches the disk, and in which order ---------------------------------


class DiskLog:
    """os.fsync and os.replace of the spool, recorded by what they touched."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
        self.root, self.ops = root, []
        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd: int) -> None:
            target = os.readlink(f"/proc/self/fd/{fd}")
            self.ops.append(("fsync", "dir" if target == str(root) else Path(target).suffix))
            real_fsync(fd)

        def replace(src: str, dst: str) -> None:
            self.ops.append(("rename", Path(dst).suffix))
            real_replace(src, dst)

        monkeypatch.setattr(spool_module.os, "fsync", fsync)
        monkeypatch.setattr(spool_module.os, "replace", replace)


async def test_a_recording_is_durable_before_it_is_announced_as_sealed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = DiskLog(monkeypatch, tmp_path)
    spool = Spool(tmp_path, InlineDisk())
    sealed = Sealed()
    writer = spool.open("call-1", "agent1", "sales", sealed)
    # the metadata: whole (written, synced, then renamed into place) and its name durable
    assert disk.ops == [("fsync", ".tmp"), ("rename", ".json"), ("fsync", "dir")]
    for n in range(FLUSH_FRAMES + 3):
        writer.tap(frame(n, 0), frame(n, 1))
    disk.ops.clear()
    await writer.finish()
    # the audio is synced before the end mark exists, and the end mark before the seal
    assert disk.ops == [("fsync", ".pcm"), ("fsync", ".tmp"), ("rename", ".end"), ("fsync", "dir")]
    await settle()
    [entry] = sealed.entries
    assert entry.complete and entry.samples == (FLUSH_FRAMES + 3) * FRAME


async def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path, InlineDisk())
    writer = spool.open("call-1", "agent1", "sales", Sealed())
    before = spool.meta_path(writer.recording_id).read_bytes()

    def full(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(spool_module.os, "fsync", full)
    writer.hold_started("leg-1", "agent")  # its metadata rewrite fails: the marks are lost
    assert spool.meta_path(writer.recording_id).read_bytes() == before
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".pcm"]


async def test_a_spool_directory_removed_while_running_is_made_again(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    spool = Spool(root, InlineDisk())
    first = Sealed()
    writer = spool.open("call-1", "", "", first)
    await writer.finish()
    await settle()
    spool.delete(first.entries[0])
    os.rmdir(root)  # by hand, between two calls
    second = Sealed()
    writer = spool.open("call-2", "", "", second)
    for n in range(FLUSH_FRAMES):
        writer.tap(frame(n, 0), frame(n, 1))
    await writer.finish()
    await settle()
    [entry] = second.entries
    assert entry.complete and entry.samples == FLUSH_FRAMES * FRAME
    assert sorted(p.suffix for p in root.iterdir()) == [".end", ".json", ".pcm"]
    spool.delete(entry)
    assert list(root.iterdir()) == [] and spool.size_bytes == 0
