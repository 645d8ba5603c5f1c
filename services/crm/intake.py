"""What the CRM does with each event it consumes: desk pushes first, then the CDR.

The desk push goes first so a screen pop is never delayed by a database write. A CDR write
that fails because the database is unreachable is retried until it succeeds: the consumer
does not move past the event meanwhile, so no call goes missing from the records.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.exc import InterfaceError, OperationalError

from common.events import Envelope
from crm.cdr_store import CdrStore
from crm.desk import DeskHub

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.5
RETRY_MAX_S = 10.0


class EventIntake:
    """The handler given to the `crm` consumer group (topics calls, queues, agents, recordings)."""

    def __init__(self, hub: DeskHub, cdrs: CdrStore) -> None:
        self.hub = hub
        self.cdrs = cdrs

    async def handle(self, env: Envelope) -> None:
        try:
            await self.hub.on_event(env)
        except Exception:
            # The browser misses one push; the CDR below must still be written.
            log.exception("desk push failed for %s %s", env.type, env.event_id)
        delay = RETRY_FIRST_S
        while True:
            try:
                await self.cdrs.apply(env)
                return
            except (OperationalError, InterfaceError, OSError) as exc:
                log.warning(
                    "CDR write for %s %s failed, retrying in %.1f s: %r",
                    env.type,
                    env.event_id,
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
