"""Announces stored recordings (`RecordingReady` on the `recordings` topic), from the catalog.

The catalog row is the outbox: a recording is stored and committed first, then announced, and
`announced_at` is set only once the broker has the event. Recordings not yet announced when
Kafka was down or the recorder stopped are announced at the next start, so none goes unheard
(at least once: a consumer may see a recording twice and should key on `recording_id`).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from opentelemetry import context as otel_context

from common.tasks import cancel_and_wait
from recorder.catalog import ANNOUNCED_STATUSES, Catalog
from recorder.notifier import RecorderNotifier

log = logging.getLogger(__name__)

RETRY_S = 2.0


class Announcer:
    """One background task that publishes RecordingReady for catalog rows, in order, with retry."""

    def __init__(self, catalog: Catalog, notifier: RecorderNotifier) -> None:
        self.catalog = catalog
        self.notifier = notifier
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        # trace context of the stream that stored each recording, so the event joins its trace
        self._contexts: dict[str, otel_context.Context] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="recorder-announcer")

    async def announce(self, recording_id: str, wait_s: float = 0.0) -> bool:
        """Queue a stored recording for announcement; True if it was announced within wait_s."""
        self._contexts[recording_id] = otel_context.get_current()
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
        while True:
            recording_id = await self._queue.get()
            try:
                await self._announce(recording_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "announcing recording %s failed; retrying in %.0fs",
                    recording_id,
                    RETRY_S,
                    extra={"recording_id": recording_id},
                )
                await asyncio.sleep(RETRY_S)
                self._queue.put_nowait(recording_id)

    async def _announce(self, recording_id: str) -> None:
        rec = await self.catalog.get(recording_id)
        if rec is not None and rec.announced_at is None and rec.status in ANNOUNCED_STATUSES:
            trace_ctx = self._contexts.get(recording_id, otel_context.get_current())
            token = otel_context.attach(trace_ctx)
            try:
                env = await self.notifier.recording_ready(rec)
            finally:
                otel_context.detach(token)
            await self.catalog.mark_announced(recording_id, datetime.now(UTC), rec.status)
            log.info(
                "announced recording %s of call %s (%s)",
                recording_id,
                rec.call_id,
                rec.status,
                extra={
                    "recording_id": recording_id,
                    "call_id": rec.call_id,
                    "event_id": env.event_id,
                },
            )
        self._contexts.pop(recording_id, None)
        for fut in self._waiters.pop(recording_id, []):
            if not fut.done():
                fut.set_result(None)

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        for futs in self._waiters.values():
            for fut in futs:
                fut.cancel()
        self._waiters.clear()
