"""IVR prompt loading and frame-by-frame playback.

Prompts are recorded as telephone-quality WAV files, often already G.711
(format tags 6/7) which the stdlib ``wave`` module refuses, so the RIFF chunks
are parsed here.  Loaded prompts are split once into read-only 160-sample
frames that any number of concurrent :class:`PromptPlayer` instances share.
"""

from __future__ import annotations

import os
import struct

import numpy as np

from .audio import FRAME_SAMPLES, SAMPLE_RATE
from .g711 import alaw_decode, pre_encode, ulaw_decode

__all__ = [
    "PromptError",
    "PromptPlayer",
    "frames",
    "load_wav",
    "parse_wav",
]

WAVE_FORMAT_PCM = 1
WAVE_FORMAT_ALAW = 6
WAVE_FORMAT_MULAW = 7
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
_FORMAT_NAMES = {WAVE_FORMAT_PCM: "PCM", WAVE_FORMAT_ALAW: "A-law", WAVE_FORMAT_MULAW: "µ-law"}


class PromptError(ValueError):
    """A prompt file is unreadable or not 8 kHz mono telephone audio."""


def parse_wav(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode an in-memory WAV (8 kHz mono; 16-bit PCM, A-law or µ-law) to int16."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise PromptError(f"{name}: not a RIFF/WAVE file")
    fmt: tuple[int, int, int, int] | None = None
    body: bytes | None = None
    pos, end = 12, len(data)
    while pos + 8 <= end:
        cid = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        start = pos + 8
        if cid == b"fmt ":
            if size < 16 or start + size > end:
                raise PromptError(f"{name}: truncated fmt chunk")
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, start)
            if tag == WAVE_FORMAT_EXTENSIBLE:
                if size < 40:
                    raise PromptError(f"{name}: truncated WAVE_FORMAT_EXTENSIBLE header")
                (tag,) = struct.unpack_from("<H", data, start + 24)  # sub-format GUID
            fmt = (tag, channels, rate, bits)
        elif cid == b"data":
            # Streaming writers leave the size unset; take what is there.
            body = data[start : min(start + size, end)]
        pos = start + size + (size & 1)  # chunks are word-aligned
    if fmt is None:
        raise PromptError(f"{name}: no fmt chunk")
    if body is None:
        raise PromptError(f"{name}: no data chunk")
    tag, channels, rate, bits = fmt
    if tag not in _FORMAT_NAMES:
        raise PromptError(
            f"{name}: unsupported WAV format tag {tag}; use 16-bit PCM (1), A-law (6) or µ-law (7)"
        )
    if channels != 1:
        raise PromptError(f"{name}: {channels} channels; prompts must be mono")
    if rate != SAMPLE_RATE:
        raise PromptError(f"{name}: sample rate {rate} Hz; prompts must be {SAMPLE_RATE} Hz")
    if tag == WAVE_FORMAT_PCM:
        if bits != 16:
            raise PromptError(f"{name}: {bits}-bit PCM; prompts must be 16-bit")
        return np.frombuffer(body[: len(body) & ~1], dtype="<i2").astype(np.int16)
    if bits != 8:
        raise PromptError(f"{name}: {_FORMAT_NAMES[tag]} with {bits} bits per sample; expected 8")
    return alaw_decode(body) if tag == WAVE_FORMAT_ALAW else ulaw_decode(body)


def load_wav(path: str | os.PathLike[str]) -> np.ndarray:
    """Load an 8 kHz mono prompt (16-bit PCM, A-law or µ-law WAV) as int16 samples."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise PromptError(f"{os.fspath(path)}: cannot read: {e.strerror or e}") from e
    return parse_wav(data, os.fspath(path))


def frames(pcm: np.ndarray) -> list[np.ndarray]:
    """Split samples into read-only 160-sample frames, zero-padding the last one.

    Each frame is also encoded once in both G.711 laws (:func:`~.g711.pre_encode`), so the
    RTP sessions of all the calls hearing it send those bytes instead of encoding it again.
    """
    pcm = np.asarray(pcm, dtype=np.int16).reshape(-1)
    n = -(-len(pcm) // FRAME_SAMPLES)
    buf = np.zeros(n * FRAME_SAMPLES, dtype=np.int16)
    buf[: len(pcm)] = pcm
    buf.flags.writeable = False
    out = list(buf.reshape(n, FRAME_SAMPLES))
    pre_encode(out)
    return out


class PromptPlayer:
    """Hands out one frame per clock tick; ``loop=True`` repeats (hold music)."""

    __slots__ = ("_frames", "_pos", "loop")

    def __init__(self, frames: list[np.ndarray], *, loop: bool = False) -> None:
        self._frames = frames
        self._pos = 0
        self.loop = loop

    def next_frame(self) -> np.ndarray | None:
        """The next frame, or None once the prompt has finished."""
        if self._pos >= len(self._frames):
            if not self.loop or not self._frames:
                return None
            self._pos = 0
        frame = self._frames[self._pos]
        self._pos += 1
        return frame

    @property
    def done(self) -> bool:
        return self._pos >= len(self._frames) and not (self.loop and self._frames)

    @property
    def remaining(self) -> int:
        """Frames left before the end (ignoring looping)."""
        return len(self._frames) - self._pos

    def rewind(self) -> None:
        self._pos = 0
