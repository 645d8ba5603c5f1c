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
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.analog.channel import DSP_DETECTIONS, AnalogLeg, AnalogMedia
from gateway.analog.port import (CallerIdReceived, LineCard, LoopCurrentDrop, PortState,
                                 ProgressTone, RingingStopped, RingOn)
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
                    trunk=self.trunk, channel="analog", caller=leg, caller_name=name)
        self.switch.offer(call)
        log.info("analog port %d rings: call %s from %s", port.index, call.call_id,
                 number or (caller_id.reason if caller_id else "no caller ID"))
        return call

    async def _watch(self, port) -> None:  # noqa: ANN001
        call: Call | None = None
        rings = 0
        async for event in port.events():
            if call is not None and call.state == CallState.ENDED:
                call, rings = None, 0
            if isinstance(event, RingOn):
                rings += 1
                if call is None and rings >= 2:          # no caller ID before the 2nd ring
                    call = self._offer(port, None)
            elif isinstance(event, CallerIdReceived):
                DSP_DETECTIONS.labels("caller_id" if event.caller_id.valid else
                                      "caller_id_invalid").inc()
                if call is None:
                    call = self._offer(port, event.caller_id)
            elif isinstance(event, RingingStopped):
                if call is not None and call.state == CallState.OFFERED:
                    self.switch.leg_released(call, call.caller, "caller stopped ringing")
                call, rings = None, 0
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
                    call, rings = None, 0


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
