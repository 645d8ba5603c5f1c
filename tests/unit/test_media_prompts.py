"""WAV prompt loading (PCM, A-law, µ-law) and frame playback."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from gateway.media.audio import silence
from gateway.media.g711 import (
    LAW_INDEX,
    alaw_decode,
    alaw_encode,
    pre_encoded,
    ulaw_decode,
    ulaw_encode,
)
from gateway.media.prompts import (
    PromptError,
    PromptPlayer,
    frames,
    load_wav,
    parse_wav,
)

PCM = (np.sin(np.arange(1000) / 7) * 9000).astype(np.int16)


def riff(
    tag: int,
    channels: int,
    rate: int,
    bits: int,
    body: bytes,
    extra_chunks: bytes = b"",
    extensible: bool = False,
) -> bytes:
    block = channels * bits // 8
    if extensible:
        guid_tail = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt = (
            struct.pack(
                "<HHIIHHHHI", 0xFFFE, channels, rate, rate * block, block, bits, 22, bits, 0
            )
            + struct.pack("<H", tag)
            + guid_tail
        )
    else:
        fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
        if tag != 1:
            fmt += b"\x00\x00"  # cbSize, as written by sox for G.711
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + extra_chunks
    chunks += b"data" + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) & 1 else b"")
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def test_load_pcm_wav_written_by_stdlib(tmp_path: Path) -> None:
    path = tmp_path / "hello.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(PCM.tobytes())
    out = load_wav(path)
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, PCM)


def test_load_ulaw_and_alaw(tmp_path: Path) -> None:
    u = tmp_path / "u.wav"
    u.write_bytes(riff(7, 1, 8000, 8, ulaw_encode(PCM)))
    a = tmp_path / "a.wav"
    a.write_bytes(riff(6, 1, 8000, 8, alaw_encode(PCM)))
    np.testing.assert_array_equal(load_wav(u), ulaw_decode(ulaw_encode(PCM)))
    np.testing.assert_array_equal(load_wav(str(a)), alaw_decode(alaw_encode(PCM)))


def test_odd_length_chunks_and_unknown_chunks_are_skipped() -> None:
    body = ulaw_encode(PCM[:999])  # odd size -> pad byte
    list_chunk = b"LIST" + struct.pack("<I", 5) + b"INFOx\x00"  # odd chunk + pad
    out = parse_wav(riff(7, 1, 8000, 8, body, extra_chunks=list_chunk))
    assert len(out) == 999


def test_extensible_format() -> None:
    out = parse_wav(riff(1, 1, 8000, 16, PCM.tobytes(), extensible=True))
    np.testing.assert_array_equal(out, PCM)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"not a wav file at all", "not a RIFF/WAVE"),
        (riff(1, 1, 16000, 16, PCM.tobytes()), "16000 Hz"),
        (riff(1, 2, 8000, 16, PCM.tobytes()), "mono"),
        (riff(1, 1, 8000, 8, bytes(100)), "16-bit"),
        (riff(3, 1, 8000, 32, bytes(400)), "format tag 3"),
        (riff(7, 1, 8000, 16, bytes(100)), "expected 8"),
        (b"RIFF\x04\x00\x00\x00WAVE", "no fmt chunk"),
        (riff(1, 1, 8000, 16, b"")[: 12 + 8 + 16], "no data chunk"),
    ],
)
def test_rejects_unsuitable_files(data: bytes, message: str) -> None:
    with pytest.raises(PromptError, match=message):
        parse_wav(data)


def test_missing_file_is_prompt_error(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match="cannot read"):
        load_wav(tmp_path / "missing.wav")


def test_truncated_data_chunk_uses_available_samples() -> None:
    data = riff(1, 1, 8000, 16, PCM.tobytes())
    out = parse_wav(data[:-101])  # cut mid-sample
    assert len(out) == (len(PCM) * 2 - 101) // 2


def test_frames_pads_last_and_is_read_only() -> None:
    fs = frames(PCM)
    assert len(fs) == 7  # 1000 samples -> 6 full + 1 padded
    assert all(f.shape == (160,) and f.dtype == np.int16 for f in fs)
    np.testing.assert_array_equal(np.concatenate(fs)[:1000], PCM)
    assert not fs[-1][40:].any()
    with pytest.raises(ValueError):
        fs[0][0] = 1
    assert frames(np.zeros(0, dtype=np.int16)) == []
    assert len(frames(np.zeros(320, dtype=np.int16))) == 2


def test_player_plays_each_frame_once() -> None:
    fs = frames(PCM)
    player = PromptPlayer(fs)
    got = []
    while (f := player.next_frame()) is not None:
        got.append(f)
    assert len(got) == 7 and player.done and player.next_frame() is None
    player.rewind()
    assert player.remaining == 7 and not player.done


def test_player_loop() -> None:
    player = PromptPlayer(frames(PCM[:320]), loop=True)
    got = [player.next_frame() for _ in range(5)]
    assert all(f is not None for f in got) and not player.done
    assert PromptPlayer([], loop=True).next_frame() is None


def test_silence_is_shared_and_read_only() -> None:
    s = silence()
    assert s is silence() and s.shape == (160,) and s.dtype == np.int16 and not s.any()
    with pytest.raises(ValueError):
        s[0] = 1


def test_frames_are_pre_encoded_in_both_laws() -> None:
    cut = frames(PCM)
    for f in cut:
        payloads = pre_encoded(f)
        assert payloads is not None
        assert payloads[LAW_INDEX["PCMU"]] == ulaw_encode(f)
        assert payloads[LAW_INDEX["PCMA"]] == alaw_encode(f)
