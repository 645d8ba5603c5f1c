#!/usr/bin/env python3
"""How many analog lines one CPU core can run DTMF + call-progress detection for.

Run: ``.venv/bin/python bench/bench_dsp.py [--lines 100] [--seconds 20]``

Each line gets its own DtmfDetector and ProgressToneDetector (the per-line
streaming API the gateway uses) and is fed 20 ms frames round-robin, like the
media loop does. The audio keeps the detectors busy all the time (speech or a
speech-like harmonic signal, key presses, ringback, noise floor; no digital
silence, so the quiet-frame shortcut never helps). Real time for one line is
50 frames/s; "lines/core" = 1 s / (CPU time per frame x 50).

Baseline, measured in the same run: a naive detector doing one Hann-windowed
numpy FFT per frame and reading the DTMF and progress-tone bins
(no frequency-tolerance, twist, talk-off or cadence logic).

Also measured: :class:`gateway.dsp.bank.LineBank`, which runs the very same
per-line detector objects but computes the Goertzel products of all lines in
one matrix multiply per frame (results are identical; see test_dsp_bank.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

from gateway.dsp.bank import LineBank
from gateway.dsp.dtmf import DtmfDetector
from gateway.dsp.levels import to_int16
from gateway.dsp.progress import US, ProgressToneDetector
from gateway.dsp.resample import resample
from gateway.dsp.tones import DTMF_COLS, DTMF_KEYS, DTMF_ROWS, dial_digits, noise
from gateway.media.audio import FRAME_SAMPLES as FRAME
from gateway.media.audio import SAMPLE_RATE

ROOT = Path(__file__).resolve().parents[1]
GOAL_LINES_PER_CORE = 100.0


def _speech(seconds: float, seed: int) -> np.ndarray:
    """espeak-ng speech if installed, else a gliding harmonic voice-like signal."""
    if shutil.which("espeak-ng"):
        text = (
            "Thank you for calling. Your call is important to us. Please enter your "
            "account number followed by the hash key. One two three four five six."
        )
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "s.wav"
            subprocess.run(
                ["espeak-ng", "-w", str(wav), "-p", str(30 + seed % 60), text],
                check=True,
                capture_output=True,
            )
            with wave.open(str(wav)) as w:
                pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
                x = resample(pcm, w.getframerate(), SAMPLE_RATE)
    else:
        rng = np.random.default_rng(seed)
        t = np.arange(int(8 * SAMPLE_RATE)) / SAMPLE_RATE
        f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t) + 10 * rng.standard_normal()
        ph = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
        envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)
        x = sum(3000 / k * np.sin(k * ph) for k in range(1, 20)) * envelope
    reps = int(np.ceil(seconds * SAMPLE_RATE / len(x)))
    return np.tile(x, reps)[: int(seconds * SAMPLE_RATE)]


KEYS = "0123456789*#"


def _sequence_starts(n: int, n_keys: int, n_ring: int) -> range:
    """Every 10 s: the key presses, 1 s of speech, then a ringback."""
    return range(SAMPLE_RATE, n - n_keys - SAMPLE_RATE - n_ring, 10 * SAMPLE_RATE)


def line_audio(seconds: float, seed: int) -> np.ndarray:
    """Speech with key presses and a ringback burst mixed in, over a noise floor."""
    n = int(seconds * SAMPLE_RATE)
    x = _speech(seconds, seed)
    keys = dial_digits(KEYS, 80, 80, -10.0).astype(np.float64)
    ring = US.generate("ringback", 6500).astype(np.float64)
    for start in _sequence_starts(n, len(keys), len(ring)):
        x[start : start + len(keys)] = keys
        s2 = start + len(keys) + SAMPLE_RATE
        x[s2 : s2 + len(ring)] = ring
    x = x + noise(seconds * 1000, -55.0, seed=seed).astype(np.float64)
    return to_int16(x)


class NaiveFftDetector:
    """Baseline: per-frame windowed FFT, DTMF and progress bins, 2-frame debounce."""

    def __init__(self) -> None:
        self._win = np.hanning(FRAME)
        centre = np.rint(
            np.array(DTMF_ROWS + DTMF_COLS + (350.0, 440.0, 480.0, 620.0)) * FRAME / SAMPLE_RATE
        ).astype(int)
        self._bins = centre[:, None] + np.array([-1, 0, 1])[None, :]  # Hann main lobe
        self._last = ""
        self._count = 0
        self._latched = ""

    def feed(self, frame: np.ndarray) -> list[str]:
        spec = np.abs(np.fft.rfft(frame * self._win)) ** 2
        p = spec[self._bins].sum(axis=1)
        total = spec.sum()
        r, c = int(np.argmax(p[:4])), int(np.argmax(p[4:8]))
        digit = DTMF_KEYS[r][c] if p[r] + p[4 + c] > 0.6 * total and total > 1e6 else ""
        self._count = self._count + 1 if digit == self._last else 1
        self._last = digit
        progress_on = p[8:].sum() > 0.7 * total  # would feed a cadence tracker
        del progress_on
        if digit and self._count == 2 and digit != self._latched:
            self._latched = digit
            return [digit]
        if not digit:
            self._latched = ""
        return []


def run(make, audio: list[np.ndarray], frames: int) -> tuple[float, int]:
    """CPU seconds to feed ``frames`` frames to every line round-robin; events seen."""
    lines = [make() for _ in audio]
    events = 0
    t0 = time.process_time()
    for f in range(frames):
        lo = f * FRAME
        for obj, x in zip(lines, audio, strict=False):
            events += len(obj(x[lo : lo + FRAME]))
    return time.process_time() - t0, events


def run_bank(audio: list[np.ndarray], frames: int) -> tuple[float, int]:
    """Same, through one LineBank holding every line."""
    block = np.stack(audio)
    bank = LineBank(len(audio), US)
    events = 0
    t0 = time.process_time()
    for f in range(frames):
        events += len(bank.feed(block[:, f * FRAME : (f + 1) * FRAME]))
    return time.process_time() - t0, events


def ours():
    dtmf, prog = DtmfDetector(), ProgressToneDetector(US)

    def step(frame: np.ndarray) -> list:
        ev = dtmf.feed(frame)
        p = prog.feed(frame)
        return ev + [p] if p else ev

    return step


def baseline():
    return NaiveFftDetector().feed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, default=100, help="concurrent lines simulated")
    ap.add_argument("--seconds", type=float, default=20.0, help="audio seconds per line")
    args = ap.parse_args()
    distinct = [line_audio(args.seconds, seed) for seed in range(8)]
    audio = [distinct[i % len(distinct)] for i in range(args.lines)]
    frames = int(args.seconds * SAMPLE_RATE) // FRAME
    total = frames * args.lines

    run(ours, audio[:4], 50)  # warm-up (imports, caches)
    run(baseline, audio[:4], 50)
    run_bank(audio[:4], 50)
    results = []
    for name, (cpu, events) in (
        ("baseline: naive numpy FFT per frame", run(baseline, audio, frames)),
        ("DtmfDetector+ProgressToneDetector", run(ours, audio, frames)),
        ("LineBank (same detectors, batched)", run_bank(audio, frames)),
    ):
        us = cpu / total * 1e6
        results.append((name, us, 1e6 / (us * 50), events))
    base_lines = results[0][2]
    print(
        f"python {sys.version.split()[0]}, numpy {np.__version__}, "
        f"{os.cpu_count()} CPUs visible, load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{args.lines} lines x {args.seconds:.0f} s of audio = {total} frames of 20 ms "
        f"(speech: {'espeak-ng' if shutil.which('espeak-ng') else 'synthetic'}, "
        f"every 10 s 12 key presses and a ringback)"
    )
    print("real-time requirement: 1.0 line = 50 frames/s; lines/core = 1 s / (CPU per frame x 50)")
    print(f"{'detector':<38}{'us/frame':>9}{'lines/core':>12}{'vs baseline':>13}{'events':>8}")
    for name, us, lines, events in results:
        print(f"{name:<38}{us:>9.1f}{lines:>12.0f}{lines / base_lines:>12.2f}x{events:>8}")
    n = int(args.seconds * SAMPLE_RATE)
    seqs = len(_sequence_starts(n, len(dial_digits(KEYS, 80, 80)), 52000)) * args.lines
    print(
        f"expected events: {seqs * len(KEYS)} key presses + {seqs} ringbacks = "
        f"{seqs * (len(KEYS) + 1)}; the baseline reports digits only, so anything above "
        f"{seqs * len(KEYS)} there is talk-off from the speech"
    )
    per_line = results[1][2]
    verdict = "PASS" if per_line >= GOAL_LINES_PER_CORE else "FAIL"
    print(
        f"goal >= {GOAL_LINES_PER_CORE:.0f} lines/core with the per-line API: {verdict} "
        f"({per_line:.0f} lines/core = {per_line / GOAL_LINES_PER_CORE:.1f}x the goal; "
        f"batched {results[2][2]:.0f})"
    )
    sys.exit(0 if verdict == "PASS" else 1)


if __name__ == "__main__":
    main()
