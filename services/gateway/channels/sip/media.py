"""A SIP leg's media: its RTP endpoint as the core's MediaStream, with the digits that do
not come as RFC 4733 events.

Digits reach the core's ``on_dtmf`` three ways, whichever the far end uses:
* RFC 4733 telephone-events, decoded by the RTP session (as before);
* SIP INFO bodies, handed in by the channel (:meth:`SipMedia.info_digit`);
* in-band tones, found by the same DTMF detector the analog lines use (``gateway.dsp``),
  switched on only when the far end offered no telephone-event - so a leg that has RFC 4733
  pays nothing for it.

Hold: :meth:`SipMedia.set_direction` mutes sending while the negotiated direction forbids it
(the peer said inactive or recvonly, or gave 0.0.0.0), and unmutes when it changes back.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from prometheus_client import Counter

from gateway.core.contracts import AudioHandler, DigitHandler
from gateway.dsp.dtmf import DtmfDetector
from gateway.media.endpoint import RtpEndpoint

__all__ = ["SipMedia"]

DIGITS = Counter("hotline_sip_dtmf_total", "Digits received on SIP legs", ["method"])
SENDING = frozenset({"sendrecv", "sendonly"})


class SipMedia(RtpEndpoint):
    """An RTP endpoint with INFO and in-band DTMF and hold; the MediaStream of a SIP leg."""

    _handler: AudioHandler | None = None
    _digits: DigitHandler | None = None
    inband: DtmfDetector | None = None

    @property
    def on_audio(self) -> AudioHandler | None:
        """Read by the endpoint once per datagram: the core's handler itself, or the in-band
        detector in front of it."""
        return self._handler if self.inband is None else self._received

    @on_audio.setter
    def on_audio(self, handler: AudioHandler | None) -> None:
        self._handler = handler

    @property
    def on_dtmf(self) -> DigitHandler | None:
        return self._rfc4733 if self._digits is not None else None

    @on_dtmf.setter
    def on_dtmf(self, handler: DigitHandler | None) -> None:
        self._digits = handler

    def _rfc4733(self, digit: str) -> None:
        DIGITS.labels("rfc4733").inc()
        if self._digits is not None:
            self._digits(digit)

    def _received(self, frame: npt.NDArray[np.int16]) -> None:
        detector = self.inband
        if detector is not None:
            for event in detector.feed(frame):
                DIGITS.labels("inband").inc()
                if self._digits is not None:
                    self._digits(event.digit)
        if self._handler is not None:
            self._handler(frame)

    def info_digit(self, digit: str) -> None:
        """A digit the far end sent in a SIP INFO."""
        DIGITS.labels("info").inc()
        if self._digits is not None:
            self._digits(digit)

    def use_inband(self, enabled: bool) -> None:
        """Detect digits in the audio (no telephone-event negotiated) or not."""
        if enabled and self.inband is None:
            self.inband = DtmfDetector()
        elif not enabled:
            self.inband = None

    def set_direction(self, direction: str) -> None:
        """Our negotiated direction: sending only while it is sendrecv or sendonly."""
        self.session.muted = direction not in SENDING

    @property
    def held(self) -> bool:
        return self.session.muted
