"""The local recording store: key layout, atomic commit, and salvage of orphaned files."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
import wave
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from recorder.storage import LocalRecordingStore, recording_key

RATE = 8000


def new_key(started: datetime | None = None) -> str:
    return recording_key(str(uuid.uuid4()), started or datetime.now(UTC))


def test_key_is_the_utc_start_date() -> None:
    rid = "0b4c2f7e-8a1d-4a57-9d5e-2f1e8d1c3b9a"
    # 01:30 in UTC+8 on 1 March is still 28 February in UTC
    started = datetime(2024, 3, 1, 1, 30, tzinfo=timezone(timedelta(hours=8)))
    assert recording_key(rid, started) == f"2024/02/29/{rid}.wav"


@pytest.mark.parametrize(
    "key",
    [
        "../etc/passwd",
        "/abs/2024/01/01/x.wav",
        "2024/01/01/../../secret.wav",
        "2024/01/01/not-a-uuid.wav",
    ],
)
def test_locate_refuses_anything_but_a_recording_key(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError):
        LocalRecordingStore(tmp_path).locate(key)


async def test_commit_publishes_atomically(tmp_path: Path) -> None:
    store = LocalRecordingStore(tmp_path)
    key = new_key()
    writer = store.create(key, RATE)
    writer.write(b"\x01\x00" * 800, b"\x02\x00" * 800)
    assert store.staging(key).exists() and not store.locate(key).exists()

    stored = await store.commit(key, writer)

    final = store.locate(key)
    assert final.exists() and not store.staging(key).exists()
    assert final.parent.relative_to(tmp_path).as_posix() == key.rsplit("/", 1)[0]
    assert stored.key == key and stored.frames == 800 and stored.duration_ms == 100
    assert stored.size_bytes == final.stat().st_size == 44 + 3200
    assert stored.sha256 == hashlib.sha256(final.read_bytes()).hexdigest()
    with wave.open(str(final), "rb") as w:
        assert (w.getnchannels(), w.getframerate(), w.getnframes()) == (2, RATE, 800)


async def test_salvage_repairs_an_idle_orphan(tmp_path: Path) -> None:
    store = LocalRecordingStore(tmp_path)
    key = new_key()
    writer = store.create(key, RATE)
    writer.write(b"\x01\x00" * 8000, b"\x00\x00" * 8000)
    writer._file.flush()  # what reached the disk before the crash; close() never runs
    part = store.staging(key)

    assert await store.salvage(key, RATE, stale_after_s=60) is None  # still looks live
    old = time.time() - 120
    os.utime(part, (old, old))

    stored = await store.salvage(key, RATE, stale_after_s=60)

    assert stored is not None and stored.frames == 8000 and stored.duration_ms == 1000
    with wave.open(str(store.locate(key)), "rb") as w:
        assert w.getnframes() == 8000
    assert not part.exists()


async def test_salvage_of_an_already_committed_file_describes_it(tmp_path: Path) -> None:
    store = LocalRecordingStore(tmp_path)
    key = new_key()
    writer = store.create(key, RATE)
    writer.write(b"\x01\x00" * 80, b"\x00\x00" * 80)
    committed = await store.commit(key, writer)
    assert await store.salvage(key, RATE, stale_after_s=60) == committed


async def test_salvage_of_an_unknown_key_is_none(tmp_path: Path) -> None:
    assert await LocalRecordingStore(tmp_path).salvage(new_key(), RATE, 0) is None
