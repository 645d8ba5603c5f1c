"""Call-progress tones: tables, generator, cadence recognition, false-trigger checks."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from gateway.dsp.levels import signal_dbm0, to_int16
from gateway.dsp.progress import (
    CHINA,
    ETSI,
    US,
    ProgressToneDetector,
    ToneTable,
    tone_table,
)
from gateway.dsp.resample import resample
from gateway.dsp.tones import add_noise, cadence, dial_digits, silence, tone

FS = 8000
TABLES = (CHINA, US, ETSI)


def run(signal: np.ndarray, table: ToneTable | str, chunk: int = 160) -> list[tuple[str, float]]:
    """(tone, ms at which it was reported) for every report."""
    det = ProgressToneDetector(table)
    out = []
    for i in range(0, len(signal), chunk):
        r = det.feed(signal[i : i + chunk])
        if r is not None:
            out.append((r, (i + len(signal[i : i + chunk])) * 1000.0 / FS))
    return out


def names(signal: np.ndarray, table: ToneTable | str) -> list[str]:
    return [n for n, _ in run(signal, table)]


def with_lead(x: np.ndarray, ms: float = 300.0) -> np.ndarray:
    return np.concatenate([silence(ms), x])


# ------------------------------------------------------------------ tables
def test_table_contents() -> None:
    assert CHINA["dial"].freqs == (450.0,) and CHINA["dial"].continuous
    assert CHINA["busy"].cadence_ms == (350.0, 350.0)
    assert CHINA["congestion"].cadence_ms == (700.0, 700.0)
    assert CHINA["ringback"].cadence_ms == (1000.0, 4000.0)
    assert US["dial"].freqs == (350.0, 440.0)
    assert US["busy"].freqs == (480.0, 620.0) and US["busy"].cadence_ms == (500.0, 500.0)
    assert US["congestion"].cadence_ms == (250.0, 250.0)
    assert US["ringback"].freqs == (440.0, 480.0) and US["ringback"].cadence_ms == (2000.0, 4000.0)
    assert ETSI["busy"].freqs == (425.0,) and ETSI["busy"].cadence_ms == (500.0, 500.0)
    assert ETSI["congestion"].cadence_ms == (250.0, 250.0)
    assert ETSI["ringback"].cadence_ms == (1000.0, 4000.0)
    assert tone_table() is CHINA and tone_table("us") is US
    with pytest.raises(KeyError):
        tone_table("XX")


def test_generate_cadence_and_level() -> None:
    busy = CHINA.generate("busy", 1400)
    assert len(busy) == 1400 * 8
    on = np.abs(busy.reshape(-1, 40)).max(axis=1) > 0  # 5 ms resolution
    assert list(on[:70]) == [True] * 70 and not on[70:140].any() and on[140:210].all()
    assert signal_dbm0(busy[:2800]) == pytest.approx(-10.0, abs=0.05)
    assert signal_dbm0(US.generate("dial", 1000)) == pytest.approx(-13.0 + 3.01, abs=0.05)


# --------------------------------------------------------------- detection
@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.country)
@pytest.mark.parametrize("name", ["dial", "busy", "congestion", "ringback"])
def test_each_tone_recognised_once(table: ToneTable, name: str) -> None:
    spec = table[name]
    ms = 4000 if spec.continuous else sum(spec.cadence_ms) * (spec.cycles + 2)
    reports = run(with_lead(table.generate(name, ms)), table)
    assert [n for n, _ in reports] == [name]
    when = reports[0][1] - 300.0
    if spec.continuous:
        assert when < 1400.0  # >= 300 ms (1.26 s where ringback shares the frequency)
    else:
        cycle = sum(spec.cadence_ms)
        assert spec.cycles * cycle - 100 <= when <= spec.cycles * cycle + 200


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.country)
def test_recognised_in_noise_at_15_db_snr(table: ToneTable) -> None:
    for name in table.names():
        spec = table[name]
        ms = 4000 if spec.continuous else sum(spec.cadence_ms) * (spec.cycles + 1.5)
        ref = (
            table.generate(name, 1000)
            if spec.continuous
            else tone(spec.freqs, 500, spec.level_dbm0)
        )
        sig = add_noise(with_lead(table.generate(name, ms)), 15.0, seed=4, reference=[ref])
        assert names(sig, table) == [name]


def test_us_dial_tone_after_300_ms_but_china_waits_past_a_ringback_burst() -> None:
    (us,) = run(US.generate("dial", 2000), US)
    assert us[0] == "dial" and 280 <= us[1] <= 400
    (cn,) = run(CHINA.generate("dial", 3000), CHINA)
    assert cn[0] == "dial" and 1200 <= cn[1] <= 1400
    # A single ringback burst (1 s of 450 Hz) is not dial tone.
    assert names(with_lead(CHINA.generate("ringback", 4500)), CHINA) == []


@pytest.mark.parametrize("scale", [0.85, 1.15])
def test_cadence_timing_tolerance(scale: float) -> None:
    for table, name in ((CHINA, "busy"), (US, "busy"), (ETSI, "congestion"), (CHINA, "congestion")):
        spec = table[name]
        on, off = (d * scale for d in spec.cadence_ms)
        assert names(with_lead(cadence(spec.freqs, on, off, 6, spec.level_dbm0)), table) == [name]


def test_wrong_cadence_not_busy() -> None:
    # 0.6 x the China busy cadence (210/210 ms) matches nothing in the table.
    assert names(with_lead(cadence(450.0, 210, 210, 10, -10.0)), CHINA) == []
    # Irregular bursts of the busy frequencies are not recognised.
    rng = np.random.default_rng(2)
    bursts = np.concatenate(
        [
            np.concatenate(
                [
                    tone((480.0, 620.0), float(rng.integers(80, 1500)), -20.0),
                    silence(float(rng.integers(80, 1500))),
                ]
            )
            for _ in range(20)
        ]
    )
    assert "busy" not in names(bursts, US) and "congestion" not in names(bursts, US)


@pytest.mark.parametrize("offset", [0.02, -0.02])
def test_frequency_tolerance(offset: float) -> None:
    f = 1.0 + offset
    assert names(with_lead(cadence(450.0 * f, 350, 350, 6, -10.0)), CHINA) == ["busy"]
    assert names(with_lead(cadence((480.0 * f, 620.0 * f), 500, 500, 5, -24.0)), US) == ["busy"]
    assert names(with_lead(cadence(425.0 * f, 250, 250, 8, -10.0)), ETSI) == ["congestion"]


def test_off_frequency_and_single_tones_rejected() -> None:
    assert names(with_lead(cadence(450.0 * 1.06, 350, 350, 8, -10.0)), CHINA) == []
    assert names(with_lead(cadence(450.0, 500, 500, 8, -10.0)), ETSI) == []  # 450 Hz is not 425 Hz
    assert names(tone(440.0, 3000, -13.0), US) == []  # half of the US dial tone
    assert names(cadence(480.0, 500, 500, 6, -20.0), US) == []  # half of the US busy tone


def test_level_floor() -> None:
    assert names(with_lead(cadence(450.0, 350, 350, 6, -38.0)), CHINA) == ["busy"]
    assert names(with_lead(cadence(450.0, 350, 350, 6, -50.0)), CHINA) == []


def test_sequence_dial_ringback_busy() -> None:
    sig = np.concatenate(
        [
            CHINA.generate("dial", 2000),
            silence(1000),
            CHINA.generate("ringback", 12000),
            CHINA.generate("busy", 3000),
        ]
    )
    assert names(sig, CHINA) == ["dial", "ringback", "busy"]


def test_long_ringback_reported_once_and_reset() -> None:
    sig = US.generate("ringback", 40000)
    assert names(sig, US) == ["ringback"]
    det = ProgressToneDetector("US")
    got = [det.feed(sig[i : i + 160]) for i in range(0, 80000, 160)]
    det.reset()
    got += [det.feed(sig[i : i + 160]) for i in range(0, 80000, 160)]
    assert [g for g in got if g] == ["ringback", "ringback"]


def test_chunk_size_independent() -> None:
    sig = with_lead(ETSI.generate("busy", 4000))
    assert names(sig, ETSI) == ["busy"]
    assert [n for n, _ in run(sig, ETSI, chunk=33)] == ["busy"]


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.country)
def test_no_false_detection_on_dtmf(table: ToneTable) -> None:
    keys = np.concatenate(
        [
            dial_digits("0123456789*#ABCD" * 2, 100, 100),
            dial_digits("5" * 20, 350, 350),
            dial_digits("8" * 8, 1000, 4000),
        ]
    )
    assert names(keys, table) == []


@pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng binary not installed (apt-get install espeak-ng)",
)
def test_no_false_detection_on_speech(tmp_path: Path) -> None:
    text = (
        "Hello, thank you for calling. Please hold the line while we connect you. "
        "Oh, ah, ee, oo, mmm, laa laa laa, mee mee mee, yes, no, maybe tomorrow."
    )
    for voice, pitch in [("en", 50), ("en+f3", 80), ("zh", 60), ("de", 20)]:
        wav = tmp_path / f"{voice}.wav"
        subprocess.run(
            ["espeak-ng", "-w", str(wav), "-v", voice, "-p", str(pitch), text],
            check=True,
            capture_output=True,
        )
        with wave.open(str(wav)) as w:
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
            speech = to_int16(resample(pcm, w.getframerate(), FS))
        sig = np.concatenate([speech, speech])
        for table in TABLES:
            assert names(sig, table) == [], (voice, table.country)
