"""Signal-level conventions shared by every analog-line DSP block.

All DSP in ``gateway.dsp`` works on 8 kHz, 16-bit linear PCM that was
expanded from G.711 elsewhere. Levels are expressed in dBm0 so that detector
thresholds written against ITU-T/ETSI specifications can be used unchanged.

Convention (documented in docs/analog-dsp.md): a full-scale int16 sine wave
(peak 32767) is **+3.14 dBm0**, the G.711 mu-law overload point. Hence a
0 dBm0 sine has peak amplitude ``32767 * 10**(-3.14/20) ~= 22826`` and mean
square ``22826**2 / 2``. The level of any signal is its mean square relative to
that of the 0 dBm0 sine. (G.711 A-law overloads at +3.14 dBm0 as well, so the
same constant holds for both laws to within a few hundredths of a dB.)
"""

from __future__ import annotations

import math

import numpy as np

FULL_SCALE = 32767.0
OVERLOAD_DBM0 = 3.14
#: Peak amplitude of a 0 dBm0 sine wave.
DBM0_PEAK = FULL_SCALE * 10.0 ** (-OVERLOAD_DBM0 / 20.0)
#: Mean square (power) of a 0 dBm0 sine wave.
DBM0_POWER = DBM0_PEAK * DBM0_PEAK / 2.0


def db_to_amplitude(level_dbm0: float) -> float:
    """Peak amplitude of a sine at ``level_dbm0`` (so generators hit exact levels)."""
    return float(DBM0_PEAK * 10.0 ** (level_dbm0 / 20.0))


def amplitude_to_db(amplitude: float) -> float:
    """Level in dBm0 of a sine with the given peak amplitude (inverse of db_to_amplitude)."""
    if amplitude <= 0.0:
        return -math.inf
    return 20.0 * math.log10(amplitude / DBM0_PEAK)


def dbm0_to_power(level_dbm0: float) -> float:
    """Mean square of a signal at ``level_dbm0``; detector thresholds compare powers."""
    return float(DBM0_POWER * 10.0 ** (level_dbm0 / 10.0))


def power_to_dbm0(power: float) -> float:
    """Level in dBm0 of a signal with mean square ``power``."""
    if power <= 0.0:
        return -math.inf
    return 10.0 * math.log10(power / DBM0_POWER)


def signal_dbm0(x: np.ndarray) -> float:
    """Measured level of a whole signal in dBm0 (mean-square based)."""
    xf = np.asarray(x, dtype=np.float64)
    if xf.size == 0:
        return -math.inf
    return power_to_dbm0(float(np.dot(xf, xf)) / xf.size)


def to_int16(x: np.ndarray) -> np.ndarray:
    """Round and saturate float samples to int16, as a codec-facing stage would."""
    out: np.ndarray = np.clip(np.rint(x), -32768, 32767).astype(np.int16)
    return out
