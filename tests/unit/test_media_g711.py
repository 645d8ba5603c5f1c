"""G.711 must be bit-exact with the reference implementation (CPython audioop), both the
audioop path the gateway runs and the numpy tables it falls back to without audioop."""

from __future__ import annotations

import gc
import warnings

import numpy as np
import pytest

from gateway.media import g711
from gateway.media.g711 import (
    CODECS,
    LAW_INDEX,
    PAYLOAD_TYPES,
    alaw_decode,
    alaw_encode,
    pre_encode,
    pre_encoded,
    ulaw_decode,
    ulaw_encode,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # removed in 3.13; the project targets 3.11

ALL_PCM = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16)
ALL_BYTES = bytes(range(256))


def test_the_gateway_decodes_with_audioop_and_encodes_by_table() -> None:
    assert g711.ulaw_decode is not g711.table_ulaw_decode
    assert g711.alaw_decode is not g711.table_alaw_decode
    assert (g711.ulaw_encode, g711.alaw_encode) == (g711.table_ulaw_encode, g711.table_alaw_encode)


@pytest.mark.parametrize(
    ("encode", "reference"),
    [(g711.table_ulaw_encode, audioop.lin2ulaw), (g711.table_alaw_encode, audioop.lin2alaw)],
)
def test_table_encoders_bit_exact_all_inputs(encode, reference) -> None:  # noqa: ANN001
    assert encode(ALL_PCM) == reference(ALL_PCM.tobytes(), 2)
    stereo = np.arange(-320, 320, dtype=np.int16).reshape(320, 2)
    assert encode(stereo[:, 1]) == reference(stereo[:, 1].copy().tobytes(), 2)


@pytest.mark.parametrize(
    ("decode", "reference"),
    [(g711.table_ulaw_decode, audioop.ulaw2lin), (g711.table_alaw_decode, audioop.alaw2lin)],
)
def test_table_decoders_bit_exact_all_codes(decode, reference) -> None:  # noqa: ANN001
    out = decode(ALL_BYTES)
    assert out.dtype == np.int16 and out.flags.writeable
    assert out.tobytes() == reference(ALL_BYTES, 2)


def test_ulaw_encode_bit_exact_all_inputs() -> None:
    assert ulaw_encode(ALL_PCM) == audioop.lin2ulaw(ALL_PCM.tobytes(), 2)


def test_alaw_encode_bit_exact_all_inputs() -> None:
    assert alaw_encode(ALL_PCM) == audioop.lin2alaw(ALL_PCM.tobytes(), 2)


def test_ulaw_decode_bit_exact_all_codes() -> None:
    out = ulaw_decode(ALL_BYTES)
    assert out.dtype == np.int16
    assert out.tobytes() == audioop.ulaw2lin(ALL_BYTES, 2)


def test_alaw_decode_bit_exact_all_codes() -> None:
    out = alaw_decode(ALL_BYTES)
    assert out.dtype == np.int16
    assert out.tobytes() == audioop.alaw2lin(ALL_BYTES, 2)


@pytest.mark.parametrize("name", ["PCMU", "PCMA"])
def test_roundtrip_is_idempotent_and_close(name: str) -> None:
    enc, dec = CODECS[name]
    t = np.arange(160)
    frame = (np.sin(2 * np.pi * 440 * t / 8000) * 12000).astype(np.int16)
    once = dec(enc(frame))
    assert once.shape == (160,)
    # Re-encoding a decoded value reproduces the same code (tables are consistent).
    assert enc(once) == enc(frame)
    # Quantisation error of G.711 is a few percent of the amplitude at most.
    err = np.abs(once.astype(np.int32) - frame.astype(np.int32))
    assert err.max() <= 0.04 * np.abs(frame.astype(np.int32)).max() + 16


@pytest.mark.parametrize("decode", [ulaw_decode, alaw_decode])
def test_decode_returns_writable_copy(decode) -> None:  # noqa: ANN001
    payload = b"\xff" * 160
    out = decode(payload)
    first = int(out[0])
    out[0] = first + 1  # must touch neither a shared table nor the payload
    assert decode(payload)[0] == first and payload == b"\xff" * 160


def test_non_int16_input_saturates_instead_of_wrapping() -> None:
    big = np.array([40000, -40000, 0], dtype=np.int32)
    assert ulaw_encode(big) == ulaw_encode(np.array([32767, -32768, 0], dtype=np.int16))
    assert alaw_encode(big) == alaw_encode(np.array([32767, -32768, 0], dtype=np.int16))


def test_strided_input_encodes_correctly() -> None:
    stereo = np.arange(-320, 320, dtype=np.int16)[:320].reshape(160, 2)
    left = stereo[:, 0]
    assert ulaw_encode(left) == audioop.lin2ulaw(np.ascontiguousarray(left).tobytes(), 2)


def test_payload_types() -> None:
    assert PAYLOAD_TYPES == {"PCMU": 0, "PCMA": 8}
    assert set(CODECS) == {"PCMU", "PCMA"}


@pytest.mark.parametrize("name", ["PCMU", "PCMA"])
def test_encode_any_int16_layout_matches_the_contiguous_native_one(name: str) -> None:
    """The tables are taken with the int16 samples as indices (negative ones counting from the
    end): strided, 2-D and byte-swapped input must encode as their plain int16 samples do."""
    enc, _ = CODECS[name]
    plain = enc(ALL_PCM)
    assert enc(ALL_PCM.reshape(256, 256)) == plain
    assert enc(ALL_PCM.astype(">i2")) == plain
    doubled = np.repeat(ALL_PCM, 2)
    assert enc(doubled[::2]) == plain


@pytest.mark.parametrize("name", ["PCMU", "PCMA"])
def test_decode_takes_any_buffer(name: str) -> None:
    _, dec = CODECS[name]
    want = dec(ALL_BYTES).tobytes()
    assert dec(bytearray(ALL_BYTES)).tobytes() == want
    assert dec(memoryview(b"x" + ALL_BYTES)[1:]).tobytes() == want


def test_pre_encoded_frames_carry_both_laws_until_freed() -> None:
    frame = np.arange(-80, 80, dtype=np.int16) * 97
    with pytest.raises(ValueError):
        pre_encode([frame])  # writable: its samples could change after encoding
    assert pre_encoded(frame) is None
    frame.flags.writeable = False
    pre_encode([frame])
    payloads = pre_encoded(frame)
    assert payloads is not None
    assert payloads[LAW_INDEX["PCMU"]] == ulaw_encode(frame)
    assert payloads[LAW_INDEX["PCMA"]] == alaw_encode(frame)
    assert pre_encoded(frame.copy()) is None  # equal samples, another array: not the entry
    assert pre_encoded(frame[:]) is None  # a view is another object too
    key = id(frame)
    del frame, payloads
    gc.collect()
    entry = g711._PRE_ENCODED.get(key)  # gone with its frame (unless the id was reused)
    assert entry is None or entry[0]() is not None
