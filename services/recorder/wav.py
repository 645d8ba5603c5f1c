"""Stereo 16-bit PCM WAV files written while the call is still going on.

A call can last an hour, so audio goes to disk as it arrives instead of being held in memory;
the RIFF and data sizes are only known at the end and are patched into the header on close.
The header is flushed at open, so a file orphaned by a crash is always a WAV whose sizes can be
repaired from its length (`seal_orphan`).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

CHANNELS = 2
SAMPLE_WIDTH = 2
BLOCK_ALIGN = CHANNELS * SAMPLE_WIDTH
HEADER_BYTES = 44
#: the RIFF size field (36 + data) is a uint32
MAX_DATA_BYTES = 0xFFFFFFFF - (HEADER_BYTES - 8)

_HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")


class FrameError(ValueError):
    """A frames chunk the recorder cannot store; `reason` is the metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def header(sample_rate: int, data_bytes: int) -> bytes:
    """The canonical 44-byte header of a stereo 16-bit PCM WAV."""
    return _HEADER.pack(
        b"RIFF",
        HEADER_BYTES - 8 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        1,
        CHANNELS,
        sample_rate,
        sample_rate * BLOCK_ALIGN,
        BLOCK_ALIGN,
        SAMPLE_WIDTH * 8,
        b"data",
        data_bytes,
    )


def interleave(left: bytes, right: bytes) -> bytes:
    """Left/right int16 LE sample runs as interleaved stereo frames (L R L R ...).

    Raises FrameError when the two sides differ in length or are not whole 16-bit samples:
    silently padding or trimming would shift one party against the other for the rest of
    the call.
    """
    if len(left) != len(right):
        raise FrameError(
            "length_mismatch",
            f"left has {len(left)} bytes but right has {len(right)}; each side "
            "must carry the same number of samples",
        )
    if len(left) % SAMPLE_WIDTH:
        raise FrameError(
            "odd_length",
            f"odd byte count {len(left)}: samples are 16-bit little-endian, 2 bytes each",
        )
    out = np.empty(len(left), dtype="<i2")
    out[0::2] = np.frombuffer(left, dtype="<i2")
    out[1::2] = np.frombuffer(right, dtype="<i2")
    return out.tobytes()


class StereoWavWriter:
    """Appends stereo frames to a new WAV file and fixes its sizes on `close`."""

    def __init__(self, path: Path, sample_rate: int, buffer_bytes: int = 32 * 1024) -> None:
        self.path = path
        self.sample_rate = sample_rate
        self.data_bytes = 0
        self.closed = False
        # "x": a recording never overwrites another file; a small buffer keeps at most about a
        # second of audio in memory, so a crash loses little.
        self._file = open(path, "xb", buffering=buffer_bytes)  # noqa: SIM115 - closed in close()
        self._file.write(header(sample_rate, 0))
        self._file.flush()

    @property
    def frames(self) -> int:
        return self.data_bytes // BLOCK_ALIGN

    @property
    def duration_ms(self) -> int:
        return round(self.frames * 1000 / self.sample_rate)

    def write(self, left: bytes, right: bytes) -> int:
        """Append one chunk of both sides; returns the bytes added to the file."""
        data = interleave(left, right)
        if self.data_bytes + len(data) > MAX_DATA_BYTES:
            raise FrameError("too_long", "recording exceeds the 4 GiB limit of a WAV file")
        self._file.write(data)
        self.data_bytes += len(data)
        return len(data)

    def close(self, sync: bool = True) -> None:
        """Write the final sizes into the header and (by default) fsync; idempotent.

        The file is cut to the frames actually counted, so a write that failed halfway
        (disk full) cannot leave a torn frame behind the data the header announces.
        """
        if self.closed:
            return
        f = self._file
        try:
            f.flush()
            f.truncate(HEADER_BYTES + self.data_bytes)
            f.seek(0)
            f.write(header(self.sample_rate, self.data_bytes))
            f.flush()
            if sync:
                os.fsync(f.fileno())
        finally:
            self.closed = True
            f.close()


def read_format(path: Path) -> tuple[int, int]:
    """(sample_rate, data_bytes) from the header of a WAV this module wrote."""
    with open(path, "rb") as f:
        raw = f.read(HEADER_BYTES)
    if len(raw) < HEADER_BYTES:
        raise ValueError(f"{path} is shorter than a WAV header")
    fields = _HEADER.unpack(raw)
    if fields[0] != b"RIFF" or fields[2] != b"WAVE" or fields[11] != b"data":
        raise ValueError(f"{path} is not a canonical WAV file")
    return fields[7], fields[12]


def seal_orphan(path: Path, sample_rate: int) -> int:
    """Make a file abandoned mid-write (crash, kill -9) a valid WAV; returns its data bytes.

    Keeps every whole stereo frame on disk, drops a torn last frame, and rewrites the header
    (also when the crash came before the header reached the disk).
    """
    size = path.stat().st_size
    data_bytes = max(0, size - HEADER_BYTES) // BLOCK_ALIGN * BLOCK_ALIGN
    with open(path, "r+b") as f:
        f.truncate(HEADER_BYTES + data_bytes)
        f.seek(0)
        f.write(header(sample_rate, data_bytes))
        f.flush()
        os.fsync(f.fileno())
    return data_bytes
