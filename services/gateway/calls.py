"""The gateway's call model: a call is the caller's leg plus, once connected, an agent's leg.

A leg is one SIP dialog with its RTP endpoint. The call keeps what the IVR and ACD ask about
it (digits typed, what is playing, what it is bridged to) and its timestamps for CallEnded.
"""
from __future__ import annotations

import asyncio
import enum
import time
import uuid
from dataclasses import dataclass, field

from gateway.analog.channel import AnalogLeg
from gateway.media.bridge import Bridge
from gateway.media.endpoint import RtpEndpoint
from gateway.media.prompts import PromptPlayer
from gateway.sip.message import SipRequest
from gateway.sip.transport import Transport


class CallState(str, enum.Enum):
    OFFERED = "offered"        # ringing at the gateway, waiting for an Answer command
    ANSWERED = "answered"      # connected to the gateway (IVR, queue, music)
    BRIDGED = "bridged"        # talking to an endpoint
    ENDED = "ended"


@dataclass(eq=False)
class SipLeg:
    """One SIP dialog (RFC 3261 section 12) and its media."""

    sip_call_id: str
    local_party: str                    # our From/To header value, with our tag
    remote_party: str                   # theirs, with their tag once known
    remote_target: str                  # their Contact URI: where in-dialog requests go
    transport: Transport
    peer: tuple[str, int]               # where their requests came from / ours are sent
    endpoint: RtpEndpoint
    uas: bool                           # True when they called us
    invite: SipRequest | None = None
    local_cseq: int = 1
    confirmed: bool = False             # 2xx sent/received (ACK pending or done)
    terminated: bool = False
    leg_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    server_tx: object | None = None     # UAS INVITE transaction until a final response
    ok_retransmitter: object | None = None
    client_tx: object | None = None     # UAC INVITE transaction while ringing
    local_sdp: bytes = b""

    def next_cseq(self) -> int:
        self.local_cseq += 1
        return self.local_cseq


class CallGone(Exception):
    """The call ended (or never existed) while a command was waiting on it."""


@dataclass(eq=False)
class Call:
    call_id: str
    ani: str
    dnis: str
    trunk: str
    channel: str
    caller: SipLeg | AnalogLeg
    caller_name: str = ""
    line: str = ""                      # physical line of an analog call, e.g. "analog/2"
    state: CallState = CallState.OFFERED
    agent: SipLeg | None = None
    pending: SipLeg | None = None       # an endpoint being rung
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
    recording: object | None = None

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
        waits = {asyncio.ensure_future(self.digit_arrived.wait()),
                 asyncio.ensure_future(self.ended.wait())}
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
    """Live calls by id, and legs by SIP Call-ID for routing in-dialog requests."""

    def __init__(self) -> None:
        self.calls: dict[str, Call] = {}
        self.legs: dict[str, tuple[Call, SipLeg]] = {}

    def add(self, call: Call) -> None:
        self.calls[call.call_id] = call
        self.bind_leg(call, call.caller)

    def bind_leg(self, call: Call, leg: SipLeg) -> None:
        self.legs[leg.sip_call_id] = (call, leg)

    def leg(self, sip_call_id: str) -> tuple[Call, SipLeg] | None:
        return self.legs.get(sip_call_id)

    def get(self, call_id: str) -> Call:
        call = self.calls.get(call_id)
        if call is None or call.state == CallState.ENDED:
            raise CallGone(call_id)
        return call

    def remove(self, call: Call) -> None:
        self.calls.pop(call.call_id, None)
        for leg in (call.caller, call.agent, call.pending):
            if leg is not None and self.legs.get(leg.sip_call_id, (None, None))[1] is leg:
                del self.legs[leg.sip_call_id]
