"""The streaming WAV writer: header fields, sizes, channel order, and crash repair.

Files are read back with the stdlib `wave` module (an independent parser) and numpy.
"""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from recorder.wav import (
    HEADER_BYTES,
    FrameError,
    StereoWavWriter,
    interleave,
    read_format,
    seal_orphan,
)

RATE = 8000


def pcm(values: np.ndarray) -> bytes:
    return values.astype("<i2").tobytes()


def read_back(path: Path) -> tuple[wave._wave_params, np.ndarray]:
    with wave.open(str(path), "rb") as w:
        params = w.getparams()
        frames = np.frombuffer(w.readframes(params.nframes), dtype="<i2").reshape(-1, 2)
    return params, frames


def test_header_sizes_and_channel_order(tmp_path: Path) -> None:
    path = tmp_path / "call.wav"
    writer = StereoWavWriter(path, RATE)
    left = np.arange(0, 1600, dtype=np.int16)  # 0.2 s, caller ramps up
    right = -np.arange(0, 1600, dtype=np.int16) - 1  # agent ramps down, never equal to left
    for i in range(0, 1600, 160):  # 20 ms frames as the gateway sends them
        assert writer.write(pcm(left[i : i + 160]), pcm(right[i : i + 160])) == 640
    writer.close()

    raw = path.read_bytes()
    (
        riff,
        riff_size,
        wave_id,
        fmt,
        fmt_size,
        tag,
        channels,
        rate,
        byte_rate,
        align,
        bits,
        data_id,
        data_size,
    ) = struct.unpack("<4sI4s4sIHHIIHH4sI", raw[:HEADER_BYTES])
    assert (riff, wave_id, fmt, data_id) == (b"RIFF", b"WAVE", b"fmt ", b"data")
    assert (fmt_size, tag, channels, rate, bits) == (16, 1, 2, RATE, 16)
    assert (byte_rate, align) == (RATE * 4, 4)
    assert data_size == 1600 * 4 == len(raw) - HEADER_BYTES
    assert riff_size == len(raw) - 8

    params, frames = read_back(path)
    assert (params.nchannels, params.sampwidth, params.framerate, params.nframes) == (
        2,
        2,
        RATE,
        1600,
    )
    np.testing.assert_array_equal(frames[:, 0], left)
    np.testing.assert_array_equal(frames[:, 1], right)
    assert writer.frames == 1600 and writer.duration_ms == 200


def test_extreme_sample_values_survive(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    writer = StereoWavWriter(path, RATE)
    left = np.array([-32768, 32767, 0, 1], dtype=np.int16)
    right = np.array([32767, -32768, -1, 0], dtype=np.int16)
    writer.write(pcm(left), pcm(right))
    writer.close()
    _, frames = read_back(path)
    np.testing.assert_array_equal(frames, np.stack([left, right], axis=1))


def test_empty_recording_is_a_valid_wav(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    writer = StereoWavWriter(path, RATE)
    writer.close()
    writer.close()  # idempotent
    params, frames = read_back(path)
    assert params.nframes == 0 and frames.size == 0
    assert path.stat().st_size == HEADER_BYTES


def test_header_is_on_disk_before_any_audio(tmp_path: Path) -> None:
    path = tmp_path / "live.wav"
    writer = StereoWavWriter(path, RATE)
    assert read_format(path) == (RATE, 0)
    writer.close()


def test_never_overwrites_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "taken.wav"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        StereoWavWriter(path, RATE)
    assert path.read_bytes() == b"precious"


@pytest.mark.parametrize(
    ("left", "right", "reason", "words"),
    [
        (
            b"\x00\x00" * 160,
            b"\x00\x00" * 159,
            "length_mismatch",
            "left has 320 bytes but right has 318",
        ),
        (b"\x00" * 3, b"\x00" * 3, "odd_length", "odd byte count 3"),
    ],
)
def test_bad_frames_are_refused_and_nothing_is_written(
    tmp_path: Path, left: bytes, right: bytes, reason: str, words: str
) -> None:
    path = tmp_path / "bad.wav"
    writer = StereoWavWriter(path, RATE)
    writer.write(b"\x01\x00" * 8, b"\x02\x00" * 8)
    with pytest.raises(FrameError) as err:
        writer.write(left, right)
    assert err.value.reason == reason and words in str(err.value)
    writer.close()
    params, frames = read_back(path)
    assert params.nframes == 8
    assert set(frames[:, 0]) == {1} and set(frames[:, 1]) == {2}


def test_interleave_is_left_then_right() -> None:
    interleaved = interleave(pcm(np.array([1, 2])), pcm(np.array([-1, -2])))
    assert interleaved == pcm(np.array([1, -1, 2, -2]))


def test_partial_stream_is_finalised_with_what_arrived(tmp_path: Path) -> None:
    """A writer that never got to close (process killed) leaves a file salvage can repair."""
    path = tmp_path / "crashed.wav.part"
    writer = StereoWavWriter(path, RATE, buffer_bytes=0)  # unbuffered: every byte hits the disk
    tone = (np.sin(2 * np.pi * 440 * np.arange(4000) / RATE) * 8000).astype(np.int16)
    writer.write(pcm(tone), pcm(np.zeros_like(tone)))
    # the process dies: no close(), so the header still announces zero frames, and the last
    # frame on disk is torn in half
    with open(path, "ab") as f:
        f.write(b"\x05\x00\x06")
    assert read_format(path) == (RATE, 0)

    data_bytes = seal_orphan(path, RATE)

    assert data_bytes == 4000 * 4
    params, frames = read_back(path)
    assert (params.nchannels, params.framerate, params.nframes) == (2, RATE, 4000)
    np.testing.assert_array_equal(frames[:, 0], tone)
    assert not frames[:, 1].any()


def test_orphan_without_a_header_becomes_an_empty_wav(tmp_path: Path) -> None:
    path = tmp_path / "nothing.wav.part"
    path.write_bytes(b"RIFF")  # died while writing the header
    assert seal_orphan(path, RATE) == 0
    params, _ = read_back(path)
    assert (params.nchannels, params.framerate, params.nframes) == (2, RATE, 0)
