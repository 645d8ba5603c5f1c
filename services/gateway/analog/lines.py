"""Analog lines as gateway channels: ringing ports become offered calls, line signals end them.

A ring with caller ID (decoded between the first and second ring) or, without one, the second
ring offers a call exactly like a SIP trunk INVITE does. The far end's hang-up is only visible
on the line itself — a loop-current drop or busy/congestion tone — and ends the call with
reason FAR_END. Answering is going off-hook; hanging up is going on-hook.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

from hotline.v1 import events_pb2 as ev
from hotline.v1 import gateway_pb2 as gw
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.analog.channel import DSP_DETECTIONS, AnalogLeg, AnalogMedia
from gateway.analog.port import (CallerIdReceived, LineCard, LoopCurrentDrop,
                                 PolarityReversal, PortState, ProgressTone, RingingStopped, RingOn)
from gateway.calls import Call, CallState

if TYPE_CHECKING:
    from gateway.switch import Switch

log = logging.getLogger(__name__)

FAR_END_TONES = frozenset({"busy", "congestion"})


class AnalogLines:
    """Supervises every port of a line card on behalf of the switch."""

    def __init__(self, switch: Switch, card: LineCard, trunk: str, did: str) -> None:
        self.switch, self.card, self.trunk, self.did = switch, card, trunk, did
        self._tasks: list[asyncio.Task[None]] = []
        self._calls: dict[int, Call] = {}                     # port index -> its call
        self._seizing: dict[int, asyncio.Queue] = {}          # ports an Originate is seizing

    async def start(self) -> None:
        await self.card.start()
        self._tasks = [asyncio.create_task(self._watch(port), name=f"fxo-{port.index}")
                       for port in self.card.ports]
        log.info("analog trunk %s: %d ports, calls go to %s", self.trunk, len(self.card.ports),
                 self.did)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.card.stop()

    # ---- signalling the switch asks for --------------------------------------------------
    def ring(self, leg: AnalogLeg) -> None:
        """The line is already ringing: nothing to send back to the exchange."""

    def answer(self, leg: AnalogLeg) -> None:
        leg.confirmed = True
        self.switch.spawn(leg.port.off_hook(), f"offhook-{leg.port.index}")

    def reject(self, leg: AnalogLeg, status: int, reason: str) -> None:
        """An unanswered line is left to ring out; the exchange ends it when the caller quits."""
        leg.terminated = True
        log.info("not answering analog port %d (%d %s)", leg.port.index, status, reason)

    async def bye(self, leg: AnalogLeg) -> None:
        if not leg.terminated:
            leg.terminated = True
            await leg.port.on_hook()

    # ---- line supervision ----------------------------------------------------------------
    def _offer(self, port, caller_id) -> Call:  # noqa: ANN001
        number = caller_id.number if caller_id is not None and caller_id.valid else None
        name = (caller_id.name or "") if caller_id is not None and caller_id.valid else ""
        leg = AnalogLeg(port, AnalogMedia(port))
        call = Call(call_id=str(uuid.uuid4()), ani=number or "", dnis=self.did,
                    trunk=self.trunk, channel="analog", caller=leg, caller_name=name,
                    line=f"{self.trunk}/{port.index}")
        self.switch.offer(call)
        log.info("analog port %d rings: call %s from %s", port.index, call.call_id,
                 number or (caller_id.reason if caller_id else "no caller ID"))
        return call

    async def _watch(self, port) -> None:  # noqa: ANN001
        rings = 0
        async for event in port.events():
            call = self._calls.get(port.index)
            if call is not None and call.state == CallState.ENDED:
                call, rings = None, 0
                self._calls.pop(port.index, None)
            seizing = self._seizing.get(port.index)
            if seizing is not None:                       # an outbound attempt owns the port
                seizing.put_nowait(event)
                continue
            if isinstance(event, RingOn):
                rings += 1
                if call is None and rings >= 2:          # no caller ID before the 2nd ring
                    self._calls[port.index] = self._offer(port, None)
            elif isinstance(event, CallerIdReceived):
                DSP_DETECTIONS.labels("caller_id" if event.caller_id.valid else
                                      "caller_id_invalid").inc()
                if call is None:
                    self._calls[port.index] = self._offer(port, event.caller_id)
            elif isinstance(event, RingingStopped):
                if call is not None and call.state == CallState.OFFERED:
                    self.switch.leg_released(call, call.caller, "caller stopped ringing")
                self._calls.pop(port.index, None)
                rings = 0
            elif isinstance(event, (LoopCurrentDrop, ProgressTone)):
                far_end = isinstance(event, LoopCurrentDrop) or event.name in FAR_END_TONES
                if isinstance(event, ProgressTone):
                    DSP_DETECTIONS.labels(event.name).inc()
                if far_end and call is not None and call.state != CallState.ENDED:
                    detail = "loop current drop" if isinstance(event, LoopCurrentDrop) \
                        else f"{event.name} tone"
                    leg = call.caller
                    self.switch.end(call, ev.END_REASON_FAR_END, detail, by=leg)
                    await self.bye(leg)
                    self._calls.pop(port.index, None)
                    rings = 0

    # ---- outbound --------------------------------------------------------------------------
    async def originate(self, number: str, policy: str, timeout_s: float) -> tuple[int, Call | None, str]:
        """Seize a free line, wait for dial tone, dial, and consider it answered per `policy`:
        "after_dial" (lines without answer supervision) or "polarity" (wait for a reversal)."""
        port = next((p for p in self.card.ports if p.state == PortState.IDLE
                     and p.index not in self._calls and p.index not in self._seizing), None)
        if port is None:
            return gw.ORIGINATE_RESULT_NO_LINE, None, "no idle line on the analog trunk"
        events: asyncio.Queue = asyncio.Queue()
        self._seizing[port.index] = events
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            await port.off_hook()
            if await self._wait_for(events, deadline, {"dial"}) != "dial":
                await port.on_hook()
                return gw.ORIGINATE_RESULT_NO_DIAL_TONE, None, f"no dial tone on line {port.index}"
            await port.dial(number)
            if policy == "polarity":
                got = await self._wait_for(events, deadline, {"polarity"} | FAR_END_TONES)
                if got != "polarity":
                    await port.on_hook()
                    if got in FAR_END_TONES:
                        return gw.ORIGINATE_RESULT_BUSY, None, f"{got} tone from {number}"
                    return gw.ORIGINATE_RESULT_NO_ANSWER, None, \
                        f"no answer (polarity reversal) from {number} within {timeout_s:.0f}s"
            leg = AnalogLeg(port, AnalogMedia(port), uas=False, confirmed=True)
            call = Call(call_id=str(uuid.uuid4()), ani="", dnis=number, trunk=self.trunk,
                        channel="analog", caller=leg, line=f"{self.trunk}/{port.index}")
            self._calls[port.index] = call
            self.switch.offer(call, outbound=True)
            log.info("analog line %d: call %s to %s is up (%s)", port.index, call.call_id,
                     number, policy)
            return gw.ORIGINATE_RESULT_ANSWERED, call, ""
        finally:
            self._seizing.pop(port.index, None)

    @staticmethod
    async def _wait_for(events: asyncio.Queue, deadline: float, wanted: set[str]) -> str | None:
        """The first of `wanted` ("dial", "busy", "polarity", ...) seen before the deadline."""
        loop = asyncio.get_running_loop()
        while (left := deadline - loop.time()) > 0:
            try:
                event = await asyncio.wait_for(events.get(), left)
            except asyncio.TimeoutError:
                return None
            name = "polarity" if isinstance(event, PolarityReversal) else \
                "loop_drop" if isinstance(event, LoopCurrentDrop) else \
                event.name if isinstance(event, ProgressTone) else None
            if name in wanted:
                return name
        return None


class LineStateCollector(Collector):
    """`hotline_analog_lines{state}`: how many ports are idle, ringing, in use, out of service."""

    NAMES = {PortState.IDLE: "idle", PortState.RINGING: "ringing",
             PortState.OFFHOOK: "in_use", PortState.OUT_OF_SERVICE: "out_of_service"}

    def __init__(self, card: LineCard, site: str) -> None:
        self.card, self.site = card, site

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("hotline_analog_lines", "Analog lines by state",
                                   labels=["state", "site"])
        counts = dict.fromkeys(self.NAMES.values(), 0)
        for port in self.card.ports:
            counts[self.NAMES[port.state]] += 1
        for state, n in counts.items():
            family.add_metric([state, self.site], n)
        yield family
