"""Builds the IVR's prompts: spoken prompts with espeak-ng, hold music synthesised.

`python -m ivr.prompts [DIR]` writes 8 kHz µ-law WAVs (the gateway's native format, so no
resampling happens per call). Run by `make setup`; idempotent.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

from ivr.settings import IvrSettings

SPOKEN = {
    "welcome": "Welcome to the Hotline call center.",
    "menu": "For sales, press 1. For support, press 2.",
    "goodbye": "Thank you for calling. Goodbye.",
    "unavailable": "We are sorry, we cannot take your call right now. Please call again later.",
}
RATE = 8000


class PromptBuildError(RuntimeError):
    """A tool the prompt build needs is missing or failed."""


def _speak(text: str, out: Path) -> None:
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise PromptBuildError(f"{tool} is not installed (make setup installs it)")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        subprocess.run(["espeak-ng", "-v", "en", "-s", "150", "-w", str(raw), text], check=True)
        subprocess.run(
            ["sox", str(raw), "-r", str(RATE), "-c", "1", "-e", "mu-law", str(out)], check=True
        )


def hold_music(seconds: float = 8.0) -> np.ndarray:
    """A soft arpeggio with harmonics and envelopes: music-like, not a tone a detector hears."""
    notes = [261.63, 329.63, 392.00, 523.25, 392.00, 329.63]
    note_len = int(RATE * 0.5)
    t = np.arange(note_len) / RATE
    envelope = np.minimum(1.0, t / 0.03) * np.exp(-3.0 * t)
    pieces = []
    for i in range(int(seconds / 0.5)):
        f = notes[i % len(notes)]
        tone = sum(np.sin(2 * np.pi * f * k * t) / k**1.5 for k in (1, 2, 3))
        pieces.append(tone * envelope)
    signal = np.concatenate(pieces)
    scaled: np.ndarray = (signal / np.max(np.abs(signal)) * 6000).astype(np.int16)
    return scaled


def _write_pcm(pcm: np.ndarray, out: Path) -> None:
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())


def build(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in SPOKEN.items():
        out = directory / f"{name}.wav"
        if not out.exists():
            _speak(text, out)
        written.append(out)
    hold = directory / "hold.wav"
    if not hold.exists():
        _write_pcm(hold_music(), hold)
    written.append(hold)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else IvrSettings.from_env().var_dir / "prompts"
    for path in build(target):
        print(path)
