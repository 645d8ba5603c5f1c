"""Analog lines as a channel of the core: ringing FXO ports become offered calls, line
signals end them, and Originate seizes a line and dials.

A ring with caller ID (decoded between the first and second ring) or, without one, the second
ring offers a call exactly like a SIP trunk INVITE does. The far end's hang-up is only visible
on the line itself - a loop-current drop or busy/congestion tone - and releases the leg with
FAR_END. Answering is going off-hook; hanging up is going on-hook.

An analog leg has the same media surface as an RTP endpoint, so the core's prompts, digit
collection, bridge and recording tap work unchanged; in-band DTMF is found by the DSP (an
analog line has no RFC 4733), and the port is fed silence when a bridge has nothing to send.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.analog.port import (
    CallerIdReceived,
    FxoPort,
    LineCard,
    LoopCurrentDrop,
    PolarityReversal,
    PortEvent,
    PortState,
    ProgressTone,
    RingingStopped,
    RingOn,
)
from gateway.core.contracts import (
    Attempt,
    AudioHandler,
    CallSink,
    DigitHandler,
    Leg,
    Offer,
    Outcome,
    Release,
    Signalling,
)
from gateway.dsp.callerid import CallerId
from gateway.dsp.dtmf import DtmfDetector
from gateway.media.audio import silence

__all__ = ["AnalogChannel", "AnalogLeg", "AnalogMedia", "LineStateCollector"]

log = logging.getLogger(__name__)

DSP_DETECTIONS = Counter(
    "hotline_analog_dsp_detections_total", "In-band detections on analog lines", ["kind"]
)
FAR_END_TONES = frozenset({"busy", "congestion"})


class AnalogMedia:
    """A port's audio as the core's MediaStream, with in-band DTMF detection."""

    def __init__(self, port: FxoPort) -> None:
        self.port = port
        self.on_audio: AudioHandler | None = None
        self.on_dtmf: DigitHandler | None = None
        self._dtmf = DtmfDetector()
        port.on_audio = self._received

    def _received(self, frame: np.ndarray) -> None:
        for event in self._dtmf.feed(frame):
            DSP_DETECTIONS.labels("dtmf").inc()
            if self.on_dtmf is not None:
                self.on_dtmf(event.digit)
        if self.on_audio is not None:
            self.on_audio(frame)

    def send_audio(self, pcm: np.ndarray) -> bool:
        self.port.send_audio(pcm)
        return True

    def skip(self, frames: int = 1) -> None:
        for _ in range(frames):
            self.port.send_audio(silence())

    def close(self) -> None:
        if self.port.on_audio == self._received:
            self.port.on_audio = None

    async def send_digits(self, digits: str) -> None:
        """DTMF tones down the line."""
        await self.port.dial(digits)


@dataclass(eq=False)
class AnalogLeg:
    """The gateway's end of an outside line during one call; implements the Leg contract."""

    port: FxoPort
    media: AnalogMedia
    signalling: Signalling
    inbound: bool = True
    answered: bool = False
    ended: bool = False
    leg_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])


