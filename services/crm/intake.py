"""What the CRM does with each event it consumes: desk pushes first, then the CDR.

The desk push goes first so a screen pop is never delayed by a database write — except where
the push makes the desk read the CDR: a call transferred to an agent is restored on their desk
from its CDR, which names them only once the transfer is written, so from such an event on the
pushes wait for the write (in order: nothing after it is pushed before it). A CDR write
that fails because the database is unreachable, or because PostgreSQL made it give way in a
deadlock with another CRM replica, is retried until it succeeds: the consumer does not move
past the event meanwhile, so no call goes missing from the records.

The consumer hands over a whole fetch at once (`handle_batch`): every event's desk push, then
all their CDR changes in one transaction, which costs the database one round trip and one
commit per fetch instead of per event. Should a batch fail for any other reason, the consumer
gives its events to `handle` one at a time; an event already pushed is not pushed again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from common.events import Envelope, handling
from common.recent_ids import RecentIds
from crm.cdr_store import CdrStore
from crm.desk import DeskHub

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.5
RETRY_MAX_S = 10.0
#: event ids pushed to the desks lately: a batch retried, or handled again one event at a
#: time, does not push twice
PUSHED_MEMORY = 10_000
#: PostgreSQL's "deadlock detected" and "could not serialize access": the transaction was
#: picked to give way to another one (a second CRM replica writing the same calls, whose rows
#: a batch locks together); the same write again succeeds
GIVE_WAY_SQLSTATES = frozenset({"40P01", "40001"})


#: events whose desk push has the browser read the call's CDR (`restoreCall`): pushed after
#: their write, or the desk may read the CDR as it stood before and be refused the call
PUSHED_AFTER_WRITE = frozenset({"CallTransferred"})


class EventIntake:
    """The handler given to the `crm` consumer group (topics calls, queues, agents, recordings)."""

    def __init__(self, hub: DeskHub, cdrs: CdrStore) -> None:
        self.hub = hub
        self.cdrs = cdrs
        self._pushed = RecentIds(PUSHED_MEMORY)

    async def handle(self, env: Envelope) -> None:
        late = env.type in PUSHED_AFTER_WRITE
        if not late:
            await self._push(env)
        await _until_written(lambda: self.cdrs.apply(env), f"{env.type} {env.event_id}")
        if late:
            await self._push(env)

    async def handle_batch(self, envs: Sequence[Envelope]) -> None:
        cut = next((i for i, e in enumerate(envs) if e.type in PUSHED_AFTER_WRITE), len(envs))
        await self._push_each(envs[:cut])
        await _until_written(lambda: self.cdrs.apply_batch(envs), f"a batch of {len(envs)} events")
        await self._push_each(envs[cut:])

    async def _push_each(self, envs: Sequence[Envelope]) -> None:
        for env in envs:
            with handling(env):  # in the event's own trace
                await self._push(env)

    async def _push(self, env: Envelope) -> None:
        if env.event_id in self._pushed:
            return
        self._pushed.add(env.event_id)
        try:
            await self.hub.on_event(env)
        except Exception:
            # The browser misses one push; the CDR below must still be written.
            log.exception("desk push failed for %s %s", env.type, env.event_id)


def _retryable(exc: BaseException) -> bool:
    """The database is unreachable, or chose this transaction to give way: write again."""
    if isinstance(exc, (OperationalError, InterfaceError, OSError)):
        return True
    return isinstance(exc, DBAPIError) and (
        getattr(exc.orig, "sqlstate", None) in GIVE_WAY_SQLSTATES
    )


async def _until_written(write: Callable[[], Awaitable[object]], what: str) -> None:
    """Run `write` until the database takes it, backing off while it is unreachable or while
    it makes this write give way to another (a deadlock between two CRM replicas)."""
    delay = RETRY_FIRST_S
    while True:
        try:
            await write()
            return
        except (DBAPIError, OSError) as exc:
            if not _retryable(exc):
                raise
            log.warning("CDR write for %s failed, retrying in %.1f s: %r", what, delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
