"""Test-signal and line-signal generators (DTMF, call-progress tones, noise).

Used by the simulated telephone exchange and by the DSP tests, so every
generator produces exact levels in dBm0 (see :mod:`gateway.dsp.levels` for the
+3.14 dBm0 full-scale convention) and returns int16 PCM at 8 kHz.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from gateway.media.audio import SAMPLE_RATE

from .levels import (
    amplitude_to_db,
    db_to_amplitude,
    dbm0_to_power,
    power_to_dbm0,
    signal_dbm0,
    to_int16,
)

__all__ = [
    "DTMF_COLS",
    "DTMF_KEYS",
    "DTMF_ROWS",
    "add_noise",
    "amplitude_to_db",
    "cadence",
    "db_to_amplitude",
    "dbm0_to_power",
    "dial_digits",
    "dtmf_frequencies",
    "dtmf_tone",
    "noise",
    "power_to_dbm0",
    "signal_dbm0",
    "silence",
    "tone",
]

#: Low ("row") group, Hz — ITU-T Q.23.
DTMF_ROWS: tuple[float, ...] = (697.0, 770.0, 852.0, 941.0)
#: High ("column") group, Hz — ITU-T Q.23.
DTMF_COLS: tuple[float, ...] = (1209.0, 1336.0, 1477.0, 1633.0)
#: Keypad layout: DTMF_KEYS[row][col].
DTMF_KEYS: tuple[str, ...] = ("123A", "456B", "789C", "*0#D")


def _samples(duration_ms: float) -> int:
    return round(duration_ms * SAMPLE_RATE / 1000.0)


def dtmf_frequencies(digit: str) -> tuple[float, float]:
    """(row, column) nominal frequencies of a DTMF key; raises ValueError if unknown."""
    d = digit.upper()
    for r, keys in enumerate(DTMF_KEYS):
        c = keys.find(d)
        if c >= 0 and len(d) == 1:
            return DTMF_ROWS[r], DTMF_COLS[c]
    raise ValueError(f"not a DTMF digit: {digit!r}")


def _sines(
    freqs: Sequence[float], levels: Sequence[float], n: int, phases: Sequence[float] | None = None
) -> np.ndarray:
    t = np.arange(n, dtype=np.float64) / SAMPLE_RATE
    out = np.zeros(n, dtype=np.float64)
    for i, (f, lv) in enumerate(zip(freqs, levels, strict=False)):
        ph = 0.0 if phases is None else phases[i]
        out += db_to_amplitude(lv) * np.sin(2.0 * np.pi * f * t + ph)
    return out


def silence(ms: float) -> np.ndarray:
    """Digital silence of ``ms`` milliseconds."""
    return np.zeros(_samples(ms), dtype=np.int16)


def tone(
    freqs: float | Sequence[float], duration_ms: float, level: float | Sequence[float] = -13.0
) -> np.ndarray:
    """Sum of sines; ``level`` is dBm0 *per frequency* (scalar or one per frequency)."""
    fs = [float(freqs)] if isinstance(freqs, (int, float)) else [float(f) for f in freqs]
    lv = [float(level)] * len(fs) if isinstance(level, (int, float)) else [float(v) for v in level]
    if len(lv) != len(fs):
        raise ValueError("need one level per frequency")
    return to_int16(_sines(fs, lv, _samples(duration_ms)))


def cadence(
    freqs: float | Sequence[float],
    on_ms: float,
    off_ms: float,
    repeats: int,
    level: float | Sequence[float] = -13.0,
) -> np.ndarray:
    """``repeats`` cycles of tone-on / silence-off, e.g. busy or ringback tone."""
    burst = tone(freqs, on_ms, level)
    gap = silence(off_ms)
    return (
        np.concatenate([np.concatenate([burst, gap]) for _ in range(repeats)])
        if repeats > 0
        else np.zeros(0, dtype=np.int16)
    )


def dtmf_tone(
    digit: str,
    duration_ms: float,
    level_dbm0: float = -10.0,
    twist_db: float = 0.0,
    freq_offset: float | tuple[float, float] = 0.0,
) -> np.ndarray:
    """One DTMF key press.

    ``level_dbm0`` is the level of the low-group (row) tone; the high-group
    (column) tone is at ``level_dbm0 + twist_db``, so a negative ``twist_db``
    means the column tone is weaker (the "normal" twist a long loop produces).
    ``freq_offset`` is a relative frequency error applied to both tones, or a
    (row, col) pair to detune each tone separately, e.g. ``(0.015, 0.0)``.
    """
    row, col = dtmf_frequencies(digit)
    if isinstance(freq_offset, (int, float)):
        off_r = off_c = float(freq_offset)
    else:
        off_r, off_c = freq_offset
    return to_int16(
        _sines(
            (row * (1.0 + off_r), col * (1.0 + off_c)),
            (level_dbm0, level_dbm0 + twist_db),
            _samples(duration_ms),
        )
    )


def dial_digits(
    digits: str,
    on_ms: float = 100.0,
    off_ms: float = 100.0,
    level_dbm0: float = -10.0,
    twist_db: float = 0.0,
) -> np.ndarray:
    """A DTMF digit string, each key ``on_ms`` long followed by ``off_ms`` of silence."""
    parts: list[np.ndarray] = []
    for d in digits:
        parts.append(dtmf_tone(d, on_ms, level_dbm0, twist_db))
        parts.append(silence(off_ms))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)


def noise(ms: float, level: float = -40.0, seed: int | None = None) -> np.ndarray:
    """White Gaussian noise whose mean square is ``level`` dBm0."""
    rng = np.random.default_rng(seed)
    return to_int16(rng.standard_normal(_samples(ms)) * np.sqrt(dbm0_to_power(level)))


def add_noise(
    signal: np.ndarray,
    snr_db: float,
    seed: int | None = None,
    reference: Iterable[np.ndarray] | None = None,
) -> np.ndarray:
    """Add white noise at ``snr_db`` below the power of the non-silent part of ``signal``.

    Silence is excluded from the reference power so that "15 dB SNR" means
    15 dB below the tone itself, which is how detector specs state it.
    """
    x = np.asarray(signal, dtype=np.float64)
    ref = x if reference is None else np.concatenate([np.asarray(r, np.float64) for r in reference])
    active = ref[np.abs(ref) > 0]
    p = float(np.mean(active * active)) if active.size else 0.0
    rng = np.random.default_rng(seed)
    n = rng.standard_normal(x.size) * np.sqrt(p / 10.0 ** (snr_db / 10.0))
    return to_int16(x + n)
