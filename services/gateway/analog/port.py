"""The one driver interface every analog line card implements (simulated or DAHDI).

An FXO port is the gateway's end of an outside line: it sees ringing and caller ID
from the central office, answers by going off-hook, and learns of a far-end
hang-up only from the line itself (busy/congestion tone or a loop-current drop).
Drivers deliver two kinds of things: rare *signalling* events (an async stream of
small dataclasses) and *audio* (a 160-sample int16 frame every 20 ms, pushed to
``on_audio`` while off-hook). Audio is not an event so that the media path never
waits on a queue.

While on-hook a driver still passes the raw line audio of the ring cycle to
:class:`BasePort` (``_line_frame``); the port runs :class:`CallerIdCollector` on
it, which is how on-hook FSK caller ID between the first and second ring is
received. That audio is *not* given to ``on_audio``.

Line time is counted in received frames (20 ms each), so ring timeouts and dial
pacing follow the card's clock, simulated or real, with no timers of their own.
"""

from __future__ import annotations

import asyncio
import enum
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from gateway.dsp.callerid import CallerId, FskCallerIdDecoder
from gateway.dsp.progress import ProgressToneDetector, ToneTable
from gateway.dsp.tones import dial_digits
from gateway.media.audio import FRAME_MS, FRAME_SAMPLES

