"""Band-limited resampler used to bring prompts and test speech to 8 kHz."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.dsp.resample import resample


def _level_db(y: np.ndarray) -> float:
    y = y[200:-200]
    return float(20 * np.log10(np.sqrt(np.mean(y * y)) * np.sqrt(2)))


@pytest.mark.parametrize("fs_in", [22050, 16000, 44100, 48000])
def test_passband_kept_and_aliases_suppressed(fs_in: int) -> None:
    t = np.arange(fs_in) / fs_in
    y = resample(np.sin(2 * np.pi * 1000.0 * t), fs_in, 8000)
    assert y.size == 8000
    assert _level_db(y) == pytest.approx(0.0, abs=0.05)
    spec = np.abs(np.fft.rfft(y))
    assert int(np.argmax(spec)) == 1000  # 1 Hz bins: frequency preserved
    alias = resample(np.sin(2 * np.pi * 4700.0 * t), fs_in, 8000)  # would fold to 3300 Hz
    assert _level_db(alias) < -70.0


def test_upsampling_and_identity() -> None:
    x = np.sin(2 * np.pi * 500.0 * np.arange(8000) / 8000)
    up = resample(x, 8000, 16000)
    assert up.size == 16000 and _level_db(up) == pytest.approx(0.0, abs=0.05)
    assert np.array_equal(resample(x, 8000, 8000), x)
    assert resample(np.zeros(0), 22050, 8000).size == 0
