"""Every event the gateway publishes is built here, and leaves through one ordered outbox.

SIP and media handling never wait for Kafka: the switch hands a fact to the notifier, which
queues it; one task publishes the queue in order, so a call's CallOffered always precedes
its CallEnded on the `calls` topic. Whatever has queued up is published as one pipelined
batch (up to MAX_BATCH), so under load the outbox does not fall behind by a broker round
trip per event (docs/performance.md). An event that cannot be published is retried with the
same event id until the broker has it (consumers drop a repeat), never lost.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable

from google.protobuf.message import Message

from common.events import BatchPublisher, publish_until_taken
from common.tasks import cancel_and_wait
from gateway.core import steps
from gateway.core.calls import Call, EndReason
from hotline.v1 import events_pb2 as ev

__all__ = ["CallNotifier", "Publisher"]

log = logging.getLogger(__name__)

END_REASONS: dict[EndReason, ev.EndReason.ValueType] = {
    EndReason.CALLER_HANGUP: ev.END_REASON_CALLER_HANGUP,
    EndReason.AGENT_HANGUP: ev.END_REASON_AGENT_HANGUP,
    EndReason.FAR_END: ev.END_REASON_FAR_END,
    EndReason.TIMEOUT: ev.END_REASON_TIMEOUT,
    EndReason.SYSTEM: ev.END_REASON_SYSTEM,
}

RETRY_FIRST_S = 0.5
RETRY_MAX_S = 10.0
MAX_BATCH = 100  # events published together at most


Publisher = BatchPublisher


class CallNotifier:
    """Builds the `calls` events of the switch's facts (and the trunks' state) and publishes
    them in order."""

    def __init__(
        self, publisher: Publisher, on_call_ended: Callable[[str], None] | None = None
    ) -> None:
        self.publisher = publisher
        # told each call id once its CallEnded is on the broker (the state file forgets it then)
        self.on_call_ended = on_call_ended
        self._outbox: asyncio.Queue[tuple[Message, str, dict[str, str]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._drain(), name="gateway-outbox")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    @property
    def pending(self) -> int:
        """Events accepted but not yet published."""
        return self._outbox.qsize()

    # ---- the facts -------------------------------------------------------------------------
    def offered(self, call: Call) -> None:
        self._put(
            ev.CallOffered(
                call_id=call.call_id,
                ani=call.ani,
                dnis=call.dnis,
                trunk=call.trunk,
                channel=call.channel,
                caller_name=call.caller_name,
                line=call.line,
                direction="outbound" if call.outbound else "inbound",
                diverted_from=call.diverted_from,
            ),
            call.call_id,
            call.trace,
        )

    def answered(self, call: Call) -> None:
        self._put(ev.CallAnswered(call_id=call.call_id), call.call_id, call.trace)

    def bridged(self, call: Call, leg_id: str, endpoint: str) -> None:
        self._put(
            ev.CallBridged(
                call_id=call.call_id,
                leg_id=leg_id,
                endpoint=endpoint,
                agent_id=call.agent_id,
                queue=call.queue,
            ),
            call.call_id,
            call.trace,
        )

    def ended(
        self, call: Call, reason: EndReason, detail: str, duration_ms: int, talk_ms: int
    ) -> None:
        self._put(
            ev.CallEnded(
                call_id=call.call_id,
                reason=END_REASONS[reason],
                detail=detail,
                duration_ms=duration_ms,
                talk_ms=talk_ms,
                hold_ms=call.hold_ms,
                hold_count=call.hold_count,
            ),
            call.call_id,
            call.trace,
        )

    def step(self, call: Call, step: steps.Step) -> None:
        """A call-control step, as its event."""
        self._put(step_event(call.call_id, step), call.call_id, call.trace)

    def lost_in_restart(self, call_id: str, offered_at: float) -> None:
        """A call the previous run of the gateway was holding when it stopped or died."""
        self._put(
            ev.CallEnded(
                call_id=call_id,
                reason=ev.END_REASON_GATEWAY_RESTART,
                detail="the gateway restarted while holding the call",
                duration_ms=max(0, int((time.time() - offered_at) * 1000)),
            ),
            call_id,
        )

    def trunk_state(self, trunk: str, up: bool, detail: str) -> None:
        """A SIP trunk went up or down (TrunkEvents, from the SIP channel)."""
        self._put(ev.TrunkStateChanged(trunk=trunk, up=up, detail=detail), f"trunk:{trunk}")

    # ---- the outbox ------------------------------------------------------------------------
    def _put(self, payload: Message, key: str, trace: dict[str, str] | None = None) -> None:
        """Queue an event; `trace` is the call's trace context, so the event (and what other
        services do about it) joins the call's trace."""
        self._outbox.put_nowait((payload, key, trace or {}))

    async def _drain(self) -> None:
        while True:
            batch = [await self._outbox.get()]
            while len(batch) < MAX_BATCH and not self._outbox.empty():
                batch.append(self._outbox.get_nowait())
            items = [(payload, key, str(uuid.uuid4()), trace) for payload, key, trace in batch]
            await publish_until_taken(self.publisher, items, RETRY_FIRST_S, RETRY_MAX_S)
            if self.on_call_ended is None:
                continue
            for payload, _, _, _ in items:
                if isinstance(payload, ev.CallEnded):
                    try:
                        self.on_call_ended(payload.call_id)
                    except Exception:  # the event is out; only the bookkeeping failed
                        log.exception("could not note the end of %s", payload.call_id)


#: each call-control step's event: the step's fields are the event's, plus the call id
STEP_EVENTS: dict[type[steps.Step], type[Message]] = {
    steps.Held: ev.CallHeld,
    steps.Resumed: ev.CallResumed,
    steps.Transferred: ev.CallTransferred,
    steps.ConsultStarted: ev.ConsultStarted,
    steps.ConsultEnded: ev.ConsultEnded,
    steps.ConferenceJoined: ev.ConferenceJoined,
    steps.ConferenceLeft: ev.ConferenceLeft,
    steps.MonitorStarted: ev.MonitorStarted,
    steps.MonitorStopped: ev.MonitorStopped,
}


def step_event(call_id: str, step: steps.Step) -> Message:
    """The `calls` event of a call-control step."""
    return STEP_EVENTS[type(step)](call_id=call_id, **dataclasses.asdict(step))
