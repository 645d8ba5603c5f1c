"""An analog port as a call leg: the same media surface as an RTP endpoint, so the switch's
prompts, digit collection, bridge and recording tap work on analog lines unchanged.

In-band DTMF is found here by the DSP detector (an analog line has no RFC 4733), and the
port is kept fed with silence when a bridge has nothing to send (a line never pauses).
"""
from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import Counter

from gateway.analog.port import FxoPort
from gateway.dsp.dtmf import DtmfDetector
from gateway.media.prompts import silence

DSP_DETECTIONS = Counter("hotline_analog_dsp_detections_total",
                         "In-band detections on analog lines", ["kind"])


class AnalogMedia:
    """Duck-typed like `RtpEndpoint` for the switch and `Bridge` (on_audio, on_dtmf,
    send_audio, skip, close)."""

    def __init__(self, port: FxoPort) -> None:
        self.port = port
        self.on_audio: Callable[[np.ndarray], None] | None = None
        self.on_dtmf: Callable[[str], None] | None = None
        self._dtmf = DtmfDetector()
        port.on_audio = self._received

    def _received(self, frame: np.ndarray) -> None:
        for event in self._dtmf.feed(frame):
            DSP_DETECTIONS.labels("dtmf").inc()
            if self.on_dtmf is not None:
                self.on_dtmf(event.digit)
        if self.on_audio is not None:
            self.on_audio(frame)

    def send_audio(self, pcm: np.ndarray) -> bool:
        self.port.send_audio(pcm)
        return True

    def skip(self, frames: int = 1) -> None:
        for _ in range(frames):
            self.port.send_audio(silence())

    def close(self) -> None:
        if self.port.on_audio == self._received:
            self.port.on_audio = None


@dataclass(eq=False)
class AnalogLeg:
    """The caller's side of a call that came in on an FXO port."""

    port: FxoPort
    endpoint: AnalogMedia
    uas: bool = True
    confirmed: bool = False
    terminated: bool = False
    leg_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    sip_call_id: str = ""          # registry key; unique per leg, never sent anywhere

    def __post_init__(self) -> None:
        self.sip_call_id = self.sip_call_id or f"analog-{self.port.index}-{self.leg_id}"
