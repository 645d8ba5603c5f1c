"""Announces stored recordings (`RecordingReady` on the `recordings` topic), from the catalog.

The catalog row is the outbox: a recording is stored and committed first, then announced, and
`announced_at` is set only once the broker has the event. Recordings not yet announced when
Kafka was down or the recorder stopped are announced at the next start, so none goes unheard
(at least once: a consumer may see a recording twice; the repeat carries the same event id,
see `notifier.ready_event_id`, and consumers key on `recording_id` besides).

Whatever is queued when the announcer turns to it goes out as one batch: one query reads the
rows, one pipelined publish sends them. A batch that fails is retried whole, with the same event
ids, until the broker has it. Marking is bookkeeping, not the promise (the broker has the event
once the publish returns), so the rows published within `MARK_EVERY_S` are marked together by
one statement, as consumers commit offsets: under load a recording shares its marking
transaction with a few dozen others instead of having one of its own. A crash before the marks
are written announces those recordings again at the next start, with the same event ids, as a
crash between publishing and marking always could.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from common import tracing
from common.tasks import cancel_and_wait
from recorder.catalog import ANNOUNCED_STATUSES, Catalog, Recording
from recorder.notifier import RecorderNotifier

log = logging.getLogger(__name__)

RETRY_S = 2.0
#: recordings announced together at most
MAX_BATCH = 100
#: how long a published recording may wait to be marked announced, with those published after it
MARK_EVERY_S = 0.5


class Announcer:
    """One background task that publishes RecordingReady for catalog rows, in order, in batches,
    with retry."""

    def __init__(
        self, catalog: Catalog, notifier: RecorderNotifier, mark_every_s: float = MARK_EVERY_S
    ) -> None:
        self.catalog = catalog
        self.notifier = notifier
        self.mark_every_s = mark_every_s
        #: published, not yet marked in the catalog, oldest first; and when they must be
        self._unmarked: list[Recording] = []
        self._mark_due = 0.0
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        # trace context (a carrier) of the stream that stored each recording, so the event
        # joins its trace
        self._traces: dict[str, dict[str, str]] = {}
        # rows the writer handed over with their recording id (see `announce`)
        self._rows: dict[str, Recording] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="recorder-announcer")

    async def announce(
        self, recording_id: str, wait_s: float = 0.0, row: Recording | None = None
    ) -> bool:
        """Queue a stored recording for announcement; True if it was announced within wait_s.

        `row` is the recording as its writer just committed it to the catalog, if it knows it
        for sure: it is announced as it is, without reading it back; otherwise the row is read
        from the catalog, which also skips a recording announced meanwhile.
        """
        if row is not None:
            self._rows[recording_id] = row
        self._traces[recording_id] = tracing.inject()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(recording_id, []).append(fut)
        self._queue.put_nowait(recording_id)
        if wait_s <= 0:
            return False
        try:
            await asyncio.wait_for(asyncio.shield(fut), wait_s)
        except TimeoutError:
            log.warning(
                "RecordingReady for %s not yet on the broker after %.1fs; it stays queued",
                recording_id,
                wait_s,
                extra={"recording_id": recording_id},
            )
            return False
        return True

    async def _backlog(self) -> None:
        while True:
            try:
                pending = await self.catalog.unannounced()
            except Exception:  # database not reachable yet: keep trying, never give up
                log.exception("cannot read unannounced recordings; retrying in %.0fs", RETRY_S)
                await asyncio.sleep(RETRY_S)
                continue
            if pending:
                log.info("announcing %d recordings stored before this start", len(pending))
            for rec in pending:
                self._queue.put_nowait(rec.recording_id)
            return

    async def _run(self) -> None:
        await self._backlog()
        batch: list[str] = []
        loop = asyncio.get_running_loop()
        while True:
            if self._unmarked and loop.time() >= self._mark_due:
                await self._mark()
            if not batch:
                if not self._unmarked:
                    batch.append(await self._queue.get())
                else:
                    try:
                        batch.append(
                            await asyncio.wait_for(self._queue.get(), self._mark_due - loop.time())
                        )
                    except TimeoutError:
                        continue  # time to mark
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._announce(batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "announcing %d recordings (%s first) failed; retrying in %.0fs",
                    len(batch),
                    batch[0],
                    RETRY_S,
                    extra={"recording_id": batch[0]},
                )
                await asyncio.sleep(RETRY_S)
                continue  # the same batch again, with whatever was queued meanwhile
            batch = []

    async def _mark(self) -> None:
        """Write the marks of what was published; on failure they wait for the next turn."""
        rows, self._unmarked = self._unmarked, []
        try:
            await self.catalog.mark_announced(rows, datetime.now(UTC))
        except asyncio.CancelledError:  # stopping: `stop` writes them (a mark is idempotent)
            self._unmarked = rows + self._unmarked
            raise
        except Exception:
            log.exception(
                "cannot mark %d announced recordings; retrying in %.0fs", len(rows), RETRY_S
            )
            self._unmarked = rows + self._unmarked
            self._mark_due = asyncio.get_running_loop().time() + RETRY_S

    async def _announce(self, batch: list[str]) -> None:
        ids = list(dict.fromkeys(batch))  # queued twice (salvage and a stream): announced once
        known = {rid: self._rows[rid] for rid in ids if rid in self._rows}
        unknown = [i for i in ids if i not in known]
        if unknown and self._unmarked:  # the catalog must not call them unannounced
            await self._mark()
        found = {rec.recording_id: rec for rec in await self.catalog.unannounced_among(unknown)}
        found.update(known)
        rows = [  # in the order they were queued
            found[rid]
            for rid in ids
            if rid in found
            and found[rid].status in ANNOUNCED_STATUSES
            and found[rid].announced_at is None
        ]
        if rows:
            envs = await self.notifier.recordings_ready(rows, self._traces)
            if not self._unmarked:
                self._mark_due = asyncio.get_running_loop().time() + self.mark_every_s
            self._unmarked.extend(rows)
            for rec, env in zip(rows, envs, strict=True):
                log.info(
                    "announced recording %s of call %s (%s)",
                    rec.recording_id,
                    rec.call_id,
                    rec.status,
                    extra={
                        "recording_id": rec.recording_id,
                        "call_id": rec.call_id,
                        "event_id": env.event_id,
                    },
                )
        for recording_id in ids:
            self._traces.pop(recording_id, None)
            self._rows.pop(recording_id, None)
            for fut in self._waiters.pop(recording_id, []):
                if not fut.done():
                    fut.set_result(None)

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        if self._unmarked:
            await self._mark()
        for futs in self._waiters.values():
            for fut in futs:
                fut.cancel()
        self._waiters.clear()
