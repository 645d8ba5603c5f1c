"""Analog-line DSP for the gateway: 8 kHz int16 PCM in 20 ms frames, streaming.

* :mod:`.dtmf` — DTMF receiver (ITU-T Q.23/Q.24), :class:`DtmfDetector`
* :mod:`.callerid` — FSK (V.23 / Bell 202, SDMF/MDMF) and DTMF caller ID
* :mod:`.progress` — call-progress tone tables and cadence detector
* :mod:`.bank` — batched DTMF + progress detection for many lines
* :mod:`.tones`, :mod:`.levels` — generators and the dBm0 convention
* :mod:`.resample` — band-limited sample-rate conversion

See docs/analog-dsp.md for algorithms, thresholds and references.
"""

from .bank import LineBank
from .callerid import (
    CallerId,
    CallerIdError,
    DtmfCallerIdParser,
    FskCallerIdDecoder,
    encode_callerid_fsk,
)
from .dtmf import DtmfDetector, DtmfEvent
from .progress import ProgressToneDetector, ToneTable, tone_table

__all__ = [
    "CallerId",
    "CallerIdError",
    "DtmfCallerIdParser",
    "DtmfDetector",
    "DtmfEvent",
    "FskCallerIdDecoder",
    "LineBank",
    "ProgressToneDetector",
    "ToneTable",
    "encode_callerid_fsk",
    "tone_table",
]
