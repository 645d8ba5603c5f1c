"""ITU-T G.711 µ-law (PCMU) and A-law (PCMA) codecs.

Every call leg decodes and encodes 50 frames a second. Encoding indexes a 65536-entry uint8
table with the int16 samples (their uint16 bit patterns); decoding is CPython's ``audioop``
in C (the ``audioop-lts`` wheel from Python 3.13 on, where the standard library dropped
it): 0.6 µs a 160-byte frame against 1.1-2.5 µs for numpy's lookup in a 256-entry table,
which remains the path without it (docs/performance.md, section 22). The tables are
generated once at import time from the reference algorithm (the one ``audioop`` uses), so
both ways are bit-exact with ``audioop.lin2ulaw``/``ulaw2lin``/``lin2alaw``/``alaw2lin``
for all inputs.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Iterable
from functools import partial
from types import ModuleType

import numpy as np

__all__ = [
    "CODECS",
    "LAW_INDEX",
    "PAYLOAD_TYPES",
    "alaw_decode",
    "alaw_encode",
    "pre_encode",
    "pre_encoded",
    "ulaw_decode",
    "ulaw_encode",
]

# Segment end points of the reference implementation (Sun g711.c / audioop.c).
_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)
_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159


def _all_int16() -> np.ndarray:
    """All int16 values ordered by their uint16 bit pattern (table index order)."""
    return np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)


def _build_ulaw_encode() -> np.ndarray:
    pcm = _all_int16() >> 2  # 14-bit linear, arithmetic shift like audioop
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(pcm), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = np.searchsorted(_ULAW_SEG_END, mag, side="left")
    uval = (np.minimum(seg, 7) << 4) | ((mag >> (np.minimum(seg, 7) + 1)) & 0xF)
    uval = np.where(seg >= 8, 0x7F, uval)
    return (uval ^ mask).astype(np.uint8)


def _build_ulaw_decode() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + _ULAW_BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)


def _build_alaw_encode() -> np.ndarray:
    pcm = _all_int16() >> 3  # 13-bit linear
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    mag = np.where(pcm >= 0, pcm, -pcm - 1)
    seg = np.searchsorted(_ALAW_SEG_END, mag, side="left")
    segc = np.minimum(seg, 7)
    quant = np.where(segc < 2, mag >> 1, mag >> segc) & 0x0F
    aval = np.where(seg >= 8, 0x7F, (segc << 4) | quant)
    return (aval ^ mask).astype(np.uint8)


def _build_alaw_decode() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype(np.int16)


_U8 = np.dtype(np.uint8)
_I16 = np.dtype(np.int16)


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


_ULAW_ENC = _readonly(_build_ulaw_encode())
_ULAW_DEC = _readonly(_build_ulaw_decode())
_ALAW_ENC = _readonly(_build_alaw_encode())
_ALAW_DEC = _readonly(_build_alaw_decode())


def _saturate(pcm: np.ndarray) -> np.ndarray:
    """Non-int16 samples as int16, saturated rather than wrapped."""
    out: np.ndarray = np.clip(np.asarray(pcm), -32768, 32767).astype(_I16)
    return out


# The encode tables are indexed by the uint16 bit pattern of a sample.  ``take`` with the int16
# samples themselves gives the same entries without a uint16 view: a negative index counts from
# the end, so -1 reads entry 65535 and -32768 entry 32768, exactly the uint16 patterns.


def table_ulaw_decode(b: bytes) -> np.ndarray:
    """Decode µ-law bytes to a new int16 array (one sample per byte) by table."""
    return _ULAW_DEC.take(np.frombuffer(b, _U8))


def table_ulaw_encode(pcm: np.ndarray) -> bytes:
    """Encode int16 samples to µ-law bytes by table."""
    if pcm.dtype != _I16:
        pcm = _saturate(pcm)
    return _ULAW_ENC.take(pcm).tobytes()


def table_alaw_decode(b: bytes) -> np.ndarray:
    """Decode A-law bytes to a new int16 array (one sample per byte) by table."""
    return _ALAW_DEC.take(np.frombuffer(b, _U8))


def table_alaw_encode(pcm: np.ndarray) -> bytes:
    """Encode int16 samples to A-law bytes by table."""
    if pcm.dtype != _I16:
        pcm = _saturate(pcm)
    return _ALAW_ENC.take(pcm).tobytes()


def _import_audioop() -> ModuleType | None:
    with warnings.catch_warnings():  # 3.11-3.12: "deprecated, removed in 3.13" (audioop-lts)
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioop
        except ImportError:  # pragma: no cover - requirements.txt installs audioop-lts on 3.13+
            return None
    return audioop


_audioop = _import_audioop()


if _audioop is not None:
    _ulaw2lin: Callable[[bytes, int], bytes] = _audioop.ulaw2lin
    _alaw2lin: Callable[[bytes, int], bytes] = _audioop.alaw2lin

    def ulaw_decode(b: bytes) -> np.ndarray:
        """Decode µ-law bytes to a new int16 array (one sample per byte)."""
        return np.frombuffer(bytearray(_ulaw2lin(b, 2)), _I16)

    def alaw_decode(b: bytes) -> np.ndarray:
        """Decode A-law bytes to a new int16 array (one sample per byte)."""
        return np.frombuffer(bytearray(_alaw2lin(b, 2)), _I16)

else:  # pragma: no cover
    ulaw_decode, alaw_decode = table_ulaw_decode, table_alaw_decode

#: Encoding stays on the tables: audioop searches the segment of every sample, which costs
#: more the louder the audio (1.9 µs a frame of speech-level samples against 1.0 µs by table).
ulaw_encode, alaw_encode = table_ulaw_encode, table_alaw_encode


Encoder = Callable[[np.ndarray], bytes]
Decoder = Callable[[bytes], np.ndarray]

#: Codec name (SDP encoding name) -> (encode, decode).
CODECS: dict[str, tuple[Encoder, Decoder]] = {
    "PCMU": (ulaw_encode, ulaw_decode),
    "PCMA": (alaw_encode, alaw_decode),
}

#: Static RTP payload types from RFC 3551.
PAYLOAD_TYPES: dict[str, int] = {"PCMU": 0, "PCMA": 8}

#: Codec name -> index of its payload in a :func:`pre_encoded` entry.
LAW_INDEX: dict[str, int] = {"PCMU": 0, "PCMA": 1}

# Frames encoded once in both laws (prompts and hold music, which every call playing them would
# otherwise encode again every 20 ms): id(frame) -> (weak reference to the frame, (µ-law, A-law)).
# An entry is used only while its reference still points at the very frame asked about, and is
# dropped when the frame is freed, so an id reused by another array never finds it.
PreEncoded = tuple[weakref.ref[np.ndarray], tuple[bytes, bytes]]
_PRE_ENCODED: dict[int, PreEncoded] = {}


def _forget(key: int, ref: weakref.ref[np.ndarray]) -> None:
    entry = _PRE_ENCODED.get(key)
    if entry is not None and entry[0] is ref:
        del _PRE_ENCODED[key]


def pre_encode(frames: Iterable[np.ndarray]) -> None:
    """Encode read-only frames once in µ-law and A-law; :func:`pre_encoded` hands the bytes
    out for as long as each frame lives.  Writable arrays are refused (ValueError): their
    samples could change after encoding."""
    for frame in frames:
        if frame.flags.writeable:
            raise ValueError("only read-only frames can be pre-encoded")
        key = id(frame)
        ref = weakref.ref(frame, partial(_forget, key))
        _PRE_ENCODED[key] = (ref, (ulaw_encode(frame), alaw_encode(frame)))


def pre_encoded(frame: np.ndarray) -> tuple[bytes, bytes] | None:
    """The (µ-law, A-law) payloads :func:`pre_encode` made of this very frame object, else
    None; :data:`LAW_INDEX` says which is which."""
    entry = _PRE_ENCODED.get(id(frame))
    if entry is not None and entry[0]() is frame:
        return entry[1]
    return None
