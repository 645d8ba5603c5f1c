"""What the ACD does with each event it consumes (topic `calls`, followed from the rebuild on).

A call's end frees its agent (wrap-up) or counts its caller abandoned; the call-control events
keep the agents' states true to what happens in their calls: a transfer moves the call from one
agent to another, a bridge the ACD did not make (the agent's click-to-dial) puts its agent on
the call, a consulted colleague is on the call too while the consult lasts, hold and resume
are counted in handle time. Everything else on `calls` is ignored.
"""

from __future__ import annotations

from acd.dispatcher import Dispatcher
from common.events import Envelope


class AcdIntake:
    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    async def handle(self, env: Envelope) -> None:
        d, kind = self.dispatcher, env.WhichOneof("payload")
        if kind == "call_ended":
            e = env.call_ended
            await d.call_ended(e.call_id, e.reason, e.hold_ms)
        elif kind == "call_transferred":
            t = env.call_transferred
            await d.call_transferred(
                t.call_id, t.from_agent_id, t.target_kind, t.target, t.to_agent_id
            )
        elif kind == "call_bridged" and env.call_bridged.agent_id:
            b = env.call_bridged
            await d.call_bridged(b.call_id, b.agent_id, b.queue)
        elif kind == "consult_started":
            c = env.consult_started
            await d.consult_started(c.call_id, c.target_kind, c.target)
        elif kind == "consult_ended":
            await d.consult_ended(env.consult_ended.call_id, env.consult_ended.outcome)
        elif kind == "call_held":
            d.call_held(env.call_held.call_id, env.call_held.agent_id)
        elif kind == "call_resumed":
            d.call_resumed(env.call_resumed.call_id, env.call_resumed.agent_id)
