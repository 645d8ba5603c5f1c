"""What the IVR does with each event it consumes (consumer group `ivr`, topic `calls`).

An inbound `CallOffered` to a number with a flow starts that flow for the call, in a task of
its own so calls run side by side; calls we placed (outbound) and numbers without a flow are
left alone, every other event is ignored. `drain` (SIGTERM) lets the flows still running
finish; `stop` cancels those still running after it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from common.events import Envelope
from ivr.flows import Flow

log = logging.getLogger(__name__)


class Runner(Protocol):
    async def run(self, flow: Flow, call_id: str, ani: str, dnis: str) -> str: ...


class IvrIntake:
    #: the only payloads `handle` acts on: the consumer passes over the others without a span
    KINDS = frozenset({"call_offered"})

    def __init__(self, flows: dict[str, Flow], runner: Runner) -> None:
        self.flows, self.runner = flows, runner
        self.running: set[asyncio.Task[str]] = set()

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
        task = asyncio.create_task(
            self.runner.run(flow, offered.call_id, offered.ani, offered.dnis),
            name=f"flow-{offered.call_id}",
        )
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def drain(self, budget_s: float) -> None:
        """Let the flows still running finish (SIGTERM; the consumer stopped first, so no
        new one starts), for at most `budget_s`: a rollout of the IVR then hands every caller
        in a menu to the ACD instead of leaving them on a silent line."""
        if self.running:
            log.info("waiting for %d flows in progress (up to %.0fs)", len(self.running), budget_s)
            await asyncio.wait(set(self.running), timeout=budget_s)

    def stop(self) -> None:
        """Cancel the flows still running (at shutdown, after the consumer stopped)."""
        for task in list(self.running):
            task.cancel()
