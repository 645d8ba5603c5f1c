"""DTMF detector: Q.24 acceptance/rejection, timing, noise, talk-off (speech, music)."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from gateway.dsp.dtmf import DtmfDetector, DtmfEvent
from gateway.dsp.levels import db_to_amplitude, signal_dbm0, to_int16
from gateway.dsp.resample import resample
from gateway.dsp.tones import (
    add_noise,
    dial_digits,
    dtmf_frequencies,
    dtmf_tone,
    noise,
    silence,
    tone,
)

DIGITS = "123A456B789C*0#D"
FS = 8000


def run(signal: np.ndarray, chunk: int = 160, det: DtmfDetector | None = None) -> list[DtmfEvent]:
    det = det or DtmfDetector()
    sig = np.concatenate([np.asarray(signal, dtype=np.int16), silence(200)])
    events: list[DtmfEvent] = []
    for i in range(0, len(sig), chunk):
        events += det.feed(sig[i : i + chunk])
    return events


def digits(signal: np.ndarray, **kw: object) -> str:
    return "".join(e.digit for e in run(signal, **kw))  # type: ignore[arg-type]


def press(digit: str, ms: float, lead_ms: float = 100.0, **kw: object) -> np.ndarray:
    return np.concatenate([silence(lead_ms), dtmf_tone(digit, ms, **kw)])  # type: ignore[arg-type]


# --------------------------------------------------------------- generators
def test_generator_levels_follow_dbm0_convention() -> None:
    assert db_to_amplitude(3.14) == pytest.approx(32767.0)
    assert signal_dbm0(tone(1000.0, 1000, -10.0)) == pytest.approx(-10.0, abs=0.02)
    # Two tones at -10 dBm0 each add up to -7 dBm0.
    assert signal_dbm0(dtmf_tone("5", 1000, -10.0)) == pytest.approx(-6.99, abs=0.05)
    assert signal_dbm0(noise(2000, -30.0, seed=1)) == pytest.approx(-30.0, abs=0.1)
    row, col = dtmf_frequencies("#")
    assert (row, col) == (941.0, 1477.0)
    with pytest.raises(ValueError):
        dtmf_frequencies("E")


def test_twisted_tone_levels() -> None:
    x = dtmf_tone("1", 1000, level_dbm0=-10.0, twist_db=-6.0).astype(np.float64)
    spec = np.abs(np.fft.rfft(x)) * 2 / len(x)
    assert 20 * np.log10(spec[1209] / spec[697]) == pytest.approx(-6.0, abs=0.05)


# ------------------------------------------------------------ basic detection
def test_all_sixteen_digits() -> None:
    assert digits(dial_digits(DIGITS, on_ms=50, off_ms=50)) == DIGITS


@pytest.mark.parametrize("digit", list(DIGITS))
def test_each_digit_once_with_start_time(digit: str) -> None:
    events = run(press(digit, 60, lead_ms=300))
    assert len(events) == 1 and events[0].digit == digit
    assert events[0].start_ms == pytest.approx(300.0, abs=10.0)


def test_frame_size_independent() -> None:
    sig = np.concatenate([silence(37), dial_digits("90#*", on_ms=45, off_ms=45)])
    assert digits(sig, chunk=160) == digits(sig, chunk=37) == digits(sig, chunk=1000) == "90#*"


# ---------------------------------------------------------- Q.24 frequency
@pytest.mark.parametrize("offset", [0.015, -0.015])
def test_accepts_frequency_offset_1_5_percent_on_each_tone(offset: float) -> None:
    for d in DIGITS:
        assert digits(press(d, 60, freq_offset=(offset, 0.0))) == d
        assert digits(press(d, 60, freq_offset=(0.0, offset))) == d
        assert digits(press(d, 60, freq_offset=(offset, -offset))) == d


@pytest.mark.parametrize("offset", [0.035, -0.035])
def test_rejects_frequency_offset_3_5_percent_on_each_tone(offset: float) -> None:
    for d in DIGITS:
        assert digits(press(d, 100, freq_offset=(offset, 0.0))) == ""
        assert digits(press(d, 100, freq_offset=(0.0, offset))) == ""


# ----------------------------------------------------------------- twist
@pytest.mark.parametrize(
    ("twist", "expected"), [(0.0, True), (-7.0, True), (3.0, True), (-9.5, False), (5.5, False)]
)
def test_twist_limits(twist: float, expected: bool) -> None:
    """Column tone may be up to 8 dB weaker (normal) or 4 dB stronger (reverse)."""
    for d in "1590#D":
        assert digits(press(d, 80, level_dbm0=-12.0, twist_db=twist)) == (d if expected else "")


# ------------------------------------------------------------------ levels
def test_level_floor() -> None:
    assert digits(press("7", 80, level_dbm0=-30.0)) == "7"
    assert digits(press("7", 80, level_dbm0=-40.0)) == ""
    assert digits(press("7", 80, level_dbm0=-3.0)) == "7"  # near full scale


# ------------------------------------------------------------------ noise
def test_detects_in_white_noise_at_15_db_snr() -> None:
    for i, d in enumerate(DIGITS):
        sig = np.concatenate([silence(100), dtmf_tone(d, 50, -15.0), silence(100)])
        ref = dtmf_tone(d, 50, -15.0)
        noisy = add_noise(sig, 15.0, seed=i, reference=[ref])
        assert digits(noisy) == d, d


def test_noise_alone_gives_nothing() -> None:
    assert digits(noise(5000, -20.0, seed=7)) == ""


# ----------------------------------------------------------------- timing
def test_short_tone_rejected_long_tone_once() -> None:
    for d in DIGITS:
        assert digits(press(d, 20)) == ""
        assert digits(press(d, 23)) == ""
        assert digits(press(d, 40)) == d
    assert digits(press("5", 2000)) == "5"


def test_40_ms_tone_at_every_frame_alignment() -> None:
    for lead in range(0, 160, 7):
        sig = np.concatenate([np.zeros(800 + lead, dtype=np.int16), dtmf_tone("8", 40)])
        assert digits(sig) == "8", lead


def test_long_noisy_tone_fires_once() -> None:
    sig = np.concatenate([silence(100), dtmf_tone("0", 2000, -20.0), silence(100)])
    assert digits(add_noise(sig, 15.0, seed=3, reference=[dtmf_tone("0", 2000, -20.0)])) == "0"


def test_same_digit_twice_with_40_ms_pause() -> None:
    for d in DIGITS:
        sig = np.concatenate([dtmf_tone(d, 40), silence(40), dtmf_tone(d, 40)])
        assert digits(sig) == d + d


def test_short_dropout_is_bridged() -> None:
    sig = np.concatenate([dtmf_tone("3", 100), silence(10), dtmf_tone("3", 100)])
    assert digits(sig) == "3"


# ---------------------------------------------------------------- talk-off
def _espeak(tmp_path: Path, text: str, voice: str, pitch: int) -> np.ndarray:
    wav = tmp_path / f"{voice}-{pitch}.wav"
    subprocess.run(
        ["espeak-ng", "-w", str(wav), "-v", voice, "-p", str(pitch), text],
        check=True,
        capture_output=True,
    )
    with wave.open(str(wav)) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return resample(pcm, rate, FS)


SPEECH = (
    "Hello, thank you for calling. Please hold the line while we connect you. "
    "One two three four five six seven eight nine zero, star, hash. "
    "Oh, ah, ee, oo, mmm, laa laa laa, mee mee mee, yes, no, maybe tomorrow."
)


@pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng binary not installed (apt-get install espeak-ng)",
)
def test_talk_off_speech(tmp_path: Path) -> None:
    total = 0.0
    for voice, pitch in [
        ("en", 50),
        ("en+f3", 80),
        ("en-us", 99),
        ("de", 70),
        ("ru", 99),
        ("ja", 99),
        ("fr", 30),
        ("zh", 60),
    ]:
        speech = _espeak(tmp_path, SPEECH, voice, pitch)
        for gain_db in (0.0, 12.0):
            x = to_int16(speech * 10 ** (gain_db / 20))
            total += len(x) / FS
            assert digits(x) == "", (voice, pitch, gain_db)
    assert total > 60.0


@pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng binary not installed (apt-get install espeak-ng)",
)
def test_digits_over_speech_pauses(tmp_path: Path) -> None:
    speech = to_int16(_espeak(tmp_path, "Please enter your account number now.", "en", 50))
    sig = np.concatenate([speech, silence(200), dial_digits("4711#", 60, 60, -8.0), speech])
    assert digits(sig) == "4711#"


def _note(
    freq: float, ms: float, harmonics: int = 6, decay: float = 1.5, level: float = -16.0
) -> np.ndarray:
    t = np.arange(int(ms * 8)) / FS
    env = np.minimum(1.0, t / 0.01) * np.exp(-decay * t)
    return (
        sum(
            db_to_amplitude(level) / k * np.sin(2 * np.pi * freq * k * t)
            for k in range(1, harmonics + 1)
            if freq * k < 3800
        )
        * env
    )


def _midi(m: int) -> float:
    return 440.0 * 2 ** ((m - 69) / 12)


def test_talk_off_music() -> None:
    rng = np.random.default_rng(11)
    chords = np.concatenate(
        [
            sum(_note(_midi(root + i), 250) for i in q)
            for root in range(48, 90, 2)
            for q in ([0, 4, 7], [0, 3, 7], [0, 4, 7, 11])
        ]
    )
    assert digits(to_int16(chords)) == ""
    # F5 + E6 are 698.5 / 1318.5 Hz (~ digit "2"); real instruments carry harmonics.
    dyad = np.concatenate(
        [_note(_midi(77), 400, decay=0.3) + _note(_midi(88), 400, decay=0.3) for _ in range(4)]
    )
    assert digits(to_int16(dyad)) == ""
    melody = np.concatenate(
        [
            _note(
                _midi(int(rng.integers(60, 96))),
                float(rng.choice([100, 150, 300])),
                harmonics=int(rng.integers(1, 8)),
                decay=float(rng.uniform(0.5, 6)),
            )
            for _ in range(150)
        ]
    )
    bass = np.concatenate(
        [
            _note(_midi(int(rng.integers(36, 60))), 400, 4, 2.0)
            for _ in range(len(melody) // 3200 + 1)
        ]
    )[: len(melody)]
    assert digits(to_int16(melody + bass)) == ""
    t = np.arange(3 * FS) / FS
    phase = 2 * np.pi * (300 * t + (3400 - 300) / 6 * t**2)
    assert digits(to_int16(db_to_amplitude(-10) * np.sin(phase))) == ""
    saw = sum(db_to_amplitude(-14) / k * np.sin(k * 0.3 * phase) for k in range(1, 8))
    assert digits(to_int16(saw)) == ""


def test_dtmf_over_music_bed_still_detected() -> None:
    bed = to_int16(np.concatenate([_note(_midi(60 + k % 12), 200, level=-30.0) for k in range(10)]))
    keys = np.concatenate([silence(200), dial_digits("258", 60, 100, -8.0)])
    mix = to_int16(bed[: len(keys)].astype(np.float64) + keys)
    assert digits(mix) == "258"


def test_reset_clears_state() -> None:
    det = DtmfDetector()
    sig = dtmf_tone("9", 200)
    det.feed(sig[:160])
    det.reset()
    assert det.time_ms == 0.0
    assert [e.digit for e in run(sig, det=det)] == ["9"]
