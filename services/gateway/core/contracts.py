"""The contracts between the gateway's channel-neutral core and the channels around it.

The switch knows calls, legs and media streams; it never knows SIP, an FXO port or a
browser. A channel (SIP, analog, later WebRTC) adapts one technology to these Protocols:
it hands the core new legs through a :class:`CallSink`, and the core asks it to ring,
answer, reject and hang up a leg through the leg's :class:`Signalling`. Everything here is
structural (``typing.Protocol``), so a channel implements a contract by its shape and a
test can drive the switch with small fakes.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

__all__ = [
    "AcdLink",
    "Attempt",
    "AudioHandler",
    "CallJournal",
    "CallSink",
    "CallerParty",
    "DigitHandler",
    "EndpointDialer",
    "Leg",
    "MediaStream",
    "Offer",
    "Originator",
    "Outcome",
    "Recorder",
    "Recording",
    "Release",
    "Signalling",
    "TrunkEvents",
]

Frame = npt.NDArray[np.int16]
AudioHandler = Callable[[Frame], None]
DigitHandler = Callable[[str], None]


class MediaStream(Protocol):
    """One leg's audio: 20 ms int16 frames in and out, and the digits the far end keys.

    An RTP endpoint is one; so is an analog port's media. The core sets the two handlers
    (prompts and digit collection, or a bridge while talking) and sends a frame per tick.
    """

    on_audio: AudioHandler | None
    on_dtmf: DigitHandler | None

    def send_audio(self, pcm: Frame) -> bool:
        """Send one frame; False when it could not be sent (not negotiated, closed)."""
        ...

    def skip(self, frames: int = 1) -> None:
        """Let ``frames`` frames of silence elapse (nothing to send this tick)."""
        ...

    def close(self) -> None:
        """Release the stream's resources; safe to call twice."""
        ...

    async def send_digits(self, digits: str) -> None:
        """Send DTMF to the far end (RFC 4733 events on SIP, tones on an analog line)."""
        ...


class Leg(Protocol):
    """One party's side of a call, as the core sees it.

    Its state is the channel's to change: the core only reads it and asks the leg's
    :attr:`signalling` to act.
    """

    @property
    def leg_id(self) -> str: ...

    @property
    def media(self) -> MediaStream: ...

    @property
    def signalling(self) -> Signalling: ...

    @property
    def inbound(self) -> bool:
        """True when the far end called us (we answer or reject it)."""
        ...

    @property
    def answered(self) -> bool:
        """The leg is (or was) connected: answered by us, or answered by the far end."""
        ...

    @property
    def ended(self) -> bool:
        """Hung up, rejected or released: the channel will not signal on it again."""
        ...


class Signalling(Protocol):
    """What the core asks of the channel a leg belongs to."""

    def ring(self, leg: Leg) -> None:
        """Tell an inbound caller that the call is being offered (SIP 180)."""
        ...

    def answer(self, leg: Leg) -> None:
        """Connect an inbound caller (SIP 200, an FXO port going off-hook)."""
        ...

    def reject(self, leg: Leg, detail: str) -> None:
        """Refuse an inbound caller that was never answered."""
        ...

    async def hang_up(self, leg: Leg) -> None:
        """End an answered leg from our side (SIP BYE, on-hook)."""
        ...

    def release(self, leg: Leg) -> None:
        """The core is done with the leg (it calls this as soon as the leg's call ended or
        the leg left it): free its media and forget it. The core keeps nothing of the leg
        afterwards; late messages about it are the channel's to answer (the SIP channel
        keeps a small FinishedDialog for 64*T1)."""
        ...

    async def hold(self, leg: Leg, held: bool) -> str:
        """Tell the far end we hold it (SIP: re-INVITE a=sendonly) or resume it (sendrecv);
        returns "" when done, else what went wrong (the media hold stands either way). A
        channel without hold signalling (an analog line) does nothing."""
        ...


class Release(str, enum.Enum):
    """Why a channel reports that a leg went away by itself."""

    HANGUP = "hangup"  # the far end hung up or gave up (BYE, CANCEL, ringing stopped)
    FAR_END = "far_end"  # a line signal said the far end is gone (loop drop, busy tone)
    TIMEOUT = "timeout"  # signalling broke down (no ACK for our 200)


@dataclass(frozen=True, slots=True)
class Offer:
    """What a channel knows about a new call when it hands its first leg to the core."""

    ani: str
    dnis: str
    trunk: str
    channel: str  # "sip", "analog", ...
    caller_name: str = ""
    line: str = ""  # the physical line of an analog call, e.g. "analog/2"
    outbound: bool = False  # placed by us (Originate): already connected
    diverted_from: str = ""  # the number that forwarded the call to us (SIP Diversion)


