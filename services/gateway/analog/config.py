"""Which line card the gateway drives, from HOTLINE_ANALOG_CARD.

`sim:N` — the simulated card with N ports (the local default, `sim:4`); `dahdi:1,2,3,4` — real
DAHDI channels; `none` — no analog lines. Anything else stops the gateway with a message.
"""
from __future__ import annotations

import os

from gateway.analog.port import LineCard
from gateway.media.clock import FrameClock


class CardConfigError(ValueError):
    """HOTLINE_ANALOG_CARD has a value we cannot use."""


def card_from_env(clock: FrameClock) -> LineCard | None:
    spec = os.environ.get("HOTLINE_ANALOG_CARD", "sim:4").strip()
    kind, _, arg = spec.partition(":")
    if kind == "none":
        return None
    if kind == "sim":
        try:
            ports = int(arg or "4")
        except ValueError:
            ports = 0
        if not 1 <= ports <= 64:
            raise CardConfigError(f"HOTLINE_ANALOG_CARD={spec!r}: sim needs 1-64 ports, e.g. sim:4")
        from gateway.analog.sim import SimCard
        return SimCard(ports, clock=clock)
    if kind == "dahdi":
        try:
            channels = [int(c) for c in arg.split(",") if c.strip()]
        except ValueError:
            channels = []
        if not channels:
            raise CardConfigError(f"HOTLINE_ANALOG_CARD={spec!r}: dahdi needs channel numbers, "
                                  "e.g. dahdi:1,2,3,4")
        from gateway.analog.dahdi import DahdiCard
        return DahdiCard(channels, law=os.environ.get("HOTLINE_ANALOG_LAW", "alaw"))
    raise CardConfigError(f"HOTLINE_ANALOG_CARD={spec!r}: expected sim:N, dahdi:CH,... or none")
