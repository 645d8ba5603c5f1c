"""The ``sim`` line card: N FXO ports wired to a simulated central office.

The exchange produces *real line audio* with the DSP generators, so everything
the gateway does with a simulated line (caller-ID decoding, DTMF detection,
busy-tone supervision) runs the same code as on a real card:

* ringing with a configurable cadence (China: 1 s on / 4 s off) and on-hook FSK
  caller ID (MDMF, V.23 by default) in the silent interval after the first ring;
* dial tone when the gateway seizes an idle line, ended by the first DTMF digit
  the gateway sends (the exchange listens with the DSP DTMF detector);
* the far party: queued int16 audio / WAV / tones and in-band DTMF;
* far-end hang-up by busy or congestion tone (cadence from the tone table) or by
  a loop-current drop;
* a time-aligned capture of everything the gateway transmitted.

Time only moves in :meth:`SimExchange.tick` (20 ms), so tests run faster than
real time by calling :meth:`SimCard.tick`; :meth:`SimCard.start` in real-time
mode drives the same tick from a :class:`~gateway.media.clock.FrameClock`.
"""

from __future__ import annotations

import enum
import io
import wave
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from gateway.dsp.callerid import CallerId, build_message, encode_callerid_fsk
from gateway.dsp.dtmf import DtmfDetector
from gateway.dsp.progress import ToneTable, tone_table
from gateway.dsp.tones import dial_digits, silence, tone
from gateway.media.audio import FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE
from gateway.media.clock import FrameClock

from .port import BasePort, FxoPort

__all__ = [
    "LineBusy",
    "LineMode",
    "SimCard",
    "SimExchange",
    "SimFxoPort",
    "SimLine",
    "UnknownPort",
    "wav_bytes",
]

_ZERO = np.zeros(FRAME_SAMPLES, dtype=np.int16)
_ZERO.flags.writeable = False


class UnknownPort(KeyError):
    """No port with that number on the card."""


class LineBusy(RuntimeError):
    """The request does not fit what the line is doing (e.g. ringing an off-hook line)."""


class LineMode(str, enum.Enum):
    """What the simulated exchange is doing on a line."""

    IDLE = "idle"
    RINGING = "ringing"
    DIALTONE = "dialtone"  # gateway seized the line, nothing dialled yet
    CONNECTED = "connected"  # talking to the far party
    BUSY = "busy"  # far end hung up, busy tone until we go on-hook
    CONGESTION = "congestion"  # far end hung up, congestion tone
    DROPPED = "dropped"  # far end hung up, loop current removed


class _Fifo:
    """Sample queue that hands out whole frames, zero-padded when it runs dry."""

    def __init__(self) -> None:
        self._parts: deque[np.ndarray] = deque()
        self._pos = 0
        self.samples = 0

    def push(self, pcm: np.ndarray) -> None:
        pcm = np.asarray(pcm, dtype=np.int16).ravel()
        if pcm.size:
            self._parts.append(pcm)
            self.samples += pcm.size

    def clear(self) -> None:
        self._parts.clear()
        self._pos = 0
        self.samples = 0

    def take(self, n: int = FRAME_SAMPLES) -> np.ndarray:
        if not self.samples:
            return _ZERO
        out = np.zeros(n, dtype=np.int16)
        got = 0
        while got < n and self._parts:
            part = self._parts[0]
            k = min(n - got, part.size - self._pos)
            out[got : got + k] = part[self._pos : self._pos + k]
            got += k
            self._pos += k
            if self._pos == part.size:
                self._parts.popleft()
                self._pos = 0
        self.samples -= got
        return out


class _Loop:
    """An endlessly repeating signal (dial, busy, congestion tone)."""

    def __init__(self, pcm: np.ndarray) -> None:
        self._pcm = np.tile(pcm, 2)  # any 160-sample window is one slice
        self._n = pcm.size
        self._pos = 0

    def take(self, n: int = FRAME_SAMPLES) -> np.ndarray:
        out = self._pcm[self._pos : self._pos + n].copy()
        self._pos = (self._pos + n) % self._n
        return out


