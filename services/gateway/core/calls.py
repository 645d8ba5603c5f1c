"""The gateway's call model: a call is the caller's leg plus, once connected, an agent's leg.

The call keeps what the IVR and ACD ask about it (digits typed, what is playing, what it is
bridged to) and its timestamps for CallEnded. Legs are the channels' objects, seen through
the :class:`~gateway.core.contracts.Leg` contract.
"""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass, field

from gateway.core.contracts import Leg, Recording
from gateway.media.bridge import Bridge
from gateway.media.prompts import PromptPlayer

__all__ = ["Call", "CallGone", "CallRegistry", "CallState", "EndReason"]


class CallState(str, enum.Enum):
    OFFERED = "offered"  # ringing at the gateway, waiting for an Answer command
    ANSWERED = "answered"  # connected to the gateway (IVR, queue, music)
    BRIDGED = "bridged"  # talking to an endpoint
    ENDED = "ended"


class EndReason(str, enum.Enum):
    """Why a call ended (the CallEnded reason, and the metric label)."""

    CALLER_HANGUP = "caller_hangup"
    AGENT_HANGUP = "agent_hangup"
    FAR_END = "far_end"
    TIMEOUT = "timeout"
    SYSTEM = "system"


class CallGone(Exception):
    """The call ended (or never existed) while a command was waiting on it."""


@dataclass(eq=False)
class Call:
    call_id: str
    ani: str
    dnis: str
    trunk: str
    channel: str
    caller: Leg
    caller_name: str = ""
    line: str = ""  # physical line of an analog call, e.g. "analog/2"
    outbound: bool = False
    diverted_from: str = ""
    state: CallState = CallState.OFFERED
    agent: Leg | None = None
    ringing_endpoint: bool = False  # a ConnectToEndpoint is ringing someone
    bridge: Bridge | None = None
    agent_id: str = ""
    queue: str = ""
    offered_at: float = field(default_factory=time.monotonic)
    offered_wall: float = field(default_factory=time.time)
    answered_at: float | None = None
    bridged_at: float | None = None
    player: PromptPlayer | None = None
    play_done: asyncio.Future[bool] | None = None
    barge_in: bool = False
    digits: list[str] = field(default_factory=list)
    digit_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    recording: Recording | None = None
    trace: dict[str, str] = field(default_factory=dict)  # W3C context of the call's trace

    def legs(self) -> tuple[Leg, ...]:
        return (self.caller,) if self.agent is None else (self.caller, self.agent)

    def take_digit(self) -> str | None:
        if self.digits:
            digit = self.digits.pop(0)
            if not self.digits:
                self.digit_arrived.clear()
            return digit
        return None

    async def next_digit(self, timeout_s: float) -> str | None:
        """The next typed digit, None on timeout; raises CallGone if the call ends first."""
        digit = self.take_digit()
        if digit is not None:
            return digit
        if self.ended.is_set():
            raise CallGone(self.call_id)
        waits = {
            asyncio.ensure_future(self.digit_arrived.wait()),
            asyncio.ensure_future(self.ended.wait()),
        }
        try:
            await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        digit = self.take_digit()
        if digit is None and self.ended.is_set():
            raise CallGone(self.call_id)
        return digit


class CallRegistry:
    """Live calls by id, and the call each leg belongs to."""

    def __init__(self) -> None:
        self.calls: dict[str, Call] = {}
        self._by_leg: dict[str, Call] = {}

    def add(self, call: Call) -> None:
        self.calls[call.call_id] = call
        self.bind_leg(call, call.caller)

    def bind_leg(self, call: Call, leg: Leg) -> None:
        self._by_leg[leg.leg_id] = call

    def call_of(self, leg: Leg) -> Call | None:
        return self._by_leg.get(leg.leg_id)

    def get(self, call_id: str) -> Call:
        call = self.calls.get(call_id)
        if call is None or call.state == CallState.ENDED:
            raise CallGone(call_id)
        return call

    def live(self) -> list[Call]:
        return [c for c in self.calls.values() if c.state != CallState.ENDED]

    def remove(self, call: Call) -> None:
        self.calls.pop(call.call_id, None)
        for leg in call.legs():
            if self._by_leg.get(leg.leg_id) is call:
                del self._by_leg[leg.leg_id]
