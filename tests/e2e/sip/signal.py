"""Audio checked by signal: which of a few tones a recording carries (Goertzel), never by
log lines or call state."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono float samples and the sample rate of a 16-bit WAV (first channel if several)."""
    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 2, f"{path}: expected 16-bit PCM"
        rate, channels = w.getframerate(), w.getnchannels()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.reshape(-1, channels)[:, 0].astype(np.float64), rate


def tone_share(samples: np.ndarray, rate: int, freq: float) -> float:
    """Share of the signal's power within +-2 % of ``freq`` (0..1), from an FFT."""
    if samples.size < rate // 10:
        return 0.0
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size))) ** 2
    freqs = np.fft.rfftfreq(samples.size, 1.0 / rate)
    total = float(spectrum[freqs > 50].sum())
    band = (freqs > freq * 0.98) & (freqs < freq * 1.02)
    return float(spectrum[band].sum()) / total if total > 0 else 0.0


def loud_part(samples: np.ndarray, rate: int, threshold: float = 300.0) -> np.ndarray:
    """The samples from the first to the last 20 ms block whose RMS exceeds ``threshold``."""
    block = rate // 50
    n = samples.size // block
    if n == 0:
        return samples[:0]
    rms = np.sqrt((samples[: n * block].reshape(n, block) ** 2).mean(axis=1))
    loud = np.flatnonzero(rms > threshold)
    if loud.size == 0:
        return samples[:0]
    return samples[loud[0] * block : (loud[-1] + 1) * block]


def assert_hears(path: Path, freq: float, *, not_freq: float | None = None, what: str) -> None:
    """The recording carries a clear ``freq`` tone for at least a second (and not the
    ``not_freq`` tone, the side's own, which would mean an echo or a loop)."""
    samples, rate = read_wav(path)
    heard = loud_part(samples, rate)
    seconds = heard.size / rate
    share = tone_share(heard, rate, freq)
    assert seconds >= 1.0, f"{what}: only {seconds:.2f}s of audio above the noise in {path.name}"
    assert share > 0.6, f"{what}: {freq} Hz is {share:.0%} of the audio power in {path.name}"
    if not_freq is not None:
        other = tone_share(heard, rate, not_freq)
        assert other < 0.05, f"{what}: own tone {not_freq} Hz is {other:.0%} of {path.name}"


def tone_frames(freq: float, seconds: float, rate: int = 8000, level: float = 8000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * level).astype(np.int16)


def timeline(path: Path, freqs: dict[str, float], window_s: float = 0.25) -> list[dict[str, float]]:
    """Per window of the recording, each named tone's share of the power (0..1); a quiet
    window has every share 0. Tells *when* a party heard whom."""
    samples, rate = read_wav(path)
    size = int(window_s * rate)
    out = []
    for start in range(0, samples.size - size + 1, size):
        chunk = samples[start : start + size]
        loud = float(np.sqrt((chunk**2).mean())) > 300.0
        out.append({name: tone_share(chunk, rate, f) if loud else 0.0 for name, f in freqs.items()})
    return out


def phases(windows: list[dict[str, float]], share: float = 0.5) -> list[str]:
    """The sequence of dominant tones (by name), repeats collapsed; quiet or mixed windows
    are left out. E.g. ["agent", "moh", "agent"] for a hold and resume."""
    seq: list[str] = []
    for window in windows:
        name, best = max(window.items(), key=lambda kv: kv[1], default=("", 0.0))
        if best >= share and (not seq or seq[-1] != name):
            seq.append(name)
    return seq


def longest_run(
    windows: list[dict[str, float]], name: str, share: float = 0.5
) -> list[dict[str, float]]:
    """The longest stretch of consecutive windows where ``name`` has at least ``share``."""
    best: list[dict[str, float]] = []
    run: list[dict[str, float]] = []
    for window in windows:
        if window.get(name, 0.0) >= share:
            run.append(window)
            if len(run) > len(best):
                best = list(run)
        else:
            run = []
    return best