@dataclass(eq=False)
class SimLine:
    """The exchange's view of one line (port numbers start at 1)."""

    number: int
    capture_frames: int
    port: SimFxoPort | None = None
    mode: LineMode = LineMode.IDLE
    offhook: bool = False
    caller: CallerId | None = None
    ring_ms: int = 0
    rings: int = 0
    max_rings: int = 10
    cid_audio: np.ndarray | None = None
    onhook_audio: _Fifo = field(default_factory=_Fifo)
    far: _Fifo = field(default_factory=_Fifo)
    tone: _Loop | None = None
    tx: deque[np.ndarray] = field(default_factory=lambda: deque(maxlen=50))
    captured: deque[np.ndarray] = field(init=False)
    dialled: str = ""
    flashes: list[int] = field(default_factory=list)
    dtmf: DtmfDetector = field(default_factory=DtmfDetector)
    # Far party of an outbound call answers this long after the last digit, signalled by a
    # polarity reversal (lines with answer supervision); None: no reversal is sent.
    polarity_answer_ms: int | None = None
    since_digit_ms: int = -1

    def __post_init__(self) -> None:
        self.captured = deque(maxlen=self.capture_frames)

    def status(self) -> dict[str, object]:
        """JSON-able summary for the control API."""
        return {
            "line": self.mode.value,
            "offhook": self.offhook,
            "caller": self.caller.number if self.caller else None,
            "caller_name": self.caller.name if self.caller else None,
            "rings": self.rings,
            "dialled": self.dialled,
            "flashes": len(self.flashes),
            "captured_ms": len(self.captured) * FRAME_MS,
            "polarity_answer_ms": self.polarity_answer_ms,
        }