class CallSink(Protocol):
    """What a channel tells the core: a new call arrived, a leg went away."""

    @property
    def accepting(self) -> bool:
        """False while the gateway drains: channels refuse new calls before taking any media."""
        ...

    def offer(self, leg: Leg, offer: Offer) -> str:
        """Track a new call whose first leg is ``leg``; returns the call id."""
        ...

    def leg_released(self, leg: Leg, why: Release, detail: str) -> None:
        """The far end of ``leg`` is gone; the channel has already marked it ended."""
        ...

    def leg_held(self, leg: Leg, held: bool) -> None:
        """The far end of ``leg`` put the call on hold by itself (SIP re-INVITE sendonly,
        inactive or 0.0.0.0), or took it off hold."""
        ...

    async def refer(self, leg: Leg, kind: str, target: str, replaces: str) -> Attempt:
        """The far end of ``leg`` asks to transfer the call to ``target``, an "extension" or
        a "number" (``kind``; SIP REFER);
        ``replaces`` names the channel's own leg whose call the target is in (an attended
        transfer from a phone), "" for a blind one. The answer is the transfer's outcome."""
        ...


class Outcome(str, enum.Enum):
    """How an attempt to reach a party ended."""

    ANSWERED = "answered"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    REJECTED = "rejected"
    UNREACHABLE = "unreachable"
    CALLER_GONE = "caller_gone"  # the call we were connecting ended while ringing
    NO_LINE = "no_line"  # every line of the trunk is busy
    NO_DIAL_TONE = "no_dial_tone"


@dataclass(frozen=True, slots=True)
class Attempt:
    """The result of ringing an endpoint or placing a call: the connected leg when answered."""

    outcome: Outcome
    leg: Leg | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class CallerParty:
    """Who the rung endpoint should see as calling."""

    call_id: str
    number: str
    name: str = ""


class EndpointDialer(Protocol):
    """A channel that can ring an endpoint (an extension) and connect it."""

    async def ring_endpoint(
        self, target: str, caller: CallerParty, ring_timeout_s: float, abandon: asyncio.Event
    ) -> Attempt:
        """Ring ``target`` until it answers, refuses, ``ring_timeout_s`` passes or
        ``abandon`` is set (the call ended meanwhile; then the outcome is CALLER_GONE).
        An ANSWERED attempt's leg is connected and owned by the core from then on."""
        ...


class Originator(Protocol):
    """A trunk that can place outbound calls. On success the channel has already offered
    the new call to its sink (with ``Offer.outbound``) and the attempt carries its leg."""

    async def originate(
        self,
        number: str,
        policy: str,
        timeout_s: float,
        diverted_from: str = "",
        *,
        standalone: bool = True,
    ) -> Attempt:
        """``diverted_from``: the call forwards one to that number (a SIP trunk sends it as
        Diversion; a line that cannot say so ignores it). ``standalone=False``: the leg is
        for a call the core already has (a transfer, a conference party): not offered as a
        new call, owned by the core once answered."""
        ...


class AcdLink(Protocol):
    """The ACD as the core needs it: a call goes back to a queue (a transfer to a queue)."""

    async def requeue(self, call_id: str, queue: str, from_agent_id: str) -> str:
        """Queue the call again; returns "" when queued, else why not."""
        ...


class TrunkEvents(Protocol):
    """Where a channel reports that one of its trunks went up or down (the gateway's
    notifier publishes it)."""

    def trunk_state(self, trunk: str, up: bool, detail: str) -> None: ...


class CallJournal(Protocol):
    """Where the core notes the calls it holds, so that a restarted gateway can announce the
    end of every call the previous run was holding."""

    def call_started(self, call_id: str, offered_at: float, channel: str, line: str) -> None: ...


class Recording(Protocol):
    """One call's recording in progress: a frame pair per tick, then finish."""

    def tap(self, left: Frame, right: Frame) -> None:
        """One frame of each side, every 20 ms. The recording may keep the frames (up to a
        second, to convert them in one go), so a caller must not change them afterwards."""

    def hold_started(self, leg_id: str, held_by: str) -> None:
        """Marks where the call went on hold (by `leg_id`, whose role is `held_by`)."""

    def hold_ended(self) -> None:
        """Marks where the hold ended."""

    async def finish(self) -> None: ...


class Recorder(Protocol):
    """Starts recordings of bridged calls."""

    def start(
        self, call_id: str, agent_id: str, queue: str, trace: dict[str, str] | None = None
    ) -> Recording: ...
