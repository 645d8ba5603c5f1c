"""Where recordings live: the key layout and the store that turns a stream into a stored file.

Everything outside this module names a recording by its *key* (`YYYY/MM/DD/<id>.wav`, the
UTC start date), never by a filesystem path, so the catalog, the events and the reply stay
valid when the store moves to another disk or to an object store. `RecordingStore` is the
seam for such backends; `LocalRecordingStore` keeps files under `var/recordings/`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from recorder.settings import RecorderSettings
from recorder.wav import BLOCK_ALIGN, StereoWavWriter, read_format, seal_orphan

_KEY = re.compile(
    r"^\d{4}/\d{2}/\d{2}/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-"
    r"[0-9a-f]{12}\.wav$"
)
PART_SUFFIX = ".part"


def recording_key(recording_id: str, started_at: datetime) -> str:
    """The key of a recording: its UTC start date as folders, then `<recording_id>.wav`."""
    day = started_at.astimezone(UTC)
    return f"{day:%Y/%m/%d}/{recording_id}.wav"


@dataclass(frozen=True)
class StoredRecording:
    """A recording as it ended up in the store."""

    key: str
    size_bytes: int
    sha256: str
    frames: int
    sample_rate: int

    @property
    def duration_ms(self) -> int:
        return round(self.frames * 1000 / self.sample_rate)


class RecordingStore(ABC):
    """A place recordings are written to while streaming and published to when complete."""

    @abstractmethod
    def create(self, key: str, sample_rate: int, *, replace: bool = False) -> StereoWavWriter:
        """Start writing a new recording; it stays invisible under `key` until `commit`.

        With `replace`, an unfinished earlier write of `key` is discarded (a re-upload of the
        same recording starts over); a committed file stays visible until the new commit
        replaces it.
        """

    @abstractmethod
    def idle_s(self, key: str) -> float | None:
        """Seconds since the unfinished write of `key` last grew; None when there is none."""

    @abstractmethod
    async def commit(self, key: str, writer: StereoWavWriter) -> StoredRecording:
        """Finalise the file and make it visible under `key` in one atomic step."""

    @abstractmethod
    def open_committed(self, key: str) -> BinaryIO:
        """The committed file of `key` for reading (playback); FileNotFoundError if none."""

    @abstractmethod
    async def salvage(
        self, key: str, sample_rate: int, stale_after_s: float
    ) -> StoredRecording | None:
        """Commit a recording whose writer died (crash), if this store holds it.

        Returns None when the store has no trace of `key` or its staging file was written to
        within `stale_after_s` (a live writer elsewhere may still own it).
        """


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    """Persist a rename: the directory entry must reach the disk, not only the data."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalRecordingStore(RecordingStore):
    """Recordings as WAV files on a local (or mounted) filesystem under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def from_settings(cls, settings: RecorderSettings) -> LocalRecordingStore:
        return cls(settings.recordings_dir)

    def locate(self, key: str) -> Path:
        """The file of a committed recording; rejects anything that is not a recording key."""
        if not _KEY.match(key):
            raise ValueError(f"{key!r} is not a recording key (YYYY/MM/DD/<uuid>.wav)")
        return self.root / key

    def staging(self, key: str) -> Path:
        """The `.part` file a recording is written to until it is committed."""
        final = self.locate(key)
        return final.with_name(final.name + PART_SUFFIX)

    def create(self, key: str, sample_rate: int, *, replace: bool = False) -> StereoWavWriter:
        part = self.staging(key)
        part.parent.mkdir(parents=True, exist_ok=True)
        if replace:
            part.unlink(missing_ok=True)
        return StereoWavWriter(part, sample_rate)

    def open_committed(self, key: str) -> BinaryIO:
        return self.locate(key).open("rb")

    def idle_s(self, key: str) -> float | None:
        try:
            return max(0.0, time.time() - self.staging(key).stat().st_mtime)
        except FileNotFoundError:
            return None

    def _publish(self, key: str) -> StoredRecording:
        part, final = self.staging(key), self.locate(key)
        os.replace(part, final)
        _fsync_dir(final.parent)
        return self._describe(key, final)

    def _describe(self, key: str, final: Path) -> StoredRecording:
        sample_rate, data_bytes = read_format(final)
        return StoredRecording(
            key=key,
            size_bytes=final.stat().st_size,
            sha256=_sha256(final),
            frames=data_bytes // BLOCK_ALIGN,
            sample_rate=sample_rate,
        )

    def _commit(self, key: str, writer: StereoWavWriter) -> StoredRecording:
        writer.close()
        return self._publish(key)

    async def commit(self, key: str, writer: StereoWavWriter) -> StoredRecording:
        # fsync, rename and hashing block on the disk: keep them off the event loop.
        return await asyncio.to_thread(self._commit, key, writer)

    def _salvage(self, key: str, sample_rate: int, stale_after_s: float) -> StoredRecording | None:
        part, final = self.staging(key), self.locate(key)
        try:
            age = time.time() - part.stat().st_mtime
        except FileNotFoundError:
            # Crashed after the rename but before the catalog heard of it: already whole.
            return self._describe(key, final) if final.exists() else None
        if age < stale_after_s:
            return None
        seal_orphan(part, sample_rate)
        return self._publish(key)

    async def salvage(
        self, key: str, sample_rate: int, stale_after_s: float
    ) -> StoredRecording | None:
        return await asyncio.to_thread(self._salvage, key, sample_rate, stale_after_s)