class SimExchange:
    """A central office serving ``n_ports`` lines, advanced 20 ms per :meth:`tick`."""

    def __init__(
        self,
        n_ports: int = 4,
        *,
        ring_on_ms: int = 1000,
        ring_off_ms: int = 4000,
        cid_standard: str = "v23",
        cid_format: str = "mdmf",
        cid_delay_ms: int = 600,
        cid_level_dbm0: float = -13.5,
        tones: ToneTable | str = "CN",
        max_rings: int = 10,
        capture_seconds: int = 600,
    ) -> None:
        if n_ports < 1:
            raise ValueError("n_ports must be >= 1")
        for name, ms in (("ring_on_ms", ring_on_ms), ("ring_off_ms", ring_off_ms)):
            if ms <= 0 or ms % FRAME_MS:
                raise ValueError(f"{name} must be a positive multiple of {FRAME_MS} ms")
        self.ring_on_ms = ring_on_ms
        self.ring_off_ms = ring_off_ms
        self.cid_standard = cid_standard
        self.cid_format = cid_format
        self.cid_delay_ms = cid_delay_ms
        self.cid_level_dbm0 = cid_level_dbm0
        self.tones = tone_table(tones) if isinstance(tones, str) else tones
        self.max_rings = max_rings
        self.now_ms = 0
        frames = capture_seconds * 1000 // FRAME_MS
        self.lines = [SimLine(k, frames) for k in range(1, n_ports + 1)]

    # ---------------------------------------------------------------- lookup
    def line(self, number: int) -> SimLine:
        """Line by 1-based port number; :class:`UnknownPort` if there is none."""
        if not isinstance(number, int) or not 1 <= number <= len(self.lines):
            raise UnknownPort(f"no port {number!r}; ports are 1..{len(self.lines)}")
        return self.lines[number - 1]

    # ------------------------------------------------------ far-end controls
    def ring(
        self,
        number: int,
        caller: str | None,
        name: str | None = None,
        *,
        datetime: str | None = None,
        corrupt: bool = False,
        rings: int | None = None,
    ) -> None:
        """Offer a call: ring cadence with FSK caller ID after the first ring.

        ``caller=None`` sends "number unavailable"; ``corrupt`` flips a payload
        bit after the checksum was computed (the receiver must reject it).
        """
        line = self.line(number)
        if line.mode is not LineMode.IDLE or line.offhook:
            raise LineBusy(f"port {number} is {line.mode.value}, not idle")
        cid = CallerId(
            number=caller or None,
            name=name or None,
            datetime=datetime,
            reason=None if caller else "unavailable",
        )
        message = build_message(cid, self.cid_format)  # CallerIdError on bad fields
        if corrupt:
            damaged = bytearray(message)
            damaged[len(damaged) // 2] ^= 0x04
            message = bytes(damaged)
        fsk = encode_callerid_fsk(
            cid, self.cid_standard, self.cid_level_dbm0, fmt=self.cid_format, message=message
        )
        spare = self.ring_off_ms - self.cid_delay_ms - 200  # end >= 200 ms before ring 2
        if fsk.size * 1000 // SAMPLE_RATE > spare:
            raise ValueError(
                f"caller ID needs {fsk.size * 1000 // SAMPLE_RATE} ms but the "
                f"ring cadence leaves {spare} ms"
            )
        line.caller = cid
        line.cid_audio = np.concatenate((silence(self.cid_delay_ms), fsk))
        line.mode = LineMode.RINGING
        line.ring_ms = 0
        line.rings = 0
        line.max_rings = self.max_rings if rings is None else rings
        self._new_call(line)

    def play(self, number: int, pcm: np.ndarray) -> None:
        """Queue far-party audio (heard once the line is connected)."""
        self.line(number).far.push(np.asarray(pcm, dtype=np.int16))

    def play_tone(self, number: int, hz: float, ms: int, level_dbm0: float = -13.0) -> None:
        """Queue a sine tone from the far party."""
        self.play(number, tone(hz, ms, level_dbm0))

    def dtmf(
        self,
        number: int,
        digits: str,
        on_ms: int = 100,
        off_ms: int = 100,
        level_dbm0: float = -10.0,
    ) -> None:
        """Far party presses keys: in-band DTMF (DSP generator) queued as audio."""
        self.play(number, dial_digits(digits, on_ms, off_ms, level_dbm0))

    def hangup(self, number: int, signal: str = "busy") -> None:
        """Far end hangs up: "busy"/"congestion" tone or "loop_drop" if answered;
        an unanswered call just stops ringing (the port times out)."""
        line = self.line(number)
        if signal not in ("busy", "congestion", "loop_drop"):
            raise ValueError(f"signal must be busy, congestion or loop_drop, got {signal!r}")
        if line.mode is LineMode.RINGING:
            line.mode = LineMode.IDLE
            line.onhook_audio.clear()
            return
        if line.mode not in (LineMode.CONNECTED, LineMode.DIALTONE):
            raise LineBusy(f"port {number} is {line.mode.value}: no call to hang up")
        line.far.clear()
        if signal == "loop_drop":
            line.mode = LineMode.DROPPED
            line.tone = None
            if line.port is not None:
                line.port._loop_drop()
        else:
            line.mode = LineMode.BUSY if signal == "busy" else LineMode.CONGESTION
            spec = self.tones[signal]
            line.tone = _Loop(self.tones.generate(signal, sum(spec.cadence_ms)))

    def captured(self, number: int) -> np.ndarray:
        """Everything the gateway sent on the line since the call began (int16)."""
        line = self.line(number)
        if not line.captured:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(list(line.captured))

    # --------------------------------------------------------- port-side hooks
    def hook(self, number: int, off: bool) -> None:
        """The gateway's hook switch changed."""
        line = self.line(number)
        line.offhook = off
        if off:
            if line.mode is LineMode.RINGING:
                line.mode = LineMode.CONNECTED  # answered: ring trip
            else:
                self._new_call(line)
                line.far.clear()
                line.mode = LineMode.DIALTONE
                line.tone = _Loop(self.tones.generate("dial", 1000))
            line.onhook_audio.clear()
            line.dtmf.reset()
        else:
            line.mode = LineMode.IDLE
            line.tone = None
            line.far.clear()
            line.tx.clear()

    def flash(self, number: int, ms: int) -> None:
        """The gateway flashed the hook; recorded for tests and the control API."""
        self.line(number).flashes.append(ms)

    def transmit(self, number: int, frame: np.ndarray) -> None:
        """A frame from the gateway; consumed one per tick so the capture stays timed."""
        self.line(number).tx.append(np.array(frame, dtype=np.int16).ravel()[:FRAME_SAMPLES])

    # ------------------------------------------------------------------ clock
    def tick(self) -> None:
        """Advance every line by 20 ms: signalling, then line audio, then capture."""
        for line in self.lines:
            self._tick_line(line)
        self.now_ms += FRAME_MS

    def _new_call(self, line: SimLine) -> None:
        line.since_digit_ms = -1
        line.captured.clear()
        line.tx.clear()
        line.dialled = ""
        line.flashes.clear()
        line.onhook_audio.clear()

    def _tick_line(self, line: SimLine) -> None:
        port = line.port
        if line.mode is LineMode.RINGING:
            phase = line.ring_ms % (self.ring_on_ms + self.ring_off_ms)
            if phase == 0:
                line.rings += 1
                if line.rings > line.max_rings:
                    line.mode = LineMode.IDLE  # caller gave up
                elif port is not None:
                    port._ring_on()
            elif phase == self.ring_on_ms:
                if port is not None:
                    port._ring_off()
                if line.rings == 1 and line.cid_audio is not None:
                    line.onhook_audio.push(line.cid_audio)
            line.ring_ms += FRAME_MS
        if line.mode in (LineMode.IDLE, LineMode.RINGING):
            frame = line.onhook_audio.take()
        elif line.mode is LineMode.CONNECTED:
            frame = line.far.take()
        elif line.tone is not None:
            frame = line.tone.take()
        else:
            frame = _ZERO
        if port is not None:
            port._line_frame(frame)
        if line.offhook:
            sent = line.tx.popleft() if line.tx else _ZERO
            line.captured.append(sent)
            if line.mode in (LineMode.DIALTONE, LineMode.CONNECTED):
                for ev in line.dtmf.feed(sent):
                    line.dialled += ev.digit
                    line.since_digit_ms = 0
                    if line.mode is LineMode.DIALTONE:
                        line.mode = LineMode.CONNECTED
                        line.tone = None
            if line.since_digit_ms >= 0:
                line.since_digit_ms += FRAME_MS
                if (
                    line.polarity_answer_ms is not None
                    and line.since_digit_ms > line.polarity_answer_ms
                ):
                    line.since_digit_ms = -1
                    if port is not None:
                        port._polarity()


class SimFxoPort(BasePort):
    """An FXO port whose line is a :class:`SimLine` of the exchange."""

    def __init__(self, index: int, exchange: SimExchange, ring_timeout_ms: int = 8000) -> None:
        super().__init__(
            index,
            cid_standard=exchange.cid_standard,
            tones=exchange.tones,
            ring_timeout_ms=ring_timeout_ms,
        )
        self._exchange = exchange
        exchange.line(index).port = self

    async def _hw_hook(self, off: bool) -> None:
        self._exchange.hook(self.index, off)

    async def _hw_flash(self, ms: int) -> None:
        self._exchange.flash(self.index, ms)

    def _hw_send(self, frame: np.ndarray) -> None:
        self._exchange.transmit(self.index, frame)


class SimCard:
    """The simulated card: ports 1..N on a :class:`SimExchange`.

    Manual time (default): call :meth:`tick`. Real time: ``realtime=True`` (own
    20 ms :class:`FrameClock`) or pass the gateway's ``clock`` to share its ticks.
    """

    def __init__(
        self,
        n_ports: int = 4,
        *,
        realtime: bool = False,
        clock: FrameClock | None = None,
        ring_timeout_ms: int = 8000,
        **exchange_options: object,
    ) -> None:
        self.exchange = SimExchange(n_ports, **exchange_options)  # type: ignore[arg-type]
        self.sim_ports = [
            SimFxoPort(k, self.exchange, ring_timeout_ms=ring_timeout_ms)
            for k in range(1, n_ports + 1)
        ]
        self.ports: list[FxoPort] = list(self.sim_ports)
        self._realtime = realtime or clock is not None
        self._clock = clock
        self._own_clock = False
        self._sub: int | None = None

    def port(self, number: int) -> SimFxoPort:
        """Port by its 1-based number."""
        self.exchange.line(number)
        return self.sim_ports[number - 1]

    def tick(self, frames: int = 1) -> None:
        """Advance simulated time by ``frames`` x 20 ms."""
        for _ in range(frames):
            self.exchange.tick()

    async def start(self) -> None:
        """In real-time mode, tick on the 20 ms clock; in manual mode nothing to do."""
        if not self._realtime or self._sub is not None:
            return
        if self._clock is None:
            self._clock = FrameClock()
        self._sub = self._clock.subscribe(self.exchange.tick)
        if not self._clock.running:
            self._clock.start()
            self._own_clock = True

    async def stop(self) -> None:
        """Stop ticking, put every port on-hook and end their event streams."""
        if self._clock is not None and self._sub is not None:
            self._clock.unsubscribe(self._sub)
            self._sub = None
            if self._own_clock:
                self._clock.stop()
                self._own_clock = False
        for p in self.sim_ports:
            await p.on_hook()
            p._close_events()


def wav_bytes(pcm: np.ndarray) -> bytes:
    """8 kHz mono 16-bit WAV of ``pcm`` (what GET /ports/{k}/captured returns)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(np.asarray(pcm, dtype="<i2").tobytes())
    return buf.getvalue()
