"""Analog line cards (FXO ports): one async driver interface, a simulated card and DAHDI.

* :mod:`.port` — the interface (:class:`FxoPort`, :class:`LineCard`, port events) and
  :class:`BasePort`, the shared signalling / caller-ID / dial logic drivers build on
* :mod:`.sim` — the simulated card and central office (:class:`SimCard`, :class:`SimExchange`)
* :mod:`.sim_http` — HTTP control API of the simulated exchange
* :mod:`.dahdi` — Linux DAHDI userspace driver (:class:`DahdiCard`)

See docs/analog-cards.md.
"""

from .port import (
    Alarm,
    BasePort,
    CallerIdCollector,
    CallerIdReceived,
    FxoPort,
    HookState,
    LineCard,
    LoopCurrentDrop,
    PolarityReversal,
    PortError,
    PortEvent,
    PortState,
    ProgressTone,
    RingingStopped,
    RingOff,
    RingOn,
)

__all__ = [
    "Alarm",
    "BasePort",
    "CallerIdCollector",
    "CallerIdReceived",
    "FxoPort",
    "HookState",
    "LineCard",
    "LoopCurrentDrop",
    "PolarityReversal",
    "PortError",
    "PortEvent",
    "PortState",
    "ProgressTone",
    "RingOff",
    "RingOn",
    "RingingStopped",
]
