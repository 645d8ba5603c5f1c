"""What the IVR does with each event it consumes (consumer group `ivr`, topic `calls`).

An inbound `CallOffered` to a number with a flow starts that flow for the call, in a task of
its own so calls run side by side; calls we placed (outbound) and numbers without a flow are
left alone, every other event is ignored. `drain` (SIGTERM) lets the flows still running
finish; `stop` cancels those still running after it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Protocol

from common.events import Envelope
from hotline.v1 import gateway_pb2 as gw
from ivr.flows import Flow

log = logging.getLogger(__name__)


class Runner(Protocol):
    async def run(self, flow: Flow, call_id: str, ani: str, dnis: str) -> str: ...


class IvrIntake:
    #: the only payloads `handle` acts on: the consumer passes over the others without a span
    KINDS = frozenset({"call_offered"})

    def __init__(self, flows: dict[str, Flow], runner: Runner) -> None:
        self.flows, self.runner = flows, runner
        self._by_call: dict[str, asyncio.Task[str]] = {}  # one flow per call at a time

    @property
    def running(self) -> set[asyncio.Task[str]]:
        """The flows in progress."""
        return set(self._by_call.values())

    async def handle(self, env: Envelope) -> None:
        if env.WhichOneof("payload") not in self.KINDS:
            return
        offered = env.call_offered
        if offered.direction == "outbound":  # placed by us: no inbound flow to run
            return
        flow = self.flows.get(offered.dnis)
        if flow is None:
            log.warning("call %s to %s: no flow for this number", offered.call_id, offered.dnis)
            return
        self._start(flow, offered.call_id, offered.ani, offered.dnis)

    def _start(self, flow: Flow, call_id: str, ani: str, dnis: str) -> bool:
        if call_id in self._by_call:  # taken up after a crash, and its offer redelivered
            return False
        task = asyncio.create_task(
            self.runner.run(flow, call_id, ani, dnis), name=f"flow-{call_id}"
        )
        self._by_call[call_id] = task
        task.add_done_callback(lambda _: self._by_call.pop(call_id, None))
        return True

    def take_up(
        self,
        calls: Iterable[gw.CallInfo],
        instance: str,
        whose: str = "this IVR's previous run",
    ) -> int:
        """Run the flow again for each live call this IVR instance had answered and the ACD
        has not commanded since (`flow_owner`): its flow died with the previous process (kill
        -9, OOM), or the gateway handed it over from an IVR that is gone (`whose`). Another
        instance's calls are never touched: a sibling replica may be running them. Returns
        how many were taken up."""
        taken = 0
        for call in calls:
            if call.flow_owner != instance or call.state != "answered" or call.bridged_to:
                continue
            flow = self.flows.get(call.dnis)
            if flow is not None and self._start(flow, call.call_id, call.ani, call.dnis):
                taken += 1
        if taken:
            log.warning(
                "took up %d calls whose flows stopped with %s (now %s's)", taken, whose, instance
            )
        return taken

    async def drain(self, budget_s: float) -> None:
        """Let the flows still running finish (SIGTERM; the consumer stopped first, so no
        new one starts), for at most `budget_s`: a rollout of the IVR then hands every caller
        in a menu to the ACD instead of leaving them on a silent line."""
        if self.running:
            log.info("waiting for %d flows in progress (up to %.0fs)", len(self.running), budget_s)
            await asyncio.wait(self.running, timeout=budget_s)

    def stop(self) -> None:
        """Cancel the flows still running (at shutdown, after the consumer stopped)."""
        for task in list(self.running):
            task.cancel()