__all__ = [
    "DIAL_CHARS",
    "FRAME_MS",
    "Alarm",
    "AudioCallback",
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

DIAL_CHARS = frozenset("0123456789*#ABCDabcd")
AudioCallback = Callable[[np.ndarray], None]


class PortState(str, enum.Enum):
    """What the port is doing, as the switch and the metrics see it."""

    IDLE = "idle"
    RINGING = "ringing"
    OFFHOOK = "offhook"
    OUT_OF_SERVICE = "out_of_service"


class HookState(str, enum.Enum):
    """Our hook switch (what we present to the central office)."""

    ONHOOK = "onhook"
    OFFHOOK = "offhook"


class PortError(RuntimeError):
    """A command the port cannot carry out in its current state or on its hardware."""


# --------------------------------------------------------------------- events
@dataclass(frozen=True, slots=True)
class RingOn:
    """Ringing voltage started (one burst of the cadence)."""


@dataclass(frozen=True, slots=True)
class RingOff:
    """Ringing voltage stopped (end of a burst)."""


@dataclass(frozen=True, slots=True)
class CallerIdReceived:
    """Caller ID decoded between the first and second ring; at most once per call.

    ``caller_id.valid`` is False (and ``number`` None) when the message was corrupted.
    """

    caller_id: CallerId


@dataclass(frozen=True, slots=True)
class RingingStopped:
    """No ring for longer than the ring timeout while unanswered: the caller gave up."""


@dataclass(frozen=True, slots=True)
class LoopCurrentDrop:
    """Loop current (battery) went away while off-hook: the far end disconnected."""


@dataclass(frozen=True, slots=True)
class PolarityReversal:
    """Line polarity reversed (answer or disconnect supervision on some exchanges)."""


@dataclass(frozen=True, slots=True)
class ProgressTone:
    """A call-progress tone recognised on the line while off-hook ("dial", "busy", ...).

    "busy"/"congestion" after a call was connected mean the far end hung up.
    """

    name: str


@dataclass(frozen=True, slots=True)
class Alarm:
    """The port lost (``active=True``) or regained its line / hardware."""

    active: bool


PortEvent = (
    RingOn
    | RingOff
    | CallerIdReceived
    | RingingStopped
    | LoopCurrentDrop
    | PolarityReversal
    | ProgressTone
    | Alarm
)


# ------------------------------------------------------------------ protocols
@runtime_checkable
class FxoPort(Protocol):
    """One FXO port of a line card."""

    index: int
    on_audio: AudioCallback | None

    @property
    def state(self) -> PortState: ...

    @property
    def hook_state(self) -> HookState: ...

    def events(self) -> AsyncIterator[PortEvent]: ...

    def send_audio(self, frame: np.ndarray) -> None: ...

    async def off_hook(self) -> None: ...

    async def on_hook(self) -> None: ...

    async def flash(self, ms: int = 100) -> None: ...

    async def dial(self, digits: str) -> None: ...


@runtime_checkable
class LineCard(Protocol):
    """A card holding FXO ports; ``start`` opens the hardware, ``stop`` releases it."""

    ports: list[FxoPort]

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


# ------------------------------------------------------------ caller ID window
class CallerIdCollector:
    """FSK caller-ID receiver for the on-hook window between the first and second ring.

    The decoder only sees audio inside that window, so nothing heard later (a
    second burst, speech, noise) can produce a second or spurious caller ID; the
    first result in the window is the call's caller ID, valid or not.
    """

    def __init__(self, standard: str = "v23") -> None:
        self._decoder = FskCallerIdDecoder(standard)
        self.reset()

    def reset(self) -> None:
        """Start a new call: no rings seen, nothing reported."""
        self._rings = 0
        self._open = False
        self.done = False

    def ring_on(self) -> None:
        """A ring burst began; the second one closes the window."""
        self._rings += 1
        self._open = False

    def ring_off(self) -> None:
        """A ring burst ended; after the first one the window opens."""
        if self._rings == 1 and not self.done:
            self._decoder.reset()
            self._open = True

    def feed(self, frame: np.ndarray) -> CallerId | None:
        """On-hook line audio; returns the caller ID once, when a message completes."""
        if not self._open or self.done:
            return None
        cid = self._decoder.feed(frame)
        if cid is not None:
            self.done = True
            self._open = False
        return cid


# ------------------------------------------------------------------ base port
class BasePort(ABC):
    """Signalling state machine, caller ID, tone supervision and dial pacing for a driver.

    A driver calls ``_line_frame`` with every received 20 ms frame (on- and
    off-hook) and ``_ring_on``/``_ring_off``/``_loop_drop``/``_polarity``/``_alarm``
    when its hardware reports them; it implements ``_hw_hook``, ``_hw_flash`` and
    ``_hw_send``. Events go to one consumer through :meth:`events`.
    """

    def __init__(
        self,
        index: int,
        *,
        cid_standard: str = "v23",
        tones: ToneTable | str = "CN",
        ring_timeout_ms: int = 8000,
    ) -> None:
        self.index = index
        self.on_audio: AudioCallback | None = None
        self._state = PortState.IDLE
        self._hook = HookState.ONHOOK
        self._queue: asyncio.Queue[PortEvent | None] = asyncio.Queue()
        self._cid = CallerIdCollector(cid_standard)
        self._progress = ProgressToneDetector(tones)
        self._ring_timeout_ms = ring_timeout_ms
        self._ringing = False  # a ring burst is in progress
        self._since_ring_ms = 0
        self._dial_frames: deque[np.ndarray] = deque()
        self._dial_done: asyncio.Future[None] | None = None
        self._closed = False
        self.frames_received = 0

    # ------------------------------------------------------------- properties
    @property
    def state(self) -> PortState:
        return self._state

    @property
    def hook_state(self) -> HookState:
        return self._hook

    @property
    def dialing(self) -> bool:
        return bool(self._dial_frames)

    # ----------------------------------------------------------------- events
    async def events(self) -> AsyncIterator[PortEvent]:
        """Signalling events in order until the port is closed (single consumer)."""
        while True:
            ev = await self._queue.get()
            if ev is None:
                return
            yield ev

    def drain_events(self) -> list[PortEvent]:
        """Events queued so far, without waiting (for polling callers and tests)."""
        out: list[PortEvent] = []
        while not self._queue.empty():
            ev = self._queue.get_nowait()
            if ev is None:
                self._queue.put_nowait(None)  # keep the end marker for events()
                break
            out.append(ev)
        return out

    def _emit(self, ev: PortEvent) -> None:
        if not self._closed:
            self._queue.put_nowait(ev)

    def _close_events(self) -> None:
        """End the event stream (driver stopped)."""
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(None)
        self._cancel_dial(PortError(f"port {self.index} closed"))

    # --------------------------------------------------------------- commands
    async def off_hook(self) -> None:
        """Answer a ringing line or seize an idle one (dial tone follows)."""
        if self._state is PortState.OUT_OF_SERVICE:
            raise PortError(f"port {self.index} is out of service")
        if self._hook is HookState.OFFHOOK:
            return
        await self._hw_hook(True)
        self._hook = HookState.OFFHOOK
        self._state = PortState.OFFHOOK
        self._ringing = False
        self._cid.reset()
        self._progress.reset()

    async def on_hook(self) -> None:
        """Release the line (ends the call); pending dialling is abandoned."""
        if self._hook is HookState.ONHOOK:
            return
        self._cancel_dial(PortError(f"port {self.index} went on-hook while dialling"))
        await self._hw_hook(False)
        self._onhook_done()

    def _onhook_done(self) -> None:
        """Bookkeeping once the hardware is on-hook (also when a driver closes)."""
        self._hook = HookState.ONHOOK
        if self._state is not PortState.OUT_OF_SERVICE:
            self._state = PortState.IDLE
        self._ringing = False
        self._cid.reset()

    async def flash(self, ms: int = 100) -> None:
        """Hook flash (register recall, e.g. for a transfer on the exchange)."""
        if self._hook is not HookState.OFFHOOK:
            raise PortError(f"port {self.index}: flash needs the line off-hook")
        if not 20 <= ms <= 2000:
            raise ValueError(f"flash ms must be 20..2000, got {ms}")
        await self._hw_flash(ms)

    async def dial(self, digits: str, on_ms: int = 100, off_ms: int = 100) -> None:
        """Send DTMF in-band (DSP generator), one frame per received frame; returns when sent.

        Audio from :meth:`send_audio` is dropped while dialling so the tones go out clean.
        """
        if self._hook is not HookState.OFFHOOK:
            raise PortError(f"port {self.index}: dialling needs the line off-hook")
        if not digits or any(ch not in DIAL_CHARS for ch in digits):
            raise ValueError(f"digits must be DTMF characters 0-9*#A-D, got {digits!r}")
        if self._dial_frames:
            raise PortError(f"port {self.index} is already dialling")
        pcm = dial_digits(digits.upper(), on_ms=on_ms, off_ms=off_ms)
        n = -(-pcm.size // FRAME_SAMPLES)
        buf = np.zeros(n * FRAME_SAMPLES, dtype=np.int16)
        buf[: pcm.size] = pcm
        self._dial_frames.extend(buf.reshape(n, FRAME_SAMPLES))
        self._dial_done = asyncio.get_running_loop().create_future()
        await self._dial_done

    def send_audio(self, frame: np.ndarray) -> None:
        """One 160-sample int16 frame towards the line (ignored on-hook or while dialling)."""
        if self._hook is HookState.OFFHOOK and not self._dial_frames:
            self._hw_send(np.asarray(frame, dtype=np.int16))

    def _cancel_dial(self, exc: Exception) -> None:
        self._dial_frames.clear()
        fut, self._dial_done = self._dial_done, None
        if fut is not None and not fut.done():
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: the caller may have stopped waiting

    # ------------------------------------------------------- driver callbacks
    def _line_frame(self, frame: np.ndarray) -> None:
        """Every received 20 ms frame of line audio, on- or off-hook."""
        self.frames_received += 1
        if self._hook is HookState.OFFHOOK:
            if self._dial_frames:
                self._hw_send(self._dial_frames.popleft())
                if not self._dial_frames and self._dial_done is not None:
                    fut, self._dial_done = self._dial_done, None
                    if not fut.done():
                        fut.set_result(None)
            tone = self._progress.feed(frame)
            if tone is not None:
                self._emit(ProgressTone(tone))
            if self.on_audio is not None:
                self.on_audio(frame)
            return
        if self._state is PortState.RINGING:
            cid = self._cid.feed(frame)
            if cid is not None:
                self._emit(CallerIdReceived(cid))
            if not self._ringing:
                self._since_ring_ms += FRAME_MS
                if self._since_ring_ms > self._ring_timeout_ms:
                    self._state = PortState.IDLE
                    self._cid.reset()
                    self._emit(RingingStopped())

    def _ring_on(self) -> None:
        if self._hook is HookState.OFFHOOK or self._state is PortState.OUT_OF_SERVICE:
            return
        if self._ringing:
            return  # drivers may report a ring start twice (RINGBEGIN + RINGOFFHOOK)
        if self._state is PortState.IDLE:
            self._cid.reset()
        self._state = PortState.RINGING
        self._ringing = True
        self._since_ring_ms = 0
        self._cid.ring_on()
        self._emit(RingOn())

    def _ring_off(self) -> None:
        if not self._ringing or self._hook is HookState.OFFHOOK:
            return
        self._ringing = False
        self._since_ring_ms = 0
        self._cid.ring_off()
        self._emit(RingOff())

    def _loop_drop(self) -> None:
        if self._hook is HookState.OFFHOOK:
            self._emit(LoopCurrentDrop())

    def _polarity(self) -> None:
        self._emit(PolarityReversal())

    def _alarm(self, active: bool) -> None:
        if active and self._state is not PortState.OUT_OF_SERVICE:
            self._state = PortState.OUT_OF_SERVICE
            self._ringing = False
            self._emit(Alarm(True))
        elif not active and self._state is PortState.OUT_OF_SERVICE:
            self._state = PortState.OFFHOOK if self._hook is HookState.OFFHOOK else PortState.IDLE
            self._emit(Alarm(False))

    # ---------------------------------------------------------- driver hooks
    @abstractmethod
    async def _hw_hook(self, off: bool) -> None:
        """Change the hook switch on the hardware."""

    @abstractmethod
    async def _hw_flash(self, ms: int) -> None:
        """Perform a hook flash on the hardware."""

    @abstractmethod
    def _hw_send(self, frame: np.ndarray) -> None:
        """Transmit one 160-sample int16 frame to the line."""
