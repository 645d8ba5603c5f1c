"""The gateway's one audio format: 8 kHz mono int16, in frames of 20 ms.

Every part of the gateway that touches audio (RTP sessions, the media clock,
prompts, DSP on analog lines, recording, SDP) takes its rate and frame size
from here, so the numbers are written down once.  G.711 and RFC 4733
telephone-events use an 8 kHz RTP clock too, so one RTP timestamp unit is one
sample.

This module imports nothing from the gateway; the DSP library and the SIP and
analog drivers may depend on it.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "FRAME_MS",
    "FRAME_SAMPLES",
    "FRAME_SECONDS",
    "SAMPLES_PER_MS",
    "SAMPLE_RATE",
    "silence",
]

#: Samples per second (and RTP clock rate of G.711 and telephone-event).
SAMPLE_RATE = 8000
#: One media frame (one clock tick, one RTP packet) in milliseconds.
FRAME_MS = 20
#: Samples in one frame: 160.
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
#: One frame in seconds (0.02), for event-loop times.
FRAME_SECONDS = FRAME_MS / 1000
#: Samples (RTP timestamp units) per millisecond: 8.
SAMPLES_PER_MS = SAMPLE_RATE // 1000

_SILENCE = np.zeros(FRAME_SAMPLES, dtype=np.int16)
_SILENCE.flags.writeable = False


def silence() -> np.ndarray:
    """The shared, read-only frame of zeros (one frame of silence)."""
    return _SILENCE
