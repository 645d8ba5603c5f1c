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
from gateway.core.parties import Party, Role
from gateway.media.bridge import Bridge
from gateway.media.prompts import PromptPlayer
from gateway.media.room import Room

__all__ = ["Call", "CallGone", "CallRegistry", "CallState", "CommandError", "EndReason"]


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


class CommandError(Exception):
    """A command that cannot be done in the call's current state (FAILED_PRECONDITION)."""


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
    # call control: more parties than caller and agent, the room that mixes them, hold
    others: list[Party] = field(default_factory=list)  # conference, consult, supervisor
    room: Room | None = None  # instead of the bridge when more than a plain two-way talk
    held: set[str] = field(default_factory=set)  # keys of the parties on hold (hear music)
    held_by: str = ""  # the leg that put the call on hold
    hold_since: float | None = None
    hold_ms: int = 0  # all holds together, for CallEnded
    hold_count: int = 0
    muted: set[str] = field(default_factory=set)
    consult: Party | None = None  # the consult target while a consult is on
    busy: str = ""  # a transfer, consult or join in progress (one at a time)
    agent_endpoint: str = ""
    #: the IVR instance whose flow has the call (it answered it), until the ACD commands it:
    #: an IVR that restarts takes up its own calls again (ListCalls)
    flow_owner: str = ""

    def legs(self) -> tuple[Leg, ...]:
        base = (self.caller,) if self.agent is None else (self.caller, self.agent)
        return base + tuple(p.leg for p in self.others)

    def parties(self) -> list[Party]:
        """Every party, caller and agent first."""
        out = [Party(self.caller, Role.CALLER)]
        if self.agent is not None:
            out.append(Party(self.agent, Role.AGENT, self.agent_endpoint, self.agent_id))
        return out + self.others

    def party(self, leg_id: str) -> Party | None:
        return next((p for p in self.parties() if p.key == leg_id), None)

    def hold_started(self, now: float) -> None:
        """A hold begins (``held_by`` is set): counted, and marked in the recording."""
        if self.hold_since is None:
            self.hold_since = now
            self.hold_count += 1
            if self.recording is not None:
                holder = self.party(self.held_by)
                role = holder.role.value if holder is not None else ""
                self.recording.hold_started(self.held_by, role)

    def hold_ended(self, now: float) -> int:
        """Ends the current hold; returns its length in ms (0 if none)."""
        if self.hold_since is None:
            return 0
        held_ms = int((now - self.hold_since) * 1000)
        self.hold_ms += held_ms
        self.hold_since = None
        if self.recording is not None:
            self.recording.hold_ended()
        return held_ms

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

    def unbind_leg(self, call: Call, leg: Leg) -> None:
        if self._by_leg.get(leg.leg_id) is call:
            del self._by_leg[leg.leg_id]

    def call_of(self, leg: Leg) -> Call | None:
        return self._by_leg.get(leg.leg_id)

    def call_by_leg_id(self, leg_id: str) -> Call | None:
        return self._by_leg.get(leg_id)

    def get(self, call_id: str) -> Call:
        call = self.calls.get(call_id)
        if call is None or call.state == CallState.ENDED:
            raise CallGone(call_id)
        return call

    def live(self) -> list[Call]:
        return [c for c in self.calls.values() if c.state != CallState.ENDED]

    def count(self, state: CallState) -> int:
        """Calls in `state` now (the active-calls gauge, when scraped)."""
        return sum(1 for c in tuple(self.calls.values()) if c.state is state)

    def remove(self, call: Call) -> None:
        self.calls.pop(call.call_id, None)
        for leg in call.legs():
            if self._by_leg.get(leg.leg_id) is call:
                del self._by_leg[leg.leg_id]
