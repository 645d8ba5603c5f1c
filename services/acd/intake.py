"""What the ACD does with each event it consumes (consumer group `acd`, topic `calls`).

Only a call's end matters to the ACD today: a caller who hangs up while queued is abandoned,
an agent whose call ended goes to wrap-up. Everything else on `calls` is ignored.
"""

from __future__ import annotations

from acd.dispatcher import Dispatcher
from common.events import Envelope


class AcdIntake:
    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    async def handle(self, env: Envelope) -> None:
        if env.WhichOneof("payload") == "call_ended":
            await self.dispatcher.call_ended(env.call_ended.call_id, env.call_ended.reason)