class AnalogChannel:
    """Supervises every port of a line card; Signalling for its legs and the trunk's
    Originator."""

    def __init__(self, card: LineCard, trunk: str, did: str) -> None:
        self.card, self.trunk, self.did = card, trunk, did
        self._sink: CallSink | None = None
        self._watchers: list[asyncio.Task[None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._legs: dict[int, AnalogLeg] = {}  # port index -> its live leg
        self._seizing: dict[int, asyncio.Queue[PortEvent]] = {}  # ports an Originate holds

    async def start(self, sink: CallSink) -> None:
        """Bring the card up and offer its calls to ``sink``."""
        self._sink = sink
        await self.card.start()
        self._watchers = [
            asyncio.create_task(self._watch(port), name=f"fxo-{port.index}")
            for port in self.card.ports
        ]
        log.info(
            "analog trunk %s: %d ports, calls go to %s", self.trunk, len(self.card.ports), self.did
        )

    async def stop(self) -> None:
        for task in [*self._watchers, *self._tasks]:
            task.cancel()
        await self.card.stop()

    async def busy_out(self, budget_s: float) -> None:
        """Draining: seize every idle line so the exchange finds it busy and routes the next
        call elsewhere; lines in a call are left alone until it ends."""
        for port in self.card.ports:
            if port.state == PortState.IDLE and port.index not in self._legs:
                self._seizing[port.index] = asyncio.Queue()  # keeps the watcher's hands off
                await port.off_hook()
                log.info("analog line %d busied out for the drain", port.index)

    def _spawn_on_hook(self, port: FxoPort) -> None:
        task = asyncio.create_task(port.on_hook(), name=f"onhook-{port.index}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- Signalling ----------------------------------------------------------------------
    def _own(self, leg: Leg) -> AnalogLeg:
        if not isinstance(leg, AnalogLeg) or leg.signalling is not self:
            raise TypeError(f"leg {leg.leg_id} does not belong to the analog channel")
        return leg

    def ring(self, leg: Leg) -> None:
        """The line is already ringing: nothing to send back to the exchange."""

    def answer(self, leg: Leg) -> None:
        analog = self._own(leg)
        analog.answered = True
        task = asyncio.create_task(analog.port.off_hook(), name=f"offhook-{analog.port.index}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def reject(self, leg: Leg, detail: str) -> None:
        """An unanswered line is left to ring out; the exchange ends it when the caller quits."""
        analog = self._own(leg)
        analog.ended = True
        log.info("not answering analog port %d (%s)", analog.port.index, detail)

    async def hang_up(self, leg: Leg) -> None:
        analog = self._own(leg)
        if not analog.ended:
            analog.ended = True
            await analog.port.on_hook()

    def release(self, leg: Leg) -> None:
        analog = self._own(leg)
        analog.media.close()
        if self._legs.get(analog.port.index) is analog:
            del self._legs[analog.port.index]

    # ---- line supervision ----------------------------------------------------------------
    def _offer(self, port: FxoPort, caller_id: CallerId | None) -> AnalogLeg | None:
        assert self._sink is not None
        if not self._sink.accepting:  # draining: let it ring out; the exchange tries again
            log.info("analog port %d rings while draining: not answered", port.index)
            return None
        valid = caller_id is not None and caller_id.valid
        number = caller_id.number if caller_id is not None and valid else None
        name = (caller_id.name or "") if caller_id is not None and valid else ""
        leg = AnalogLeg(port, AnalogMedia(port), signalling=self)
        self._legs[port.index] = leg
        call_id = self._sink.offer(
            leg,
            Offer(
                ani=number or "",
                dnis=self.did,
                trunk=self.trunk,
                channel="analog",
                caller_name=name,
                line=f"{self.trunk}/{port.index}",
            ),
        )
        log.info(
            "analog port %d rings: call %s from %s",
            port.index,
            call_id,
            number or (caller_id.reason if caller_id else "no caller ID"),
        )
        return leg

    def _live_leg(self, port: FxoPort) -> AnalogLeg | None:
        leg = self._legs.get(port.index)
        if leg is not None and leg.ended:
            return None
        return leg

    def _far_end_gone(self, leg: AnalogLeg, why: Release, detail: str) -> None:
        leg.ended = True
        if self._sink is not None:
            self._sink.leg_released(leg, why, detail)

    async def _watch(self, port: FxoPort) -> None:
        rings = 0
        async for event in port.events():
            leg = self._legs.get(port.index)
            if leg is not None and leg.ended:  # its call is over: the line is free
                del self._legs[port.index]
                leg, rings = None, 0
            seizing = self._seizing.get(port.index)
            if seizing is not None:  # an outbound attempt owns the port
                seizing.put_nowait(event)
                continue
            if isinstance(event, RingOn):
                rings += 1
                if leg is None and rings >= 2:  # no caller ID before the 2nd ring
                    self._offer(port, None)
            elif isinstance(event, CallerIdReceived):
                DSP_DETECTIONS.labels(
                    "caller_id" if event.caller_id.valid else "caller_id_invalid"
                ).inc()
                if leg is None:
                    self._offer(port, event.caller_id)
            elif isinstance(event, RingingStopped):
                if leg is not None and not leg.answered:
                    self._far_end_gone(leg, Release.HANGUP, "caller stopped ringing")
                self._legs.pop(port.index, None)
                rings = 0
            elif isinstance(event, (LoopCurrentDrop, ProgressTone)):
                far_end = isinstance(event, LoopCurrentDrop) or event.name in FAR_END_TONES
                if isinstance(event, ProgressTone):
                    DSP_DETECTIONS.labels(event.name).inc()
                if far_end and leg is not None:
                    detail = (
                        "loop current drop"
                        if isinstance(event, LoopCurrentDrop)
                        else f"{event.name} tone"
                    )
                    self._far_end_gone(leg, Release.FAR_END, detail)
                    await port.on_hook()
                    self._legs.pop(port.index, None)
                    rings = 0

    # ---- Originator ------------------------------------------------------------------------
    async def hold(self, leg: Leg, held: bool) -> str:
        """An analog line has no hold signalling: the core's music is all the far end gets."""
        self._own(leg)
        return ""

    async def originate(
        self,
        number: str,
        policy: str,
        timeout_s: float,
        diverted_from: str = "",
        *,
        standalone: bool = True,
    ) -> Attempt:
        """Seize a free line, wait for dial tone, dial, and consider it answered per `policy`:
        "after_dial" (lines without answer supervision) or "polarity" (wait for a reversal)."""
        if self._sink is None:
            return Attempt(Outcome.NO_LINE, None, "the analog trunk is not started")
        port = next(
            (
                p
                for p in self.card.ports
                if p.state == PortState.IDLE
                and self._live_leg(p) is None
                and p.index not in self._seizing
            ),
            None,
        )
        if port is None:
            return Attempt(Outcome.NO_LINE, None, "no idle line on the analog trunk")
        events: asyncio.Queue[PortEvent] = asyncio.Queue()
        self._seizing[port.index] = events
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            await port.off_hook()
            if await self._wait_for(events, deadline, {"dial"}) != "dial":
                await port.on_hook()
                return Attempt(Outcome.NO_DIAL_TONE, None, f"no dial tone on line {port.index}")
            await port.dial(number)
            if policy == "polarity":
                got = await self._wait_for(events, deadline, {"polarity"} | FAR_END_TONES)
                if got != "polarity":
                    await port.on_hook()
                    if got in FAR_END_TONES:
                        return Attempt(Outcome.BUSY, None, f"{got} tone from {number}")
                    return Attempt(
                        Outcome.NO_ANSWER,
                        None,
                        f"no answer (polarity reversal) from {number} within {timeout_s:.0f}s",
                    )
            leg = AnalogLeg(port, AnalogMedia(port), signalling=self, inbound=False, answered=True)
            self._legs[port.index] = leg
            if not standalone:  # a party for a call the core has: not a new call
                log.info("analog line %d: %s answered for a call in progress", port.index, number)
                return Attempt(Outcome.ANSWERED, leg, "")
            call_id = self._sink.offer(
                leg,
                Offer(
                    ani="",
                    dnis=number,
                    trunk=self.trunk,
                    channel="analog",
                    line=f"{self.trunk}/{port.index}",
                    outbound=True,
                ),
            )
            log.info(
                "analog line %d: call %s to %s is up (%s)", port.index, call_id, number, policy
            )
            return Attempt(Outcome.ANSWERED, leg, "")
        finally:
            self._seizing.pop(port.index, None)

    @staticmethod
    async def _wait_for(
        events: asyncio.Queue[PortEvent], deadline: float, wanted: set[str]
    ) -> str | None:
        """The first of `wanted` ("dial", "busy", "polarity", ...) seen before the deadline."""
        loop = asyncio.get_running_loop()
        while (left := deadline - loop.time()) > 0:
            try:
                event = await asyncio.wait_for(events.get(), left)
            except asyncio.TimeoutError:
                return None
            name = (
                "polarity"
                if isinstance(event, PolarityReversal)
                else "loop_drop"
                if isinstance(event, LoopCurrentDrop)
                else event.name
                if isinstance(event, ProgressTone)
                else None
            )
            if name in wanted:
                return name
        return None


class LineStateCollector(Collector):
    """`hotline_analog_lines{state}`: how many ports are idle, ringing, in use, out of service;
    `hotline_analog_span_alarm{span,alarm}`: how many of them are out by a hardware alarm."""

    NAMES = {
        PortState.IDLE: "idle",
        PortState.RINGING: "ringing",
        PortState.OFFHOOK: "in_use",
        PortState.OUT_OF_SERVICE: "out_of_service",
    }

    def __init__(self, card: LineCard, site: str) -> None:
        self.card, self.site = card, site

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "hotline_analog_lines", "Analog lines by state", labels=["state", "site"]
        )
        counts = dict.fromkeys(self.NAMES.values(), 0)
        for port in self.card.ports:
            counts[self.NAMES[port.state]] += 1
        for state, n in counts.items():
            family.add_metric([state, self.site], n)
        yield family
        # An analog card is one span; a port in alarm (no line, no battery, card gone) is a red
        # alarm on it. The value counts the ports in alarm, so `> 0` alerts.
        alarm = GaugeMetricFamily(
            "hotline_analog_span_alarm",
            "Ports of the analog span in alarm (red: line or hardware lost)",
            labels=["span", "alarm", "site"],
        )
        alarm.add_metric(["1", "red", self.site], counts["out_of_service"])
        yield alarm
