"""Caller ID: message format, FSK encoder/decoder (V.23, Bell 202), DTMF CLIP."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.dsp.callerid import (
    BAUD,
    FSK_STANDARDS,
    CallerId,
    CallerIdError,
    DtmfCallerIdParser,
    FskCallerIdDecoder,
    build_message,
    checksum,
    dtmf_callerid_digits,
    encode_callerid_fsk,
    parse_message,
)
from gateway.dsp.dtmf import DtmfDetector, DtmfEvent
from gateway.dsp.levels import db_to_amplitude, signal_dbm0, to_int16
from gateway.dsp.tones import add_noise, dial_digits, noise, silence, tone

FS = 8000
FULL = CallerId(number="13812345678", name="ZHANG SAN", datetime="03151230")
STANDARDS = ("v23", "bell202")


def decode(signal: np.ndarray, standard: str, chunk: int = 160) -> list[CallerId]:
    dec = FskCallerIdDecoder(standard)
    sig = np.concatenate([silence(200), np.asarray(signal, dtype=np.int16), silence(300)])
    out: list[CallerId] = []
    for i in range(0, len(sig), chunk):
        r = dec.feed(sig[i : i + chunk])
        if r is not None:
            out.append(r)
    return out


# ------------------------------------------------------------------ format
def test_mdmf_bytes_and_checksum() -> None:
    msg = build_message(CallerId(number="5551234", name="BOB", datetime="01020304"))
    assert msg[0] == 0x80 and msg[1] == len(msg) - 3
    assert msg[2:12] == bytes([0x01, 8]) + b"01020304"
    assert msg[12:21] == bytes([0x02, 7]) + b"5551234"
    assert msg[21:26] == bytes([0x07, 3]) + b"BOB"
    assert sum(msg) % 256 == 0 and msg[-1] == checksum(msg[:-1])


def test_sdmf_bytes() -> None:
    msg = build_message(CallerId(number="5551234", datetime="12251830"), fmt="sdmf")
    assert msg[:2] == bytes([0x04, 15]) and msg[2:-1] == b"122518305551234"
    private = build_message(CallerId(reason="private", datetime="12251830"), fmt="sdmf")
    assert private[2:-1] == b"12251830P"
    assert parse_message(private) == CallerId(datetime="12251830", reason="private")


def test_checksum_is_twos_complement() -> None:
    body = bytes([0x80, 0x03, 0x04, 0x01, ord("O")])
    assert checksum(body) == (256 - sum(body) % 256) % 256


def test_parse_rejects_untrustworthy_messages() -> None:
    good = build_message(FULL)
    assert parse_message(good) == FULL
    with pytest.raises(CallerIdError, match="checksum"):
        parse_message(good[:5] + bytes([good[5] ^ 0x01]) + good[6:])
    with pytest.raises(CallerIdError, match="length"):
        parse_message(good[:-2] + good[-1:])
    with pytest.raises(CallerIdError):
        parse_message(b"\x80")
    bad_type = bytes([0x33, 0x00])
    with pytest.raises(CallerIdError, match="type"):
        parse_message(bad_type + bytes([checksum(bad_type)]))
    overrun = bytes([0x80, 0x02, 0x02, 0x09])
    with pytest.raises(CallerIdError, match="overruns"):
        parse_message(overrun + bytes([checksum(overrun)]))
    with pytest.raises(CallerIdError):
        build_message(CallerId(number="5551234"), fmt="sdmf")  # SDMF needs date/time
    with pytest.raises(CallerIdError):
        build_message(CallerId(number="555-1234"))


def test_mdmf_absence_reasons_roundtrip() -> None:
    for cid in (
        CallerId(reason="private"),
        CallerId(reason="unavailable", datetime="07040915"),
        CallerId(number="911", name_reason="private"),
        CallerId(reason="private", name_reason="unavailable"),
    ):
        assert parse_message(build_message(cid)) == cid


# ----------------------------------------------------------------- encoder
def _bits_by_correlation(sig: np.ndarray, nbits: int, mark: float, space: float) -> np.ndarray:
    """Mark/space decision per bit cell, measured independently of the decoder."""
    bit = FS / BAUD
    out = []
    for k in range(nbits):
        a, b = int(np.ceil(k * bit)), int(np.floor((k + 1) * bit))
        seg = sig[a:b].astype(np.float64)
        t = np.arange(a, b) / FS
        e_mark = abs(np.exp(-2j * np.pi * mark * t) @ seg)
        e_space = abs(np.exp(-2j * np.pi * space * t) @ seg)
        out.append(1 if e_mark > e_space else 0)
    return np.array(out)


@pytest.mark.parametrize("standard", STANDARDS)
def test_encoder_seizure_mark_and_framing(standard: str) -> None:
    mark, space = FSK_STANDARDS[standard]
    msg = build_message(FULL)
    sig = encode_callerid_fsk(FULL, standard, level_dbm0=-13.5)
    nbits = 300 + 180 + 10 * len(msg)
    assert len(sig) == int(np.ceil(nbits * FS / BAUD))
    assert signal_dbm0(sig) == pytest.approx(-13.5, abs=0.05)
    bits = _bits_by_correlation(sig, nbits, mark, space)
    assert list(bits[:300]) == [0, 1] * 150  # channel seizure
    assert bits[300:480].all()  # mark signal
    frames = bits[480:].reshape(-1, 10)
    assert (frames[:, 0] == 0).all() and (frames[:, 9] == 1).all()  # 8N1
    decoded = bytes(int(sum(int(b) << k for k, b in enumerate(f[1:9]))) for f in frames)
    assert decoded == msg


# ----------------------------------------------------------------- decoder
@pytest.mark.parametrize("standard", STANDARDS)
@pytest.mark.parametrize("fmt", ["mdmf", "sdmf"])
@pytest.mark.parametrize("level", [-40.0, -25.0, -13.5, -5.0])
def test_decode_levels(standard: str, fmt: str, level: float) -> None:
    expected = FULL if fmt == "mdmf" else CallerId(number=FULL.number, datetime=FULL.datetime)
    assert decode(encode_callerid_fsk(FULL, standard, level, fmt), standard) == [expected]


@pytest.mark.parametrize("standard", STANDARDS)
def test_decode_with_white_noise_15_db_snr(standard: str) -> None:
    for seed in range(6):
        cid = CallerId(number=f"0755{seed}8886666", name=f"CALLER {seed}", datetime="11300815")
        for level in (-35.0, -13.5):
            fsk = encode_callerid_fsk(cid, standard, level)
            sig = np.concatenate([silence(100), fsk, silence(100)])
            assert decode(add_noise(sig, 15.0, seed=seed, reference=[fsk]), standard) == [cid]


@pytest.mark.parametrize("standard", STANDARDS)
def test_private_and_unavailable(standard: str) -> None:
    for cid in (
        CallerId(reason="private", datetime="12312359"),
        CallerId(reason="unavailable", datetime="01010000"),
    ):
        for fmt in ("mdmf", "sdmf"):
            assert decode(encode_callerid_fsk(cid, standard, fmt=fmt), standard) == [cid]


@pytest.mark.parametrize("standard", STANDARDS)
def test_corrupted_byte_gives_invalid_never_a_number(standard: str) -> None:
    msg = build_message(FULL)
    invalid = CallerId(number=None, reason="unavailable", valid=False)
    number_at = msg.index(b"138")
    for pos in (number_at, number_at + 5, len(msg) - 1, 4):
        bad = bytearray(msg)
        bad[pos] ^= 0x04
        audio = encode_callerid_fsk(FULL, standard, message=bytes(bad))
        assert decode(audio, standard) == [invalid]


def test_every_single_bit_error_is_caught() -> None:
    msg = build_message(CallerId(number="4711", datetime="02281200"))
    for i in range(len(msg)):
        for b in range(8):
            bad = bytearray(msg)
            bad[i] ^= 1 << b
            for r in decode(encode_callerid_fsk(FULL, "v23", message=bytes(bad)), "v23"):
                assert not r.valid and r.number is None


def test_audio_bursts_never_yield_a_wrong_number() -> None:
    rng = np.random.default_rng(5)
    clean = encode_callerid_fsk(FULL, "bell202", -20.0).astype(np.float64)
    outcomes = set()
    for k in range(60):
        s = clean.copy()
        pos = int(rng.integers(3300, len(s) - 40))
        n = int(rng.integers(3, 30))
        if k % 3 == 0:
            s[pos : pos + n] = rng.standard_normal(n) * 3000
        elif k % 3 == 1:
            s[pos : pos + n] = 0
        else:
            s[pos : pos + n] = db_to_amplitude(-20) * np.sin(2 * np.pi * 2200 * np.arange(n) / FS)
        for r in decode(to_int16(s), "bell202"):
            assert r == FULL or (not r.valid and r.number is None)
            outcomes.add(r.valid)
    assert outcomes == {True, False}


def test_truncated_message_is_invalid() -> None:
    sig = encode_callerid_fsk(FULL, "v23")
    assert decode(sig[:-200], "v23") == [CallerId(number=None, reason="unavailable", valid=False)]


def test_streaming_chunk_sizes_and_back_to_back_messages() -> None:
    one = encode_callerid_fsk(FULL, "v23")
    other = CallerId(number="110", datetime="10010800")
    sig = np.concatenate([one, silence(400), encode_callerid_fsk(other, "v23", fmt="sdmf")])
    assert decode(sig, "v23", chunk=37) == [FULL, other]
    assert decode(sig, "v23", chunk=1000) == [FULL, other]


def test_type2_style_burst_without_seizure() -> None:
    sig = encode_callerid_fsk(FULL, "bell202", seizure_bits=0, mark_bits=80)
    assert decode(sig, "bell202") == [FULL]


@pytest.mark.parametrize("standard", STANDARDS)
def test_no_output_for_non_fsk_signals(standard: str) -> None:
    assert decode(noise(3000, -20.0, seed=1), standard) == []
    assert decode(dial_digits("0123456789"), standard) == []
    mark = FSK_STANDARDS[standard][0]
    assert decode(tone(mark, 2000, -10.0), standard) == []  # steady mark, no data
    assert decode(tone(450.0, 2000, -10.0), standard) == []


def test_decoder_reset_and_bad_standard() -> None:
    dec = FskCallerIdDecoder("v23")
    sig = encode_callerid_fsk(FULL, "v23")
    dec.feed(sig[:2000])
    dec.reset()
    assert decode(sig, "v23") == [FULL]
    with pytest.raises(ValueError):
        FskCallerIdDecoder("v21")
    with pytest.raises(ValueError):
        encode_callerid_fsk(FULL, "bell103")


# -------------------------------------------------------------- DTMF CLIP
def _parse(seq: str) -> list[CallerId]:
    p = DtmfCallerIdParser()
    return [r for r in (p.feed(ch) for ch in seq) if r is not None]


def test_dtmf_clip_framings() -> None:
    assert _parse("A0123456789C") == [CallerId(number="0123456789")]
    assert _parse("A12345678#") == [CallerId(number="12345678")]
    assert _parse("D0212345678C") == [CallerId(number="0212345678")]
    assert _parse("B10C") == [CallerId(reason="private")]
    assert _parse("B00C") == [CallerId(reason="unavailable")]
    assert _parse("D1#") == [CallerId(reason="private")]
    assert _parse("D3#") == [CallerId(reason="unavailable")]
    assert _parse("A12345D67890C") == [CallerId(number="12345")]  # redirecting number dropped
    assert _parse("99A555C") == [CallerId(number="555")]  # noise before start ignored
    invalid = CallerId(number=None, reason="unavailable", valid=False)
    assert _parse("AC") == [invalid]
    assert _parse("B77C") == [invalid]
    assert _parse("A12*4C") == [invalid]


def test_dtmf_clip_generator_roundtrip() -> None:
    for cid in (
        CallerId(number="0201234567"),
        CallerId(reason="private"),
        CallerId(reason="unavailable"),
    ):
        for term in ("C", "#"):
            assert _parse(dtmf_callerid_digits(cid, term)) == [cid]


def test_dtmf_clip_timeout_discards_partial_message() -> None:
    p = DtmfCallerIdParser(timeout_ms=1000)
    assert p.feed(DtmfEvent("A", 0.0)) is None
    assert p.feed(DtmfEvent("1", 100.0)) is None
    assert p.feed(DtmfEvent("2", 5000.0)) is None  # stale: partial message dropped
    assert p.feed(DtmfEvent("C", 5100.0)) is None
    assert p.feed(DtmfEvent("A", 6000.0)) is None
    assert p.feed(DtmfEvent("7", 6100.0)) is None
    assert p.feed(DtmfEvent("C", 6200.0)) == CallerId(number="7")


def test_dtmf_clip_end_to_end_through_detector() -> None:
    audio = np.concatenate(
        [silence(300), dial_digits("A13912345678C", on_ms=70, off_ms=70, level_dbm0=-12.0)]
    )
    det, parser = DtmfDetector(), DtmfCallerIdParser()
    results = []
    for i in range(0, len(audio), 160):
        for ev in det.feed(audio[i : i + 160]):
            r = parser.feed(ev)
            if r is not None:
                results.append(r)
    assert results == [CallerId(number="13912345678")]
