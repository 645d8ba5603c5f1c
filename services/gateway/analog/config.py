"""Which line card the gateway drives: the card spec and the card it opens.

`sim:N` — the simulated card with N ports (the local default, `sim:4`); `dahdi:1,2,3,4` — real
DAHDI channels; `none` — no analog lines. `parse_card_spec` refuses anything else with a
message; the gateway's settings (HOTLINE_ANALOG_CARD) call it at start.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.analog.port import LineCard
from gateway.media.clock import FrameClock

MAX_SIM_PORTS = 64
LAWS = ("alaw", "ulaw")


class CardConfigError(ValueError):
    """A card spec we cannot use."""


@dataclass(frozen=True)
class CardSpec:
    """A parsed card spec: `kind` is none, sim or dahdi; `ports` (sim) or `channels` (dahdi)."""

    kind: str
    ports: int = 0
    channels: tuple[int, ...] = ()

    def __str__(self) -> str:
        if self.kind == "sim":
            return f"sim:{self.ports}"
        if self.kind == "dahdi":
            return "dahdi:" + ",".join(map(str, self.channels))
        return self.kind


def parse_card_spec(spec: str) -> CardSpec:
    """`sim:N`, `sim` (4 ports), `dahdi:CH,...` or `none`; CardConfigError otherwise, with a
    message starting with the spec as written."""
    spec = spec.strip()
    kind, _, arg = spec.partition(":")
    if kind == "none":
        return CardSpec("none")
    if kind == "sim":
        try:
            ports = int(arg or "4")
        except ValueError:
            ports = 0
        if not 1 <= ports <= MAX_SIM_PORTS:
            raise CardConfigError(f"{spec!r}: sim needs 1-{MAX_SIM_PORTS} ports, e.g. sim:4")
        return CardSpec("sim", ports=ports)
    if kind == "dahdi":
        try:
            channels = tuple(int(c) for c in arg.split(",") if c.strip())
        except ValueError:
            channels = ()
        if not channels or min(channels) < 1:
            raise CardConfigError(f"{spec!r}: dahdi needs channel numbers, e.g. dahdi:1,2,3,4")
        if len(set(channels)) != len(channels):
            raise CardConfigError(f"{spec!r}: a DAHDI channel is listed twice")
        return CardSpec("dahdi", channels=channels)
    raise CardConfigError(f"{spec!r}: expected sim:N, dahdi:CH,... or none")


def open_card(spec: CardSpec, clock: FrameClock, law: str = "alaw") -> LineCard | None:
    """The card `spec` names (None for `none`); `law` is the G.711 law of DAHDI channels."""
    if spec.kind == "sim":
        from gateway.analog.sim import SimCard

        return SimCard(spec.ports, clock=clock)
    if spec.kind == "dahdi":
        from gateway.analog.dahdi import DahdiCard

        return DahdiCard(list(spec.channels), law=law)
    return None
