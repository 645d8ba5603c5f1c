"""Band-limited sample-rate conversion without SciPy.

Needed to bring prompts and test speech (e.g. espeak-ng's 22.05 kHz output)
down to the 8 kHz line rate without aliasing energy into the DTMF band.
"""

from __future__ import annotations

import numpy as np

__all__ = ["resample"]


def resample(x: np.ndarray, fs_in: int, fs_out: int, half_taps: int = 24,
             chunk: int = 16384) -> np.ndarray:
    """Resample ``x`` from ``fs_in`` to ``fs_out`` Hz with a Kaiser-windowed sinc.

    The low-pass cutoff is 0.45 x the lower of the two rates, so the 8 kHz output
    keeps the full 300-3400 Hz telephone band while images stay >60 dB down.
    Returns float64; callers round to int16 if needed.
    """
    xf = np.asarray(x, dtype=np.float64).ravel()
    if fs_in == fs_out or xf.size == 0:
        return xf.copy()
    ratio = fs_in / fs_out  # input samples per output sample
    cutoff = 0.45 * min(fs_in, fs_out) / fs_in  # cycles per input sample
    n_out = int(np.floor(xf.size / ratio))
    padded = np.concatenate((np.zeros(half_taps), xf, np.zeros(half_taps + 1)))
    offs = np.arange(-half_taps + 1, half_taps + 1)
    beta = 8.0
    out = np.empty(n_out, dtype=np.float64)
    for start in range(0, n_out, chunk):
        k = np.arange(start, min(start + chunk, n_out))
        t = k * ratio
        base = np.floor(t).astype(np.int64)
        idx = base[:, None] + offs[None, :]  # input sample indices around t
        d = idx - t[:, None]  # distance in input samples
        w = np.i0(beta * np.sqrt(np.clip(1.0 - (d / (half_taps + 1)) ** 2, 0.0, None))) / np.i0(beta)
        h = 2.0 * cutoff * np.sinc(2.0 * cutoff * d) * w
        out[k - 0] = np.einsum("ij,ij->i", padded[idx + half_taps], h)
    return out
